package tpm

import (
	"bytes"
	"context"
	"crypto/x509"
	"testing"
	"time"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/internal/swtpmtest"
)

// TestCredentialActivationSWTPM registers an AK the way a verifier without
// an AK certificate does: EK certificate → swtpm's local CA, MakeCredential
// to the EK for the AK's name, ActivateCredential in the TPM. Needs swtpm.
func TestCredentialActivationSWTPM(t *testing.T) {
	sw := swtpmtest.StartTPM(t)
	b := openSWTPM(t, sw.Socket)
	ev, err := b.Evidence(context.Background(), attest.Binding{})
	if err != nil {
		t.Fatal(err)
	}
	ekDER, err := ev.MustPart(PartEKCert)
	if err != nil {
		t.Fatal(err)
	}
	akPub, err := ev.MustPart(PartAKPublic)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(readPEMCert(t, sw.RootCert))
	inter := []*x509.Certificate{readPEMCert(t, sw.IssuerCert)}
	now := time.Now()

	ek, err := VerifyEKCertificate(ekDER, inter, roots, now)
	if err != nil {
		t.Fatalf("VerifyEKCertificate: %v", err)
	}
	secret, ch, err := MakeCredential(ek, akPub)
	if err != nil {
		t.Fatalf("MakeCredential: %v", err)
	}
	got, err := b.ActivateCredential(context.Background(), ch.CredBlob, ch.EncSecret)
	if err != nil {
		t.Fatalf("ActivateCredential: %v", err)
	}
	if !bytes.Equal(got, secret) {
		t.Fatalf("activated secret %x, want %x", got, secret)
	}

	t.Run("other roots", func(t *testing.T) {
		if _, err := VerifyEKCertificate(ekDER, nil, x509.NewCertPool(), now); err == nil {
			t.Error("an EK certificate chained to an empty root pool")
		}
		if _, err := VerifyEKCertificate(ekDER, inter, roots, now.AddDate(-50, 0, 0)); err == nil {
			t.Error("an EK certificate was accepted before its validity") // swtpm EK certificates never expire
		}
	})
	t.Run("challenge for another AK", func(t *testing.T) {
		// A non-restricted key (the env key) is refused as an AK…
		envPub, _ := ev.MustPart(PartEnvKeyPublic)
		if _, _, err := MakeCredential(ek, envPub); err == nil {
			t.Error("MakeCredential accepted a non-restricted key as AK")
		}
		// …and a challenge bound to another AK name does not open.
		other := bytes.Clone(akPub)
		other[len(other)-1] ^= 1
		_, ch, err := MakeCredential(ek, other)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.ActivateCredential(context.Background(), ch.CredBlob, ch.EncSecret); err == nil {
			t.Error("a challenge for another AK name was opened")
		}
	})
	t.Run("tampered blob", func(t *testing.T) {
		_, ch, _ := MakeCredential(ek, akPub)
		ch.CredBlob[len(ch.CredBlob)-1] ^= 1
		if _, err := b.ActivateCredential(context.Background(), ch.CredBlob, ch.EncSecret); err == nil {
			t.Error("a tampered credential blob was opened")
		}
	})
}
