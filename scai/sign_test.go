package scai_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/scai"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// dsseVerifier is the reference: go-securesystemslib's verifier over pub.
type dsseVerifier struct{ pub crypto.PublicKey }

func (v dsseVerifier) Verify(_ context.Context, data, sig []byte) error {
	d := sha256.Sum256(data)
	switch k := v.pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, d[:], sig) {
			return errors.New("bad signature")
		}
		return nil
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, d[:], sig)
	}
	return errors.New("unsupported key")
}
func (v dsseVerifier) KeyID() (string, error)   { return scai.KeyID(v.pub) }
func (v dsseVerifier) Public() crypto.PublicKey { return v.pub }

// dsseVerify is what VerifySignature decided when it used the DSSE library.
func dsseVerify(env *dsse.Envelope, pub crypto.PublicKey) error {
	ev, err := dsse.NewEnvelopeVerifier(dsseVerifier{pub})
	if err != nil {
		return err
	}
	_, err = ev.Verify(context.Background(), env)
	return err
}

// checkVerify compares VerifySignature with the DSSE library's verifier.
func checkVerify(t *testing.T, env *dsse.Envelope, pub crypto.PublicKey) {
	t.Helper()
	got, want := scai.VerifySignature(env, pub), dsseVerify(env, pub)
	if (got == nil) != (want == nil) {
		t.Fatalf("VerifySignature: %v; dsse: %v", got, want)
	}
	if got != nil && !errors.Is(got, scai.ErrSignature) {
		t.Fatalf("VerifySignature: %v does not wrap ErrSignature", got)
	}
}

func TestVerifySignatureAsDSSE(t *testing.T) {
	k := seededKey(t, "verify")
	other := seededKey(t, "other")
	env, err := scai.ParseEnvelope(signed(t, k, newAttestation(t, attest.PurposeLaunch, k.Public())))
	if err != nil {
		t.Fatal(err)
	}
	otherEnv, err := scai.ParseEnvelope(signed(t, other, newAttestation(t, attest.PurposeLaunch, other.Public())))
	if err != nil {
		t.Fatal(err)
	}
	good := env.Signatures[0]
	raw, _ := base64.StdEncoding.DecodeString(good.Sig)
	flipped := bytes.Clone(raw)
	flipped[len(flipped)-1] ^= 1
	payload, _ := env.DecodeB64Payload()
	with := func(f func(e *dsse.Envelope)) *dsse.Envelope {
		e := &dsse.Envelope{PayloadType: env.PayloadType, Payload: env.Payload, Signatures: append([]dsse.Signature(nil), env.Signatures...)}
		f(e)
		return e
	}
	sig := func(keyID string, b []byte) dsse.Signature {
		return dsse.Signature{KeyID: keyID, Sig: base64.StdEncoding.EncodeToString(b)}
	}
	for _, tc := range []struct {
		name string
		env  *dsse.Envelope
		ok   bool
	}{
		{"good", env, true},
		{"other key's envelope", otherEnv, false},
		{"payload type", with(func(e *dsse.Envelope) { e.PayloadType = "application/json" }), false},
		{"payload", with(func(e *dsse.Envelope) {
			e.Payload = base64.StdEncoding.EncodeToString(append(bytes.Clone(payload), ' '))
		}), false},
		{"URL-safe payload", with(func(e *dsse.Envelope) { e.Payload = base64.URLEncoding.EncodeToString(payload) }), true},
		{"payload not base64", with(func(e *dsse.Envelope) { e.Payload = "%%%" }), false},
		{"flipped signature", with(func(e *dsse.Envelope) { e.Signatures = []dsse.Signature{sig(good.KeyID, flipped)} }), false},
		{"URL-safe signature", with(func(e *dsse.Envelope) {
			e.Signatures = []dsse.Signature{{KeyID: good.KeyID, Sig: base64.URLEncoding.EncodeToString(raw)}}
		}), true},
		{"no keyid", with(func(e *dsse.Envelope) { e.Signatures = []dsse.Signature{sig("", raw)} }), true},
		{"other keyid", with(func(e *dsse.Envelope) { e.Signatures = []dsse.Signature{sig("abcd", raw)} }), false},
		{"bad then good", with(func(e *dsse.Envelope) { e.Signatures = []dsse.Signature{sig(good.KeyID, flipped), good} }), true},
		{"good then not base64", with(func(e *dsse.Envelope) { e.Signatures = []dsse.Signature{good, {Sig: "%%"}} }), false},
		{"other keyid then good", with(func(e *dsse.Envelope) { e.Signatures = []dsse.Signature{sig("abcd", flipped), good} }), true},
		{"no signatures", with(func(e *dsse.Envelope) { e.Signatures = nil }), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkVerify(t, tc.env, k.Public())
			if err := scai.VerifySignature(tc.env, k.Public()); (err == nil) != tc.ok {
				t.Fatalf("VerifySignature = %v, want ok %v", err, tc.ok)
			}
		})
	}
	if err := scai.VerifySignature(env, rsaKey(t).Public()); !errors.Is(err, scai.ErrSignature) {
		t.Errorf("RSA key: %v", err)
	}
}

// TestSignPayloadEnvelope: SignPayload writes the envelope json.Marshal
// writes for the dsse.Envelope it holds.
func TestSignPayloadEnvelope(t *testing.T) {
	k := seededKey(t, "envelope")
	for _, signer := range []crypto.Signer{k, rsaKey(t)} {
		payload, err := scai.Encode(newAttestation(t, attest.PurposeAttest, signer.Public()))
		if err != nil {
			t.Fatal(err)
		}
		b, err := scai.SignPayload(context.Background(), signer, payload)
		if err != nil {
			t.Fatal(err)
		}
		env, err := scai.ParseEnvelope(b)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, want) {
			t.Errorf("envelope:\n got %s\nwant %s", b, want)
		}
		kid, _ := scai.KeyID(signer.Public())
		if len(env.Signatures) != 1 || env.Signatures[0].KeyID != kid {
			t.Errorf("signatures %+v, want one with keyid %s", env.Signatures, kid)
		}
		checkVerify(t, env, signer.Public())
		if err := dsseVerify(env, signer.Public()); err != nil {
			t.Errorf("the DSSE library does not verify the envelope: %v", err)
		}
	}
}
