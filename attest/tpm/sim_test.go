//go:build cgo

package tpm

import (
	"context"
	"crypto"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm-tools/simulator"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/attesttest"
)

var update = flag.Bool("update", false, "rewrite testdata/evidence.json from the simulator")

// newSimBackend runs the backend on the go-tpm-tools simulator (one global
// instance: tests using it must not run in parallel).
func newSimBackend(t testing.TB, cfg Config) *Backend {
	t.Helper()
	sim, err := simulator.Get()
	if err != nil {
		t.Fatalf("start TPM simulator: %v", err)
	}
	if cfg.FirmwareLogPath == "" {
		cfg.FirmwareLogPath = filepath.Join(t.TempDir(), "none")
	}
	b, err := New(sim, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// pinAK trusts exactly the backend's AK.
func pinAK(t *testing.T, b attest.Backend) attest.VerifyOptions {
	return attest.VerifyOptions{TrustedAKs: []crypto.PublicKey{b.(*Backend).AKPublic()}}
}

func TestConformanceSimulator(t *testing.T) {
	attesttest.RunOptions(t, func(t *testing.T) attest.Backend { return newSimBackend(t, Config{}) },
		Verifier{}, attesttest.Options{Trust: pinAK})
}

func TestConformanceSimulatorInsecureEmbeddedAK(t *testing.T) {
	attesttest.Run(t, func(t *testing.T) attest.Backend { return newSimBackend(t, Config{PCR: 14, BootPCRs: []int{0, 7}}) }, Verifier{})
}

func TestSimulatorEvidenceShape(t *testing.T) {
	b := newSimBackend(t, Config{})
	if got := b.Register(); got != (attest.Register{Kind: attest.PCR, Index: 13}) {
		t.Errorf("Register() = %v, want PCR13", got)
	}
	if got := b.Banks(); len(got) == 0 || got[0] != crypto.SHA1 {
		t.Logf("Banks() = %v", got)
	}
	kd, err := attest.KeyDigest(b.Signer().Public())
	if err != nil {
		t.Fatal(err)
	}
	binding := attest.Bind(attest.PurposeAttest, kd, []byte("nonce"))
	ev, err := b.Evidence(context.Background(), binding)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		PartAKPublic: MediaTypeTPMTPublic, PartEnvKeyPublic: MediaTypeTPMTPublic,
		PartCertifyInfo: MediaTypeTPMSAttest, PartCertifySignature: MediaTypeTPMTSignature,
		PartQuoteInfo: MediaTypeTPMSAttest, PartQuoteSignature: MediaTypeTPMTSignature,
		PartPCRs: MediaTypePCRs,
	}
	for _, p := range ev.Parts {
		if want[p.Name] != p.MediaType {
			t.Errorf("part %q has media type %q, want %q", p.Name, p.MediaType, want[p.Name])
		}
		delete(want, p.Name)
	}
	for name := range want {
		t.Errorf("missing part %q", name)
	}
	_, checks := Verifier{}.Verify(ev, attest.VerifyOptions{Binding: binding, EnvKey: b.Signer().Public()})
	if c := checks[1]; c.Name != CheckAKTrusted || c.OK {
		t.Errorf("zero VerifyOptions trust: check %+v, want %s failed", c, CheckAKTrusted)
	}
	_, checks = Verifier{}.Verify(ev, attest.VerifyOptions{Binding: binding, EnvKey: b.Signer().Public(), InsecureTrustEmbeddedAK: true})
	if c := checks[1]; !c.OK || c.Detail != "UNSAFE: trusting the AK shipped in the evidence" {
		t.Errorf("InsecureTrustEmbeddedAK: check %+v", c)
	}
	if *update {
		writeGolden(t, ev, binding, b)
	}
}

// goldenEvidence is testdata/evidence.json: simulator evidence and what
// verifies it, the seed of the fuzz corpus.
type goldenEvidence struct {
	Evidence *attest.Evidence
	Binding  attest.Binding
	EnvKey   []byte // PKIX DER
	AK       []byte // PKIX DER
}

func writeGolden(t *testing.T, ev *attest.Evidence, binding attest.Binding, b *Backend) {
	env, err := marshalPKIX(b.Signer().Public())
	if err != nil {
		t.Fatal(err)
	}
	ak, err := marshalPKIX(b.AKPublic())
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.MarshalIndent(goldenEvidence{ev, binding, env, ak}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("testdata/evidence.json", data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSignerAfterClose(t *testing.T) {
	sim, err := simulator.Get()
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(sim, Config{FirmwareLogPath: filepath.Join(t.TempDir(), "none")})
	if err != nil {
		t.Fatal(err)
	}
	s := b.Signer()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	d := make([]byte, 32)
	if _, err := s.Sign(nil, d, crypto.SHA256); err == nil {
		t.Error("Sign after Close succeeded")
	}
	if _, err := b.Evidence(context.Background(), attest.Binding{}); err == nil {
		t.Error("Evidence after Close succeeded")
	}
}

func BenchmarkEvidenceSimulator(b *testing.B) {
	be := newSimBackend(b, Config{})
	benchEvidence(b, be)
}

func benchEvidence(b *testing.B, be *Backend) {
	ctx := context.Background()
	var binding attest.Binding
	b.ResetTimer()
	for b.Loop() {
		if _, err := be.Evidence(ctx, binding); err != nil {
			b.Fatal(err)
		}
	}
}
