//go:build cgo

package tpm

import (
	"context"
	"crypto"
	"crypto/x509"
	"slices"
	"testing"
	"time"

	eventlogdata "github.com/google/go-eventlog/testdata"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/attesttest"
)

// bundleFixture is what a control plane verifies for one environment: n
// attestations of one TPM with a firmware event log and an AK certificate,
// each bound to its own binding.
type bundleFixture struct {
	evs   []*attest.Evidence
	opts  []attest.VerifyOptions
	ak    crypto.PublicKey
	roots *x509.CertPool
}

// newBundleFixture runs the simulator with a real firmware event log
// (go-eventlog's Ubuntu 21.04 log; replayed into PCRs 0-7 unless
// noReplay, which leaves the PCRs as they are at reset) and makes n
// attestations carrying an AK certificate from a test CA valid at certNow.
func newBundleFixture(tb testing.TB, n int, noReplay bool) *bundleFixture {
	tb.Helper()
	be := simFirmwareBackend(tb, !noReplay)
	defer be.Close()
	ca := newTestCA(tb, "AK CA", certNow.AddDate(-1, 0, 0), certNow.AddDate(5, 0, 0))
	f := &bundleFixture{ak: be.AKPublic(), roots: ca.pool()}
	akCert := ca.issue(tb, f.ak, certNow.AddDate(0, -1, 0), certNow.AddDate(1, 0, 0))
	kd, err := attest.KeyDigest(be.Signer().Public())
	if err != nil {
		tb.Fatal(err)
	}
	for i := range n {
		binding := attest.Bind(attest.PurposeAttest, kd, []byte{byte(i)})
		ev, err := be.Evidence(context.Background(), binding)
		if err != nil {
			tb.Fatal(err)
		}
		f.evs = append(f.evs, withAKCert(ev, akCert))
		f.opts = append(f.opts, attest.VerifyOptions{Binding: binding, EnvKey: be.Signer().Public(), AKRoots: f.roots})
	}
	return f
}

// BenchmarkVerify: one attestation at a time. "golden" is the pinned-AK
// simulator evidence (no firmware log, no AK certificate); "bundle" five
// attestations of one TPM with an AK certificate and a firmware log,
// verified in turn by one verifier, as a control plane does per
// environment. "no-cache" is a verifier that caches nothing (as before
// the cache), "first-of-env" a fresh cache per attestation (a miss).
func BenchmarkVerify(b *testing.B) {
	ev, opts := loadGolden(b)
	f := newBundleFixture(b, 5, false)
	now := func() time.Time { return certNow }
	same := func(v Verifier) func() attest.Verifier { return func() attest.Verifier { return v } }
	golden := []*attest.Evidence{ev}
	goldenOpts := []attest.VerifyOptions{opts}
	b.Run("golden/no-cache", func(b *testing.B) {
		attesttest.BenchVerify(b, same(benchVerifier(now, NewCache(0))), golden, goldenOpts)
	})
	b.Run("golden/cache", func(b *testing.B) {
		attesttest.BenchVerify(b, same(benchVerifier(now, NewCache(DefaultCacheSize))), golden, goldenOpts)
	})
	b.Run("bundle/no-cache", func(b *testing.B) {
		attesttest.BenchVerify(b, same(benchVerifier(now, NewCache(0))), f.evs, f.opts)
	})
	b.Run("bundle/first-of-env", func(b *testing.B) {
		attesttest.BenchVerify(b, func() attest.Verifier { return benchVerifier(now, NewCache(DefaultCacheSize)) }, f.evs, f.opts)
	})
	b.Run("bundle/cache", func(b *testing.B) {
		attesttest.BenchVerify(b, same(benchVerifier(now, NewCache(DefaultCacheSize))), f.evs, f.opts)
	})
	b.Run("parallel/cache", func(b *testing.B) {
		attesttest.BenchVerifyParallel(b, benchVerifier(now, NewCache(DefaultCacheSize)), f.evs, f.opts)
	})
}

func benchVerifier(now func() time.Time, c *Cache) Verifier { return Verifier{Now: now, Cache: c} }

// TestCacheFirmwareLog: a firmware log replay is answered from the cache
// only for the same log and the same PCRs 0-7.
func TestCacheFirmwareLog(t *testing.T) {
	f := newBundleFixture(t, 3, false)
	stale := newBundleFixture(t, 1, true) // the same log, PCRs 0-7 never extended
	other := replacePart(f.evs[1], PartEventLog, eventlogdata.Debian10EventLog)
	now := func() time.Time { return certNow }
	for _, tc := range []struct {
		name string
		ev   *attest.Evidence
		opts attest.VerifyOptions
		want []string
		hit  bool
	}{
		{"same log, same PCRs", f.evs[2], f.opts[2], nil, true},
		{"other log, same PCRs", other, f.opts[1], []string{CheckFirmwareLog}, false},
		{"same log, other PCRs", stale.evs[0], stale.opts[0], []string{CheckFirmwareLog}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cache := NewCache(8)
			if claims, checks := (Verifier{Cache: cache, Now: now}).Verify(f.evs[0], f.opts[0]); claims == nil {
				t.Fatalf("good evidence: %+v", checks)
			}
			if n := cache.logs.Len(); n != 1 {
				t.Fatalf("%d replays cached, want 1", n)
			}
			for name, c := range map[string]*Cache{"cached": cache, "uncached": NewCache(0)} {
				hits := c.logHits.Load()
				claims, checks := Verifier{Cache: c, Now: now}.Verify(tc.ev, tc.opts)
				if got := failedChecks(checks); !slices.Equal(got, tc.want) || (claims == nil) != (tc.want != nil) {
					t.Errorf("%s: failed checks %v, want %v; %+v", name, got, tc.want, checks)
				}
				if name == "cached" && (c.logHits.Load() > hits) != tc.hit {
					t.Errorf("replay answered from the cache: %v, want %v", c.logHits.Load() > hits, tc.hit)
				}
			}
		})
	}
}

// TestCacheFirmwareLogDifferential flips bytes all over the firmware log
// (the same length, the same PCRs: the same cache key): a verifier with a
// warm cache and one without must fail the same checks.
func TestCacheFirmwareLogDifferential(t *testing.T) {
	f := newBundleFixture(t, 1, false)
	now := func() time.Time { return certNow }
	warm, cold := Verifier{Cache: NewCache(4), Now: now}, Verifier{Cache: NewCache(0), Now: now}
	if claims, checks := warm.Verify(f.evs[0], f.opts[0]); claims == nil {
		t.Fatalf("good evidence: %+v", checks)
	}
	stride := 97
	if testing.Short() {
		stride = 997
	}
	log := mustPart(t, f.evs[0], PartEventLog)
	failures := 0
	for i := 0; i < len(log); i += stride {
		ev := flipped(t, f.evs[0], PartEventLog, i)
		_, wc := warm.Verify(ev, f.opts[0])
		_, cc := cold.Verify(ev, f.opts[0])
		w, c := failedChecks(wc), failedChecks(cc)
		if !slices.Equal(w, c) {
			t.Errorf("log byte %d: cached verifier fails %v, uncached %v", i, w, c)
		}
		if len(c) > 0 {
			failures++
		}
	}
	if failures == 0 {
		t.Error("no flipped byte made the replay fail")
	}
}
