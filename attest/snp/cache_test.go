package snp_test

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"slices"
	"testing"
	"time"

	sevtest "github.com/google/go-sev-guest/testing"
	"github.com/google/go-sev-guest/verify/trust"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/attesttest"
	"github.com/attestd/attestd/attest/snp"
	"github.com/attestd/attestd/attest/snp/snptest"
)

// untrustedChain is an ARK → ASK → VCEK chain from other ARK and ASK keys
// that certifies the same VCEK key as snptest's chain: a report the fake
// device signs verifies with its VCEK, but the chain is not the trusted one.
func untrustedChain(t testing.TB) *sevtest.AmdSigner {
	t.Helper()
	ark, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ask, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b := &sevtest.AmdSignerBuilder{
		Keys:            &sevtest.AmdKeys{Ark: ark, Ask: ask, Asvk: ask, Vcek: sevtest.DefaultVcek()},
		ProductName:     snptest.ProductLine,
		CSPID:           "go-sev-guest",
		ArkCreationTime: created, AskCreationTime: created, AsvkCreationTime: created, VcekCreationTime: created,
	}
	s, err := b.TestOnlyCertChain()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func rootsOf(s *sevtest.AmdSigner) map[string][]*trust.AMDRootCerts {
	return map[string][]*trust.AMDRootCerts{snptest.ProductLine: {{
		ProductLine:  snptest.ProductLine,
		ProductCerts: &trust.ProductCerts{Ark: s.Ark, Ask: s.Ask},
	}}}
}

func withPart(ev *attest.Evidence, name string, data []byte) *attest.Evidence {
	out := clone(ev)
	for i := range out.Parts {
		if out.Parts[i].Name == name {
			out.Parts[i].Data = data
		}
	}
	return out
}

// failedChecks is the names of the failed checks, in order.
func failedChecks(checks []attest.Check) []string {
	var out []string
	for _, c := range checks {
		if c.Failed() {
			out = append(out, c.Name)
		}
	}
	return out
}

// TestCacheNeverChangesVerdict runs each case on a verifier whose cache
// already holds the good chain and on one without a cache: both must give
// the expected verdict, and the cached one must have answered from the
// cache where the chain is the cached one and the time is within it.
func TestCacheNeverChangesVerdict(t *testing.T) {
	d := newDevice(t)
	b := newBackend(t, d)
	good, opts := evidence(t, b)
	vcek, err := trust.ParseCert(d.VCEK())
	if err != nil {
		t.Fatal(err)
	}
	other := untrustedChain(t)
	if !vcek.PublicKey.(*ecdsa.PublicKey).Equal(other.Vcek.PublicKey) {
		t.Fatal("the untrusted chain certifies another VCEK key")
	}
	at := func(t time.Time) func(*snp.Verifier) {
		return func(v *snp.Verifier) { v.Now = func() time.Time { return t } }
	}
	for _, tc := range []struct {
		name   string
		ev     *attest.Evidence
		config func(*snp.Verifier)
		want   []string // failed checks; nil: verified
		hit    bool     // answered from the cache
	}{
		{name: "same report", ev: good, hit: true},
		{name: "same chain, other report", ev: func() *attest.Evidence { e, _ := evidence(t, b); return e }(), want: []string{snp.CheckReportData}, hit: true},
		{name: "same chain, tampered measurement", ev: func() *attest.Evidence {
			e := clone(good)
			e.Parts[0].Data[0x90] ^= 1
			return e
		}(), want: []string{snp.CheckReportSignature, snp.CheckPolicy, snp.CheckReportData, snp.CheckEnvKey}, hit: true},
		{name: "same chain, tampered signature", ev: func() *attest.Evidence {
			e := clone(good)
			e.Parts[0].Data[0x2A0] ^= 1
			return e
		}(), want: []string{snp.CheckReportSignature, snp.CheckPolicy, snp.CheckReportData, snp.CheckEnvKey}, hit: true},
		{name: "after the VCEK's NotAfter", ev: good, config: at(vcek.NotAfter.Add(time.Second)),
			want: []string{snp.CheckReportSignature, snp.CheckPolicy, snp.CheckReportData, snp.CheckEnvKey}},
		{name: "at the VCEK's NotAfter", ev: good, config: at(vcek.NotAfter), hit: true},
		{name: "before the ARK's NotBefore", ev: good, config: at(created.Add(-time.Second)),
			want: []string{snp.CheckReportSignature, snp.CheckPolicy, snp.CheckReportData, snp.CheckEnvKey}},
		{name: "untrusted chain, same VCEK key", ev: withPart(good, snp.PartVCEK, other.Vcek.Raw),
			want: []string{snp.CheckReportSignature, snp.CheckPolicy, snp.CheckReportData, snp.CheckEnvKey}},
		{name: "same chain, other roots", ev: good, config: func(v *snp.Verifier) { v.Roots = rootsOf(other) },
			want: []string{snp.CheckReportSignature, snp.CheckPolicy, snp.CheckReportData, snp.CheckEnvKey}},
		{name: "same chain, AMD's roots", ev: good, config: func(v *snp.Verifier) { v.Roots = nil },
			want: []string{snp.CheckReportSignature, snp.CheckPolicy, snp.CheckReportData, snp.CheckEnvKey}},
		{name: "same chain, other product line", ev: good, config: func(v *snp.Verifier) {
			v.Roots = map[string][]*trust.AMDRootCerts{"Genoa": v.Roots[snptest.ProductLine]}
		}, want: []string{snp.CheckReportSignature, snp.CheckPolicy, snp.CheckReportData, snp.CheckEnvKey}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cache := snp.NewCache(8)
			warm := d.Verifier(now)
			warm.Cache = cache
			if claims, checks := warm.Verify(good, opts); claims == nil {
				t.Fatalf("good evidence: %+v", checks)
			}
			for name, c := range map[string]*snp.Cache{"cached": cache, "uncached": snp.NewCache(0)} {
				v := d.Verifier(now)
				v.Cache = c
				if tc.config != nil {
					tc.config(&v)
				}
				hits, _, _ := snp.CacheStats(c)
				claims, checks := v.Verify(tc.ev, opts)
				if got := failedChecks(checks); !slices.Equal(got, tc.want) || (claims == nil) != (tc.want != nil) {
					t.Errorf("%s: failed checks %v (claims %v), want %v; %+v", name, got, claims != nil, tc.want, checks)
				}
				if after, _, _ := snp.CacheStats(c); name == "cached" && (after > hits) != tc.hit {
					t.Errorf("answered from the cache: %v, want %v", after > hits, tc.hit)
				}
			}
		})
	}
}

// TestCacheDifferential flips bytes all over a report and its VCEK: a
// verifier with a warm cache and one without must fail the same checks.
func TestCacheDifferential(t *testing.T) {
	d := newDevice(t)
	good, opts := evidence(t, newBackend(t, d))
	warm, cold := d.Verifier(now), d.Verifier(now)
	warm.Cache, cold.Cache = snp.NewCache(4), snp.NewCache(0)
	if claims, checks := warm.Verify(good, opts); claims == nil {
		t.Fatalf("good evidence: %+v", checks)
	}
	stride := 3
	if testing.Short() {
		stride = 17
	}
	for part := range 2 {
		for i := 0; i < len(good.Parts[part].Data); i += stride {
			ev := clone(good)
			ev.Parts[part].Data[i] ^= 0x41
			_, wc := warm.Verify(ev, opts)
			_, cc := cold.Verify(ev, opts)
			if w, c := failedChecks(wc), failedChecks(cc); !slices.Equal(w, c) {
				t.Errorf("%s byte %d: cached verifier fails %v, uncached %v", good.Parts[part].Name, i, w, c)
			}
		}
	}
	if hits, _, _ := snp.CacheStats(warm.Cache); hits == 0 {
		t.Error("the cache never answered")
	}
}

func TestCacheBounded(t *testing.T) {
	var evs []*attest.Evidence
	var vs []snp.Verifier
	var opts []attest.VerifyOptions
	cache := snp.NewCache(2)
	for i := range 3 {
		d, err := snptest.New(created.Add(time.Duration(i) * time.Hour)) // another chain each
		if err != nil {
			t.Fatal(err)
		}
		ev, o := evidence(t, newBackend(t, d))
		v := d.Verifier(now)
		v.Cache = cache
		evs, vs, opts = append(evs, ev), append(vs, v), append(opts, o)
	}
	for i := range 2 {
		for j := range evs {
			if claims, checks := vs[j].Verify(evs[j], opts[j]); claims == nil {
				t.Fatalf("round %d, chain %d: %+v", i, j, checks)
			}
		}
	}
	if hits, misses, size := snp.CacheStats(cache); size != 2 || hits+misses != 6 {
		t.Errorf("cache of 2 after 3 chains twice: %d chains, %d hits, %d misses", size, hits, misses)
	}
	off := snp.NewCache(0)
	vs[0].Cache = off
	for range 2 {
		vs[0].Verify(evs[0], opts[0])
	}
	if hits, misses, size := snp.CacheStats(off); size != 0 || hits != 0 || misses != 2 {
		t.Errorf("NewCache(0): %d chains, %d hits, %d misses", size, hits, misses)
	}
}

// TestCacheConcurrent shares one small cache between goroutines verifying
// good and bad evidence of several chains (run with -race).
func TestCacheConcurrent(t *testing.T) {
	other := untrustedChain(t)
	var jobs []attesttest.Job
	cache := snp.NewCache(2)
	for i := range 2 {
		d, err := snptest.New(created.Add(time.Duration(i) * time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		ev, o := evidence(t, newBackend(t, d))
		v := d.Verifier(now)
		v.Cache = cache
		late := v
		late.Now = func() time.Time { return created.AddDate(8, 0, 0) } // VCEK expired
		bad := clone(ev)
		bad.Parts[0].Data[0x90] ^= 1
		jobs = append(jobs, attesttest.Job{V: v, Ev: ev, Opts: o, OK: true}, attesttest.Job{V: late, Ev: ev, Opts: o},
			attesttest.Job{V: v, Ev: bad, Opts: o}, attesttest.Job{V: v, Ev: withPart(ev, snp.PartVCEK, other.Vcek.Raw), Opts: o})
	}
	attesttest.VerifyConcurrently(t, jobs, 3)
}

// BenchmarkVerify: "single" is one report on a verifier that caches
// nothing (every report checks its chain, as before the cache);
// "first-of-chain" one report on a fresh cache (the cost of a miss);
// "bundle" a bundle's five reports of one machine on one verifier, in turn.
func BenchmarkVerify(b *testing.B) {
	d := newDevice(b)
	evs, opts := attesttest.Evidences(b, newBackend(b, d), 5)
	attesttest.BenchmarkCachedVerifier(b, evs, opts, func(size int) attest.Verifier {
		v := d.Verifier(now)
		v.Cache = snp.NewCache(size)
		return v
	}, snp.DefaultCacheSize)
}
