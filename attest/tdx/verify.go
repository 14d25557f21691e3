package tdx

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/pcs"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/validate"
	tdxverify "github.com/google/go-tdx-guest/verify"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/measure"
)

// Check names, in the order Verify reports them.
const (
	CheckQuoteSignature = "tdx-quote-signature"
	CheckCollateral     = "tdx-collateral"
	CheckTDAttributes   = "tdx-td-attributes"
	CheckPolicy         = "tdx-policy"
	CheckReportData     = "tdx-report-data"
	CheckEnvKey         = "tdx-env-key"
	CheckCCEL           = "tdx-ccel"
)

var checkOrder = []string{CheckQuoteSignature, CheckCollateral, CheckTDAttributes, CheckPolicy, CheckReportData, CheckEnvKey, CheckCCEL}

// tdAttributeDebug is TD_ATTRIBUTES bit 0 (TUD.DEBUG): the host can read
// and write the TD's state.
const tdAttributeDebug = 1

// Policy is what an authentic quote must also meet. The zero value refuses
// debug TDs and compares no measurements (the check's detail says so).
type Policy struct {
	// AllowDebugUnsafe accepts TDs with TD_ATTRIBUTES.DEBUG set. Tests only.
	AllowDebugUnsafe bool
	// MRTDs are the accepted MRTD values (TD firmware); empty means any.
	MRTDs [][48]byte
	// RTMRs, when non-nil, are the required RTMR0-2 (firmware, boot loader,
	// kernel). RTMR3 is checked by replaying the agent's event log instead.
	RTMRs *[3][48]byte
	// MinimumTEETCBSVN is the component-wise minimum TEE_TCB_SVN.
	MinimumTEETCBSVN *[16]byte
}

// Verifier checks TDX evidence: the quote's signature and PCK chain to
// Intel's SGX root (authenticity), the collateral (TCB info, QE identity)
// from local files, then the policy, then REPORTDATA against the binding and
// the env key. No network I/O. The zero value trusts Intel's SGX root CA
// (embedded, as in go-tdx-guest), requires collateral (and so fails without
// CollateralDir) and refuses debug TDs. Safe for concurrent use.
type Verifier struct {
	// Roots replaces Intel's SGX root CA; nil means the embedded one (the
	// certificate go-tdx-guest embeds). Verified chains are cached per pool:
	// reuse one pool rather than making one per call.
	Roots *x509.CertPool
	// CollateralDir holds Intel PCS responses (docs/tee.md): tcbinfo.json,
	// tcbinfo-issuer-chain.pem, qeidentity.json, qeidentity-issuer-chain.pem.
	CollateralDir string
	// InsecureSkipCollateral skips the TCB and QE identity checks: the
	// quote is then authentic but may come from an out-of-date, vulnerable
	// platform. Tests and demos only; the check is reported as skipped.
	InsecureSkipCollateral bool
	// Now is the time certificates and collateral are checked at; nil
	// means time.Now.
	Now    func() time.Time
	Policy Policy
	// Cache remembers the PCK chains that verified and the CCELs that
	// replayed, so that the quotes of one TD check them once (see Cache);
	// nil means a cache of DefaultCacheSize entries shared by all
	// Verifiers. NewCache(0) caches nothing.
	Cache *Cache
}

var _ attest.Verifier = Verifier{}

// Backend implements attest.Verifier.
func (Verifier) Backend() string { return Name }

// ParseQuote decodes a raw version-4 TD quote and requires its encoding to
// be canonical: nothing unparsed but zero padding.
func ParseQuote(raw []byte) (_ *pb.QuoteV4, err error) {
	// go-tdx-guest's parser can index out of range on lying size fields
	// (found by FuzzParseQuote): turn that into an error.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("parse TDX quote: malformed quote (%v)", r)
		}
	}()
	q, err := abi.QuoteToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("parse TDX quote: %w", err)
	}
	v4, ok := q.(*pb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("parse TDX quote: unsupported quote type %T", q)
	}
	if err := abi.CheckQuoteV4(v4); err != nil {
		return nil, fmt.Errorf("parse TDX quote: %w", err)
	}
	enc, err := abi.QuoteToAbiBytes(v4)
	if err != nil || !bytes.Equal(enc, raw) {
		return nil, errors.New("parse TDX quote: not a canonical quote encoding")
	}
	// Quote buffers from the kernel may be zero-padded; anything else after
	// the quote is refused.
	if slices.ContainsFunc(v4.GetExtraBytes(), func(b byte) bool { return b != 0 }) {
		return nil, errors.New("parse TDX quote: non-zero bytes after the quote")
	}
	if err := checkChainEncoding(v4); err != nil {
		return nil, fmt.Errorf("parse TDX quote: %w", err)
	}
	return v4, nil
}

// checkChainEncoding requires the PCK chain to be exactly three PEM
// certificates and, as the quoting enclave writes it, at most one NUL.
func checkChainEncoding(q *pb.QuoteV4) error {
	rest := q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
	for i := range 3 {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil || blk.Type != "CERTIFICATE" || len(blk.Headers) != 0 {
			return fmt.Errorf("PCK certificate chain: entry %d is not a PEM certificate", i)
		}
	}
	if len(rest) > 1 || len(rest) == 1 && rest[0] != 0 {
		return fmt.Errorf("PCK certificate chain: %d unexpected trailing bytes", len(rest))
	}
	return nil
}

type parsed struct {
	quote *pb.QuoteV4
	now   time.Time
}

// Verify implements attest.Verifier. It never panics on malformed evidence.
func (v Verifier) Verify(ev *attest.Evidence, opts attest.VerifyOptions) (claims *attest.Claims, checks []attest.Check) {
	defer func() {
		if r := recover(); r != nil {
			claims = nil
			checks = append(checks, attest.Check{Name: "internal", Detail: fmt.Sprintf("verifier failed on malformed evidence: %v", r)})
			for _, n := range checkOrder {
				if !slices.ContainsFunc(checks, func(c attest.Check) bool { return c.Name == n }) {
					checks = append(checks, attest.Check{Name: n, Detail: "not checked: internal failed"})
				}
			}
		}
	}()
	if ev == nil {
		ev = &attest.Evidence{}
	}
	p := parsed{now: time.Now()}
	if v.Now != nil {
		p.now = v.Now()
	}
	run := func(name string, f func() (detail string, skip bool, err error)) {
		if name != CheckQuoteSignature && !checks[0].OK {
			checks = append(checks, attest.Check{Name: name, Detail: "not checked: " + CheckQuoteSignature + " failed"})
			return
		}
		detail, skip, err := f()
		if err != nil {
			checks = append(checks, attest.Check{Name: name, Detail: err.Error()})
			return
		}
		if skip {
			checks = append(checks, attest.Skipped(name, detail))
			return
		}
		checks = append(checks, attest.Check{Name: name, OK: true, Detail: detail})
	}
	noSkip := func(f func() (string, error)) func() (string, bool, error) {
		return func() (string, bool, error) { d, err := f(); return d, false, err }
	}
	run(CheckQuoteSignature, noSkip(func() (string, error) { return v.signature(ev, &p) }))
	run(CheckCollateral, func() (string, bool, error) { return v.collateral(&p) })
	run(CheckTDAttributes, noSkip(func() (string, error) { return v.Policy.tdAttributes(p.quote) }))
	run(CheckPolicy, noSkip(func() (string, error) { return v.Policy.check(p.quote) }))
	run(CheckReportData, noSkip(func() (string, error) { return reportDataCheck(p.quote, opts) }))
	run(CheckEnvKey, noSkip(func() (string, error) { return envKeyCheck(p.quote, opts) }))
	run(CheckCCEL, func() (string, bool, error) { return v.ccelCheck(ev, p.quote) })
	for _, c := range checks {
		if c.Failed() {
			return nil, checks
		}
	}
	// A skipped collateral check leaves the platform's TCB unknown.
	claims = &attest.Claims{Bank: crypto.SHA384, Registers: map[measure.Register][]byte{},
		Hardware: !v.Policy.AllowDebugUnsafe && !v.InsecureSkipCollateral}
	for i, r := range p.quote.GetTdQuoteBody().GetRtmrs() {
		claims.Registers[measure.Register{Kind: measure.RTMR, Index: i}] = bytes.Clone(r)
	}
	return claims, checks
}

func (v Verifier) signature(ev *attest.Evidence, p *parsed) (string, error) {
	raw, err := ev.MustPart(PartQuote)
	if err != nil {
		return "", err
	}
	if p.quote, err = ParseQuote(raw); err != nil {
		return "", err
	}
	if err := v.verifyQuote(p.quote, p.now); err != nil {
		return "", fmt.Errorf("TDX quote does not verify against the Intel SGX root: %w", err)
	}
	roots := "Intel's embedded SGX root CA"
	if v.Roots != nil {
		roots = "the configured root"
	}
	return "quote signed by an attestation key the QE vouches for; PCK chain to " + roots, nil
}

func (v Verifier) collateral(p *parsed) (string, bool, error) {
	if v.InsecureSkipCollateral {
		return "UNSAFE: TCB info and QE identity not checked (InsecureSkipCollateral): the platform may be out of date", true, nil
	}
	if v.CollateralDir == "" {
		return "", false, errors.New("no TDX collateral given: pass the Intel PCS TCB info and QE identity files (no network), or skip this check explicitly with the insecure option")
	}
	err := tdxverify.TdxQuote(p.quote, &tdxverify.Options{
		TrustedRoots:  v.roots(),
		GetCollateral: true,
		Getter:        fileGetter{dir: v.CollateralDir},
		Now:           &tdxverify.TimeSet{PckCertChain: p.now, TcbInfo: p.now, QeIdentity: p.now, PckCrl: p.now, RootCaCrl: p.now},
	})
	if err != nil {
		return "", false, fmt.Errorf("TDX collateral check failed: %w", err)
	}
	return "TCB info and QE identity from " + v.CollateralDir + " are signed by the Intel root, current, and accept this platform", false, nil
}

// fileGetter answers Intel PCS requests from files (collateral saved
// beforehand): the response body and its issuer-chain header.
type fileGetter struct{ dir string }

func (g fileGetter) Get(u string) (map[string][]string, []byte, error) {
	var base, header string
	switch {
	case hasPath(u, "/tcb"):
		base, header = "tcbinfo", pcs.TcbInfoIssuerChainPhrase
	case hasPath(u, "/qe/identity"):
		base, header = "qeidentity", pcs.SgxQeIdentityIssuerChainPhrase
	default:
		return nil, nil, fmt.Errorf("no local collateral for %s (revocation lists are not supported offline)", u)
	}
	body, err := os.ReadFile(filepath.Join(g.dir, base+".json"))
	if err != nil {
		return nil, nil, err
	}
	chain, err := os.ReadFile(filepath.Join(g.dir, base+"-issuer-chain.pem"))
	if err != nil {
		return nil, nil, err
	}
	return map[string][]string{header: {url.QueryEscape(string(chain))}}, body, nil
}

func hasPath(u, suffix string) bool {
	p, err := url.Parse(u)
	return err == nil && len(p.Path) >= len(suffix) && p.Path[len(p.Path)-len(suffix):] == suffix
}

func (pol Policy) tdAttributes(q *pb.QuoteV4) (string, error) {
	attr := q.GetTdQuoteBody().GetTdAttributes()
	if len(attr) != 8 {
		return "", fmt.Errorf("TD_ATTRIBUTES is %d bytes, want 8", len(attr))
	}
	if attr[0]&tdAttributeDebug != 0 {
		if !pol.AllowDebugUnsafe {
			return "", fmt.Errorf("TD_ATTRIBUTES %x: DEBUG is set (the host can read and change the TD)", attr)
		}
		return "UNSAFE: debug TD accepted", nil
	}
	return fmt.Sprintf("TD_ATTRIBUTES %x: debug off", attr), nil
}

func (pol Policy) check(q *pb.QuoteV4) (string, error) {
	body := q.GetTdQuoteBody()
	opts := &validate.Options{}
	if pol.MinimumTEETCBSVN != nil {
		opts.TdQuoteBodyOptions.MinimumTeeTcbSvn = pol.MinimumTEETCBSVN[:]
	}
	if pol.RTMRs != nil {
		for _, r := range pol.RTMRs {
			opts.TdQuoteBodyOptions.Rtmrs = append(opts.TdQuoteBodyOptions.Rtmrs, r[:])
		}
		opts.TdQuoteBodyOptions.Rtmrs = append(opts.TdQuoteBodyOptions.Rtmrs, body.GetRtmrs()[3]) // RTMR3: replayed from the CEL
	}
	for _, m := range pol.MRTDs {
		opts.TdQuoteBodyOptions.AnyMrTd = append(opts.TdQuoteBodyOptions.AnyMrTd, m[:])
	}
	if err := validate.TdxQuote(q, opts); err != nil {
		return "", fmt.Errorf("TDX quote violates the policy: %w", err)
	}
	var notes []string
	if len(pol.MRTDs) == 0 {
		notes = append(notes, "MRTD "+hex.EncodeToString(body.GetMrTd())+" not compared (no reference given)")
	} else {
		notes = append(notes, "MRTD accepted")
	}
	if pol.RTMRs == nil {
		notes = append(notes, "RTMR0-2 not compared (no reference given)")
	} else {
		notes = append(notes, "RTMR0-2 match")
	}
	return fmt.Sprint(notes), nil
}

func reportDataCheck(q *pb.QuoteV4, opts attest.VerifyOptions) (string, error) {
	rd := q.GetTdQuoteBody().GetReportData()
	if !bytes.Equal(rd[:32], opts.Binding[:]) {
		return "", fmt.Errorf("REPORTDATA[0:32] %x is not the expected binding %x (stale or replayed evidence, or evidence for another key or purpose)", rd[:32], opts.Binding[:])
	}
	return "REPORTDATA[0:32] is the expected binding", nil
}

func envKeyCheck(q *pb.QuoteV4, opts attest.VerifyOptions) (string, error) {
	if opts.EnvKey == nil {
		return "", errors.New("no environment key given to compare with (VerifyOptions.EnvKey)")
	}
	kd, err := attest.KeyDigest(opts.EnvKey)
	if err != nil {
		return "", err
	}
	if !bytes.Equal(q.GetTdQuoteBody().GetReportData()[32:], kd[:]) {
		return "", errors.New("REPORTDATA[32:64] is not the SHA-256 of the environment key")
	}
	return "REPORTDATA[32:64] is the SHA-256 of the environment key", nil
}

// ccelCheck replays the firmware's CCEL against RTMR0-2. A replay that
// passed is remembered with the log's and the registers' exact bytes (see
// ccelKey).
func (v Verifier) ccelCheck(ev *attest.Evidence, q *pb.QuoteV4) (string, bool, error) {
	log, ok := ev.Part(PartCCEL)
	if !ok {
		return "no CCEL (the TD firmware published none)", true, nil
	}
	if _, ok := ev.Part(PartCCELTable); !ok {
		return "", false, fmt.Errorf("%w: %s beside %s", attest.ErrMissingPart, PartCCELTable, PartCCEL)
	}
	const replayed = "CCEL replays to the quoted RTMR0-2"
	rtmrs := q.GetTdQuoteBody().GetRtmrs()[:3]
	c := v.cache()
	key := ccelKey(log.Data, rtmrs)
	if cached, hit := c.ccels.Get(key); hit && bytes.Equal(cached, log.Data) {
		c.ccelHits.Add(1)
		return replayed, false, nil
	}
	bank := register.RTMRBank{}
	for i, r := range rtmrs {
		bank.RTMRs = append(bank.RTMRs, register.RTMR{Index: i, Digest: r})
	}
	if _, err := tcg.ParseAndReplay(log.Data, bank.MRs(), tcg.ParseOpts{AllowPadding: true}); err != nil {
		return "", false, fmt.Errorf("CCEL does not replay to the quoted RTMR0-2: %w", err)
	}
	if c.ccels.Enabled() && len(log.Data) <= maxCachedCCEL {
		c.ccels.Add(key, bytes.Clone(log.Data))
	}
	return replayed, false, nil
}
