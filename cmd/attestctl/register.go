package main

import (
	"context"
	"crypto/subtle"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"time"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/scai"
	"github.com/attestd/attestd/verify"
)

// register pins the environment's AK after proving, by credential
// activation, that it lives in the TPM whose EK certificate chains to the
// given roots. Both sides run here: a control plane that is remote does the
// MakeCredential half itself (attest/tpm.MakeCredential) and relays the
// challenge.
func (e *env) register(ctx context.Context, args []string) error {
	fs := e.newFlagSet("register")
	var roots, inter multiFlag
	fs.Var(&roots, "ek-roots", "PEM certificates of the TPM vendor's EK roots (required, repeatable)")
	fs.Var(&inter, "ek-intermediates", "PEM intermediate certificates of the EK chain (repeatable)")
	out := fs.String("out", "", "write the registered AK public key (PEM, for --trust-ak) to FILE (default: stdout)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if len(roots) == 0 {
		return fmt.Errorf("%w: --ek-roots is required", errUsage)
	}
	pool := x509.NewCertPool()
	for _, f := range roots {
		certs, err := readPEMCerts(f)
		if err != nil {
			return fmt.Errorf("%w: --ek-roots: %v", errUsage, err)
		}
		for _, c := range certs {
			pool.AddCert(c)
		}
	}
	var intermediates []*x509.Certificate
	for _, f := range inter {
		certs, err := readPEMCerts(f)
		if err != nil {
			return fmt.Errorf("%w: --ek-intermediates: %v", errUsage, err)
		}
		intermediates = append(intermediates, certs...)
	}
	return e.call(ctx, "register", func(ctx context.Context, c *apiv1.Client) error {
		id, err := c.GetIdentity(ctx, &apiv1.GetIdentityRequest{})
		if err != nil {
			return err
		}
		ev, err := launchTPMEvidence(id.GetLaunchAttestation())
		if err != nil {
			return err
		}
		ekDER, err := ev.MustPart(tpm.PartEKCert)
		if err != nil {
			return fmt.Errorf("the TPM has no EK certificate: register needs one (%w)", err)
		}
		akPublic, err := ev.MustPart(tpm.PartAKPublic)
		if err != nil {
			return err
		}
		ekPub, err := tpm.VerifyEKCertificate(ekDER, intermediates, pool, time.Now())
		if err != nil {
			return fmt.Errorf("EK certificate: %w", err)
		}
		secret, ch, err := tpm.MakeCredential(ekPub, akPublic)
		if err != nil {
			return err
		}
		resp, err := c.ActivateCredential(ctx, &apiv1.ActivateCredentialRequest{CredentialBlob: ch.CredBlob, EncryptedSecret: ch.EncSecret})
		if err != nil {
			return err
		}
		if subtle.ConstantTimeCompare(resp.GetSecret(), secret) != 1 {
			return fmt.Errorf("credential activation returned the wrong secret: the AK is not in the certified TPM")
		}
		akKey, err := tpm.AKPublic(ev)
		if err != nil {
			return err
		}
		der, err := x509.MarshalPKIXPublicKey(akKey)
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stderr, "AK registered: the EK certificate chains to the given roots and credential activation proved the AK is in that TPM")
		pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		if *out == "" {
			_, err := e.stdout.Write(pemBytes)
			return err
		}
		return os.WriteFile(*out, pemBytes, 0o644)
	})
}

// launchTPMEvidence returns the TPM evidence of a launch attestation. Its
// signature is not checked here: registration itself is the proof.
func launchTPMEvidence(launch []byte) (*attest.Evidence, error) {
	env, err := scai.ParseEnvelope(launch)
	if err != nil {
		return nil, err
	}
	op, err := scai.Open(env)
	if err != nil {
		return nil, err
	}
	for _, ev := range op.Attestation.Evidence {
		if ev.Backend == "tpm" {
			return ev, nil
		}
	}
	return nil, fmt.Errorf("the environment has no TPM evidence: AK registration is for TPMs")
}

func readPEMCerts(path string) ([]*x509.Certificate, error) {
	b, err := readInput(path)
	if err != nil {
		return nil, err
	}
	certs, err := verify.ParsePEMCertificates(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}
