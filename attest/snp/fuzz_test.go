package snp_test

import (
	"testing"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/snp"
)

// FuzzParseReport: no report bytes make the parser or the verifier panic,
// and only exact-size reports parse.
func FuzzParseReport(f *testing.F) {
	d := newDevice(f)
	raw, err := d.GetRawQuote([64]byte{1})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw[:1184])
	f.Add(raw)
	f.Add([]byte{})
	v := d.Verifier(now)
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := snp.ParseReport(data); err == nil && len(data) != 1184 {
			t.Errorf("parsed a %d-byte report", len(data))
		}
		ev := &attest.Evidence{Backend: snp.Name, Parts: []attest.Part{{Name: snp.PartReport, Data: data}, {Name: snp.PartVCEK, Data: d.VCEK()}}}
		if claims, _ := v.Verify(ev, attest.VerifyOptions{}); claims != nil {
			t.Error("fuzzed report verified")
		}
	})
}

func BenchmarkSignAndVerify(b *testing.B) {
	d := newDevice(b)
	be := newBackend(b, d)
	kd, _ := attest.KeyDigest(be.Signer().Public())
	binding := attest.Bind(attest.PurposeAttest, kd, []byte("nonce"))
	v := d.Verifier(now)
	opts := attest.VerifyOptions{Binding: binding, EnvKey: be.Signer().Public()}
	for b.Loop() {
		ev, err := be.Evidence(b.Context(), binding)
		if err != nil {
			b.Fatal(err)
		}
		if claims, checks := v.Verify(ev, opts); claims == nil {
			b.Fatal(checks)
		}
	}
}
