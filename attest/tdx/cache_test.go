package tdx_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/attesttest"
	"github.com/attestd/attestd/attest/tdx"
	"github.com/attestd/attestd/attest/tdx/tdxtest"
)

// allFailed is what a failed quote signature fails: itself and every check
// after it ("not checked").
var allFailed = []string{tdx.CheckQuoteSignature, tdx.CheckCollateral, tdx.CheckTDAttributes, tdx.CheckPolicy, tdx.CheckReportData, tdx.CheckEnvKey, tdx.CheckCCEL}

func failedChecks(checks []attest.Check) []string {
	var out []string
	for _, c := range checks {
		if c.Failed() {
			out = append(out, c.Name)
		}
	}
	return out
}

func cloneEv(ev *attest.Evidence) *attest.Evidence {
	out := &attest.Evidence{Backend: ev.Backend}
	for _, p := range ev.Parts {
		p.Data = bytes.Clone(p.Data)
		out.Parts = append(out.Parts, p)
	}
	return out
}

// withQuote returns ev with its quote changed by f and re-encoded.
func withQuote(t testing.TB, ev *attest.Evidence, f func(q *pb.QuoteV4)) *attest.Evidence {
	t.Helper()
	out := cloneEv(ev)
	q, err := tdx.ParseQuote(out.Parts[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	f(q)
	if out.Parts[0].Data, err = abi.QuoteToAbiBytes(q); err != nil {
		t.Fatal(err)
	}
	return out
}

// signRaw is ECDSA P-256 over SHA-256(msg) as r ‖ s, as quotes carry it.
func signRaw(t testing.TB, k *ecdsa.PrivateKey, msg []byte) []byte {
	t.Helper()
	d := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, k, d[:])
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out
}

// pckOf is the PCK certificate in ev's quote.
func pckOf(t testing.TB, ev *attest.Evidence) *x509.Certificate {
	t.Helper()
	q, err := tdx.ParseQuote(ev.Parts[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain())
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCacheNeverChangesVerdict runs each case on a verifier whose cache
// already holds the case's good chain and on one without a cache: both
// must give the expected verdict, and the cached one must answer from the
// cache exactly when the chain and roots are the cached ones and the time
// is within the chain's validity.
func TestCacheNeverChangesVerdict(t *testing.T) {
	d := newDevice(t)
	b := newBackend(t, d)
	good, opts := evidence(t, b)
	other, _ := evidence(t, b)
	oldRoots := d.Roots()
	// The same PCK and attestation keys under a new root, with a PCK
	// certificate that expires after a year.
	pckExpiry := created.AddDate(1, 0, 0)
	if err := d.Reissue(created, pckExpiry); err != nil {
		t.Fatal(err)
	}
	reissued, opts2 := evidence(t, b)
	newRoots := d.Roots()
	if !pckOf(t, good).PublicKey.(*ecdsa.PublicKey).Equal(pckOf(t, reissued).PublicKey) {
		t.Fatal("the reissued chain certifies another PCK key")
	}
	otherAK, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		roots *x509.CertPool // trusted, and the roots of the cached chain
		warm  *attest.Evidence
		ev    *attest.Evidence
		opts  attest.VerifyOptions
		at    time.Time
		want  []string // failed checks; nil: verified
		hit   bool     // answered from the cache
	}{
		{name: "same quote", ev: good, hit: true},
		{name: "same chain, other quote", ev: other, want: []string{tdx.CheckReportData}, hit: true},
		{name: "same chain, tampered MRTD", ev: withQuote(t, good, func(q *pb.QuoteV4) { q.TdQuoteBody.MrTd[0] ^= 1 }), want: allFailed, hit: true},
		{name: "same chain, tampered header", ev: withQuote(t, good, func(q *pb.QuoteV4) { q.Header.QeSvn[0] ^= 1 }), want: allFailed, hit: true},
		{name: "same chain, tampered quote signature", ev: withQuote(t, good, func(q *pb.QuoteV4) { q.SignedData.Signature[5] ^= 1 }), want: allFailed, hit: true},
		{name: "same chain, tampered QE report", ev: withQuote(t, good, func(q *pb.QuoteV4) {
			q.SignedData.CertificationData.QeReportCertificationData.QeReport.IsvSvn ^= 1
		}), want: allFailed, hit: true},
		{name: "same chain, tampered QE report signature", ev: withQuote(t, good, func(q *pb.QuoteV4) {
			q.SignedData.CertificationData.QeReportCertificationData.QeReportSignature[7] ^= 1
		}), want: allFailed, hit: true},
		{name: "same chain, tampered QE auth data", ev: withQuote(t, good, func(q *pb.QuoteV4) {
			q.SignedData.CertificationData.QeReportCertificationData.QeAuthData.Data[0] ^= 1
		}), want: allFailed, hit: true},
		{name: "same chain, another attestation key signs the quote", ev: withQuote(t, good, func(q *pb.QuoteV4) {
			hdr, _ := abi.HeaderToAbiBytes(q.Header)
			body, _ := abi.TdQuoteBodyToAbiBytes(q.TdQuoteBody)
			ak := make([]byte, 64)
			otherAK.X.FillBytes(ak[:32])
			otherAK.Y.FillBytes(ak[32:])
			q.SignedData.EcdsaAttestationKey = ak
			q.SignedData.Signature = signRaw(t, otherAK, append(hdr, body...))
		}), want: allFailed, hit: true},
		{name: "untrusted chain, same PCK key", ev: reissued, opts: opts2, want: allFailed},
		{name: "same chain, other roots", roots: newRoots, ev: good, want: allFailed},
		{name: "same chain, Intel's root", roots: nil, ev: good, want: allFailed},
		{name: "at the PCK's NotAfter", roots: newRoots, warm: reissued, ev: reissued, opts: opts2, at: pckExpiry, hit: true},
		{name: "after the PCK's NotAfter", roots: newRoots, warm: reissued, ev: reissued, opts: opts2, at: pckExpiry.Add(time.Second), want: allFailed},
		{name: "before the root's NotBefore", ev: good, at: created.Add(-time.Second), want: allFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			roots, warmEv, warmOpts := oldRoots, good, opts
			if tc.warm != nil {
				roots, warmEv, warmOpts = newRoots, tc.warm, opts2
			}
			cache := tdx.NewCache(8)
			warm := tdx.Verifier{Roots: roots, InsecureSkipCollateral: true, Cache: cache, Now: func() time.Time { return now }}
			if claims, checks := warm.Verify(warmEv, warmOpts); claims == nil {
				t.Fatalf("good evidence: %+v", checks)
			}
			if tc.roots != nil || tc.name == "same chain, Intel's root" {
				roots = tc.roots
			}
			o := opts
			if tc.opts.EnvKey != nil {
				o = tc.opts
			}
			at := now
			if !tc.at.IsZero() {
				at = tc.at
			}
			for name, c := range map[string]*tdx.Cache{"cached": cache, "uncached": tdx.NewCache(0)} {
				v := tdx.Verifier{Roots: roots, InsecureSkipCollateral: true, Cache: c, Now: func() time.Time { return at }}
				hits, _, _, _ := tdx.CacheStats(c)
				claims, checks := v.Verify(tc.ev, o)
				if got := failedChecks(checks); !slices.Equal(got, tc.want) || (claims == nil) != (tc.want != nil) {
					t.Errorf("%s: failed checks %v (claims %v), want %v; %+v", name, got, claims != nil, tc.want, checks)
				}
				if after, _, _, _ := tdx.CacheStats(c); name == "cached" && (after > hits) != tc.hit {
					t.Errorf("answered from the cache: %v, want %v", after > hits, tc.hit)
				}
			}
		})
	}
}

// TestCacheDifferential flips bytes all over a quote: a verifier with a
// warm cache and one without must fail the same checks.
func TestCacheDifferential(t *testing.T) {
	d := newDevice(t)
	good, opts := evidence(t, newBackend(t, d))
	warm, cold := fakeVerifier(d), fakeVerifier(d)
	warm.Cache, cold.Cache = tdx.NewCache(4), tdx.NewCache(0)
	if claims, checks := warm.Verify(good, opts); claims == nil {
		t.Fatalf("good evidence: %+v", checks)
	}
	stride := 3
	if testing.Short() {
		stride = 17
	}
	raw := good.Parts[0].Data
	for i := 0; i < len(raw); i += stride {
		ev := cloneEv(good)
		ev.Parts[0].Data[i] ^= 0x41
		_, wc := warm.Verify(ev, opts)
		_, cc := cold.Verify(ev, opts)
		if w, c := failedChecks(wc), failedChecks(cc); !slices.Equal(w, c) {
			t.Errorf("quote byte %d: cached verifier fails %v, uncached %v", i, w, c)
		}
	}
	if hits, _, _, _ := tdx.CacheStats(warm.Cache); hits == 0 {
		t.Error("the cache never answered")
	}
}

// ccelDevice is a fake TD whose RTMR0-2 were extended from go-eventlog's
// CCEL test log (testdata/ccel), and a backend that ships that log.
func ccelDevice(t *testing.T) (*tdxtest.Device, *tdx.Backend, []byte) {
	t.Helper()
	log, err := os.ReadFile("testdata/ccel/ccel.bin")
	if err != nil {
		t.Fatal(err)
	}
	el, err := tcg.ParseEventLog(log, tcg.ParseOpts{AllowPadding: true})
	if err != nil {
		t.Fatal(err)
	}
	d := newDevice(t)
	d.ZeroRTMRs()
	for _, e := range el.Events(register.HashSHA384) {
		if err := d.ExtendRTMR(int(e.Index)-1, e.Digest); err != nil { // CC MR 1-3 are RTMR0-2
			t.Fatal(err)
		}
	}
	logPath := filepath.Join(t.TempDir(), "CCEL")
	if err := os.WriteFile(logPath, log, 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := tdx.New(tdx.Config{Provider: d, RTMRs: d, CCELPath: logPath, CCELTablePath: "testdata/ccel/table.bin"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return d, b, log
}

func TestCacheCCEL(t *testing.T) {
	d, b, log := ccelDevice(t)
	good, opts := evidence(t, b)
	// Another log: the same events but the last digest changed.
	otherLog := bytes.Clone(log)
	otherLog[len(otherLog)-60] ^= 1
	// The same log against other RTMR0-2: a TD whose RTMR2 moved on.
	if err := d.ExtendRTMR(2, make([]byte, sha512.Size384)); err != nil {
		t.Fatal(err)
	}
	moved, movedOpts := evidence(t, b)
	for _, tc := range []struct {
		name string
		ev   *attest.Evidence
		opts attest.VerifyOptions
		want []string
		hit  bool
	}{
		{"same log, same registers", good, opts, nil, true},
		{"other log", func() *attest.Evidence {
			e := cloneEv(good)
			e.Parts[1].Data = otherLog
			return e
		}(), opts, []string{tdx.CheckCCEL}, false},
		{"same log, other registers", moved, movedOpts, []string{tdx.CheckCCEL}, false},
		{"no table", func() *attest.Evidence {
			e := cloneEv(good)
			e.Parts = e.Parts[:2]
			return e
		}(), opts, []string{tdx.CheckCCEL}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cache := tdx.NewCache(8)
			warm := fakeVerifier(d)
			warm.Cache = cache
			if claims, checks := warm.Verify(good, opts); claims == nil {
				t.Fatalf("good evidence: %+v", checks)
			}
			if _, _, _, n := tdx.CacheStats(cache); n != 1 {
				t.Fatalf("%d CCEL replays cached, want 1", n)
			}
			for name, c := range map[string]*tdx.Cache{"cached": cache, "uncached": tdx.NewCache(0)} {
				v := fakeVerifier(d)
				v.Cache = c
				hits := tdx.CCELHits(c)
				claims, checks := v.Verify(tc.ev, tc.opts)
				if got := failedChecks(checks); !slices.Equal(got, tc.want) || (claims == nil) != (tc.want != nil) {
					t.Errorf("%s: failed checks %v, want %v; %+v", name, got, tc.want, checks)
				}
				if name == "cached" && (tdx.CCELHits(c) > hits) != tc.hit {
					t.Errorf("replay answered from the cache: %v, want %v", tdx.CCELHits(c) > hits, tc.hit)
				}
			}
		})
	}
}

// TestCacheCCELDifferential flips bytes all over the CCEL (the same length,
// the same RTMRs: the same cache key): a verifier with a warm cache and one
// without must fail the same checks.
func TestCacheCCELDifferential(t *testing.T) {
	d, b, log := ccelDevice(t)
	good, opts := evidence(t, b)
	warm, cold := fakeVerifier(d), fakeVerifier(d)
	warm.Cache, cold.Cache = tdx.NewCache(4), tdx.NewCache(0)
	if claims, checks := warm.Verify(good, opts); claims == nil {
		t.Fatalf("good evidence: %+v", checks)
	}
	failures := 0
	for i := 0; i < len(log); i += 7 {
		ev := cloneEv(good)
		ev.Parts[1].Data[i] ^= 0x10
		_, wc := warm.Verify(ev, opts)
		_, cc := cold.Verify(ev, opts)
		w, c := failedChecks(wc), failedChecks(cc)
		if !slices.Equal(w, c) {
			t.Errorf("CCEL byte %d: cached verifier fails %v, uncached %v", i, w, c)
		}
		if len(c) > 0 {
			failures++
		}
	}
	if failures == 0 {
		t.Error("no flipped byte made the replay fail")
	}
}

func TestCacheBounded(t *testing.T) {
	cache := tdx.NewCache(2)
	type env struct {
		v    tdx.Verifier
		ev   *attest.Evidence
		opts attest.VerifyOptions
	}
	var envs []env
	for range 3 {
		d := newDevice(t) // a chain of its own
		ev, o := evidence(t, newBackend(t, d))
		v := fakeVerifier(d)
		v.Cache = cache
		envs = append(envs, env{v, ev, o})
	}
	for round := range 2 {
		for i, e := range envs {
			if claims, checks := e.v.Verify(e.ev, e.opts); claims == nil {
				t.Fatalf("round %d, chain %d: %+v", round, i, checks)
			}
		}
	}
	if hits, misses, chains, _ := tdx.CacheStats(cache); chains != 2 || hits+misses != 6 {
		t.Errorf("cache of 2 after 3 chains twice: %d chains, %d hits, %d misses", chains, hits, misses)
	}
	off := tdx.NewCache(0)
	envs[0].v.Cache = off
	for range 2 {
		envs[0].v.Verify(envs[0].ev, envs[0].opts)
	}
	if hits, misses, chains, _ := tdx.CacheStats(off); chains != 0 || hits != 0 || misses != 2 {
		t.Errorf("NewCache(0): %d chains, %d hits, %d misses", chains, hits, misses)
	}
}

// TestCacheConcurrent shares one small cache between goroutines verifying
// good and bad evidence of several chains (run with -race).
func TestCacheConcurrent(t *testing.T) {
	var jobs []attesttest.Job
	cache := tdx.NewCache(2)
	var firstRoots *x509.CertPool
	for i := range 2 {
		d := newDevice(t)
		ev, o := evidence(t, newBackend(t, d))
		v := fakeVerifier(d)
		v.Cache = cache
		late := v
		late.Now = func() time.Time { return created.AddDate(11, 0, 0) } // chain expired
		untrusted := v
		if i == 0 {
			firstRoots = d.Roots()
		} else {
			untrusted.Roots = firstRoots
		}
		bad := withQuote(t, ev, func(q *pb.QuoteV4) { q.TdQuoteBody.MrTd[0] ^= 1 })
		jobs = append(jobs, attesttest.Job{V: v, Ev: ev, Opts: o, OK: true}, attesttest.Job{V: late, Ev: ev, Opts: o},
			attesttest.Job{V: v, Ev: bad, Opts: o}, attesttest.Job{V: untrusted, Ev: ev, Opts: o, OK: i == 0})
	}
	attesttest.VerifyConcurrently(t, jobs, 3)
}

// TestIntelRoot: the root the verifier trusts by default is the root of
// the real Intel-signed quote go-tdx-guest ships.
func TestIntelRoot(t *testing.T) {
	q, err := abi.QuoteToProto(testdata.RawQuote)
	if err != nil {
		t.Fatal(err)
	}
	rest := q.(*pb.QuoteV4).GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
	var root *pem.Block
	for range 3 {
		root, rest = pem.Decode(rest)
	}
	embedded, err := os.ReadFile("intel_sgx_root_ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(embedded)
	if blk == nil || root == nil || !bytes.Equal(blk.Bytes, root.Bytes) {
		t.Error("intel_sgx_root_ca.pem is not the root of go-tdx-guest's real quote")
	}
}

// BenchmarkVerify: "single" is one quote on a verifier that caches nothing
// (every quote checks its PCK chain, as before the cache);
// "first-of-chain" one quote on a fresh cache (the cost of a miss);
// "bundle" a bundle's five quotes of one TD on one verifier, in turn.
func BenchmarkVerify(b *testing.B) {
	d := newDevice(b)
	evs, opts := attesttest.Evidences(b, newBackend(b, d), 5)
	attesttest.BenchmarkCachedVerifier(b, evs, opts, func(size int) attest.Verifier {
		v := fakeVerifier(d)
		v.Cache = tdx.NewCache(size)
		return v
	}, tdx.DefaultCacheSize)
}
