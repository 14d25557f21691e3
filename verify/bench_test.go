package verify_test

import (
	"testing"

	"github.com/attestd/attestd/verify"
)

// Verifying a whole bundle (launch, admission, dispatch, completion, signed
// provenance): every signature, evidence check, log replay and chain check.
func benchmarkBundle(b *testing.B, pick func(*fixtures) *env) {
	e := pick(getFixtures(b))
	raw := e.raw()
	b.SetBytes(int64(len(raw)))
	b.ResetTimer()
	for b.Loop() {
		if rep := verify.BundleReport(raw, e.opts); !rep.OK {
			b.Fatalf("not verified: %v", rep.Failed())
		}
	}
}

func BenchmarkVerifyBundleTPM(b *testing.B) {
	benchmarkBundle(b, func(f *fixtures) *env { return f.tpm })
}
func BenchmarkVerifyBundleSNP(b *testing.B) {
	benchmarkBundle(b, func(f *fixtures) *env { return f.snp })
}
func BenchmarkVerifyBundleTDX(b *testing.B) {
	benchmarkBundle(b, func(f *fixtures) *env { return f.tdx })
}

// FuzzBundleReport: a verifier never panics on input, whatever the bytes.
func FuzzBundleReport(f *testing.F) {
	fx := getFixtures(f)
	for _, e := range []*env{fx.tpm, fx.snp, fx.tdx} {
		f.Add(e.raw())
		f.Add(e.bundle[0])
	}
	opts := fx.tpm.opts
	opts.Verifiers = append(append(append(opts.Verifiers[:0:0], fx.tpm.verifier), fx.snp.verifier), fx.tdx.verifier)
	now := fx.now()
	f.Fuzz(func(t *testing.T, raw []byte) {
		// Evaluate runs BundleReport on raw and then the checks across
		// bundles: one verification per input, not two.
		ev := evaluate(nil, []verify.Input{{Name: "f", Raw: raw}}, opts, now)
		if len(ev.Bundles) != 1 || ev.Bundles[0].Report == nil {
			t.Fatalf("evaluation of one input has %d bundles", len(ev.Bundles))
		}
		_ = ev.Bundles[0].Report.Failed()
		_ = ev.Failed()
	})
}
