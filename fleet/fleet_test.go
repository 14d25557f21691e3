package fleet_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/attestd/attestd/fleet"
	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
	"github.com/attestd/attestd/scai"
	"github.com/attestd/attestd/verify"
)

// statement opens a signed result: its predicate type and predicate.
func statement(t *testing.T, signed []byte) (string, map[string]any) {
	t.Helper()
	env, err := scai.ParseEnvelope(signed)
	if err != nil {
		t.Fatalf("signed result: %v", err)
	}
	payload, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		PredicateType string         `json:"predicateType"`
		Predicate     map[string]any `json:"predicate"`
	}
	if err := json.Unmarshal(payload, &st); err != nil {
		t.Fatal(err)
	}
	return st.PredicateType, st.Predicate
}

// properties are an SVR's properties.
func properties(t *testing.T, signed []byte) []string {
	t.Helper()
	typ, pred := statement(t, signed)
	if typ != verify.SVRPredicateType {
		t.Fatalf("predicate type %s, want an SVR", typ)
	}
	var out []string
	for _, p := range pred["properties"].([]any) {
		out = append(out, p.(string))
	}
	return out
}

// TestFlow: challenge → admit → dispatch → BindBuild → confirm → complete
// challenge → Complete → SignStatement → complete → VSA, and the look-ups
// at each step.
func TestFlow(t *testing.T) {
	f := newFleet(t)
	ctx := context.Background()
	e := newEnv(t, 0)

	got := f.admit(t, e)
	key := got.GetKeyDigest()
	if want := e.KeyDigest(); key != hexOf(want[:]) {
		t.Fatalf("admitted env key %s, want %x", key, want)
	}
	if !strings.HasPrefix(got.GetBootId(), "tpm:"+got.GetAkDigest()+":") || !slices.Equal(got.GetBackends(), []string{"tpm"}) ||
		got.GetImage() != "roothash:"+strings.Repeat("ab", 32) {
		t.Errorf("environment record: %v", got)
	}
	if props := properties(t, got.GetAdmission()); !slices.Contains(props, verify.PropertyAdmitted) {
		t.Errorf("admission SVR properties %v lack %s", props, verify.PropertyAdmitted)
	}
	rec, err := f.GetEnvironment(ctx, &fleetv1.GetEnvironmentRequest{EnvKey: key})
	if err != nil || rec.GetKeyDigest() != key || string(rec.GetAdmission()) != string(got.GetAdmission()) {
		t.Fatalf("GetEnvironment: %v, %v", rec, err)
	}

	nonce := f.dispatch(t, key, "build-1")
	b, err := f.GetBuild(ctx, &fleetv1.GetBuildRequest{BuildId: "build-1"})
	if err != nil || b.GetState() != string(fleet.BuildReserved) || b.GetEnvKey() != key {
		t.Fatalf("GetBuild after Dispatch: %v, %v", b, err)
	}
	conf, err := f.ConfirmDispatch(ctx, &fleetv1.ConfirmDispatchRequest{BuildId: "build-1", Bundle: bind(t, e, "build-1", nonce)})
	if err != nil {
		t.Fatalf("ConfirmDispatch: %v", err)
	}
	if props := properties(t, conf.GetBuild().GetDispatch()); !slices.Contains(props, verify.PropertyDispatchedTo+"build-1") {
		t.Errorf("dispatch SVR properties %v lack %s", props, verify.PropertyDispatchedTo+"build-1")
	}

	c, err := f.Challenge(ctx, &fleetv1.ChallengeRequest{Step: fleetv1.Step_STEP_COMPLETE, BuildId: "build-1"})
	if err != nil {
		t.Fatalf("completion challenge: %v", err)
	}
	done, err := f.Complete(ctx, &fleetv1.CompleteRequest{BuildId: "build-1", Bundle: finish(t, e, "build-1", c.GetNonce())})
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	typ, vsa := statement(t, done.GetBuild().GetCompletion())
	if typ != verify.VSAPredicateType || vsa["verificationResult"] != verify.VSAPassed {
		t.Errorf("completion: %s %v, want a PASSED VSA", typ, vsa)
	}
	b, err = f.GetBuild(ctx, &fleetv1.GetBuildRequest{BuildId: "build-1"})
	if err != nil || b.GetState() != string(fleet.BuildCompleted) || len(b.GetDispatch()) == 0 || string(b.GetCompletion()) != string(done.GetBuild().GetCompletion()) {
		t.Fatalf("GetBuild after Complete: %v, %v", b, err)
	}
}

// TestCompleteWithoutNonce: the completion challenge is optional.
func TestCompleteWithoutNonce(t *testing.T) {
	f := newFleet(t)
	e := newEnv(t, 0)
	key := f.admit(t, e).GetKeyDigest()
	ctx := context.Background()
	if _, err := f.ConfirmDispatch(ctx, &fleetv1.ConfirmDispatchRequest{BuildId: "b", Bundle: bind(t, e, "b", f.dispatch(t, key, "b"))}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Complete(ctx, &fleetv1.CompleteRequest{BuildId: "b", Bundle: finish(t, e, "b", nil)}); err != nil {
		t.Fatalf("Complete without a nonce: %v", err)
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// TestAdmissionRefusals: every way an admission is refused, each with its
// code and reason.
func TestAdmissionRefusals(t *testing.T) {
	ctx := context.Background()
	t.Run("nonce used", func(t *testing.T) {
		f := newFleet(t)
		nonce := f.challenge(t)
		a := newEnv(t, 0)
		if _, err := f.tryAdmit(t, a, nonce); err != nil {
			t.Fatal(err)
		}
		a.close()
		_, err := f.tryAdmit(t, newEnv(t, 0), nonce)
		wantRefusal(t, err, codes.FailedPrecondition, fleet.ReasonNonceUsed)
	})
	t.Run("nonce expired", func(t *testing.T) {
		f := newFleet(t)
		nonce := f.challenge(t)
		f.clock.advance(fleet.DefaultNonceLifetime + 1)
		_, err := f.tryAdmit(t, newEnv(t, 0), nonce)
		wantRefusal(t, err, codes.FailedPrecondition, fleet.ReasonNonceExpired)
	})
	t.Run("nonce unknown", func(t *testing.T) {
		f := newFleet(t)
		_, err := f.tryAdmit(t, newEnv(t, 0), []byte(strings.Repeat("n", 32)))
		wantRefusal(t, err, codes.InvalidArgument, fleet.ReasonNonceUnknown)
	})
	t.Run("nonce foreign", func(t *testing.T) {
		f := newFleet(t)
		a := newEnv(t, 0)
		nonce := f.dispatch(t, f.admit(t, a).GetKeyDigest(), "build-1") // a dispatch nonce
		a.close()
		_, err := f.tryAdmit(t, newEnv(t, 0), nonce)
		wantRefusal(t, err, codes.PermissionDenied, fleet.ReasonNonceForeign)
	})
	t.Run("attestation bound to another nonce", func(t *testing.T) {
		f := newFleet(t)
		e := newEnv(t, 0)
		f.trustAK(t, e)
		if _, err := e.Attest(ctx, f.challenge(t)); err != nil {
			t.Fatal(err)
		}
		_, err := f.Admit(ctx, &fleetv1.AdmitRequest{Nonce: f.challenge(t), Bundle: e.bundle()})
		wantRefusal(t, err, codes.PermissionDenied, fleet.ReasonVerificationFailed)
		if checks := fleetv1.ErrorInfo(err).GetMetadata()["checks"]; !strings.Contains(checks, verify.CheckNonce) {
			t.Errorf("failed checks %q do not name %s", checks, verify.CheckNonce)
		}
	})
	t.Run("another environment's admission", func(t *testing.T) {
		f := newFleet(t)
		nonce := f.challenge(t)
		a := newEnv(t, 0)
		f.trustAK(t, a)
		launchA := a.Bundle().Envelopes[0]
		a.close()
		b := newEnv(t, 0)
		f.trustAK(t, b)
		if _, err := b.Attest(ctx, nonce); err != nil {
			t.Fatal(err)
		}
		mixed := b.Bundle()
		mixed.Envelopes[0] = launchA // A's launch, B's admission
		_, err := f.Admit(ctx, &fleetv1.AdmitRequest{Nonce: nonce, Bundle: mixed.Encode()})
		wantRefusal(t, err, codes.PermissionDenied, fleet.ReasonAttestationForeign)
	})
	t.Run("AK not trusted", func(t *testing.T) {
		f := newFleet(t)
		e := newEnv(t, 0)
		nonce := f.challenge(t)
		if _, err := e.Attest(ctx, nonce); err != nil {
			t.Fatal(err)
		}
		_, err := f.Admit(ctx, &fleetv1.AdmitRequest{Nonce: nonce, Bundle: e.bundle()})
		wantRefusal(t, err, codes.PermissionDenied, fleet.ReasonVerificationFailed)
	})
	t.Run("already admitted", func(t *testing.T) {
		f := newFleet(t)
		e := newEnv(t, 0)
		f.admit(t, e)
		_, err := f.tryAdmit(t, e, f.challenge(t))
		wantRefusal(t, err, codes.AlreadyExists, fleet.ReasonAlreadyAdmitted)
	})
	t.Run("boot reused", func(t *testing.T) {
		f := newFleet(t)
		a := newEnv(t, 0)
		f.admit(t, a)
		a.close()
		// Same boot, a new env key: the environment was reset without a reboot.
		_, err := f.tryAdmit(t, newEnv(t, 14), f.challenge(t))
		wantRefusal(t, err, codes.PermissionDenied, fleet.ReasonBootReused)
	})
	t.Run("bundle past admission", func(t *testing.T) {
		f := newFleet(t)
		e := newEnv(t, 0)
		f.trustAK(t, e)
		nonce := f.challenge(t)
		if _, err := e.Attest(ctx, nonce); err != nil {
			t.Fatal(err)
		}
		_, err := f.Admit(ctx, &fleetv1.AdmitRequest{Nonce: nonce, Bundle: bind(t, e, "b", nil)})
		wantRefusal(t, err, codes.FailedPrecondition, fleet.ReasonWrongStep)
	})
	t.Run("bad requests", func(t *testing.T) {
		f := newFleet(t)
		for name, req := range map[string]*fleetv1.AdmitRequest{
			"short nonce":  {Nonce: []byte("short"), Bundle: []byte("{}")},
			"no bundle":    {Nonce: make([]byte, 32)},
			"not a bundle": {Nonce: make([]byte, 32), Bundle: []byte("not json")},
		} {
			_, err := f.Admit(ctx, req)
			t.Run(name, func(t *testing.T) { wantRefusal(t, err, codes.InvalidArgument, fleet.ReasonBadRequest) })
		}
		_, err := f.Challenge(ctx, &fleetv1.ChallengeRequest{})
		wantRefusal(t, err, codes.InvalidArgument, fleet.ReasonBadRequest)
	})
}
