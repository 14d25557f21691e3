package verify

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"
)

func TestParsePEMKeys(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(p256)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(p256)
	pkcs8P384, _ := x509.MarshalPKCS8PrivateKey(p384)
	pub, _ := x509.MarshalPKIXPublicKey(p256.Public())
	block := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }

	for _, tc := range []struct {
		name, in, wantErr string
	}{
		{"EC PRIVATE KEY", string(block("EC PRIVATE KEY", sec1)), ""},
		{"PKCS #8", string(block("PRIVATE KEY", pkcs8)), ""},
		{"P-384", string(block("PRIVATE KEY", pkcs8P384)), "want an ECDSA P-256 key"},
		{"public key", string(block("PUBLIC KEY", pub)), `PEM block "PUBLIC KEY", want EC PRIVATE KEY or PRIVATE KEY`},
		{"not PEM", "key", "no PEM block"},
	} {
		k, err := ParsePEMPrivateKey([]byte(tc.in))
		switch {
		case tc.wantErr == "" && (err != nil || !k.Equal(p256)):
			t.Errorf("private %s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr):
			t.Errorf("private %s: error %v, want %q", tc.name, err, tc.wantErr)
		}
	}

	for _, tc := range []struct {
		name, in, wantErr string
	}{
		{"PUBLIC KEY", string(block("PUBLIC KEY", pub)), ""},
		{"private key", string(block("PRIVATE KEY", pkcs8)), `want a PEM "PUBLIC KEY" block`},
		{"not PEM", "key", `want a PEM "PUBLIC KEY" block`},
	} {
		k, err := ParsePEMPublicKey([]byte(tc.in))
		switch {
		case tc.wantErr == "" && (err != nil || !p256.PublicKey.Equal(k)):
			t.Errorf("public %s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr):
			t.Errorf("public %s: error %v, want %q", tc.name, err, tc.wantErr)
		}
	}
}
