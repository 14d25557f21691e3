package fleet

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"time"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/verifier"
	"github.com/attestd/attestd/verify"
)

// Request checks: every field a caller sends is bounded before any work.

func (s *Server) checkBundle(what string, b []byte) error {
	switch {
	case len(b) == 0:
		return refuse(ReasonBadRequest, "%s is empty", what)
	case len(b) > s.cfg.MaxBundle:
		return refuse(ReasonTooLarge, "%s is %d bytes, more than the limit of %d (limits.max_bundle)", what, len(b), s.cfg.MaxBundle)
	}
	return nil
}

func checkNonce(what string, n []byte) error {
	if len(n) != nonceSize {
		return refuse(ReasonBadRequest, "%s is %d bytes; the service's nonces are %d", what, len(n), nonceSize)
	}
	return nil
}

func checkBuildID(id string) error {
	if err := attest.CheckBuildID(id); err != nil {
		return refuse(ReasonBadRequest, "build ID %.300q: %v", id, err)
	}
	return nil
}

// checkEnvKey: an environment is named by the hex SHA-256 of its key.
func checkEnvKey(k string) error {
	if b, err := hex.DecodeString(k); err != nil || len(b) != 32 || hex.EncodeToString(b) != k {
		return refuse(ReasonBadRequest, "env key %.100q: want 64 lower-case hex digits (the SHA-256 of the key's PKIX DER)", k)
	}
	return nil
}

// inspect reads a bundle's facts (unauthenticated until verified).
func inspect(bundle []byte) (*verifier.Facts, error) {
	f, err := verifier.Inspect(bundle)
	if err != nil {
		return nil, refuse(ReasonBadRequest, "%v", err)
	}
	return f, nil
}

// step is one verification of the flow: its name (metrics), the purposes
// its bundle must hold, those it must not hold yet, and whether it needs a
// statement the environment signed (the provenance).
type step struct {
	name    string
	need    []attest.Purpose
	notYet  []attest.Purpose
	signed  bool
	mustFor string // what the bundle is for, in refusals
}

var (
	stepAdmit    = step{"admit", []attest.Purpose{attest.PurposeLaunch, attest.PurposeAttest}, []attest.Purpose{attest.PurposeDispatch, attest.PurposeComplete}, false, "an admission"}
	stepDispatch = step{"dispatch", []attest.Purpose{attest.PurposeLaunch, attest.PurposeDispatch}, []attest.Purpose{attest.PurposeComplete}, false, "a dispatch"}
	stepComplete = step{"complete", []attest.Purpose{attest.PurposeLaunch, attest.PurposeDispatch, attest.PurposeComplete}, nil, true, "a completion"}
)

// check refuses a bundle of another step than st: one that lacks the
// step's attestation or already holds a later step's.
func (st step) check(f *verifier.Facts) error {
	for _, p := range st.need {
		if !f.Has(p) {
			return refuse(ReasonWrongStep, "the bundle holds no %s attestation: it is not %s", p, st.mustFor)
		}
	}
	for _, p := range st.notYet {
		if f.Has(p) {
			return refuse(ReasonWrongStep, "the bundle holds a %s attestation: it is past %s", p, st.mustFor)
		}
	}
	if st.signed && f.Signed == 0 {
		return refuse(ReasonWrongStep, "the bundle holds no statement the environment signed for the build (SignStatement: the provenance)")
	}
	return nil
}

// verified evaluates the bundle for step st with e, adding the AK it
// carries when that AK is registered. A bundle that fails is
// VERIFICATION_FAILED with the failed checks.
func (s *Server) verified(ctx context.Context, st step, bundle []byte, f *verifier.Facts, e verifier.Expect) (*verify.Evaluation, error) {
	e.Purposes = st.need
	ak, err := s.registeredAK(ctx, f)
	if err != nil {
		return nil, err
	}
	if ak != nil {
		e.TrustedAKs = append(e.TrustedAKs, ak)
	}
	start := time.Now()
	ev := s.cfg.Verifier.EvaluateExpecting([]verify.Input{{Name: st.name, Raw: bundle}}, e)
	s.m.verify.WithLabelValues(st.name).Observe(time.Since(start).Seconds())
	if !ev.OK {
		return nil, verificationFailed(failedChecks(ev))
	}
	return ev, nil
}

// registeredAK is the bundle's AK if it was registered (nil if not).
func (s *Server) registeredAK(ctx context.Context, f *verifier.Facts) (crypto.PublicKey, error) {
	if f.AKDigest == "" {
		return nil, nil
	}
	ak, err := timed(s, "ak", func() (*AK, error) { return s.store.AK(ctx, f.AKDigest) })
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, storeRefusal(err, ReasonInternal)
	}
	key, err := x509.ParsePKIXPublicKey(ak.PublicKey)
	if err != nil {
		return nil, refuse(ReasonInternal, "registered AK %s: %v", f.AKDigest, err)
	}
	return key, nil
}

// failedChecks names the failed checks of a one-bundle evaluation.
func failedChecks(ev *verify.Evaluation) []string {
	var out []string
	for _, b := range ev.Bundles {
		out = append(out, b.Failed()...)
	}
	for _, c := range ev.Checks {
		if c.Failed() {
			out = append(out, c.Name)
		}
	}
	return out
}

// signResult signs the result statement of a passed evaluation: an SVR
// for an admission or dispatch, a VSA for a completion.
func (s *Server) signResult(ctx context.Context, ev *verify.Evaluation) ([]byte, error) {
	o := s.cfg.Results
	o.Time = s.cfg.Now()
	_, st, err := verify.ResultStatement(ev, ev.Bundles[0], o)
	if err != nil {
		return nil, refuse(ReasonInternal, "result statement: %v", err)
	}
	signed, err := verify.SignResult(ctx, s.cfg.Signer, st)
	if err != nil {
		return nil, refuse(ReasonInternal, "sign result: %v", err)
	}
	return signed, nil
}
