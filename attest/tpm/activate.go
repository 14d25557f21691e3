package tpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/legacy/tpm2/credactivation"

	"github.com/attestd/attestd/attest"
)

// AK registration by credential activation (TPM 2.0 Part 1, §24): a verifier
// that trusts the TPM vendor's EK certificate, but has no certificate for the
// AK, encrypts a secret to the EK bound to the AK's name (MakeCredential);
// only the TPM holding both keys, with the AK being restricted and fixedTPM,
// can recover it (ActivateCredential). The verifier then pins the AK.
//
// Authenticity (VerifyEKCertificate, MakeCredential) and policy (whether to
// pin the AK, and where) are kept apart: the caller decides.

// Challenge is what the verifier sends to the TPM: TPM2B_ID_OBJECT and
// TPM2B_ENCRYPTED_SECRET, each with its 2-byte size prefix.
type Challenge struct {
	CredBlob  []byte
	EncSecret []byte
}

// sanOID is subjectAltName, which EK certificates carry critical (with an
// empty subject) in a directoryName form Go does not process.
var sanOID = asn1.ObjectIdentifier{2, 5, 29, 17}

// VerifyEKCertificate parses an EK certificate and checks that it chains to
// roots at now (intermediates may follow the leaf in der or be in roots).
// It returns the EK public key. No network I/O: missing intermediates are
// not fetched.
func VerifyEKCertificate(der []byte, intermediates []*x509.Certificate, roots *x509.CertPool, now time.Time) (crypto.PublicKey, error) {
	if roots == nil {
		return nil, errors.New("no EK roots given")
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse EK certificate: %w", err)
	}
	// The TCG EK profile makes the SAN critical when the subject is empty;
	// Go leaves directoryName SANs unprocessed. Their content (TPM
	// manufacturer, model, version) is informational here.
	var unhandled []asn1.ObjectIdentifier
	for _, oid := range cert.UnhandledCriticalExtensions {
		if !oid.Equal(sanOID) {
			unhandled = append(unhandled, oid)
		}
	}
	cert.UnhandledCriticalExtensions = unhandled
	pool := x509.NewCertPool()
	for _, c := range intermediates {
		pool.AddCert(c)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: pool, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("EK certificate does not chain to the EK roots: %w", err)
	}
	return cert.PublicKey, nil
}

// MakeCredential checks that akPublic (a TPMT_PUBLIC) is a restricted,
// fixedTPM signing key and returns a fresh 32-byte secret and the challenge
// that only a TPM holding ek's private part and a loaded key named like the
// AK can open.
func MakeCredential(ek crypto.PublicKey, akPublic []byte) (secret []byte, ch *Challenge, err error) {
	pub, _, err := parsePublic(akPublic)
	if err != nil {
		return nil, nil, fmt.Errorf("AK public area: %w", err)
	}
	if pub.Attributes&(tpm2.FlagSign|tpm2.FlagRestricted|tpm2.FlagFixedTPM) != tpm2.FlagSign|tpm2.FlagRestricted|tpm2.FlagFixedTPM {
		return nil, nil, fmt.Errorf("AK is not a restricted, fixedTPM signing key (attributes %#x)", uint32(pub.Attributes))
	}
	name, err := nameOf(pub, akPublic)
	if err != nil {
		return nil, nil, err
	}
	secret = make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, nil, err
	}
	blob, enc, err := credactivation.Generate(&tpm2.HashValue{Alg: pub.NameAlg, Value: name[2:]}, ek, 16, secret)
	if err != nil {
		return nil, nil, fmt.Errorf("make credential: %w", err)
	}
	return secret, &Challenge{CredBlob: blob, EncSecret: enc}, nil
}

// ActivateCredential opens a challenge (TPM2B_ID_OBJECT and
// TPM2B_ENCRYPTED_SECRET, as in Challenge) made for this TPM's EK and AK and
// returns the secret. The EK is created as a transient primary key from the
// default template matching the EK certificate (RSA or ECC) and flushed
// afterwards; nothing is persisted.
func (b *Backend) ActivateCredential(ctx context.Context, credBlob, encSecret []byte) (_ []byte, err error) {
	defer b.catch(&err)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ch := &Challenge{CredBlob: credBlob, EncSecret: encSecret}
	if len(ch.CredBlob) < 2 || len(ch.EncSecret) < 2 {
		return nil, fmt.Errorf("%w: empty challenge", attest.ErrChallenge)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errClosed
	}
	if b.ekCert == nil {
		return nil, fmt.Errorf("activate credential: %w: this TPM has no EK certificate", attest.ErrUnsupported)
	}
	cert, err := x509.ParseCertificate(b.ekCert)
	if err != nil {
		return nil, fmt.Errorf("activate credential: EK certificate: %w", err)
	}
	tmpl := client.DefaultEKTemplateECC()
	if _, ok := cert.PublicKey.(interface{ Size() int }); ok { // *rsa.PublicKey
		tmpl = client.DefaultEKTemplateRSA()
	}
	ek, err := client.NewKey(b.rw, tpm2.HandleEndorsement, tmpl)
	if err != nil {
		return nil, fmt.Errorf("activate credential: create EK: %w", err)
	}
	defer ek.Close()
	if !keysEqual(ek.PublicKey(), cert.PublicKey) {
		return nil, errors.New("activate credential: the EK from the default template is not the certified EK")
	}
	sess, _, err := tpm2.StartAuthSession(b.rw, tpm2.HandleNull, tpm2.HandleNull, make([]byte, 16), nil,
		tpm2.SessionPolicy, tpm2.AlgNull, tpm2.AlgSHA256)
	if err != nil {
		return nil, fmt.Errorf("activate credential: start session: %w", err)
	}
	defer tpm2.FlushContext(b.rw, sess)
	pw := tpm2.AuthCommand{Session: tpm2.HandlePasswordSession, Attributes: tpm2.AttrContinueSession}
	if _, _, err := tpm2.PolicySecret(b.rw, tpm2.HandleEndorsement, pw, sess, nil, nil, nil, 0); err != nil {
		return nil, fmt.Errorf("activate credential: policy secret: %w", err)
	}
	secret, err := tpm2.ActivateCredentialUsingAuth(b.rw, []tpm2.AuthCommand{pw, {Session: sess, Attributes: tpm2.AttrContinueSession}},
		b.ak.Handle(), ek.Handle(), ch.CredBlob[2:], ch.EncSecret[2:])
	if err != nil {
		return nil, fmt.Errorf("activate credential: %w: %v", attest.ErrChallenge, err)
	}
	return bytes.Clone(secret), nil
}
