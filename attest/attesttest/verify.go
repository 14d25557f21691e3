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
