package verifier_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/attestd/attestd/verifier"
	"github.com/attestd/attestd/verify"
)

// BenchmarkEvaluateE2E: one real bundle (launch, admission, dispatch,
// completion, provenance; QEMU + OVMF + swtpm) under a policy with pinned
// AK, signed reference values (appraised on each of the 4 attestations) and
// a build ID, on one Verifier as a control plane keeps it.
func BenchmarkEvaluateE2E(b *testing.B) {
	dir := filepath.Join("..", "verify", "testdata", "e2e")
	for _, tc := range []struct {
		name      string
		reference bool
	}{{"reference", true}, {"no-reference", false}} {
		b.Run(tc.name, func(b *testing.B) {
			p := verify.NewPolicy()
			p.Trust.TPM.PinnedAKs = []string{"ak.pem"}
			p.Build.ID = "e2e-good-1796049675"
			if tc.reference {
				p.Reference.File, p.Reference.Keys = "reference.intoto.json", []string{"bake-key.pub.pem"}
			}
			if err := p.Seal(); err != nil {
				b.Fatal(err)
			}
			if err := p.ResolveIn(dir); err != nil {
				b.Fatal(err)
			}
			v, err := verifier.New(p, verifier.Config{})
			if err != nil {
				b.Fatal(err)
			}
			raw, err := os.ReadFile(filepath.Join(dir, "bundle.intoto.jsonl"))
			if err != nil {
				b.Fatal(err)
			}
			in := []verify.Input{{Name: "bundle", Raw: raw}}
			if ev := v.Evaluate(in); !ev.OK {
				b.Fatalf("failed: %v", ev.Failed())
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				v.Evaluate(in)
			}
		})
	}
}
