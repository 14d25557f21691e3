package tdx_test

import (
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/attesttest"
	"github.com/attestd/attestd/attest/tdx"
	"github.com/attestd/attestd/attest/tdx/tdxtest"
)

var (
	created = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	now     = created.Add(24 * time.Hour)
)

func newDevice(t testing.TB) *tdxtest.Device {
	t.Helper()
	d, err := tdxtest.New(created)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func newBackend(t testing.TB, d *tdxtest.Device) *tdx.Backend {
	t.Helper()
	b, err := tdx.New(tdx.Config{Provider: d, RTMRs: d})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// fakeVerifier trusts the fake root; the fake cannot have Intel-signed
// collateral, so it is skipped by name.
func fakeVerifier(d *tdxtest.Device) tdx.Verifier {
	return tdx.Verifier{Roots: d.Roots(), InsecureSkipCollateral: true, Now: func() time.Time { return now }}
}

func TestConformance(t *testing.T) {
	d := newDevice(t)
	attesttest.RunOptions(t, func(t *testing.T) attest.Backend { return newBackend(t, d) }, fakeVerifier(d),
		attesttest.Options{
			Trust:        func(*testing.T, attest.Backend) attest.VerifyOptions { return attest.VerifyOptions{} },
			MaySkip:      []string{tdx.CheckCollateral, tdx.CheckCCEL},
			BindingCheck: tdx.CheckReportData,
		})
}

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

func failed(checks []attest.Check) string {
	for _, c := range checks {
		if c.Failed() {
			return c.Name
		}
	}
	return ""
}

// Offsets in a version-4 quote: 48-byte header, then the TD quote body.
const (
	offBody       = 48
	offTDAttr     = offBody + 120
	offMRTD       = offBody + 136
	offRTMR0      = offBody + 328
	offReportData = offBody + 520
	offSigData    = offBody + 584 + 4
)

func TestVerifierNamedFailures(t *testing.T) {
	d := newDevice(t)
	b := newBackend(t, d)
	good, opts := evidence(t, b)
	flip := func(off int) func(*attest.Evidence, *tdx.Verifier, *attest.VerifyOptions) {
		return func(ev *attest.Evidence, _ *tdx.Verifier, _ *attest.VerifyOptions) { ev.Parts[0].Data[off] ^= 1 }
	}
	for _, tc := range []struct {
		name   string
		mutate func(ev *attest.Evidence, v *tdx.Verifier, o *attest.VerifyOptions)
		want   string
	}{
		{"Intel's real root rejects the fake chain", func(_ *attest.Evidence, v *tdx.Verifier, _ *attest.VerifyOptions) { v.Roots = nil }, tdx.CheckQuoteSignature},
		{"expired chain", func(_ *attest.Evidence, v *tdx.Verifier, _ *attest.VerifyOptions) {
			v.Now = func() time.Time { return created.AddDate(11, 0, 0) }
		}, tdx.CheckQuoteSignature},
		{"collateral required by default", func(_ *attest.Evidence, v *tdx.Verifier, _ *attest.VerifyOptions) { v.InsecureSkipCollateral = false }, tdx.CheckCollateral},
		{"collateral files missing", func(_ *attest.Evidence, v *tdx.Verifier, _ *attest.VerifyOptions) {
			v.InsecureSkipCollateral, v.CollateralDir = false, t.TempDir()
		}, tdx.CheckCollateral},
		{"MRTD not accepted", func(_ *attest.Evidence, v *tdx.Verifier, _ *attest.VerifyOptions) { v.Policy.MRTDs = [][48]byte{{1}} }, tdx.CheckPolicy},
		{"RTMR0-2 differ", func(_ *attest.Evidence, v *tdx.Verifier, _ *attest.VerifyOptions) { v.Policy.RTMRs = &[3][48]byte{} }, tdx.CheckPolicy},
		{"other binding", func(_ *attest.Evidence, _ *tdx.Verifier, o *attest.VerifyOptions) { o.Binding[0] ^= 1 }, tdx.CheckReportData},
		{"report data byte", flip(offReportData), tdx.CheckQuoteSignature},
		{"key digest byte", flip(offReportData + 40), tdx.CheckQuoteSignature},
		{"MRTD byte", flip(offMRTD), tdx.CheckQuoteSignature},
		{"RTMR0 byte", flip(offRTMR0), tdx.CheckQuoteSignature},
		{"TD attributes byte", flip(offTDAttr), tdx.CheckQuoteSignature},
		{"signature byte", flip(offSigData), tdx.CheckQuoteSignature},
		{"attestation key byte", flip(offSigData + 64), tdx.CheckQuoteSignature},
		{"QE report byte", flip(offSigData + 128 + 6 + 10), tdx.CheckQuoteSignature},
		{"PCK chain byte", func(ev *attest.Evidence, _ *tdx.Verifier, _ *attest.VerifyOptions) {
			ev.Parts[0].Data[len(ev.Parts[0].Data)-200] ^= 1
		}, tdx.CheckQuoteSignature},
		{"trailing NUL", func(ev *attest.Evidence, _ *tdx.Verifier, _ *attest.VerifyOptions) {
			ev.Parts[0].Data[len(ev.Parts[0].Data)-1] ^= 1
		}, tdx.CheckQuoteSignature},
		{"truncated", func(ev *attest.Evidence, _ *tdx.Verifier, _ *attest.VerifyOptions) {
			ev.Parts[0].Data = ev.Parts[0].Data[:600]
		}, tdx.CheckQuoteSignature},
		{"oversized", func(ev *attest.Evidence, _ *tdx.Verifier, _ *attest.VerifyOptions) {
			ev.Parts[0].Data = append(ev.Parts[0].Data, 1)
		}, tdx.CheckQuoteSignature},
		{"dropped", func(ev *attest.Evidence, _ *tdx.Verifier, _ *attest.VerifyOptions) { ev.Parts = nil }, tdx.CheckQuoteSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := clone(good)
			v := fakeVerifier(d)
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

func TestDebugTDRefused(t *testing.T) {
	d := newDevice(t)
	d.TDAttributes = []byte{1, 0, 0, 0, 0, 0, 0, 0}
	b := newBackend(t, d)
	ev, opts := evidence(t, b)
	v := fakeVerifier(d)
	if _, checks := v.Verify(ev, opts); failed(checks) != tdx.CheckTDAttributes {
		t.Errorf("debug TD: checks %+v, want %s to fail", checks, tdx.CheckTDAttributes)
	}
	v.Policy.AllowDebugUnsafe = true
	if claims, checks := v.Verify(ev, opts); claims == nil {
		t.Errorf("debug TD with AllowDebugUnsafe: checks %+v", checks)
	}
}

func TestNoRTMRInterface(t *testing.T) {
	d := newDevice(t)
	if _, err := tdx.New(tdx.Config{Provider: d}); !errors.Is(err, tdx.ErrNoRTMRInterface) {
		t.Errorf("New without RTMRs = %v, want ErrNoRTMRInterface", err)
	}
}

func TestSysfsRTMRs(t *testing.T) {
	dir := t.TempDir()
	r := tdx.SysfsRTMRs{Dir: dir}
	if _, err := r.ReadRTMR(3); err == nil {
		t.Error("ReadRTMR of a missing file succeeded")
	}
	if err := r.ExtendRTMR(3, make([]byte, 48)); err == nil {
		t.Error("ExtendRTMR of a missing file succeeded")
	}
}

func clone(ev *attest.Evidence) *attest.Evidence {
	out := &attest.Evidence{Backend: ev.Backend}
	for _, p := range ev.Parts {
		p.Data = append([]byte(nil), p.Data...)
		out.Parts = append(out.Parts, p)
	}
	return out
}
