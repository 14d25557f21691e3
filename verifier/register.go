package verifier

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/scai"
)

// AK registration, relayed: the verifier's half of `attestctl register`
// (docs/verifying.md) for a control plane that is not on the machine. The
// control plane checks the EK certificate and makes the challenge
// (StartRegistration), the executor relays it to attestd's
// ActivateCredential, and the control plane compares the secret that comes
// back with Registration.Secret before it trusts the AK.

// Registration errors.
var (
	// ErrNoTPM: the launch attestation has no TPM evidence with an EK
	// certificate and an AK.
	ErrNoTPM = errors.New("no TPM evidence with an EK certificate")
	// ErrEKUntrusted: the EK certificate does not chain to the EK roots.
	ErrEKUntrusted = errors.New("EK certificate not trusted")
)

// Registration is a challenge made for one environment's AK: what to send
// to the TPM, and what the answer must be. Keep Secret on the verifier's
// side only.
type Registration struct {
	// CredentialBlob and EncryptedSecret are attestd's
	// ActivateCredentialRequest.
	CredentialBlob, EncryptedSecret []byte
	// Secret is what ActivateCredential must return.
	Secret []byte
	// AK is the AK (PKIX DER) and AKDigest its hex SHA-256.
	AK       []byte
	AKDigest string
	// EKCertDigest is the hex SHA-256 of the EK certificate (DER).
	EKCertDigest string
	// KeyDigest is the env key (hex SHA-256) of the launch attestation.
	KeyDigest string
}

// StartRegistration checks that the EK certificate in the TPM evidence of
// a launch attestation (a DSSE envelope, as attestd's GetIdentity gives it)
// chains to roots at now, and makes a credential-activation challenge for
// the AK beside it. The attestation's signature is not checked:
// registration itself is the proof.
func StartRegistration(launch []byte, intermediates []*x509.Certificate, roots *x509.CertPool, now time.Time) (*Registration, error) {
	env, err := scai.ParseEnvelope(launch)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBundle, err)
	}
	op, err := scai.Open(env)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBundle, err)
	}
	f := &Facts{}
	if err := f.evidence(op.Attestation); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBundle, err)
	}
	var ekDER, akPublic []byte
	for _, ev := range op.Attestation.Evidence {
		if ev.Backend == "tpm" {
			ekDER, _ = ev.MustPart(tpm.PartEKCert)
			akPublic, _ = ev.MustPart(tpm.PartAKPublic)
		}
	}
	if ekDER == nil || akPublic == nil {
		return nil, ErrNoTPM
	}
	ek, err := tpm.VerifyEKCertificate(ekDER, intermediates, roots, now)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEKUntrusted, err)
	}
	secret, ch, err := tpm.MakeCredential(ek, akPublic)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBundle, err)
	}
	kd, err := attest.KeyDigest(op.Attestation.EnvKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBundle, err)
	}
	ekSum := sha256.Sum256(ekDER)
	return &Registration{
		CredentialBlob: ch.CredBlob, EncryptedSecret: ch.EncSecret, Secret: secret,
		AK: f.AK, AKDigest: f.AKDigest, EKCertDigest: hex.EncodeToString(ekSum[:]), KeyDigest: hex.EncodeToString(kd[:]),
	}, nil
}
