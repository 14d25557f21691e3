package attest

import (
	"context"
	"crypto"
	"fmt"
	"sync"
)

// KeySource is an EvidenceSource that vouches for another backend's
// environment key (a TEE beside a vTPM): each call gets the SHA-256 of that
// key's PKIX encoding to bind into its report, and calls are serialised
// (one guest device, one request at a time).
type KeySource struct {
	name      string
	keyDigest [32]byte
	evidence  func(b Binding, keyDigest [32]byte) (*Evidence, error)
	mu        sync.Mutex
}

var _ EvidenceSource = (*KeySource)(nil)

// NewKeySource returns a KeySource named name vouching for envKey, whose
// evidence comes from evidence.
func NewKeySource(name string, envKey crypto.PublicKey, evidence func(b Binding, keyDigest [32]byte) (*Evidence, error)) (*KeySource, error) {
	if evidence == nil {
		return nil, fmt.Errorf("%s: no evidence function", name)
	}
	kd, err := KeyDigest(envKey)
	if err != nil {
		return nil, err
	}
	return &KeySource{name: name, keyDigest: kd, evidence: evidence}, nil
}

// Name implements EvidenceSource.
func (s *KeySource) Name() string { return s.name }

// Evidence implements EvidenceSource.
func (s *KeySource) Evidence(ctx context.Context, b Binding) (*Evidence, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.evidence(b, s.keyDigest)
}
