package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/attesttest"
)

// certNow is when the test AK certificates are checked.
var certNow = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

// testCA issues AK certificates (P-256, like a cloud's AK CA).
type testCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

func newTestCA(tb testing.TB, cn string, notBefore, notAfter time.Time) *testCA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &testCA{key: key, cert: cert}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// issue certifies pub for [notBefore, notAfter] (DER).
func (ca *testCA) issue(tb testing.TB, pub crypto.PublicKey, notBefore, notAfter time.Time) []byte {
	tb.Helper()
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "AK"},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		tb.Fatal(err)
	}
	return der
}

// withAKCert is ev with der as its AK certificate.
func withAKCert(ev *attest.Evidence, der []byte) *attest.Evidence {
	out := replacePart(ev, PartAKCert, nil)
	out.Parts = append(out.Parts, attest.Part{Name: PartAKCert, MediaType: MediaTypeCert, Data: der})
	return out
}

// flipped is ev with one byte of part name changed.
func flipped(t *testing.T, ev *attest.Evidence, name string, i int) *attest.Evidence {
	data := slices.Clone(mustPart(t, ev, name))
	data[i] ^= 0x10
	return replacePart(ev, name, data)
}

func failedChecks(checks []attest.Check) []string {
	var out []string
	for _, c := range checks {
		if c.Failed() {
			out = append(out, c.Name)
		}
	}
	return out
}

// quoteFailed is what a bad quote fails: its signature and the checks that
// need it.
var quoteFailed = []string{CheckQuoteSignature, CheckQualifyingData, CheckPCRDigest, CheckFirmwareLog}

// TestCacheNeverChangesVerdict runs each case on a verifier whose cache
// already holds the good evidence's AK, certification and AK certificate,
// and on one without a cache: both must give the expected verdict, and the
// cached one must have answered from the cache where expected.
func TestCacheNeverChangesVerdict(t *testing.T) {
	golden, pinned := loadGolden(t)
	ak := pinned.TrustedAKs[0]
	ca := newTestCA(t, "AK CA", certNow.AddDate(-1, 0, 0), certNow.AddDate(5, 0, 0))
	certExpiry := certNow.AddDate(1, 0, 0)
	good := withAKCert(golden, ca.issue(t, ak, certNow.AddDate(0, -1, 0), certExpiry))
	opts := pinned
	opts.TrustedAKs, opts.AKRoots = nil, ca.pool()
	// A CA that expires before the certificate it issued.
	shortCA := newTestCA(t, "short-lived AK CA", certNow.AddDate(-1, 0, 0), certNow.AddDate(0, 6, 0))
	shortOpts := opts
	shortOpts.AKRoots = shortCA.pool()
	short := withAKCert(golden, shortCA.issue(t, ak, certNow.AddDate(0, -1, 0), certExpiry))
	// Another CA, not trusted, certifying the same AK.
	otherCA := newTestCA(t, "AK CA", certNow.AddDate(-1, 0, 0), certNow.AddDate(5, 0, 0))
	untrusted := withAKCert(golden, otherCA.issue(t, ak, certNow.AddDate(0, -1, 0), certExpiry))
	otherRoots := opts
	otherRoots.AKRoots = otherCA.pool()
	otherEnv := opts
	otherEnv.EnvKey = ak

	certified := func(t *testing.T) *attest.Evidence {
		// The AK public area with another attribute: the same key, but not
		// the AK that signed (its qualified name differs).
		pub, err := tpm2.DecodePublic(mustPart(t, golden, PartAKPublic))
		if err != nil {
			t.Fatal(err)
		}
		pub.Attributes ^= tpm2.FlagNoDA
		raw, err := pub.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return replacePart(good, PartAKPublic, raw)
	}
	for _, tc := range []struct {
		name string
		warm *attest.Evidence // nil: good
		ev   func(t *testing.T) *attest.Evidence
		opts attest.VerifyOptions // zero: opts
		at   time.Time            // zero: certNow
		want []string
		hit  bool
	}{
		{name: "same evidence", ev: func(*testing.T) *attest.Evidence { return good }, hit: true},
		{name: "tampered quote", ev: func(t *testing.T) *attest.Evidence { return flipped(t, good, PartQuoteInfo, 20) }, want: quoteFailed, hit: true},
		{name: "tampered quote signature", ev: func(t *testing.T) *attest.Evidence { return flipped(t, good, PartQuoteSignature, 40) }, want: quoteFailed, hit: true},
		{name: "tampered certification", ev: func(t *testing.T) *attest.Evidence { return flipped(t, good, PartCertifyInfo, 40) }, want: []string{CheckEnvKeyCertified}, hit: true},
		{name: "tampered certification signature", ev: func(t *testing.T) *attest.Evidence { return flipped(t, good, PartCertifySignature, 40) }, want: []string{CheckEnvKeyCertified}, hit: true},
		{name: "AK public area changed, same key", ev: certified, want: append([]string{CheckEnvKeyCertified}, quoteFailed...), hit: true},
		{name: "env key is the AK", ev: func(t *testing.T) *attest.Evidence {
			return replacePart(good, PartEnvKeyPublic, mustPart(t, good, PartAKPublic))
		}, want: []string{CheckEnvKeyCertified}, hit: true},
		{name: "other envelope key", ev: func(*testing.T) *attest.Evidence { return good }, opts: otherEnv, want: []string{CheckEnvKeyCertified}, hit: true},
		{name: "at the AK certificate's NotAfter", ev: func(*testing.T) *attest.Evidence { return good }, at: certExpiry, hit: true},
		{name: "after the AK certificate's NotAfter", ev: func(*testing.T) *attest.Evidence { return good }, at: certExpiry.Add(time.Second), want: []string{CheckAKTrusted}, hit: true},
		{name: "before the AK certificate's NotBefore", ev: func(*testing.T) *attest.Evidence { return good }, at: certNow.AddDate(0, -1, 0).Add(-time.Second), want: []string{CheckAKTrusted}, hit: true},
		{name: "after the CA's NotAfter", warm: short, ev: func(*testing.T) *attest.Evidence { return short }, opts: shortOpts, at: certNow.AddDate(0, 6, 1), want: []string{CheckAKTrusted}, hit: true},
		{name: "untrusted AK certificate, same AK", ev: func(*testing.T) *attest.Evidence { return untrusted }, want: []string{CheckAKTrusted}, hit: true},
		{name: "same AK certificate, other roots", ev: func(*testing.T) *attest.Evidence { return good }, opts: otherRoots, want: []string{CheckAKTrusted}, hit: true},
		{name: "same AK, pinned", ev: func(*testing.T) *attest.Evidence { return good }, opts: pinned, hit: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			warmEv, warmOpts := good, opts
			if tc.warm != nil {
				warmEv, warmOpts = tc.warm, shortOpts
			}
			cache := NewCache(8)
			now := func() time.Time { return certNow }
			if claims, checks := (Verifier{Cache: cache, Now: now}).Verify(warmEv, warmOpts); claims == nil {
				t.Fatalf("good evidence: %+v", checks)
			}
			o := opts
			if tc.opts.EnvKey != nil {
				o = tc.opts
			}
			if !tc.at.IsZero() {
				now = func() time.Time { return tc.at }
			}
			ev := tc.ev(t)
			for name, c := range map[string]*Cache{"cached": cache, "uncached": NewCache(0)} {
				hits := c.hits.Load()
				claims, checks := Verifier{Cache: c, Now: now}.Verify(ev, o)
				if got := failedChecks(checks); !slices.Equal(got, tc.want) || (claims == nil) != (tc.want != nil) {
					t.Errorf("%s: failed checks %v (claims %v), want %v; %+v", name, got, claims != nil, tc.want, checks)
				}
				if name == "cached" && (c.hits.Load() > hits) != tc.hit {
					t.Errorf("answered from the cache: %v, want %v", c.hits.Load() > hits, tc.hit)
				}
			}
		})
	}
}

// TestCacheDifferential flips bytes all over good evidence: a verifier with
// a warm cache and one without must fail the same checks.
func TestCacheDifferential(t *testing.T) {
	golden, pinned := loadGolden(t)
	ca := newTestCA(t, "AK CA", certNow.AddDate(-1, 0, 0), certNow.AddDate(5, 0, 0))
	good := withAKCert(golden, ca.issue(t, pinned.TrustedAKs[0], certNow.AddDate(0, -1, 0), certNow.AddDate(1, 0, 0)))
	opts := pinned
	opts.TrustedAKs, opts.AKRoots = nil, ca.pool()
	now := func() time.Time { return certNow }
	warm, cold := Verifier{Cache: NewCache(4), Now: now}, Verifier{Cache: NewCache(0), Now: now}
	if claims, checks := warm.Verify(good, opts); claims == nil {
		t.Fatalf("good evidence: %+v", checks)
	}
	stride := 3
	if testing.Short() {
		stride = 17
	}
	for _, p := range good.Parts {
		for i := 0; i < len(p.Data); i += stride {
			ev := flipped(t, good, p.Name, i)
			_, wc := warm.Verify(ev, opts)
			_, cc := cold.Verify(ev, opts)
			if w, c := failedChecks(wc), failedChecks(cc); !slices.Equal(w, c) {
				t.Errorf("%s byte %d: cached verifier fails %v, uncached %v", p.Name, i, w, c)
			}
		}
	}
	if warm.Cache.hits.Load() == 0 {
		t.Error("the cache never answered")
	}
}

func TestCacheBounded(t *testing.T) {
	golden, pinned := loadGolden(t)
	ca := newTestCA(t, "AK CA", certNow.AddDate(-1, 0, 0), certNow.AddDate(5, 0, 0))
	opts := pinned
	opts.TrustedAKs, opts.AKRoots = nil, ca.pool()
	cache := NewCache(2)
	v := Verifier{Cache: cache, Now: func() time.Time { return certNow }}
	for i := range 5 { // five AK certificates of the same AK
		ev := withAKCert(golden, ca.issue(t, pinned.TrustedAKs[0], certNow.AddDate(0, 0, -i-1), certNow.AddDate(1, 0, 0)))
		if claims, checks := v.Verify(ev, opts); claims == nil {
			t.Fatalf("certificate %d: %+v", i, checks)
		}
	}
	if n := cache.akCerts.Len(); n != 2 {
		t.Errorf("cache of 2 after 5 AK certificates holds %d", n)
	}
	off := NewCache(0)
	v.Cache = off
	v.Verify(golden, pinned)
	v.Verify(golden, pinned)
	if n := off.publics.Len() + off.certified.Len() + off.akCerts.Len() + off.logs.Len(); n != 0 || off.hits.Load() != 0 {
		t.Errorf("NewCache(0) holds %d entries, answered %d times", n, off.hits.Load())
	}
}

// TestCacheConcurrent shares one small cache between goroutines verifying
// good and bad evidence (run with -race).
func TestCacheConcurrent(t *testing.T) {
	golden, pinned := loadGolden(t)
	ak := pinned.TrustedAKs[0]
	ca := newTestCA(t, "AK CA", certNow.AddDate(-1, 0, 0), certNow.AddDate(5, 0, 0))
	otherCA := newTestCA(t, "AK CA", certNow.AddDate(-1, 0, 0), certNow.AddDate(5, 0, 0))
	good := withAKCert(golden, ca.issue(t, ak, certNow.AddDate(0, -1, 0), certNow.AddDate(1, 0, 0)))
	opts := pinned
	opts.TrustedAKs, opts.AKRoots = nil, ca.pool()
	cache := NewCache(2)
	at := func(when time.Time) Verifier { return Verifier{Cache: cache, Now: func() time.Time { return when }} }
	jobs := []attesttest.Job{
		{V: at(certNow), Ev: good, Opts: opts, OK: true},
		{V: at(certNow.AddDate(2, 0, 0)), Ev: good, Opts: opts},
		{V: at(certNow), Ev: flipped(t, good, PartQuoteInfo, 20), Opts: opts},
		{V: at(certNow), Ev: flipped(t, good, PartCertifySignature, 40), Opts: opts},
		{V: at(certNow), Ev: withAKCert(golden, otherCA.issue(t, ak, certNow.AddDate(0, -1, 0), certNow.AddDate(1, 0, 0))), Opts: opts},
		{V: at(certNow), Ev: golden, Opts: pinned, OK: true},
	}
	attesttest.VerifyConcurrently(t, jobs, 5)
}
