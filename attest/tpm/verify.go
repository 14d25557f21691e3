package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/internal/vcache"
	"github.com/attestd/attestd/measure"
)

// Check names, in the order Verify reports them.
const (
	CheckEnvKeyCertified = "env-key-certified"
	CheckAKTrusted       = "ak-trusted"
	CheckQuoteSignature  = "quote-signature"
	CheckQualifyingData  = "qualifying-data"
	CheckPCRDigest       = "pcr-digest"
	CheckFirmwareLog     = "firmware-log"
)

// firmwarePCRs are the registers the firmware event log is replayed against.
var firmwarePCRs = []int{0, 1, 2, 3, 4, 5, 6, 7}

// Verifier checks the authenticity of TPM evidence. It needs no TPM and
// reads no policy beyond attest.VerifyOptions. The zero value is ready to
// use, and safe for concurrent use.
type Verifier struct {
	// Now is the time AK certificates are checked at; nil means time.Now.
	Now func() time.Time
	// Hardware declares that the AKs trusted through opts live in hardware
	// TPMs, not in a vTPM the host controls: the claims then say Hardware
	// (never for an AK taken from the evidence itself).
	Hardware bool
	// Cache remembers what is the same in every attestation of one TPM
	// (its AK and env key, the AK's certification of the env key, the AK
	// certificate's chain, the firmware log's replay), so that each
	// attestation after the first checks little but its quote (see Cache);
	// nil means a cache of DefaultCacheSize entries of each kind shared by
	// all Verifiers. NewCache(0) caches nothing.
	Cache *Cache
}

var _ attest.Verifier = Verifier{}

// Backend implements attest.Verifier.
func (Verifier) Backend() string { return "tpm" }

// parsed holds what the checks share.
type parsed struct {
	akRaw   []byte
	ak      tpm2.Public
	akKey   crypto.PublicKey
	akErr   error
	quote   *tpm2.AttestationData
	pcrIdx  []int
	pcrVals map[int][]byte
}

// Verify implements attest.Verifier. It never panics: a panic in a parsing
// library is turned into failed checks.
func (v Verifier) Verify(ev *attest.Evidence, opts attest.VerifyOptions) (claims *attest.Claims, checks []attest.Check) {
	defer func() {
		if r := recover(); r != nil {
			claims = nil
			checks = append(checks, attest.Check{Name: "internal", Detail: fmt.Sprintf("verifier failed on malformed evidence: %v", r)})
			checks = failRemaining(checks)
		}
	}()
	if ev == nil {
		ev = &attest.Evidence{}
	}
	var p parsed
	c := v.cache()
	p.akRaw, p.ak, p.akKey, p.akErr = c.parseAK(ev)

	run := func(name string, prereqs []string, f func() (string, error)) {
		for _, pre := range prereqs {
			if !passed(checks, pre) {
				checks = append(checks, attest.Check{Name: name, Detail: "not checked: " + pre + " failed"})
				return
			}
		}
		detail, err := f()
		if err != nil {
			checks = append(checks, attest.Check{Name: name, Detail: err.Error()})
			return
		}
		checks = append(checks, attest.Check{Name: name, OK: true, Detail: detail})
	}
	var skipLog bool
	run(CheckEnvKeyCertified, nil, func() (string, error) { return v.envKeyCertified(ev, &p, opts) })
	run(CheckAKTrusted, nil, func() (string, error) { return v.akTrusted(ev, &p, opts) })
	run(CheckQuoteSignature, nil, func() (string, error) { return v.quoteSignature(ev, &p) })
	run(CheckQualifyingData, []string{CheckQuoteSignature}, func() (string, error) { return qualifyingData(&p, opts) })
	run(CheckPCRDigest, []string{CheckQuoteSignature}, func() (string, error) { return pcrDigest(ev, &p) })
	run(CheckFirmwareLog, []string{CheckPCRDigest}, func() (string, error) {
		d, skip, err := c.firmwareLog(ev, &p)
		skipLog = skip
		return d, err
	})
	if last := &checks[len(checks)-1]; skipLog && last.OK {
		*last = attest.Skipped(last.Name, last.Detail)
	}
	for _, c := range checks {
		if c.Failed() {
			return nil, checks
		}
	}
	claims = &attest.Claims{Bank: crypto.SHA256, Registers: map[measure.Register][]byte{},
		Hardware: v.Hardware && !opts.InsecureTrustEmbeddedAK}
	if log, ok := ev.Part(PartEventLog); ok && !skipLog {
		claims.FirmwareLog = log.Data
	}
	for _, i := range p.pcrIdx {
		claims.Registers[measure.Register{Kind: measure.PCR, Index: i}] = bytes.Clone(p.pcrVals[i])
	}
	return claims, checks
}

var checkOrder = []string{CheckEnvKeyCertified, CheckAKTrusted, CheckQuoteSignature, CheckQualifyingData, CheckPCRDigest, CheckFirmwareLog}

// failRemaining reports every check not yet run as failed (after a panic).
func failRemaining(checks []attest.Check) []attest.Check {
	for _, name := range checkOrder {
		if !slices.ContainsFunc(checks, func(c attest.Check) bool { return c.Name == name }) {
			checks = append(checks, attest.Check{Name: name, Detail: "not checked: internal failed"})
		}
	}
	return checks
}

func passed(checks []attest.Check, name string) bool {
	for _, c := range checks {
		if c.Name == name {
			return c.OK
		}
	}
	return false
}

func parseAK(ev *attest.Evidence) ([]byte, tpm2.Public, crypto.PublicKey, error) {
	return parseAKWith(ev, parsePublic)
}

func (c *Cache) parseAK(ev *attest.Evidence) ([]byte, tpm2.Public, crypto.PublicKey, error) {
	return parseAKWith(ev, c.parsePublic)
}

func parseAKWith(ev *attest.Evidence, parse func([]byte) (tpm2.Public, crypto.PublicKey, error)) ([]byte, tpm2.Public, crypto.PublicKey, error) {
	raw, err := ev.MustPart(PartAKPublic)
	if err != nil {
		return nil, tpm2.Public{}, nil, err
	}
	pub, key, err := parse(raw)
	if err != nil {
		return nil, tpm2.Public{}, nil, fmt.Errorf("parse %s: %w", PartAKPublic, err)
	}
	if pub.Attributes&(tpm2.FlagSign|tpm2.FlagRestricted|tpm2.FlagFixedTPM) != tpm2.FlagSign|tpm2.FlagRestricted|tpm2.FlagFixedTPM {
		return nil, tpm2.Public{}, nil, fmt.Errorf("%s is not a restricted, fixedTPM signing key (attributes %#x)", PartAKPublic, uint32(pub.Attributes))
	}
	return raw, pub, key, nil
}

// parsePublic decodes a TPMT_PUBLIC with no trailing bytes.
func parsePublic(raw []byte) (tpm2.Public, crypto.PublicKey, error) {
	pub, err := tpm2.DecodePublic(raw)
	if err != nil {
		return tpm2.Public{}, nil, err
	}
	if enc, err := pub.Encode(); err != nil || !bytes.Equal(enc, raw) {
		return tpm2.Public{}, nil, errors.New("not a canonical TPMT_PUBLIC (trailing or non-canonical bytes)")
	}
	key, err := pub.Key()
	if err != nil {
		return tpm2.Public{}, nil, err
	}
	return pub, key, nil
}

// nameOf is the TPM name (nameAlg ‖ H(TPMT_PUBLIC)) of a public area in its
// exact wire bytes.
func nameOf(pub tpm2.Public, raw []byte) ([]byte, error) {
	h, err := pub.NameAlg.Hash()
	if err != nil {
		return nil, fmt.Errorf("name algorithm: %w", err)
	}
	d := h.New()
	d.Write(raw)
	return append(binary.BigEndian.AppendUint16(nil, uint16(pub.NameAlg)), d.Sum(nil)...), nil
}

// signedAttest parses a TPMS_ATTEST of the wanted type and checks its
// TPMT_SIGNATURE against the AK.
func signedAttest(ev *attest.Evidence, p *parsed, infoName, sigName string, typ tpmutil.Tag) (*tpm2.AttestationData, error) {
	if p.akErr != nil {
		return nil, fmt.Errorf("not checked: %v", p.akErr)
	}
	info, err := ev.MustPart(infoName)
	if err != nil {
		return nil, err
	}
	sigRaw, err := ev.MustPart(sigName)
	if err != nil {
		return nil, err
	}
	ad, err := tpm2.DecodeAttestationData(info)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", infoName, err)
	}
	if ad.Type != typ {
		return nil, fmt.Errorf("%s has TPMS_ATTEST type %#x, want %#x", infoName, uint16(ad.Type), uint16(typ))
	}
	buf := bytes.NewBuffer(sigRaw)
	sig, err := tpm2.DecodeSignature(buf)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", sigName, err)
	}
	if buf.Len() != 0 {
		return nil, fmt.Errorf("parse %s: %d trailing bytes", sigName, buf.Len())
	}
	if err := checkSignature(p.akKey, info, sig); err != nil {
		return nil, fmt.Errorf("%s does not verify with the AK in %s: %w", sigName, PartAKPublic, err)
	}
	// The signature proves the key; the signer's qualified name in the
	// signed TPMS_ATTEST proves the rest of the AK's public area (its
	// attributes, name algorithm and scheme), which the key alone does not.
	want, err := ownerPrimaryQualifiedName(p.ak, p.akRaw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", PartAKPublic, err)
	}
	if got := nameBytes(ad.QualifiedSigner); !bytes.Equal(got, want) {
		return nil, fmt.Errorf("%s names its signer %x, but the AK in %s, a primary key of the owner hierarchy, is %x: the AK's public area is not the one that signed", infoName, got, PartAKPublic, want)
	}
	return ad, nil
}

// ownerPrimaryQualifiedName is the TPM qualified name of a primary key of
// the owner hierarchy (how attestd makes the AK): nameAlg ‖
// H(TPM_RH_OWNER ‖ name), TPM 2.0 Part 1, 16 "Names".
func ownerPrimaryQualifiedName(pub tpm2.Public, raw []byte) ([]byte, error) {
	name, err := nameOf(pub, raw)
	if err != nil {
		return nil, err
	}
	h, _ := pub.NameAlg.Hash() // nameOf checked it
	d := h.New()
	d.Write(binary.BigEndian.AppendUint32(nil, uint32(tpm2.HandleOwner)))
	d.Write(name)
	return append(binary.BigEndian.AppendUint16(nil, uint16(pub.NameAlg)), d.Sum(nil)...), nil
}

// nameBytes is a TPM2B_NAME's content: a handle, or nameAlg ‖ digest.
func nameBytes(n tpm2.Name) []byte {
	switch {
	case n.Digest != nil:
		return append(binary.BigEndian.AppendUint16(nil, uint16(n.Digest.Alg)), n.Digest.Value...)
	case n.Handle != nil:
		return binary.BigEndian.AppendUint32(nil, uint32(*n.Handle))
	}
	return nil
}

func checkSignature(pub crypto.PublicKey, msg []byte, sig *tpm2.Signature) error {
	var hashAlg tpm2.Algorithm
	switch {
	case sig.ECC != nil:
		hashAlg = sig.ECC.HashAlg
	case sig.RSA != nil:
		hashAlg = sig.RSA.HashAlg
	default:
		return errors.New("empty signature")
	}
	h, err := hashAlg.Hash()
	if err != nil || (h != crypto.SHA256 && h != crypto.SHA384 && h != crypto.SHA512) {
		return fmt.Errorf("unsupported signature hash %v", hashAlg)
	}
	d := h.New()
	d.Write(msg)
	digest := d.Sum(nil)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if sig.Alg != tpm2.AlgECDSA || sig.ECC == nil {
			return fmt.Errorf("signature algorithm %v for an ECC key", sig.Alg)
		}
		if !ecdsa.Verify(k, digest, sig.ECC.R, sig.ECC.S) {
			return errors.New("bad ECDSA signature")
		}
	case *rsa.PublicKey:
		if sig.RSA == nil {
			return fmt.Errorf("signature algorithm %v for an RSA key", sig.Alg)
		}
		switch sig.Alg {
		case tpm2.AlgRSASSA:
			err = rsa.VerifyPKCS1v15(k, h, digest, sig.RSA.Signature)
		case tpm2.AlgRSAPSS:
			err = rsa.VerifyPSS(k, h, digest, sig.RSA.Signature, nil)
		default:
			err = fmt.Errorf("signature algorithm %v for an RSA key", sig.Alg)
		}
		return err
	default:
		return fmt.Errorf("unsupported key type %T", pub)
	}
	return nil
}

type equaler interface{ Equal(crypto.PublicKey) bool }

func keysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(equaler)
	return ok && b != nil && e.Equal(b)
}

// envKeyNeeded are the attributes of a key that cannot leave the TPM and
// whose private part the TPM generated.
const envKeyNeeded = tpm2.FlagSign | tpm2.FlagFixedTPM | tpm2.FlagFixedParent | tpm2.FlagSensitiveDataOrigin

func (v Verifier) envKeyCertified(ev *attest.Evidence, p *parsed, opts attest.VerifyOptions) (string, error) {
	c := v.cache()
	ad, err := c.certification(ev, p)
	if err != nil {
		return "", err
	}
	raw, err := ev.MustPart(PartEnvKeyPublic)
	if err != nil {
		return "", err
	}
	pub, key, err := c.parsePublic(raw)
	if err != nil {
		return "", fmt.Errorf("parse %s: %w", PartEnvKeyPublic, err)
	}
	name, err := nameOf(pub, raw)
	if err != nil {
		return "", fmt.Errorf("%s: %w", PartEnvKeyPublic, err)
	}
	ci := ad.AttestedCertifyInfo
	if ci == nil || ci.Name.Digest == nil {
		return "", fmt.Errorf("%s certifies no object name", PartCertifyInfo)
	}
	got := binary.BigEndian.AppendUint16(nil, uint16(ci.Name.Digest.Alg))
	got = append(got, ci.Name.Digest.Value...)
	if !bytes.Equal(got, name) {
		return "", fmt.Errorf("%s certifies a different key than %s (name %x, want %x)", PartCertifyInfo, PartEnvKeyPublic, got, name)
	}
	if pub.Attributes&envKeyNeeded != envKeyNeeded {
		return "", fmt.Errorf("%s is not a TPM-bound signing key: attributes %#x lack sign/fixedTPM/fixedParent/sensitiveDataOrigin", PartEnvKeyPublic, uint32(pub.Attributes))
	}
	if opts.EnvKey == nil {
		return "", errors.New("no environment key given to compare with (VerifyOptions.EnvKey)")
	}
	if !keysEqual(key, opts.EnvKey) {
		return "", fmt.Errorf("the certified key in %s is not the environment key that signed the envelope", PartEnvKeyPublic)
	}
	return "environment key is TPM-resident (fixedTPM, fixedParent, sensitiveDataOrigin) and certified by the AK", nil
}

func (v Verifier) akTrusted(ev *attest.Evidence, p *parsed, opts attest.VerifyOptions) (string, error) {
	if p.akErr != nil {
		return "", p.akErr
	}
	for i, k := range opts.TrustedAKs {
		if keysEqual(p.akKey, k) {
			return fmt.Sprintf("AK matches pinned key %d of %d", i+1, len(opts.TrustedAKs)), nil
		}
	}
	var certErr error
	if opts.AKRoots != nil {
		certErr = v.akCertChains(ev, p, opts.AKRoots)
		if certErr == nil {
			return "AK certificate chains to a trusted root and certifies the AK", nil
		}
	}
	if opts.InsecureTrustEmbeddedAK {
		return "UNSAFE: trusting the AK shipped in the evidence", nil
	}
	msg := "AK is not trusted: it matches none of the pinned AKs"
	if certErr != nil {
		msg += "; " + certErr.Error()
	} else if opts.AKRoots == nil {
		msg += " and no AK roots were given"
	}
	return "", errors.New(msg + " (pin the AK or give roots for its certificate)")
}

func (v Verifier) akCertChains(ev *attest.Evidence, p *parsed, roots *x509.CertPool) error {
	der, err := ev.MustPart(PartAKCert)
	if err != nil {
		return err
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	cert, err := v.cache().akCert(der, roots, now())
	if err != nil {
		return err
	}
	if !keysEqual(p.akKey, cert.PublicKey) {
		return fmt.Errorf("%s certifies a different key than %s", PartAKCert, PartAKPublic)
	}
	return nil
}

func (v Verifier) quoteSignature(ev *attest.Evidence, p *parsed) (string, error) {
	ad, err := signedAttest(ev, p, PartQuoteInfo, PartQuoteSignature, tpm2.TagAttestQuote)
	if err != nil {
		return "", err
	}
	if ad.AttestedQuoteInfo == nil {
		return "", fmt.Errorf("%s holds no quote", PartQuoteInfo)
	}
	p.quote = ad
	return "quote is signed by the AK", nil
}

func qualifyingData(p *parsed, opts attest.VerifyOptions) (string, error) {
	if !bytes.Equal(p.quote.ExtraData, opts.Binding[:]) {
		return "", fmt.Errorf("quote's qualifying data %x is not the expected binding %x (stale or replayed evidence, or evidence for another key or purpose)", []byte(p.quote.ExtraData), opts.Binding[:])
	}
	return "quote's qualifying data is the expected binding", nil
}

func pcrDigest(ev *attest.Evidence, p *parsed) (string, error) {
	raw, err := ev.MustPart(PartPCRs)
	if err != nil {
		return "", err
	}
	idx, vals, err := decodePCRs(raw)
	if err != nil {
		return "", err
	}
	qi := p.quote.AttestedQuoteInfo
	if qi.PCRSelection.Hash != tpm2.AlgSHA256 {
		return "", fmt.Errorf("quote selects bank %v, want SHA-256", qi.PCRSelection.Hash)
	}
	sel := slices.Clone(qi.PCRSelection.PCRs)
	slices.Sort(sel)
	sel = slices.Compact(sel)
	if !slices.Equal(sel, idx) {
		return "", fmt.Errorf("%s lists PCRs %v but the quote covers %v", PartPCRs, idx, sel)
	}
	d := crypto.SHA256.New()
	for _, i := range sel {
		d.Write(vals[i])
	}
	if !bytes.Equal(d.Sum(nil), qi.PCRDigest) {
		return "", fmt.Errorf("PCR values in %s do not match the quote's PCR digest", PartPCRs)
	}
	p.pcrIdx, p.pcrVals = idx, vals
	return fmt.Sprintf("SHA-256 PCRs %v match the quote", idx), nil
}

// firmwareLog replays the firmware event log against the quoted PCRs 0-7.
// A replay that passed is remembered with the log's and the PCRs' exact
// bytes (the replay is a function of them alone): under the SHA-256 of the
// PCRs and the log's length, holding a copy of the log to compare with,
// which costs far less than hashing it. Logs over maxCachedLog bytes are
// replayed every time.
func (c *Cache) firmwareLog(ev *attest.Evidence, p *parsed) (detail string, skip bool, err error) {
	raw, ok := ev.Part(PartEventLog)
	if !ok {
		return "no firmware event log (machine has none)", true, nil
	}
	if len(raw.Data) == 0 {
		return "", false, fmt.Errorf("%s is empty", PartEventLog)
	}
	const replayed = "firmware event log replays to the quoted PCRs 0-7"
	h := vcache.NewKey("attestd tpm firmware log v1")
	h.Uint(uint64(len(raw.Data)))
	for _, i := range firmwarePCRs {
		val, ok := p.pcrVals[i]
		if !ok {
			return "", false, fmt.Errorf("cannot replay the firmware log: PCR %d is not quoted", i)
		}
		h.Bytes(val)
	}
	key := h.Sum()
	if log, ok := c.logs.Get(key); ok && bytes.Equal(log, raw.Data) {
		c.hits.Add(1)
		c.logHits.Add(1)
		return replayed, false, nil
	}
	mrs := make([]register.MR, 0, len(firmwarePCRs))
	for _, i := range firmwarePCRs {
		mrs = append(mrs, register.PCR{Index: i, Digest: p.pcrVals[i], DigestAlg: crypto.SHA256})
	}
	if _, err := tcg.ParseAndReplay(raw.Data, mrs, tcg.ParseOpts{}); err != nil {
		return "", false, fmt.Errorf("firmware event log does not replay to the quoted PCRs 0-7: %w", err)
	}
	if c.logs.Enabled() && len(raw.Data) <= maxCachedLog {
		c.logs.Add(key, bytes.Clone(raw.Data))
	}
	return replayed, false, nil
}
