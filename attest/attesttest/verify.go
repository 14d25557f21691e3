package attesttest

import (
	"fmt"
	"sync"
	"testing"

	"github.com/attestd/attestd/attest"
)

// Job is one verification of a concurrency test: a verifier, evidence and
// options, and whether it must verify.
type Job struct {
	V    attest.Verifier
	Ev   *attest.Evidence
	Opts attest.VerifyOptions
	OK   bool
}

// VerifyConcurrently runs jobs from 8 goroutines, each going rounds times
// through them from its own offset, and fails t for any job whose outcome
// differs from its OK: verifiers sharing a cache must not mix up their
// answers (run with -race).
func VerifyConcurrently(t *testing.T, jobs []Job, rounds int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 8 {
		wg.Go(func() {
			for i := range rounds * len(jobs) {
				j := jobs[(g+i)%len(jobs)]
				if claims, _ := j.V.Verify(j.Ev, j.Opts); (claims != nil) != j.OK {
					errs <- fmt.Errorf("goroutine %d, job %d: verified %v, want %v", g, (g+i)%len(jobs), claims != nil, j.OK)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// BenchVerify verifies evs in turn with the verifier v returns (the same
// one, or a fresh one per call to measure a cache miss); each must verify.
func BenchVerify(b *testing.B, v func() attest.Verifier, evs []*attest.Evidence, opts []attest.VerifyOptions) {
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if claims, checks := v().Verify(evs[i%len(evs)], opts[i%len(opts)]); claims == nil {
			b.Fatalf("not verified: %+v", checks)
		}
		i++
	}
}

// BenchVerifyParallel is BenchVerify on one verifier from GOMAXPROCS
// goroutines.
func BenchVerifyParallel(b *testing.B, v attest.Verifier, evs []*attest.Evidence, opts []attest.VerifyOptions) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if claims, checks := v.Verify(evs[i%len(evs)], opts[i%len(opts)]); claims == nil {
				b.Error(checks)
				return
			}
			i++
		}
	})
}

// Evidences returns n pieces of evidence from be, each bound to its own
// admission nonce, with the options that verify them (Binding and EnvKey;
// the caller adds trust anchors where its verifier needs them).
func Evidences(tb testing.TB, be attest.Backend, n int) ([]*attest.Evidence, []attest.VerifyOptions) {
	tb.Helper()
	kd, err := attest.KeyDigest(be.Signer().Public())
	if err != nil {
		tb.Fatal(err)
	}
	var evs []*attest.Evidence
	var opts []attest.VerifyOptions
	for i := range n {
		binding := attest.Bind(attest.PurposeAttest, kd, []byte{byte(i)})
		ev, err := be.Evidence(tb.Context(), binding)
		if err != nil {
			tb.Fatal(err)
		}
		evs, opts = append(evs, ev), append(opts, attest.VerifyOptions{Binding: binding, EnvKey: be.Signer().Public()})
	}
	return evs, opts
}

// BenchmarkCachedVerifier runs the benchmarks of a verifier with a cache
// over evs, one machine's evidence verified in turn: "single/no-cache" a
// verifier that caches nothing (newV(0)); "single/first-of-chain" a fresh
// cache per verification (newV(1): the cost of a miss); "bundle/cache" one
// verifier with the default cache, as a control plane keeps it;
// "parallel/cache" that verifier from every core.
func BenchmarkCachedVerifier(b *testing.B, evs []*attest.Evidence, opts []attest.VerifyOptions, newV func(cacheSize int) attest.Verifier, defaultSize int) {
	b.Run("single/no-cache", func(b *testing.B) {
		v := newV(0)
		BenchVerify(b, func() attest.Verifier { return v }, evs, opts)
	})
	b.Run("single/first-of-chain", func(b *testing.B) {
		BenchVerify(b, func() attest.Verifier { return newV(1) }, evs, opts)
	})
	b.Run("bundle/cache", func(b *testing.B) {
		v := newV(defaultSize)
		BenchVerify(b, func() attest.Verifier { return v }, evs, opts)
	})
	b.Run("parallel/cache", func(b *testing.B) {
		BenchVerifyParallel(b, newV(defaultSize), evs, opts)
	})
}
