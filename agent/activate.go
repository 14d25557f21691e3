package agent

import (
	"context"
	"fmt"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/attest"
)

// credentialActivator is a backend that can answer an AK registration
// challenge (the TPM backend).
type credentialActivator interface {
	ActivateCredential(ctx context.Context, credBlob, encSecret []byte) ([]byte, error)
}

// maxChallengePart bounds each half of a credential challenge (a TPM2B is
// at most 64 KiB; real ones are a few hundred bytes).
const maxChallengePart = 4 << 10

// ActivateCredential is a reader-level call: it changes nothing, and it only
// opens challenges made for this TPM's own EK and AK.
func (s *service) ActivateCredential(ctx context.Context, req *apiv1.ActivateCredentialRequest) (*apiv1.ActivateCredentialResponse, error) {
	blob, enc := req.GetCredentialBlob(), req.GetEncryptedSecret()
	if len(blob) == 0 || len(enc) == 0 || len(blob) > maxChallengePart || len(enc) > maxChallengePart {
		return nil, fmt.Errorf("%w: credential_blob and encrypted_secret must be 1 to %d bytes", errInput, maxChallengePart)
	}
	act, ok := s.a.backend.(credentialActivator)
	if !ok {
		return nil, fmt.Errorf("%w: backend %s has no credential activation (AK registration is for TPMs)", attest.ErrUnsupported, s.a.backend.Name())
	}
	s.a.mu.Lock()
	defer s.a.mu.Unlock()
	secret, err := act.ActivateCredential(ctx, blob, enc)
	if err != nil {
		return nil, err
	}
	return &apiv1.ActivateCredentialResponse{Secret: secret}, nil
}
