package tpm

import (
	"crypto"

	"github.com/attestd/attestd/attest"
)

// AKPublic returns the attestation key carried in TPM evidence. It proves
// nothing by itself: pin it only from a boot you trust (docs/verifying.md).
func AKPublic(ev *attest.Evidence) (crypto.PublicKey, error) {
	_, _, pub, err := parseAK(ev)
	return pub, err
}
