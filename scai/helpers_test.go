package scai_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/scai"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	ita "github.com/in-toto/attestation/go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"google.golang.org/protobuf/testing/protocmp"
)

// seededKey derives a P-256 key from seed, so golden files are stable.
func seededKey(tb testing.TB, seed string) *ecdsa.PrivateKey {
	tb.Helper()
	d := sha256.Sum256([]byte(seed))
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		tb.Fatalf("derive key: %v", err)
	}
	return k
}

var goldenTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// tpmParts are fake TPM evidence parts with the real names and media types.
func tpmParts() []attest.Part {
	names := []struct{ name, mt string }{
		{"tpm/ak-public", "application/vnd.tcg.tpm2.tpmt-public"},
		{"tpm/env-key-public", "application/vnd.tcg.tpm2.tpmt-public"},
		{"tpm/certify-info", "application/vnd.tcg.tpm2.tpms-attest"},
		{"tpm/certify-signature", "application/vnd.tcg.tpm2.tpmt-signature"},
		{"tpm/quote-info", "application/vnd.tcg.tpm2.tpms-attest"},
		{"tpm/quote-signature", "application/vnd.tcg.tpm2.tpmt-signature"},
	}
	var ps []attest.Part
	for _, n := range names {
		ps = append(ps, attest.Part{Name: n.name, MediaType: n.mt, Data: []byte("fake " + n.name)})
	}
	return ps
}

// newAttestation returns an attestation for purpose over key, with fake TPM
// evidence and an agent CEL part.
func newAttestation(tb testing.TB, purpose attest.Purpose, pub crypto.PublicKey) *scai.Attestation {
	tb.Helper()
	kd, err := attest.KeyDigest(pub)
	if err != nil {
		tb.Fatal(err)
	}
	var nonce []byte
	var build *scai.Build
	switch purpose {
	case attest.PurposeAttest:
		nonce = []byte("verifier nonce 0123456789abcdef")
	case attest.PurposeDispatch:
		nonce = []byte("dispatch nonce")
		build = &scai.Build{ID: "build-42", Request: []*ita.ResourceDescriptor{
			{Name: "source", Uri: "git+https://example.com/repo", Digest: map[string]string{"gitCommit": strings.Repeat("a", 40)}},
			{Name: "entryPoint", Content: []byte("make release")},
		}}
	case attest.PurposeComplete:
		build = &scai.Build{ID: "build-42",
			Inputs:  []*ita.ResourceDescriptor{{Name: "dep.tar.gz", Digest: map[string]string{"sha256": strings.Repeat("b", 64)}}},
			Outputs: []*ita.ResourceDescriptor{{Name: "app", Digest: map[string]string{"sha256": strings.Repeat("c", 64)}}},
		}
	}
	a := &scai.Attestation{
		Purpose:  purpose,
		Nonce:    nonce,
		Build:    build,
		EnvKey:   pub,
		Evidence: []*attest.Evidence{{Backend: "tpm", Parts: tpmParts()}},
		Log:      scai.RefTo([]byte{0, 0, 0, 1, 2, 3}),
		Producer: scai.Producer{Name: "attestd", Version: "v0.1.0-test", URI: "https://github.com/attestd/attestd"},
		Time:     goldenTime,
	}
	data, err := scai.BindingData(a)
	if err != nil {
		tb.Fatal(err)
	}
	a.Binding = attest.Bind(purpose, kd, data)
	return a
}

// signed builds and signs a.
func signed(tb testing.TB, signer crypto.Signer, a *scai.Attestation) []byte {
	tb.Helper()
	st, err := scai.NewStatement(a)
	if err != nil {
		tb.Fatalf("NewStatement: %v", err)
	}
	b, err := scai.Sign(context.Background(), signer, st)
	if err != nil {
		tb.Fatalf("Sign: %v", err)
	}
	return b
}

// openVerified parses, verifies with the embedded key and opens b.
func openVerified(b []byte) (*scai.Opened, *dsse.Envelope, error) {
	env, err := scai.ParseEnvelope(b)
	if err != nil {
		return nil, nil, err
	}
	o, err := scai.Open(env)
	if err != nil {
		return nil, env, err
	}
	if err := scai.VerifySignature(env, o.Attestation.EnvKey); err != nil {
		return nil, env, err
	}
	return o, env, nil
}

var cmpAttestation = cmp.Options{
	cmp.Comparer(func(x, y *ecdsa.PublicKey) bool { return x.Equal(y) }),
	cmp.Comparer(func(x, y *rsa.PublicKey) bool { return x.Equal(y) }),
	cmpopts.EquateEmpty(),
	protocmp.Transform(),
}

var rsaKey = func() func(tb testing.TB) *rsa.PrivateKey {
	var k *rsa.PrivateKey
	return func(tb testing.TB) *rsa.PrivateKey {
		tb.Helper()
		if k == nil {
			var err error
			if k, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
				tb.Fatal(err)
			}
		}
		return k
	}
}()
