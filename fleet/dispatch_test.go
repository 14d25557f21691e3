package fleet_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/attestd/attestd/fleet"
	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
)

// TestDispatchRefusals: one build per environment, one environment per
// build; dispatch and completion attestations that do not match the record.
func TestDispatchRefusals(t *testing.T) {
	ctx := context.Background()
	confirm := func(f *testFleet, build string, bundle []byte) error {
		_, err := f.ConfirmDispatch(ctx, &fleetv1.ConfirmDispatchRequest{BuildId: build, Bundle: bundle})
		return err
	}
	t.Run("second build for an environment", func(t *testing.T) {
		f := newFleet(t)
		key := f.admit(t, newEnv(t, 0)).GetKeyDigest()
		f.dispatch(t, key, "build-1")
		_, err := f.Dispatch(ctx, &fleetv1.DispatchRequest{EnvKey: key, BuildId: "build-2"})
		wantRefusal(t, err, codes.AlreadyExists, fleet.ReasonEnvironmentTaken)
	})
	t.Run("second environment for a build", func(t *testing.T) {
		f := newFleet(t)
		a := newEnv(t, 0)
		f.dispatch(t, f.admit(t, a).GetKeyDigest(), "build-1")
		a.close()
		_, err := f.Dispatch(ctx, &fleetv1.DispatchRequest{EnvKey: f.admit(t, newEnv(t, 0)).GetKeyDigest(), BuildId: "build-1"})
		wantRefusal(t, err, codes.AlreadyExists, fleet.ReasonBuildTaken)
	})
	t.Run("environment not admitted", func(t *testing.T) {
		f := newFleet(t)
		_, err := f.Dispatch(ctx, &fleetv1.DispatchRequest{EnvKey: strings.Repeat("0", 64), BuildId: "build-1"})
		wantRefusal(t, err, codes.NotFound, fleet.ReasonEnvironmentUnknown)
	})
	t.Run("dispatch attestation for another build ID", func(t *testing.T) {
		f := newFleet(t)
		e := newEnv(t, 0)
		nonce := f.dispatch(t, f.admit(t, e).GetKeyDigest(), "build-1")
		wantRefusal(t, confirm(f, "build-1", bind(t, e, "build-2", nonce)), codes.PermissionDenied, fleet.ReasonBuildMismatch)
	})
	t.Run("dispatch attestation with an unknown nonce", func(t *testing.T) {
		f := newFleet(t)
		e := newEnv(t, 0)
		f.dispatch(t, f.admit(t, e).GetKeyDigest(), "build-1")
		wantRefusal(t, confirm(f, "build-1", bind(t, e, "build-1", []byte(strings.Repeat("x", 32)))), codes.InvalidArgument, fleet.ReasonNonceUnknown)
	})
	t.Run("dispatch attestation without a nonce", func(t *testing.T) {
		f := newFleet(t)
		e := newEnv(t, 0)
		f.dispatch(t, f.admit(t, e).GetKeyDigest(), "build-1")
		wantRefusal(t, confirm(f, "build-1", bind(t, e, "build-1", nil)), codes.InvalidArgument, fleet.ReasonNonceUnknown)
	})
	t.Run("dispatch attestation with another build's nonce", func(t *testing.T) {
		f := newFleet(t)
		b := newEnv(t, 0)
		other := f.dispatch(t, f.admit(t, b).GetKeyDigest(), "build-2")
		b.close()
		a := newEnv(t, 0)
		f.dispatch(t, f.admit(t, a).GetKeyDigest(), "build-1")
		wantRefusal(t, confirm(f, "build-1", bind(t, a, "build-1", other)), codes.PermissionDenied, fleet.ReasonNonceForeign)
	})
	t.Run("dispatch attestation from another environment", func(t *testing.T) {
		f := newFleet(t)
		a := newEnv(t, 0)
		nonce := f.dispatch(t, f.admit(t, a).GetKeyDigest(), "build-1")
		a.close()
		b := newEnv(t, 0)
		f.admit(t, b)
		wantRefusal(t, confirm(f, "build-1", bind(t, b, "build-1", nonce)), codes.PermissionDenied, fleet.ReasonAttestationForeign)
	})
	t.Run("dispatch confirmed twice", func(t *testing.T) {
		f := newFleet(t)
		e := newEnv(t, 0)
		bundle := bind(t, e, "build-1", f.dispatch(t, f.admit(t, e).GetKeyDigest(), "build-1"))
		if err := confirm(f, "build-1", bundle); err != nil {
			t.Fatal(err)
		}
		wantRefusal(t, confirm(f, "build-1", bundle), codes.FailedPrecondition, fleet.ReasonWrongState)
	})
	t.Run("dispatch nonce expired", func(t *testing.T) {
		f := newFleet(t)
		e := newEnv(t, 0)
		nonce := f.dispatch(t, f.admit(t, e).GetKeyDigest(), "build-1")
		f.clock.advance(fleet.DefaultNonceLifetime + 1)
		wantRefusal(t, confirm(f, "build-1", bind(t, e, "build-1", nonce)), codes.FailedPrecondition, fleet.ReasonNonceExpired)
	})
	t.Run("unknown build", func(t *testing.T) {
		f := newFleet(t)
		e := newEnv(t, 0)
		f.admit(t, e)
		wantRefusal(t, confirm(f, "build-1", bind(t, e, "build-1", nil)), codes.NotFound, fleet.ReasonBuildUnknown)
	})
	t.Run("completion before the dispatch is confirmed", func(t *testing.T) {
		f := newFleet(t)
		e := newEnv(t, 0)
		nonce := f.dispatch(t, f.admit(t, e).GetKeyDigest(), "build-1")
		bind(t, e, "build-1", nonce)
		_, err := f.Complete(ctx, &fleetv1.CompleteRequest{BuildId: "build-1", Bundle: finish(t, e, "build-1", nil)})
		wantRefusal(t, err, codes.FailedPrecondition, fleet.ReasonWrongState)
	})
	t.Run("completion bundle without the completion", func(t *testing.T) {
		f := newFleet(t)
		e := newEnv(t, 0)
		bundle := bind(t, e, "build-1", f.dispatch(t, f.admit(t, e).GetKeyDigest(), "build-1"))
		if err := confirm(f, "build-1", bundle); err != nil {
			t.Fatal(err)
		}
		_, err := f.Complete(ctx, &fleetv1.CompleteRequest{BuildId: "build-1", Bundle: bundle})
		wantRefusal(t, err, codes.FailedPrecondition, fleet.ReasonWrongStep)
	})
	t.Run("completion without the signed provenance", func(t *testing.T) {
		f := newFleet(t)
		e := newEnv(t, 0)
		if err := confirm(f, "build-1", bind(t, e, "build-1", f.dispatch(t, f.admit(t, e).GetKeyDigest(), "build-1"))); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Complete(ctx, "build-1", testInputs, testOutputs, nil); err != nil {
			t.Fatal(err)
		}
		_, err := f.Complete(ctx, &fleetv1.CompleteRequest{BuildId: "build-1", Bundle: e.bundle()})
		wantRefusal(t, err, codes.FailedPrecondition, fleet.ReasonWrongStep)
	})
	t.Run("completion with another build's completion nonce", func(t *testing.T) {
		f := newFleet(t)
		b := newEnv(t, 0)
		bundle := bind(t, b, "build-2", f.dispatch(t, f.admit(t, b).GetKeyDigest(), "build-2"))
		if err := confirm(f, "build-2", bundle); err != nil {
			t.Fatal(err)
		}
		c, err := f.Challenge(ctx, &fleetv1.ChallengeRequest{Step: fleetv1.Step_STEP_COMPLETE, BuildId: "build-2"})
		if err != nil {
			t.Fatal(err)
		}
		b.close()
		a := newEnv(t, 0)
		bundle = bind(t, a, "build-1", f.dispatch(t, f.admit(t, a).GetKeyDigest(), "build-1"))
		if err := confirm(f, "build-1", bundle); err != nil {
			t.Fatal(err)
		}
		_, err = f.Complete(ctx, &fleetv1.CompleteRequest{BuildId: "build-1", Bundle: finish(t, a, "build-1", c.GetNonce())})
		wantRefusal(t, err, codes.PermissionDenied, fleet.ReasonNonceForeign)
	})
	t.Run("completion challenge for a build not dispatched", func(t *testing.T) {
		f := newFleet(t)
		f.dispatch(t, f.admit(t, newEnv(t, 0)).GetKeyDigest(), "build-1")
		_, err := f.Challenge(ctx, &fleetv1.ChallengeRequest{Step: fleetv1.Step_STEP_COMPLETE, BuildId: "build-1"})
		wantRefusal(t, err, codes.FailedPrecondition, fleet.ReasonWrongState)
	})
	t.Run("bad build IDs and env keys", func(t *testing.T) {
		f := newFleet(t)
		for name, req := range map[string]*fleetv1.DispatchRequest{
			"empty build ID":     {EnvKey: strings.Repeat("0", 64)},
			"long build ID":      {EnvKey: strings.Repeat("0", 64), BuildId: strings.Repeat("b", 257)},
			"build ID with \\n":  {EnvKey: strings.Repeat("0", 64), BuildId: "a\nb"},
			"short env key":      {EnvKey: "00", BuildId: "b"},
			"upper-case env key": {EnvKey: strings.Repeat("A", 64), BuildId: "b"},
		} {
			_, err := f.Dispatch(ctx, req)
			t.Run(name, func(t *testing.T) { wantRefusal(t, err, codes.InvalidArgument, fleet.ReasonBadRequest) })
		}
	})
}

// TestDispatchRetried: a Dispatch of a build ID already reserved for the
// same environment (a retry whose answer was lost) answers the nonce and
// expiry the first one did, and that nonce confirms the build; once the
// nonce is used it is WRONG_STATE, once it expired NONCE_EXPIRED.
func TestDispatchRetried(t *testing.T) {
	ctx := context.Background()
	dispatch := func(f *testFleet, key, build string) (*fleetv1.DispatchResponse, error) {
		return f.Dispatch(ctx, &fleetv1.DispatchRequest{EnvKey: key, BuildId: build})
	}
	t.Run("reserved: the same nonce", func(t *testing.T) {
		f := newFleet(t)
		e := newEnv(t, 0)
		key := f.admit(t, e).GetKeyDigest()
		first, err := dispatch(f, key, "build-1")
		if err != nil {
			t.Fatal(err)
		}
		f.clock.advance(time.Second)
		again, err := dispatch(f, key, "build-1")
		if err != nil {
			t.Fatalf("Dispatch retried: %v", err)
		}
		if !bytes.Equal(again.GetNonce(), first.GetNonce()) || !again.GetExpires().AsTime().Equal(first.GetExpires().AsTime()) {
			t.Fatalf("Dispatch retried: nonce %x expiring %v; the first answer: %x expiring %v",
				again.GetNonce(), again.GetExpires().AsTime(), first.GetNonce(), first.GetExpires().AsTime())
		}
		if _, err := f.ConfirmDispatch(ctx, &fleetv1.ConfirmDispatchRequest{BuildId: "build-1", Bundle: bind(t, e, "build-1", again.GetNonce())}); err != nil {
			t.Fatalf("confirm with the retried Dispatch's nonce: %v", err)
		}
		_, err = dispatch(f, key, "build-1")
		wantRefusal(t, err, codes.FailedPrecondition, fleet.ReasonWrongState)
		_, err = dispatch(f, key, "build-2")
		wantRefusal(t, err, codes.AlreadyExists, fleet.ReasonEnvironmentTaken)
	})
	t.Run("nonce expired", func(t *testing.T) {
		f := newFleet(t)
		key := f.admit(t, newEnv(t, 0)).GetKeyDigest()
		f.dispatch(t, key, "build-1")
		f.clock.advance(fleet.DefaultNonceLifetime)
		_, err := dispatch(f, key, "build-1")
		wantRefusal(t, err, codes.FailedPrecondition, fleet.ReasonNonceExpired)
	})
}
