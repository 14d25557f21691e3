package fleet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"

	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
	"github.com/attestd/attestd/verifier"
)

// maxSecret bounds the secret of FinishRegistration (the service's secrets
// are 32 bytes; TPM2B_DIGEST holds at most 64).
const maxSecret = 64

// pendingAK is what a registration challenge stores (Challenge.Data): the
// AK it is for, and the SHA-256 of the secret that proves it (the secret
// itself never reaches the database).
type pendingAK struct {
	SecretSHA256 []byte `json:"secretSha256"`
	AK           []byte `json:"ak"`
	EKCertSHA256 string `json:"ekCertSha256"`
}

// decodePendingAK reads Challenge.Data strictly.
func decodePendingAK(data []byte) (*pendingAK, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	var p pendingAK
	if err := d.Decode(&p); err != nil {
		return nil, fmt.Errorf("registration record: %w", err)
	}
	if d.More() {
		return nil, errors.New("registration record: data after the record")
	}
	if len(p.SecretSHA256) != sha256.Size || len(p.AK) == 0 || p.EKCertSHA256 == "" {
		return nil, fmt.Errorf("registration record: incomplete (secret digest %d bytes, AK %d bytes, EK certificate digest %q)", len(p.SecretSHA256), len(p.AK), p.EKCertSHA256)
	}
	return &p, nil
}

// StartRegistration implements fleetv1.FleetServer.
func (s *Server) StartRegistration(ctx context.Context, req *fleetv1.StartRegistrationRequest) (*fleetv1.StartRegistrationResponse, error) {
	if err := s.checkBundle("launch attestation", req.GetLaunchAttestation()); err != nil {
		return nil, err
	}
	if s.cfg.EKRoots == nil {
		return nil, refuse(ReasonEKUntrusted, "no EK roots are configured (registration.ek_roots): AK registration is off")
	}
	reg, err := verifier.StartRegistration(req.GetLaunchAttestation(), s.cfg.EKIntermediates, s.cfg.EKRoots, s.cfg.Now())
	switch {
	case errors.Is(err, verifier.ErrNoTPM):
		return nil, refuse(ReasonNoTPM, "%v: registration is for TPM environments", err)
	case errors.Is(err, verifier.ErrEKUntrusted):
		return nil, refuse(ReasonEKUntrusted, "%v", err)
	case err != nil:
		return nil, refuse(ReasonBadRequest, "%v", err)
	}
	sum := sha256.Sum256(reg.Secret)
	data, err := json.Marshal(pendingAK{SecretSHA256: sum[:], AK: reg.AK, EKCertSHA256: reg.EKCertDigest})
	if err != nil {
		return nil, err
	}
	c, err := s.newChallenge(StepRegister, reg.KeyDigest, "")
	if err != nil {
		return nil, err
	}
	c.Data = data
	if err := timedErr(s, "put_challenge", func() error { return s.store.PutChallenge(ctx, c) }); err != nil {
		return nil, storeRefusal(err, ReasonInternal)
	}
	return &fleetv1.StartRegistrationResponse{
		RegistrationId: c.Nonce, CredentialBlob: reg.CredentialBlob, EncryptedSecret: reg.EncryptedSecret,
		AkDigest: reg.AKDigest, Expires: timestamp(c.Expires),
	}, nil
}

// FinishRegistration implements fleetv1.FleetServer. The challenge is used
// up by the first answer, right or wrong.
func (s *Server) FinishRegistration(ctx context.Context, req *fleetv1.FinishRegistrationRequest) (*fleetv1.FinishRegistrationResponse, error) {
	if err := checkNonce("registration ID", req.GetRegistrationId()); err != nil {
		return nil, err
	}
	if n := len(req.GetSecret()); n == 0 || n > maxSecret {
		return nil, refuse(ReasonBadRequest, "secret is %d bytes; want 1 to %d", n, maxSecret)
	}
	now := s.cfg.Now()
	c, err := timed(s, "consume_challenge", func() (*Challenge, error) {
		return s.store.ConsumeChallenge(ctx, StepRegister, req.GetRegistrationId(), now)
	})
	if err != nil {
		return nil, storeRefusal(err, ReasonNonceUnknown)
	}
	p, err := decodePendingAK(c.Data)
	if err != nil {
		return nil, refuse(ReasonInternal, "%v", err)
	}
	got := sha256.Sum256(req.GetSecret())
	if subtle.ConstantTimeCompare(got[:], p.SecretSHA256) != 1 {
		return nil, refuse(ReasonActivationFailed, "the secret is not the one the challenge hid: the AK is not in the TPM whose EK certificate was checked")
	}
	akSum := sha256.Sum256(p.AK)
	ak := AK{Digest: fmt.Sprintf("%x", akSum), PublicKey: p.AK, EKCertDigest: p.EKCertSHA256, RegisteredAt: now}
	if err := timedErr(s, "put_ak", func() error { return s.store.PutAK(ctx, ak) }); err != nil {
		return nil, storeRefusal(err, ReasonInternal)
	}
	s.m.registrations.Inc()
	s.log.Info("AK registered", "ak", ak.Digest, "ek_cert", ak.EKCertDigest, "env_key", c.EnvKey)
	return &fleetv1.FinishRegistrationResponse{AkDigest: ak.Digest}, nil
}
