package verifier

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/scai"
)

// ErrBundle: the bundle cannot be read as attestd attestations.
var ErrBundle = errors.New("unreadable bundle")

// Facts are what a bundle's attestd attestations say about the environment
// and its build. Inspect reads them without checking anything: they are
// authenticated only once an evaluation of the same bundle passed (a
// control plane looks up what to expect with them, then trusts them after
// verification).
type Facts struct {
	// KeyDigest is the hex SHA-256 of the env key (PKIX DER) of the first
	// attestation; Keys counts the distinct env keys of all of them.
	KeyDigest string
	Keys      int
	// Purposes are the purposes present, in bundle order, each once.
	Purposes []attest.Purpose
	// Nonces are the nonces the attestations are bound to, by purpose (the
	// last of a purpose wins; batched admissions carry none).
	Nonces map[attest.Purpose][]byte
	// BuildID is the build ID of the dispatch, else of the completion.
	BuildID string
	// Signed counts the statements of other predicates the environment
	// signed for the build (e.g. SLSA provenance).
	Signed int
	// Backends are the evidence backends of the launch (or first)
	// attestation, in order.
	Backends []string
	// AK is the TPM attestation key (PKIX DER) and AKDigest its hex SHA-256;
	// empty without TPM evidence.
	AK       []byte
	AKDigest string
	// BootID names the boot the first attestation was quoted in: for a TPM
	// the AK digest and the quote's reset count (a new boot resets the TPM
	// and counts up); empty for evidence with no such counter.
	BootID string
	// Image is the image identity the launch measured: "roothash:<hex>"
	// (dm-verity root hash on the kernel command line), else
	// "sha256:<hex>" of the image metadata file; empty when none.
	Image string
}

// Has reports whether an attestation of purpose p is in the bundle.
func (f *Facts) Has(p attest.Purpose) bool { return slices.Contains(f.Purposes, p) }

// Inspect reads the facts of a bundle (.intoto.jsonl, as attestctl bundle
// and attestd's GetBundle give it). Statements of other predicates (signed
// provenance) are passed over. Errors wrap ErrBundle.
func Inspect(raw []byte) (*Facts, error) {
	b, err := scai.DecodeBundle(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBundle, err)
	}
	f := &Facts{Nonces: map[attest.Purpose][]byte{}}
	keys := map[string]bool{}
	var first *scai.Attestation
	for _, env := range b.Envelopes {
		op, err := scai.Open(env)
		if errors.Is(err, scai.ErrPredicateType) {
			f.Signed++
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBundle, err)
		}
		a := op.Attestation
		kd, err := attest.KeyDigest(a.EnvKey)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBundle, err)
		}
		keys[hex.EncodeToString(kd[:])] = true
		if first == nil || a.Purpose == attest.PurposeLaunch && first.Purpose != attest.PurposeLaunch {
			first, f.KeyDigest = a, hex.EncodeToString(kd[:])
		}
		f.add(a)
		if a.Purpose == attest.PurposeLaunch {
			f.Image = imageOf(b.Logs, a.Log)
		}
	}
	if first == nil {
		return nil, fmt.Errorf("%w: no attestd attestation in it", ErrBundle)
	}
	f.Keys = len(keys)
	if err := f.evidence(first); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBundle, err)
	}
	return f, nil
}

func (f *Facts) add(a *scai.Attestation) {
	if !f.Has(a.Purpose) {
		f.Purposes = append(f.Purposes, a.Purpose)
	}
	if a.Nonce != nil {
		f.Nonces[a.Purpose] = a.Nonce
	}
	if a.Build != nil && (a.Purpose == attest.PurposeDispatch || f.BuildID == "") {
		f.BuildID = a.Build.ID
	}
}

// evidence fills the backends, the AK and the boot from the first
// attestation's evidence.
func (f *Facts) evidence(a *scai.Attestation) error {
	for _, ev := range a.Evidence {
		f.Backends = append(f.Backends, ev.Backend)
		if ev.Backend != "tpm" {
			continue
		}
		ak, err := tpm.AKPublic(ev)
		if err != nil {
			return err
		}
		der, err := x509.MarshalPKIXPublicKey(ak)
		if err != nil {
			return err
		}
		d := sha256.Sum256(der)
		f.AK, f.AKDigest = der, hex.EncodeToString(d[:])
		resets, err := resetCount(ev)
		if err != nil {
			return err
		}
		f.BootID = "tpm:" + f.AKDigest + ":" + strconv.FormatUint(uint64(resets), 10)
	}
	return nil
}

// resetCount is the reset count of a TPM quote's clock info (obfuscated per
// AK outside the endorsement hierarchy, so constant for one AK and boot).
func resetCount(ev *attest.Evidence) (uint32, error) {
	raw, err := ev.MustPart(tpm.PartQuoteInfo)
	if err != nil {
		return 0, err
	}
	q, err := tpm2.DecodeAttestationData(raw)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", tpm.PartQuoteInfo, err)
	}
	return q.ClockInfo.ResetCount, nil
}

// imageOf is the image identity in the launch's event log prefix, or "".
func imageOf(logs [][]byte, ref scai.LogRef) string {
	cel, ok := scai.FindLog(logs, ref)
	if !ok {
		return ""
	}
	recs, err := measure.ParseCEL(cel)
	if err != nil {
		return ""
	}
	for _, r := range recs {
		if r.Type != measure.EventImage {
			continue
		}
		var m measure.ImageMeasurement
		if json.Unmarshal(r.Data, &m) != nil {
			return ""
		}
		switch {
		case m.RootHash != "":
			return "roothash:" + m.RootHash
		case m.MetadataSHA256 != "":
			return "sha256:" + m.MetadataSHA256
		}
	}
	return ""
}

// KeepAdmission returns the bundle without the admission attestations bound
// to a nonce other than nonce, if one is bound to nonce: an environment
// asked to attest more than once (a retried admission) holds each admission
// in its bundle, and only the one answering this challenge is to be
// verified against it. Every other line is kept as it was. A bundle with no
// admission bound to nonce, or that is one envelope, is returned as is (its
// verification names the nonce that does not match). Batched admissions
// (bound through an inclusion proof) are kept.
func KeepAdmission(raw, nonce []byte) []byte {
	lines := bytes.Split(raw, []byte("\n"))
	out := make([][]byte, 0, len(lines))
	found := false
	for _, l := range lines {
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		if !json.Valid(l) {
			return raw // not JSON Lines
		}
		n, ok := admissionNonce(l)
		if ok && n != nil && !bytes.Equal(n, nonce) {
			continue
		}
		found = found || ok && n != nil
		out = append(out, l)
	}
	if !found {
		return raw
	}
	return scai.EncodeBundle(out...)
}

// admissionNonce is the nonce of line if it is an admission attestation (nil
// for a batched one).
func admissionNonce(line []byte) ([]byte, bool) {
	env, err := scai.ParseEnvelope(line)
	if err != nil || env.PayloadType != scai.PayloadType {
		return nil, false
	}
	op, err := scai.Open(env)
	if err != nil || op.Attestation.Purpose != attest.PurposeAttest {
		return nil, false
	}
	return op.Attestation.Nonce, true
}
