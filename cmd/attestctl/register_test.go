package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/internal/swtpmtest"
)

// TestRegisterOnSwtpm registers the AK of a swtpm whose EK certificate comes
// from swtpm's local CA, then verifies an attestation with the registered AK.
func TestRegisterOnSwtpm(t *testing.T) {
	sw := swtpmtest.StartTPM(t)
	b, err := tpm.Open(tpm.Config{Device: "unix:" + sw.Socket})
	if err != nil {
		t.Fatal(err)
	}
	sock := startAgentOn(t, b)
	dir := t.TempDir()
	ak := filepath.Join(dir, "ak.pem")
	code, _, errs := ctl(t, "--socket", sock, "register", "--ek-roots", sw.RootCert, "--ek-intermediates", sw.IssuerCert, "--out", ak)
	if code != 0 || !strings.Contains(errs, "AK registered") {
		t.Fatalf("register: exit %d: %s", code, errs)
	}
	nonce := strings.Repeat("5a", 16)
	att := filepath.Join(dir, "att.json")
	if code, _, errs := ctl(t, "--socket", sock, "attest", "--nonce", nonce, "--out", att); code != 0 {
		t.Fatalf("attest: %s", errs)
	}
	if code, out, errs := ctl(t, "verify", "--nonce", nonce, "--trust-ak", ak, att); code != 0 {
		t.Fatalf("verify with the registered AK: exit %d\n%s%s", code, out, errs)
	}

	// An EK chain to other roots is refused before any challenge is made.
	other := filepath.Join(dir, "other.pem")
	if err := os.WriteFile(other, selfSigned(t), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := ctl(t, "--socket", sock, "register", "--ek-roots", other); code != 1 || !strings.Contains(errs, "EK certificate") {
		t.Fatalf("register with wrong roots: exit %d: %s", code, errs)
	}
	if code, _, _ := ctl(t, "--socket", sock, "register"); code != 2 {
		t.Fatalf("register without roots: exit %d, want 2", code)
	}
}

// selfSigned is an unrelated root CA certificate (PEM).
func selfSigned(t *testing.T) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
