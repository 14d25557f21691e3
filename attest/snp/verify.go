package snp

import (
	"bytes"
	"crypto"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/validate"
	"github.com/google/go-sev-guest/verify/trust"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/measure"
)

// Check names, in the order Verify reports them.
const (
	CheckReportSignature = "snp-report-signature"
	CheckPolicy          = "snp-policy"
	CheckReportData      = "snp-report-data"
	CheckEnvKey          = "snp-env-key"
)

var checkOrder = []string{CheckReportSignature, CheckPolicy, CheckReportData, CheckEnvKey}

// Policy is what an authentic report must also meet. The zero value
// refuses debug guests and checks nothing else; a verifier that cares which
// image runs sets Measurements.
type Policy struct {
	// AllowDebugUnsafe accepts guests whose policy allows debugging (the
	// hypervisor can read and write their memory). Tests and demos only.
	AllowDebugUnsafe bool
	// MinimumTCB is the component-wise minimum reported TCB.
	MinimumTCB kds.TCBParts
	// Measurements are the accepted launch measurements; empty means any
	// (the check's detail says so).
	Measurements [][48]byte
	// HostData, when set, is the required HOST_DATA.
	HostData *[32]byte
}

// Verifier checks SEV-SNP evidence: the report's signature chains to AMD's
// roots (authenticity), then the policy, then REPORT_DATA against the
// binding and the env key. No network I/O: a VCEK must come with the
// evidence or in VCEK. The zero value trusts AMD's roots embedded in
// go-sev-guest and refuses debug guests. Safe for concurrent use.
type Verifier struct {
	// Roots are the trusted ARK/ASK certificates by product line ("Milan",
	// "Genoa", "Turin"); nil means AMD's roots embedded in go-sev-guest.
	Roots map[string][]*trust.AMDRootCerts
	// Product names the processor for version-2 reports, which do not;
	// later report versions carry it.
	Product *spb.SevProduct
	// VCEK is a DER VCEK used when the evidence ships none.
	VCEK []byte
	// Now is the time certificates are checked at; nil means time.Now.
	Now    func() time.Time
	Policy Policy
	// Cache remembers the certificate chains that verified, so that the
	// reports of one machine check its chain once (see Cache); nil means a
	// cache of DefaultCacheSize chains shared by all Verifiers.
	// NewCache(0) caches nothing.
	Cache *Cache
}

var _ attest.Verifier = Verifier{}

// Backend implements attest.Verifier.
func (Verifier) Backend() string { return Name }

// ParseReport decodes a raw attestation report, which must be exactly
// abi.ReportSize bytes.
func ParseReport(raw []byte) (_ *spb.Report, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("parse SEV-SNP report: malformed report (%v)", r)
		}
	}()
	if len(raw) != abi.ReportSize {
		return nil, fmt.Errorf("SEV-SNP report is %d bytes, want %d", len(raw), abi.ReportSize)
	}
	r, err := abi.ReportToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("parse SEV-SNP report: %w", err)
	}
	return r, nil
}

type parsed struct {
	att      *spb.Attestation
	register []byte // software register, nil for Source evidence
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
	var p parsed
	run := func(name string, f func() (string, error)) {
		if len(checks) > 0 && name != CheckReportSignature && !checks[0].OK {
			checks = append(checks, attest.Check{Name: name, Detail: "not checked: " + CheckReportSignature + " failed"})
			return
		}
		detail, err := f()
		if err != nil {
			checks = append(checks, attest.Check{Name: name, Detail: err.Error()})
			return
		}
		checks = append(checks, attest.Check{Name: name, OK: true, Detail: detail})
	}
	run(CheckReportSignature, func() (string, error) { return v.signature(ev, &p) })
	run(CheckPolicy, func() (string, error) { return v.Policy.check(p.att) })
	run(CheckReportData, func() (string, error) { return reportDataCheck(p.att, opts) })
	run(CheckEnvKey, func() (string, error) { return envKeyCheck(p, opts) })
	for _, c := range checks {
		if !c.OK {
			return nil, checks
		}
	}
	claims = &attest.Claims{Registers: map[measure.Register][]byte{}, Hardware: !v.Policy.AllowDebugUnsafe}
	if p.register != nil {
		claims.Bank = crypto.SHA384
		claims.Registers[softwareRegister] = slices.Clone(p.register)
	}
	return claims, checks
}

func (v Verifier) signature(ev *attest.Evidence, p *parsed) (string, error) {
	raw, err := ev.MustPart(PartReport)
	if err != nil {
		return "", err
	}
	report, err := ParseReport(raw)
	if err != nil {
		return "", err
	}
	info, err := abi.ParseSignerInfo(report.GetSignerInfo())
	if err != nil {
		return "", fmt.Errorf("parse SEV-SNP report: %w", err)
	}
	chain := &spb.CertificateChain{}
	source := "evidence"
	switch info.SigningKey {
	case abi.VcekReportSigner:
		der, ok := ev.Part(PartVCEK)
		if _, vlek := ev.Part(PartVLEK); vlek {
			return "", fmt.Errorf("report is VCEK-signed but the evidence ships %s", PartVLEK)
		}
		chain.VcekCert = der.Data
		if !ok {
			chain.VcekCert, source = v.VCEK, "local file"
		}
		if len(chain.VcekCert) == 0 {
			return "", fmt.Errorf("%w: %s, and no VCEK was given to the verifier (no network: fetch it from AMD's KDS beforehand)", attest.ErrMissingPart, PartVCEK)
		}
	case abi.VlekReportSigner:
		der, err := ev.MustPart(PartVLEK)
		if err != nil {
			return "", err
		}
		chain.VlekCert = der
	default:
		return "", fmt.Errorf("report signed by key %v: want VCEK or VLEK", info.SigningKey)
	}
	p.att = &spb.Attestation{Report: report, CertificateChain: chain}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	if err := v.verifyReport(p.att, info.SigningKey, now()); err != nil {
		return "", fmt.Errorf("SEV-SNP report does not verify against the AMD roots: %w", err)
	}
	roots := "AMD's embedded roots"
	if v.Roots != nil {
		roots = "the configured roots"
	}
	if reg, ok := ev.Part(PartRegister); ok {
		if len(reg.Data) != sha512.Size384 {
			return "", fmt.Errorf("%s is %d bytes, want %d", PartRegister, len(reg.Data), sha512.Size384)
		}
		p.register = reg.Data
	}
	return fmt.Sprintf("report signed by the %v (from %s), chained to %s", info.SigningKey, source, roots), nil
}

func (pol Policy) check(att *spb.Attestation) (string, error) {
	opts := &validate.Options{
		GuestPolicy: abi.SnpPolicy{Debug: pol.AllowDebugUnsafe, SMT: true, MigrateMA: false},
		MinimumTCB:  pol.MinimumTCB,
		// The committed and current TCB may differ only upward.
		PermitProvisionalFirmware: true,
	}
	if pol.HostData != nil {
		opts.HostData = pol.HostData[:]
	}
	if err := validate.SnpAttestation(att, opts); err != nil {
		return "", fmt.Errorf("SEV-SNP report violates the policy: %w", err)
	}
	detail := "guest policy: debug off"
	if pol.AllowDebugUnsafe {
		detail = "UNSAFE: debug guests allowed"
	}
	m := att.GetReport().GetMeasurement()
	switch {
	case len(pol.Measurements) == 0:
		detail += "; launch measurement " + hex.EncodeToString(m) + " not compared (no reference given)"
	case !slices.ContainsFunc(pol.Measurements, func(r [48]byte) bool { return bytes.Equal(r[:], m) }):
		return "", fmt.Errorf("launch measurement %x is none of the %d accepted", m, len(pol.Measurements))
	default:
		detail += "; launch measurement is an accepted one"
	}
	return detail, nil
}

func reportDataCheck(att *spb.Attestation, opts attest.VerifyOptions) (string, error) {
	rd := att.GetReport().GetReportData()
	if !bytes.Equal(rd[:32], opts.Binding[:]) {
		return "", fmt.Errorf("REPORT_DATA[0:32] %x is not the expected binding %x (stale or replayed evidence, or evidence for another key or purpose)", rd[:32], opts.Binding[:])
	}
	return "REPORT_DATA[0:32] is the expected binding", nil
}

func envKeyCheck(p parsed, opts attest.VerifyOptions) (string, error) {
	if opts.EnvKey == nil {
		return "", errors.New("no environment key given to compare with (VerifyOptions.EnvKey)")
	}
	kd, err := attest.KeyDigest(opts.EnvKey)
	if err != nil {
		return "", err
	}
	rd := p.att.GetReport().GetReportData()
	want := reportData(attest.Binding{}, kd, p.register)
	if !bytes.Equal(rd[32:], want[32:]) {
		if p.register != nil {
			return "", fmt.Errorf("REPORT_DATA[32:64] does not commit to the environment key and %s", PartRegister)
		}
		return "", errors.New("REPORT_DATA[32:64] is not the SHA-256 of the environment key")
	}
	if p.register != nil {
		return "REPORT_DATA[32:64] commits to the environment key and the software register (not hardware-anchored: reported by attestd)", nil
	}
	return "REPORT_DATA[32:64] is the SHA-256 of the environment key", nil
}
