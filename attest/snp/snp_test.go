package snp_test

import (
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/attesttest"
	"github.com/attestd/attestd/attest/snp"
	"github.com/attestd/attestd/attest/snp/snptest"
	"github.com/google/go-sev-guest/verify/trust"
)

// created is when the fake AMD chain starts; checks run a day later.
var (
	created = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	now     = created.Add(24 * time.Hour)
)

func newDevice(t testing.TB) *snptest.Device {
	t.Helper()
	d, err := snptest.New(created)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func newBackend(t testing.TB, d *snptest.Device) *snp.Backend {
	t.Helper()
	b, err := snp.New(snp.Config{Provider: d})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	d := newDevice(t)
	attesttest.RunOptions(t, func(t *testing.T) attest.Backend { return newBackend(t, d) }, d.Verifier(now),
		attesttest.Options{
			Trust:        func(*testing.T, attest.Backend) attest.VerifyOptions { return attest.VerifyOptions{} },
			MaySkip:      []string{},
			BindingCheck: snp.CheckReportData,
		})
}

// evidence returns evidence from b for a fresh nonce and the options that
// accept it.
func evidence(t *testing.T, b attest.Backend) (*attest.Evidence, attest.VerifyOptions) {
	t.Helper()
	kd, err := attest.KeyDigest(b.Signer().Public())
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 16)
	rand.Read(nonce)
	binding := attest.Bind(attest.PurposeAttest, kd, nonce)
	ev, err := b.Evidence(context.Background(), binding)
	if err != nil {
		t.Fatal(err)
	}
	return ev, attest.VerifyOptions{Binding: binding, EnvKey: b.Signer().Public()}
}

// failed returns the name of the first failed check, "" if none.
func failed(checks []attest.Check) string {
	for _, c := range checks {
		if c.Failed() {
			return c.Name
		}
	}
	return ""
}

func TestVerifierNamedFailures(t *testing.T) {
	d := newDevice(t)
	b := newBackend(t, d)
	good, opts := evidence(t, b)
	for _, tc := range []struct {
		name   string
		mutate func(ev *attest.Evidence, v *snp.Verifier, o *attest.VerifyOptions)
		want   string
	}{
		{"real AMD roots reject the fake chain", func(_ *attest.Evidence, v *snp.Verifier, _ *attest.VerifyOptions) { v.Roots = nil }, snp.CheckReportSignature},
		{"expired chain", func(_ *attest.Evidence, v *snp.Verifier, _ *attest.VerifyOptions) {
			v.Now = func() time.Time { return created.AddDate(30, 0, 0) }
		}, snp.CheckReportSignature},
		{"chain not yet valid", func(_ *attest.Evidence, v *snp.Verifier, _ *attest.VerifyOptions) {
			v.Now = func() time.Time { return created.Add(-time.Hour) }
		}, snp.CheckReportSignature},
		{"wrong product line", func(_ *attest.Evidence, v *snp.Verifier, _ *attest.VerifyOptions) {
			v.Roots = map[string][]*trust.AMDRootCerts{"Genoa": v.Roots[snptest.ProductLine]}
		}, snp.CheckReportSignature},
		{"measurement not accepted", func(_ *attest.Evidence, v *snp.Verifier, _ *attest.VerifyOptions) {
			v.Policy.Measurements = [][48]byte{{1}}
		}, snp.CheckPolicy},
		{"host data", func(_ *attest.Evidence, v *snp.Verifier, _ *attest.VerifyOptions) { v.Policy.HostData = &[32]byte{1} }, snp.CheckPolicy},
		{"other binding", func(_ *attest.Evidence, _ *snp.Verifier, o *attest.VerifyOptions) { o.Binding[31] ^= 1 }, snp.CheckReportData},
		{"register value", func(ev *attest.Evidence, _ *snp.Verifier, _ *attest.VerifyOptions) { ev.Parts[2].Data[5] ^= 1 }, snp.CheckEnvKey},
		{"register dropped", func(ev *attest.Evidence, _ *snp.Verifier, _ *attest.VerifyOptions) { ev.Parts = ev.Parts[:2] }, snp.CheckEnvKey},
		{"report data byte", func(ev *attest.Evidence, _ *snp.Verifier, _ *attest.VerifyOptions) { ev.Parts[0].Data[0x50] ^= 1 }, snp.CheckReportSignature},
		{"measurement byte", func(ev *attest.Evidence, _ *snp.Verifier, _ *attest.VerifyOptions) { ev.Parts[0].Data[0x90] ^= 1 }, snp.CheckReportSignature},
		{"policy byte", func(ev *attest.Evidence, _ *snp.Verifier, _ *attest.VerifyOptions) { ev.Parts[0].Data[0x08] ^= 1 }, snp.CheckReportSignature},
		{"signature byte", func(ev *attest.Evidence, _ *snp.Verifier, _ *attest.VerifyOptions) { ev.Parts[0].Data[0x2A0] ^= 1 }, snp.CheckReportSignature},
		{"VCEK byte", func(ev *attest.Evidence, _ *snp.Verifier, _ *attest.VerifyOptions) {
			ev.Parts[1].Data[len(ev.Parts[1].Data)-1] ^= 1
		}, snp.CheckReportSignature},
		{"VCEK dropped", func(ev *attest.Evidence, _ *snp.Verifier, _ *attest.VerifyOptions) {
			ev.Parts = append(ev.Parts[:1], ev.Parts[2:]...)
		}, snp.CheckReportSignature},
		{"truncated report", func(ev *attest.Evidence, _ *snp.Verifier, _ *attest.VerifyOptions) {
			ev.Parts[0].Data = ev.Parts[0].Data[:100]
		}, snp.CheckReportSignature},
		{"oversized report", func(ev *attest.Evidence, _ *snp.Verifier, _ *attest.VerifyOptions) {
			ev.Parts[0].Data = append(ev.Parts[0].Data, 0)
		}, snp.CheckReportSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := clone(good)
			v := d.Verifier(now)
			o := opts
			tc.mutate(ev, &v, &o)
			claims, checks := v.Verify(ev, o)
			if claims != nil {
				t.Fatalf("verified; checks %+v", checks)
			}
			if got := failed(checks); got != tc.want {
				t.Errorf("first failed check %q, want %q; checks %+v", got, tc.want, checks)
			}
		})
	}
}

func TestDebugGuestRefused(t *testing.T) {
	d := newDevice(t)
	d.Debug = true
	b := newBackend(t, d)
	ev, opts := evidence(t, b)
	v := d.Verifier(now)
	if _, checks := v.Verify(ev, opts); failed(checks) != snp.CheckPolicy {
		t.Errorf("debug guest: checks %+v, want %s to fail", checks, snp.CheckPolicy)
	}
	v.Policy.AllowDebugUnsafe = true
	if claims, checks := v.Verify(ev, opts); claims == nil {
		t.Errorf("debug guest with AllowDebugUnsafe: checks %+v", checks)
	}
}

func TestVCEKFromLocalFile(t *testing.T) {
	d := newDevice(t)
	d.NoCerts = true
	b := newBackend(t, d)
	ev, opts := evidence(t, b)
	if _, ok := ev.Part(snp.PartVCEK); ok {
		t.Fatal("evidence has a VCEK though the host gave none")
	}
	v := d.Verifier(now)
	if _, checks := v.Verify(ev, opts); failed(checks) != snp.CheckReportSignature {
		t.Errorf("no VCEK anywhere: checks %+v", checks)
	}
	v.VCEK = d.VCEK()
	if claims, checks := v.Verify(ev, opts); claims == nil {
		t.Errorf("VCEK from the verifier: checks %+v", checks)
	}
	// The backend ships a configured VCEK itself.
	b2, err := snp.New(snp.Config{Provider: d, VCEK: d.VCEK()})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	ev, opts = evidence(t, b2)
	if claims, checks := d.Verifier(now).Verify(ev, opts); claims == nil {
		t.Errorf("VCEK from the backend config: checks %+v", checks)
	}
}

func TestClosed(t *testing.T) {
	d := newDevice(t)
	b := newBackend(t, d)
	b.Close()
	if _, err := b.Evidence(context.Background(), attest.Binding{}); err == nil {
		t.Error("Evidence after Close succeeded")
	}
	if _, err := b.Signer().Sign(rand.Reader, make([]byte, 32), nil); err == nil {
		t.Error("Sign after Close succeeded")
	}
}

func TestProviderError(t *testing.T) {
	b, err := snp.New(snp.Config{Provider: failing{}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Evidence(context.Background(), attest.Binding{}); !errors.Is(err, errDevice) {
		t.Errorf("Evidence = %v, want the provider's error", err)
	}
}

var errDevice = errors.New("device says no")

type failing struct{}

func (failing) GetRawQuote([64]byte) ([]byte, error) { return nil, errDevice }

func clone(ev *attest.Evidence) *attest.Evidence {
	out := &attest.Evidence{Backend: ev.Backend}
	for _, p := range ev.Parts {
		p.Data = append([]byte(nil), p.Data...)
		out.Parts = append(out.Parts, p)
	}
	return out
}
