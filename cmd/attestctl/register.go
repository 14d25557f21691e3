package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/verifier"
	"github.com/attestd/attestd/verify"
)

func (e *env) registerCmd() *cobra.Command {
	var roots, inter multiFlag
	var out string
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "register --ek-roots PEM [--ek-intermediates PEM]... [--out FILE]",
		GroupID: groupDaemon,
		Short:   "Pin the AK by credential activation against the TPM's EK certificate",
		Long: `Register the environment's attestation key (AK): check that the TPM's EK certificate
chains to the given roots, then prove by credential activation that the AK lives in that
TPM. Prints the AK's public key (PEM), for verify --trust-ak. Both halves run here; a remote
control plane does the MakeCredential half itself (docs/verifying.md).

--json prints {"akPublicKey" (PEM), "sha256" (of the key's DER), "file"}.`,
		Example: `  attestctl register --ek-roots tpm-vendor-roots.pem --out ak.pem`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.register(cmd.Context(), roots, inter, out, asJSON)
		},
	}
	fs := cmd.Flags()
	fs.Var(&roots, "ek-roots", "`PEM` certificates of the TPM vendor's EK roots (required, repeatable)")
	fs.Var(&inter, "ek-intermediates", "`PEM` intermediate certificates of the EK chain (repeatable)")
	fs.StringVar(&out, "out", "", "write the registered AK public key (PEM, for --trust-ak) to `FILE` (default: stdout)")
	fs.BoolVar(&asJSON, "json", false, "print the registered key as JSON")
	cmd.MarkFlagRequired("ek-roots")
	for _, f := range []string{"ek-roots", "ek-intermediates"} {
		cmd.MarkFlagFilename(f, "pem", "crt")
	}
	cmd.MarkFlagFilename("out")
	return cmd
}

// register pins the environment's AK after proving, by credential
// activation, that it lives in the TPM whose EK certificate chains to the
// given roots. Both sides run here; the verifier's half is
// verifier.StartRegistration, the one attestfleet relays for a remote
// control plane.
func (e *env) register(ctx context.Context, roots, inter []string, out string, asJSON bool) error {
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
		reg, err := verifier.StartRegistration(id.GetLaunchAttestation(), intermediates, pool, time.Now())
		switch {
		case errors.Is(err, verifier.ErrNoTPM):
			return fmt.Errorf("the environment has no TPM evidence with an EK certificate: register needs one (%w)", err)
		case errors.Is(err, verifier.ErrEKUntrusted):
			return err // "EK certificate not trusted: …"
		case err != nil:
			return fmt.Errorf("launch attestation: %w", err)
		}
		resp, err := c.ActivateCredential(ctx, &apiv1.ActivateCredentialRequest{CredentialBlob: reg.CredentialBlob, EncryptedSecret: reg.EncryptedSecret})
		if err != nil {
			return err
		}
		if subtle.ConstantTimeCompare(resp.GetSecret(), reg.Secret) != 1 {
			return fmt.Errorf("credential activation returned the wrong secret: the AK is not in the certified TPM")
		}
		fmt.Fprintln(e.stderr, "AK registered: the EK certificate chains to the given roots and credential activation proved the AK is in that TPM")
		pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: reg.AK})
		if out != "" {
			if err := os.WriteFile(out, pemBytes, 0o644); err != nil {
				return err
			}
		}
		switch {
		case asJSON:
			return e.printJSON(akJSON(reg.AK, out))
		case out == "":
			_, err := e.stdout.Write(pemBytes)
			return err
		}
		return nil
	})
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

// akKeyJSON is the --json output of register and export-ak.
type akKeyJSON struct {
	AKPublicKey string `json:"akPublicKey"`
	SHA256      string `json:"sha256"`
	File        string `json:"file,omitempty"`
}

func akJSON(der []byte, file string) akKeyJSON {
	sum := sha256.Sum256(der)
	return akKeyJSON{AKPublicKey: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), SHA256: hex.EncodeToString(sum[:]), File: file}
}
