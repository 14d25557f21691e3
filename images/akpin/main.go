// Command akpin reads the attestation key (AK) attestd will use directly from
// a TPM the host controls (a swtpm socket) and prints its public key as PEM.
// The e2e test pins this key: it comes from the vTPM itself, over a channel
// the guest cannot touch, before the guest ever boots (docs/operating.md).
//
//	go run ./images/akpin unix:/path/to/swtpm.sock > ak.pem
package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/attestd/attestd/attest/tpm"
)

func main() {
	if len(os.Args) != 2 || !strings.HasPrefix(os.Args[1], "unix:") {
		fmt.Fprintln(os.Stderr, "usage: akpin unix:/path/to/swtpm.sock")
		os.Exit(2)
	}
	if err := run(strings.TrimPrefix(os.Args[1], "unix:")); err != nil {
		fmt.Fprintln(os.Stderr, "akpin:", err)
		os.Exit(1)
	}
}

func run(sock string) error {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return err
	}
	defer c.Close()
	// The same template and hierarchy as attest/tpm: a primary key, so the
	// TPM derives the same AK from its owner seed every time.
	ak, err := client.NewKey(c, tpm2.HandleOwner, tpm.AKTemplate())
	if err != nil {
		return fmt.Errorf("create AK: %w", err)
	}
	defer ak.Close()
	der, err := x509.MarshalPKIXPublicKey(ak.PublicKey())
	if err != nil {
		return err
	}
	return pem.Encode(os.Stdout, &pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
