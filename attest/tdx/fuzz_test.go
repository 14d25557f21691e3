package tdx_test

import (
	"testing"

	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/tdx"
)

// FuzzParseQuote: no quote bytes make the parser or the verifier panic.
func FuzzParseQuote(f *testing.F) {
	d := newDevice(f)
	raw, err := d.GetRawQuote([64]byte{1})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add(testdata.RawQuote)
	f.Add(raw[:632])
	f.Add([]byte{})
	v := fakeVerifier(d)
	f.Fuzz(func(t *testing.T, data []byte) {
		tdx.ParseQuote(data)
		ev := &attest.Evidence{Backend: tdx.Name, Parts: []attest.Part{{Name: tdx.PartQuote, Data: data}}}
		if claims, _ := v.Verify(ev, attest.VerifyOptions{}); claims != nil {
			t.Error("fuzzed quote verified")
		}
	})
}

func BenchmarkSignAndVerify(b *testing.B) {
	d := newDevice(b)
	be := newBackend(b, d)
	kd, _ := attest.KeyDigest(be.Signer().Public())
	binding := attest.Bind(attest.PurposeAttest, kd, []byte("nonce"))
	v := fakeVerifier(d)
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
