// Package attesttest is the conformance suite every evidence backend (and
// every fake) must pass: evidence verifies for its binding and for nothing
// else, Extend moves the claimed register as a hash chain, the signer is the
// key the evidence vouches for, and tampering with any part is caught.
//
// Test-support code: it imports "testing" and must never be imported by
// non-test code.
package attesttest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/attestd/attestd/attest"
)

// Options tune the suite to a backend. The zero value suits a backend whose
// evidence carries its own trust anchor only in tests.
type Options struct {
	// Trust returns the trust fields of attest.VerifyOptions (TrustedAKs,
	// AKRoots, InsecureTrustEmbeddedAK) for evidence from b; the suite fills
	// in Binding and EnvKey. nil means InsecureTrustEmbeddedAK.
	Trust func(t *testing.T, b attest.Backend) attest.VerifyOptions
	// MaySkip names checks that may report Skip for good evidence; nil means
	// {"firmware-log"} (test machines have no firmware).
	MaySkip []string
	// BindingCheck is the check that must fail for a different binding;
	// "" means "qualifying-data".
	BindingCheck string
	// Unauthenticated names parts that no check covers, so tampering with
	// them cannot be detected (e.g. an EK certificate shipped only for AK
	// registration). The tamper test leaves them out.
	Unauthenticated []string
}

// Run runs the suite with zero Options.
func Run(t *testing.T, newBackend func(t *testing.T) attest.Backend, v attest.Verifier) {
	RunOptions(t, newBackend, v, Options{})
}

// RunOptions runs the suite. newBackend must return a fresh backend and
// arrange for it to be closed (t.Cleanup). The subtests do not run in
// parallel, so single-instance simulators are fine.
func RunOptions(t *testing.T, newBackend func(t *testing.T) attest.Backend, v attest.Verifier, o Options) {
	if o.MaySkip == nil {
		o.MaySkip = []string{"firmware-log"}
	}
	if o.BindingCheck == "" {
		o.BindingCheck = "qualifying-data"
	}
	s := suite{newBackend: newBackend, v: v, o: o}
	t.Run("Verifies", s.verifies)
	t.Run("OtherBindingFails", s.otherBinding)
	t.Run("ExtendIsHashChain", s.extend)
	t.Run("SignerIsVouchedFor", s.signer)
	t.Run("OtherEnvKeyFails", s.otherEnvKey)
	t.Run("TamperedPartFails", s.tamper)
	t.Run("PartNamesUnique", s.uniqueNames)
}

type suite struct {
	newBackend func(t *testing.T) attest.Backend
	v          attest.Verifier
	o          Options
}

// evidence makes evidence for a fresh nonce and the options that should
// accept it.
func (s suite) evidence(t *testing.T, b attest.Backend) (*attest.Evidence, attest.VerifyOptions) {
	t.Helper()
	pub := b.Signer().Public()
	kd, err := attest.KeyDigest(pub)
	if err != nil {
		t.Fatalf("KeyDigest: %v", err)
	}
	nonce := make([]byte, 32)
	rand.Read(nonce)
	binding := attest.Bind(attest.PurposeAttest, kd, nonce)
	ev, err := b.Evidence(context.Background(), binding)
	if err != nil {
		t.Fatalf("Evidence: %v", err)
	}
	var opts attest.VerifyOptions
	if s.o.Trust != nil {
		opts = s.o.Trust(t, b)
	} else {
		opts.InsecureTrustEmbeddedAK = true
	}
	opts.Binding = binding
	opts.EnvKey = pub
	return ev, opts
}

// mustVerify verifies and fails the test unless every check passed.
func (s suite) mustVerify(t *testing.T, ev *attest.Evidence, opts attest.VerifyOptions) *attest.Claims {
	t.Helper()
	claims, checks := s.v.Verify(ev, opts)
	if len(checks) == 0 {
		t.Fatal("Verify returned no checks")
	}
	for _, c := range checks {
		if c.Failed() || (c.Skip && !slices.Contains(s.o.MaySkip, c.Name)) {
			t.Errorf("check %q: ok=%v skipped=%v: %s", c.Name, c.OK, c.Skip, c.Detail)
		}
	}
	if claims == nil {
		t.Fatalf("Verify returned no claims; checks: %+v", checks)
	}
	return claims
}

// mustFail verifies and fails the test unless claims are nil and a check
// failed (the one named want, if not "").
func (s suite) mustFail(t *testing.T, ev *attest.Evidence, opts attest.VerifyOptions, want string) []attest.Check {
	t.Helper()
	claims, checks := s.v.Verify(ev, opts)
	if claims != nil {
		t.Errorf("Verify returned claims for bad evidence; checks: %+v", checks)
	}
	failed := false
	for _, c := range checks {
		if !c.OK && !c.Skip {
			failed = true
			if c.Detail == "" {
				t.Errorf("failed check %q has no detail", c.Name)
			}
		}
		if !c.OK && c.Name == want {
			want = ""
		}
	}
	if !failed {
		t.Errorf("no check failed; checks: %+v", checks)
	}
	if want != "" {
		t.Errorf("check %q did not fail; checks: %+v", want, checks)
	}
	return checks
}

func (s suite) verifies(t *testing.T) {
	b := s.newBackend(t)
	ev, opts := s.evidence(t, b)
	if ev.Backend != b.Name() || s.v.Backend() != b.Name() {
		t.Errorf("Evidence.Backend %q, Backend.Name %q, Verifier.Backend %q: want all equal", ev.Backend, b.Name(), s.v.Backend())
	}
	claims := s.mustVerify(t, ev, opts)
	val, ok := claims.Registers[b.Register()]
	if !ok {
		t.Fatalf("claims lack the agent register %v: %v", b.Register(), claims.Registers)
	}
	if claims.Bank == 0 || len(val) != claims.Bank.Size() {
		t.Errorf("agent register %v is %d bytes, want %v size", b.Register(), len(val), claims.Bank)
	}
	if cur, err := b.Read(context.Background(), claims.Bank); err != nil {
		t.Errorf("Read(%v): %v", claims.Bank, err)
	} else if !bytes.Equal(cur, val) {
		t.Errorf("Read(%v) = %x, claimed %x", claims.Bank, cur, val)
	}
}

func (s suite) otherBinding(t *testing.T) {
	b := s.newBackend(t)
	ev, opts := s.evidence(t, b)
	opts.Binding[0] ^= 1
	s.mustFail(t, ev, opts, s.o.BindingCheck)
}

func (s suite) extend(t *testing.T) {
	b := s.newBackend(t)
	ctx := context.Background()
	ev, opts := s.evidence(t, b)
	before := s.mustVerify(t, ev, opts)
	banks := b.Banks()
	if !slices.Contains(banks, before.Bank) {
		t.Fatalf("Banks() = %v lacks the claimed bank %v", banks, before.Bank)
	}
	digests := map[crypto.Hash][]byte{}
	for _, h := range banks {
		d := h.New()
		d.Write([]byte("attesttest extend"))
		digests[h] = d.Sum(nil)
	}
	if err := b.Extend(ctx, digests); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	ev, opts = s.evidence(t, b)
	after := s.mustVerify(t, ev, opts)
	r := b.Register()
	d := before.Bank.New()
	d.Write(before.Registers[r])
	d.Write(digests[before.Bank])
	if want := d.Sum(nil); !bytes.Equal(after.Registers[r], want) {
		t.Errorf("after Extend %v = %x, want H(old‖digest) = %x", r, after.Registers[r], want)
	}
	if before.Bank == crypto.SHA256 {
		want := sha256.Sum256(append(slices.Clone(before.Registers[r]), digests[crypto.SHA256]...))
		if !bytes.Equal(after.Registers[r], want[:]) {
			t.Errorf("after Extend %v = %x, want SHA-256(old‖digest) = %x", r, after.Registers[r], want)
		}
	}
	bad := map[crypto.Hash][]byte{banks[0]: {1, 2, 3}}
	if err := b.Extend(ctx, bad); err == nil {
		t.Error("Extend accepted a short digest")
	}
}

func (s suite) signer(t *testing.T) {
	b := s.newBackend(t)
	ev, opts := s.evidence(t, b)
	s.mustVerify(t, ev, opts) // opts.EnvKey is b.Signer().Public()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- signAndCheck(b.Signer(), opts.EnvKey, fmt.Sprintf("message %d", i))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func signAndCheck(s crypto.Signer, pub crypto.PublicKey, msg string) error {
	d := sha256.Sum256([]byte(msg))
	sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		return fmt.Errorf("Sign: %w", err)
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, d[:], sig) {
			return fmt.Errorf("signature over %q does not verify with the vouched-for key", msg)
		}
	case *rsa.PublicKey:
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, d[:], sig); err != nil {
			if err := rsa.VerifyPSS(k, crypto.SHA256, d[:], sig, nil); err != nil {
				return fmt.Errorf("signature over %q does not verify with the vouched-for key", msg)
			}
		}
	default:
		return fmt.Errorf("unsupported environment key type %T", pub)
	}
	return nil
}

func (s suite) otherEnvKey(t *testing.T) {
	b := s.newBackend(t)
	ev, opts := s.evidence(t, b)
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	opts.EnvKey = other.Public()
	s.mustFail(t, ev, opts, "")
}

func (s suite) tamper(t *testing.T) {
	b := s.newBackend(t)
	ev, opts := s.evidence(t, b)
	s.mustVerify(t, ev, opts)
	for i, p := range ev.Parts {
		if slices.Contains(s.o.Unauthenticated, p.Name) {
			continue
		}
		if len(p.Data) == 0 {
			t.Errorf("part %q is empty", p.Name)
			continue
		}
		for _, pos := range []int{0, len(p.Data) / 2, len(p.Data) - 1} {
			t.Run(fmt.Sprintf("%s@%d", p.Name, pos), func(t *testing.T) {
				bad := cloneEvidence(ev)
				bad.Parts[i].Data[pos] ^= 1
				s.mustFail(t, bad, opts, "")
			})
		}
	}
	t.Run("dropped", func(t *testing.T) {
		for i, p := range ev.Parts {
			if slices.Contains(s.o.Unauthenticated, p.Name) {
				continue
			}
			bad := cloneEvidence(ev)
			bad.Parts = slices.Delete(bad.Parts, i, i+1)
			if claims, checks := s.v.Verify(bad, opts); claims != nil && !optionalPart(checks) {
				t.Errorf("evidence without %q verified", p.Name)
			}
		}
	})
}

// optionalPart reports whether a part's absence was reported as a skip (an
// optional part such as a firmware log).
func optionalPart(checks []attest.Check) bool {
	return slices.ContainsFunc(checks, func(c attest.Check) bool { return c.Skip })
}

func cloneEvidence(ev *attest.Evidence) *attest.Evidence {
	out := &attest.Evidence{Backend: ev.Backend}
	for _, p := range ev.Parts {
		p.Data = bytes.Clone(p.Data)
		out.Parts = append(out.Parts, p)
	}
	return out
}

func (s suite) uniqueNames(t *testing.T) {
	b := s.newBackend(t)
	ev, _ := s.evidence(t, b)
	seen := map[string]bool{}
	for _, p := range ev.Parts {
		if p.Name == "" || p.MediaType == "" {
			t.Errorf("part %q has media type %q: both must be set", p.Name, p.MediaType)
		}
		if seen[p.Name] {
			t.Errorf("part name %q repeats", p.Name)
		}
		seen[p.Name] = true
	}
}
