package distribute_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/attestd/attestd/distribute"
	"github.com/attestd/attestd/scai"
	"github.com/attestd/attestd/verify"
)

// signedThing is a real envelope attestd wrote and the key that signed it.
type signedThing struct {
	name string
	env  *dsse.Envelope
	key  crypto.PublicKey
}

// realThings returns the envelopes of a real build (the e2e's bundle: launch,
// admission, dispatch, completion, signed provenance) with their env key, and
// the e2e image's reference values with the bake key.
func realThings(t testing.TB) []signedThing {
	t.Helper()
	raw, err := os.ReadFile("../verify/testdata/e2e/bundle.intoto.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	b, err := scai.DecodeBundle(raw)
	if err != nil {
		t.Fatal(err)
	}
	var out []signedThing
	var envKey crypto.PublicKey
	for _, env := range b.Envelopes {
		name := "signed-provenance"
		if op, err := scai.Open(env); err == nil {
			envKey, name = op.Attestation.EnvKey, string(op.Attestation.Purpose)
		}
		out = append(out, signedThing{name, env, envKey})
	}
	ref, err := os.ReadFile("../verify/testdata/e2e/reference.intoto.json")
	if err != nil {
		t.Fatal(err)
	}
	env, err := scai.ParseEnvelope(ref)
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, signedThing{"reference-values", env, readPEMKey(t, "../verify/testdata/e2e/bake-key.pub.pem")})
	// Verification results as verify --result-out signs them.
	resultKey := newKey(t)
	for _, name := range []string{"vsa-passed", "svr-dispatch"} {
		var st bytes.Buffer
		if err := json.Compact(&st, readFile(t, "../verify/testdata/results/"+name+".json")); err != nil {
			t.Fatal(err)
		}
		signed, err := verify.SignResult(context.Background(), resultKey, st.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		env, err := scai.ParseEnvelope(signed)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, signedThing{name, env, resultKey.Public()})
	}
	return out
}

func readPEMKey(t testing.TB, path string) crypto.PublicKey {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestRoundTrip(t *testing.T) {
	for _, th := range realThings(t) {
		t.Run(th.name, func(t *testing.T) {
			raw, err := distribute.NewBundle(th.env, th.key)
			if err != nil {
				t.Fatal(err)
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, raw); err != nil || !bytes.Equal(compact.Bytes(), raw) {
				t.Errorf("bundle is not compact JSON (%v)", err)
			}
			hint, err := distribute.KeyHint(th.key)
			if err != nil {
				t.Fatal(err)
			}
			opened, gotHint, err := distribute.OpenBundle(raw)
			if err != nil {
				t.Fatal(err)
			}
			if gotHint != hint {
				t.Errorf("hint %s, want %s", gotHint, hint)
			}
			if diff := cmp.Diff(th.env, opened); diff != "" {
				t.Errorf("opened envelope differs (-want +got):\n%s", diff)
			}
			other := newKey(t).Public()
			verified, err := distribute.VerifyBundle(raw, []crypto.PublicKey{other, th.key})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(th.env, verified); diff != "" {
				t.Errorf("verified envelope differs (-want +got):\n%s", diff)
			}
			if err := scai.VerifySignature(verified, th.key); err != nil {
				t.Errorf("the envelope out of the bundle does not verify as DSSE: %v", err)
			}
		})
	}
}

// edit decodes a bundle into generic JSON, lets f change it and encodes it.
func edit(t *testing.T, raw []byte, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func dsseOf(m map[string]any) map[string]any { return m["dsseEnvelope"].(map[string]any) }

func TestRefused(t *testing.T) {
	th := realThings(t)[0]
	good, err := distribute.NewBundle(th.env, th.key)
	if err != nil {
		t.Fatal(err)
	}
	other := newKey(t).Public()
	otherHint, _ := distribute.KeyHint(other)
	for _, tc := range []struct {
		name string
		raw  []byte
		keys []crypto.PublicKey // nil: the signing key
		// openErr is what OpenBundle says; nil: it accepts the bundle and
		// verifyErr is what VerifyBundle says.
		openErr, verifyErr error
	}{
		{name: "tampered payload", raw: edit(t, good, func(m map[string]any) {
			p, _ := base64.StdEncoding.DecodeString(dsseOf(m)["payload"].(string))
			p[len(p)-2] ^= 1
			dsseOf(m)["payload"] = base64.StdEncoding.EncodeToString(p)
		}), verifyErr: distribute.ErrSignature},
		{name: "changed payloadType", raw: edit(t, good, func(m map[string]any) {
			dsseOf(m)["payloadType"] = "application/json"
		}), openErr: scai.ErrPayloadType},
		{name: "tampered signature", raw: edit(t, good, func(m map[string]any) {
			sig := dsseOf(m)["signatures"].([]any)[0].(map[string]any)
			s, _ := base64.StdEncoding.DecodeString(sig["sig"].(string))
			s[len(s)-1] ^= 1
			sig["sig"] = base64.StdEncoding.EncodeToString(s)
		}), verifyErr: distribute.ErrSignature},
		{name: "wrong key", raw: good, keys: []crypto.PublicKey{other}, verifyErr: distribute.ErrKeyHint},
		{name: "no keys", raw: good, keys: []crypto.PublicKey{}, verifyErr: distribute.ErrKeyHint},
		{name: "hint names another key", raw: edit(t, good, func(m map[string]any) {
			m["verificationMaterial"].(map[string]any)["publicKey"].(map[string]any)["hint"] = otherHint
		}), keys: []crypto.PublicKey{th.key, other}, verifyErr: distribute.ErrSignature},
		{name: "keyid set", raw: edit(t, good, func(m map[string]any) {
			dsseOf(m)["signatures"].([]any)[0].(map[string]any)["keyid"] = otherHint
		}), openErr: distribute.ErrBundle},
		{name: "hint not hex", raw: edit(t, good, func(m map[string]any) {
			m["verificationMaterial"].(map[string]any)["publicKey"].(map[string]any)["hint"] = "c29tZSBrZXk="
		}), openErr: distribute.ErrKeyHint},
		{name: "two signatures", raw: edit(t, good, func(m map[string]any) {
			sigs := dsseOf(m)["signatures"].([]any)
			dsseOf(m)["signatures"] = append(sigs, sigs[0])
		}), openErr: distribute.ErrBundle},
		{name: "v0.1 media type", raw: edit(t, good, func(m map[string]any) {
			m["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.1"
		}), openErr: distribute.ErrMediaType},
		{name: "v0.2 media type", raw: edit(t, good, func(m map[string]any) {
			m["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.2"
		}), openErr: distribute.ErrMediaType},
		{name: "v0.4 media type", raw: edit(t, good, func(m map[string]any) {
			m["mediaType"] = "application/vnd.dev.sigstore.bundle.v0.4+json"
		}), openErr: distribute.ErrMediaType},
		{name: "unknown field", raw: edit(t, good, func(m map[string]any) { m["extra"] = 1 }), openErr: distribute.ErrBundle},
		{name: "tlog entry", raw: edit(t, good, func(m map[string]any) {
			m["verificationMaterial"].(map[string]any)["tlogEntries"] = []any{map[string]any{"logIndex": "1"}}
		}), openErr: distribute.ErrBundle},
		{name: "timestamps", raw: edit(t, good, func(m map[string]any) {
			m["verificationMaterial"].(map[string]any)["timestampVerificationData"] = map[string]any{}
		}), openErr: distribute.ErrBundle},
		{name: "message signature", raw: edit(t, good, func(m map[string]any) {
			delete(m, "dsseEnvelope")
			m["messageSignature"] = map[string]any{"signature": "AAAA"}
		}), openErr: distribute.ErrBundle},
		{name: "certificate", raw: edit(t, good, func(m map[string]any) {
			m["verificationMaterial"] = map[string]any{"certificate": map[string]any{"rawBytes": "AAAA"}}
		}), openErr: distribute.ErrBundle},
		{name: "truncated", raw: good[:len(good)/2], openErr: distribute.ErrBundle},
		{name: "garbage", raw: []byte("\x00not json"), openErr: distribute.ErrBundle},
		{name: "empty", raw: nil, openErr: distribute.ErrBundle},
		{name: "a DSSE envelope", raw: []byte(mustJSON(t, th.env)), openErr: distribute.ErrBundle},
		{name: "trailing data", raw: append(append([]byte{}, good...), "{}"...), openErr: distribute.ErrBundle},
		{name: "oversized", raw: oversized(good), openErr: distribute.ErrBundle},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys := tc.keys
			if keys == nil {
				keys = []crypto.PublicKey{th.key}
			}
			_, _, err := distribute.OpenBundle(tc.raw)
			if !errors.Is(err, tc.openErr) || (err == nil) != (tc.openErr == nil) {
				t.Fatalf("OpenBundle: %v, want %v", err, tc.openErr)
			}
			want := tc.verifyErr
			if tc.openErr != nil {
				want = tc.openErr
			}
			env, err := distribute.VerifyBundle(tc.raw, keys)
			if !errors.Is(err, want) || err == nil {
				t.Fatalf("VerifyBundle: %v, want %v", err, want)
			}
			if env != nil {
				t.Error("VerifyBundle returned an envelope with its error")
			}
		})
	}
}

// oversized pads a bundle with white space past MaxBundleSize.
func oversized(good []byte) []byte {
	return append([]byte(strings.Repeat(" ", distribute.MaxBundleSize)), good...)
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestNewBundleRefuses(t *testing.T) {
	th := realThings(t)[0]
	other := newKey(t)
	twice := *th.env
	twice.Signatures = append(twice.Signatures, twice.Signatures[0])
	notInToto := *th.env
	notInToto.PayloadType = "application/json"
	for _, tc := range []struct {
		name string
		env  *dsse.Envelope
		key  crypto.PublicKey
		want error
	}{
		{"nil envelope", nil, th.key, distribute.ErrBundle},
		{"another key", th.env, other.Public(), distribute.ErrKeyHint},
		{"another key, keyid unset", withoutKeyID(th.env), other.Public(), distribute.ErrSignature},
		{"two signatures", &twice, th.key, distribute.ErrBundle},
		{"not in-toto", &notInToto, th.key, scai.ErrPayloadType},
		{"unsupported key", th.env, "a string", distribute.ErrKeyHint},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := distribute.NewBundle(tc.env, tc.key); !errors.Is(err, tc.want) {
				t.Fatalf("NewBundle: %v, want %v", err, tc.want)
			}
		})
	}
}

func withoutKeyID(env *dsse.Envelope) *dsse.Envelope {
	c := *env
	c.Signatures = []dsse.Signature{{Sig: env.Signatures[0].Sig}}
	return &c
}
