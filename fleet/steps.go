package fleet

import (
	"context"
	"errors"

	"github.com/attestd/attestd/attest"
	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
	"github.com/attestd/attestd/verifier"
)

// Challenge implements fleetv1.FleetServer.
func (s *Server) Challenge(ctx context.Context, req *fleetv1.ChallengeRequest) (*fleetv1.ChallengeResponse, error) {
	var c Challenge
	var err error
	switch req.GetStep() {
	case fleetv1.Step_STEP_ADMIT:
		c, err = s.newChallenge(StepAdmit, "", "")
	case fleetv1.Step_STEP_COMPLETE:
		c, err = s.completeChallenge(ctx, req.GetBuildId())
	default:
		return nil, refuse(ReasonBadRequest, "step %v: want STEP_ADMIT or STEP_COMPLETE (dispatch nonces come from Dispatch)", req.GetStep())
	}
	if err != nil {
		return nil, err
	}
	if err := timedErr(s, "put_challenge", func() error { return s.store.PutChallenge(ctx, c) }); err != nil {
		return nil, storeRefusal(err, ReasonInternal)
	}
	return &fleetv1.ChallengeResponse{Nonce: c.Nonce, Expires: timestamp(c.Expires)}, nil
}

// completeChallenge is a completion challenge for a dispatched build.
func (s *Server) completeChallenge(ctx context.Context, buildID string) (Challenge, error) {
	if err := checkBuildID(buildID); err != nil {
		return Challenge{}, err
	}
	b, err := s.build(ctx, buildID)
	if err != nil {
		return Challenge{}, err
	}
	if b.State != BuildDispatched {
		return Challenge{}, refuse(ReasonWrongState, "build %q is %s; a completion challenge is for a dispatched build", buildID, b.State)
	}
	return s.newChallenge(StepComplete, b.EnvKey, buildID)
}

// Admit implements fleetv1.FleetServer.
func (s *Server) Admit(ctx context.Context, req *fleetv1.AdmitRequest) (*fleetv1.AdmitResponse, error) {
	if err := checkNonce("nonce", req.GetNonce()); err != nil {
		return nil, err
	}
	if err := s.checkBundle("bundle", req.GetBundle()); err != nil {
		return nil, err
	}
	// Only the admission answering this nonce is verified (a retried
	// admission leaves earlier ones in the bundle).
	bundle := verifier.KeepAdmission(req.GetBundle(), req.GetNonce())
	f, err := inspect(bundle)
	if err != nil {
		return nil, err
	}
	if f.Keys != 1 {
		return nil, refuse(ReasonAttestationForeign, "the bundle holds attestations of %d env keys: another environment's attestation is in it", f.Keys)
	}
	if err := stepAdmit.check(f); err != nil {
		return nil, err
	}
	ev, err := s.verified(ctx, stepAdmit, bundle, f, verifier.Expect{Nonces: map[attest.Purpose][]byte{attest.PurposeAttest: req.GetNonce()}})
	if err != nil {
		return nil, err
	}
	result, err := s.signResult(ctx, ev)
	if err != nil {
		return nil, err
	}
	env := Environment{
		KeyDigest: f.KeyDigest, BootID: f.BootID, AKDigest: f.AKDigest, Backends: f.Backends, Image: f.Image,
		Level: ev.Bundles[0].Level, AdmittedAt: s.cfg.Now(), Admission: result,
	}
	if err := timedErr(s, "admit", func() error { return s.store.Admit(ctx, req.GetNonce(), env.AdmittedAt, env) }); err != nil {
		return nil, storeRefusal(err, ReasonNonceUnknown)
	}
	s.m.admissions.Inc()
	s.log.Info("admitted", "env_key", env.KeyDigest, "boot", env.BootID, "level", env.Level)
	return &fleetv1.AdmitResponse{Environment: environmentProto(&env)}, nil
}

// Dispatch implements fleetv1.FleetServer.
func (s *Server) Dispatch(ctx context.Context, req *fleetv1.DispatchRequest) (*fleetv1.DispatchResponse, error) {
	if err := checkEnvKey(req.GetEnvKey()); err != nil {
		return nil, err
	}
	if err := checkBuildID(req.GetBuildId()); err != nil {
		return nil, err
	}
	c, err := s.newChallenge(StepDispatch, req.GetEnvKey(), req.GetBuildId())
	if err != nil {
		return nil, err
	}
	b := Build{BuildID: req.GetBuildId(), EnvKey: req.GetEnvKey(), State: BuildReserved, ReservedAt: c.Created}
	err = timedErr(s, "reserve", func() error { return s.store.Reserve(ctx, b, c) })
	if errors.Is(err, ErrBuildTaken) {
		return s.redispatch(ctx, b, err)
	}
	if err != nil {
		return nil, storeRefusal(err, ReasonEnvironmentUnknown)
	}
	s.m.dispatches.Inc()
	s.log.Info("dispatched", "env_key", b.EnvKey, "build_id", b.BuildID)
	return &fleetv1.DispatchResponse{Nonce: c.Nonce, Expires: timestamp(c.Expires)}, nil
}

// redispatch answers a Dispatch of want whose build ID Reserve found
// bound (taken): when it is bound to the same environment and still
// reserved, with the nonce and expiry the first Dispatch answered (a retry
// whose answer was lost), issuing and storing nothing. Once the nonce is
// used (the build dispatched) the answer is WRONG_STATE; once it expired,
// NONCE_EXPIRED; bound to another environment, BUILD_TAKEN.
func (s *Server) redispatch(ctx context.Context, want Build, taken error) (*fleetv1.DispatchResponse, error) {
	b, err := timed(s, "build", func() (*Build, error) { return s.store.Build(ctx, want.BuildID) })
	switch {
	case errors.Is(err, ErrNotFound) || err == nil && b.EnvKey != want.EnvKey:
		return nil, storeRefusal(taken, ReasonBuildTaken)
	case err != nil:
		return nil, storeRefusal(err, ReasonBuildUnknown)
	case b.State != BuildReserved:
		return nil, refuse(ReasonWrongState, "build %q is %s on this environment: its dispatch nonce is used", b.BuildID, b.State)
	case b.DispatchNonce == nil || !s.cfg.Now().Before(b.DispatchExpires):
		return nil, refuse(ReasonNonceExpired, "build %q is reserved on this environment, but its dispatch nonce has expired: the build cannot be confirmed", b.BuildID)
	}
	s.log.Info("dispatch repeated", "env_key", b.EnvKey, "build_id", b.BuildID)
	return &fleetv1.DispatchResponse{Nonce: b.DispatchNonce, Expires: timestamp(b.DispatchExpires)}, nil
}

// ConfirmDispatch implements fleetv1.FleetServer.
func (s *Server) ConfirmDispatch(ctx context.Context, req *fleetv1.ConfirmDispatchRequest) (*fleetv1.ConfirmDispatchResponse, error) {
	b, f, err := s.recorded(ctx, stepDispatch, BuildReserved, req.GetBuildId(), req.GetBundle())
	if err != nil {
		return nil, err
	}
	nonce := f.Nonces[attest.PurposeDispatch]
	if nonce == nil {
		return nil, refuse(ReasonNonceUnknown, "the dispatch attestation carries no nonce: pass the nonce Dispatch returned to attestd's BindBuild")
	}
	// The store consumes the nonce only if it is the one issued for this
	// build: the attestation's own nonce is what it checks.
	ev, err := s.verified(ctx, stepDispatch, req.GetBundle(), f, verifier.Expect{BuildID: b.BuildID, Nonces: map[attest.Purpose][]byte{attest.PurposeDispatch: nonce}})
	if err != nil {
		return nil, err
	}
	result, err := s.signResult(ctx, ev)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	if err := timedErr(s, "dispatched", func() error { return s.store.Dispatched(ctx, b.BuildID, nonce, now, result) }); err != nil {
		return nil, storeRefusal(err, ReasonBuildUnknown)
	}
	b.State, b.DispatchedAt, b.Dispatch = BuildDispatched, now, result
	s.m.confirmations.Inc()
	s.log.Info("dispatch confirmed", "env_key", b.EnvKey, "build_id", b.BuildID)
	return &fleetv1.ConfirmDispatchResponse{Build: buildProto(b)}, nil
}

// Complete implements fleetv1.FleetServer.
func (s *Server) Complete(ctx context.Context, req *fleetv1.CompleteRequest) (*fleetv1.CompleteResponse, error) {
	b, f, err := s.recorded(ctx, stepComplete, BuildDispatched, req.GetBuildId(), req.GetBundle())
	if err != nil {
		return nil, err
	}
	e := verifier.Expect{BuildID: b.BuildID}
	nonce := f.Nonces[attest.PurposeComplete]
	if nonce != nil {
		e.Nonces = map[attest.Purpose][]byte{attest.PurposeComplete: nonce}
	}
	ev, err := s.verified(ctx, stepComplete, req.GetBundle(), f, e)
	if err != nil {
		return nil, err
	}
	vsa, err := s.signResult(ctx, ev)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	if err := timedErr(s, "completed", func() error { return s.store.Completed(ctx, b.BuildID, nonce, now, vsa) }); err != nil {
		return nil, storeRefusal(err, ReasonBuildUnknown)
	}
	b.State, b.CompletedAt, b.Completion = BuildCompleted, now, vsa
	s.m.completions.Inc()
	s.log.Info("completed", "env_key", b.EnvKey, "build_id", b.BuildID)
	return &fleetv1.CompleteResponse{Build: buildProto(b)}, nil
}

// recorded checks a dispatch or completion request against the build's
// record before anything is verified: the build is in state, the bundle is
// for step st, by the recorded environment, for the recorded build ID.
func (s *Server) recorded(ctx context.Context, st step, state BuildState, buildID string, bundle []byte) (*Build, *verifier.Facts, error) {
	if err := checkBuildID(buildID); err != nil {
		return nil, nil, err
	}
	if err := s.checkBundle("bundle", bundle); err != nil {
		return nil, nil, err
	}
	f, err := inspect(bundle)
	if err != nil {
		return nil, nil, err
	}
	b, err := s.build(ctx, buildID)
	if err != nil {
		return nil, nil, err
	}
	if b.State != state {
		return nil, nil, refuse(ReasonWrongState, "build %q is %s, not %s", buildID, b.State, state)
	}
	if f.KeyDigest != b.EnvKey || f.Keys != 1 {
		return nil, nil, refuse(ReasonAttestationForeign, "the bundle is by env key %s (%d key(s)); build %q was dispatched to %s", f.KeyDigest, f.Keys, buildID, b.EnvKey)
	}
	if err := st.check(f); err != nil {
		return nil, nil, err
	}
	if f.BuildID != buildID {
		return nil, nil, refuse(ReasonBuildMismatch, "the bundle's dispatch is for build %q, not %q", f.BuildID, buildID)
	}
	return b, f, nil
}

// build is a build's record (BUILD_UNKNOWN).
func (s *Server) build(ctx context.Context, buildID string) (*Build, error) {
	b, err := timed(s, "build", func() (*Build, error) { return s.store.Build(ctx, buildID) })
	if err != nil {
		return nil, storeRefusal(err, ReasonBuildUnknown)
	}
	return b, nil
}

// GetBuild implements fleetv1.FleetServer.
func (s *Server) GetBuild(ctx context.Context, req *fleetv1.GetBuildRequest) (*fleetv1.Build, error) {
	if err := checkBuildID(req.GetBuildId()); err != nil {
		return nil, err
	}
	b, err := s.build(ctx, req.GetBuildId())
	if err != nil {
		return nil, err
	}
	return buildProto(b), nil
}

// GetEnvironment implements fleetv1.FleetServer.
func (s *Server) GetEnvironment(ctx context.Context, req *fleetv1.GetEnvironmentRequest) (*fleetv1.Environment, error) {
	if err := checkEnvKey(req.GetEnvKey()); err != nil {
		return nil, err
	}
	e, err := timed(s, "environment", func() (*Environment, error) { return s.store.Environment(ctx, req.GetEnvKey()) })
	if err != nil {
		return nil, storeRefusal(err, ReasonEnvironmentUnknown)
	}
	return environmentProto(e), nil
}
