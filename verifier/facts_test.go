package verifier_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/verifier"
	"github.com/attestd/attestd/verify"
)

func e2eBundle(t testing.TB) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "verify", "testdata", "e2e", "bundle.intoto.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestInspect reads the facts of the real e2e bundle (QEMU + OVMF +
// swtpm): one env key, every purpose, the build, the TPM AK and boot, the
// image's root hash.
func TestInspect(t *testing.T) {
	f, err := verifier.Inspect(e2eBundle(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []attest.Purpose{attest.PurposeLaunch, attest.PurposeAttest, attest.PurposeDispatch, attest.PurposeComplete} {
		if !f.Has(p) {
			t.Errorf("no %s attestation found", p)
		}
	}
	if f.Keys != 1 || len(f.KeyDigest) != 64 || f.BuildID != "e2e-good-1796049675" || len(f.Nonces[attest.PurposeDispatch]) == 0 {
		t.Errorf("facts: %+v", f)
	}
	if !strings.HasPrefix(f.BootID, "tpm:"+f.AKDigest+":") || len(f.AKDigest) != 64 || !strings.HasPrefix(f.Image, "roothash:") {
		t.Errorf("TPM and image facts: boot %q, AK %q, image %q", f.BootID, f.AKDigest, f.Image)
	}
	if _, err := verifier.Inspect([]byte("{}")); err == nil {
		t.Error("Inspect accepted an empty envelope")
	}
}

// TestEvaluateExpecting: per-call expectations join the policy for one
// call only.
func TestEvaluateExpecting(t *testing.T) {
	dir := filepath.Join("..", "verify", "testdata", "e2e")
	p := verify.NewPolicy()
	p.Trust.TPM.PinnedAKs = []string{"ak.pem"}
	if err := p.Seal(); err != nil {
		t.Fatal(err)
	}
	if err := p.ResolveIn(dir); err != nil {
		t.Fatal(err)
	}
	v, err := verifier.New(p, verifier.Config{})
	if err != nil {
		t.Fatal(err)
	}
	in := []verify.Input{{Name: "e2e", Raw: e2eBundle(t)}}
	f, err := verifier.Inspect(in[0].Raw)
	if err != nil {
		t.Fatal(err)
	}
	good := verifier.Expect{BuildID: f.BuildID, Nonces: map[attest.Purpose][]byte{attest.PurposeDispatch: f.Nonces[attest.PurposeDispatch]}}
	if ev := v.EvaluateExpecting(in, good); !ev.OK {
		t.Fatalf("the e2e bundle failed its own expectations: %v", ev.Failed())
	}
	for name, e := range map[string]verifier.Expect{
		"another build":          {BuildID: "another-build"},
		"another dispatch nonce": {Nonces: map[attest.Purpose][]byte{attest.PurposeDispatch: []byte("another nonce")}},
	} {
		if ev := v.EvaluateExpecting(in, e); ev.OK {
			t.Errorf("%s: verified", name)
		}
	}
	if ev := v.Evaluate(in); !ev.OK {
		t.Errorf("the policy alone changed after EvaluateExpecting: %v", ev.Failed())
	}
}

// TestKeepAdmission: only the admission bound to the nonce stays; without
// one bound to it, the bundle is unchanged.
func TestKeepAdmission(t *testing.T) {
	raw := e2eBundle(t)
	f, err := verifier.Inspect(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got := verifier.KeepAdmission(raw, []byte("another nonce")); !bytes.Equal(got, raw) {
		t.Error("a bundle without an admission for the nonce was changed")
	}
	kept := verifier.KeepAdmission(raw, f.Nonces[attest.PurposeAttest])
	g, err := verifier.Inspect(kept)
	if err != nil {
		t.Fatal(err)
	}
	if !g.Has(attest.PurposeAttest) || len(g.Purposes) != len(f.Purposes) {
		t.Errorf("kept purposes %v, want %v", g.Purposes, f.Purposes)
	}
}

// FuzzInspect: Inspect and KeepAdmission never panic on any bundle, and
// KeepAdmission only ever drops lines.
func FuzzInspect(f *testing.F) {
	raw, err := os.ReadFile(filepath.Join("..", "verify", "testdata", "e2e", "bundle.intoto.jsonl"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw, []byte("nonce"))
	f.Add([]byte("{}\n{}\n"), []byte{})
	f.Fuzz(func(t *testing.T, b, nonce []byte) {
		verifier.Inspect(b)
		if kept := verifier.KeepAdmission(b, nonce); len(kept) > len(b)+bytes.Count(b, []byte("\n"))+1 {
			t.Fatalf("KeepAdmission grew the bundle from %d to %d bytes", len(b), len(kept))
		}
	})
}

// BenchmarkInspect: what a control plane pays to read a bundle's facts
// before verifying it (the real e2e bundle), beside BenchmarkEvaluateE2E.
func BenchmarkInspect(b *testing.B) {
	raw := e2eBundle(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := verifier.Inspect(raw); err != nil {
			b.Fatal(err)
		}
	}
}
