package storetest

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/attestd/attestd/fleet"
)

func testChallenge(t *testing.T, s fleet.Store) {
	ctx := t.Context()
	c := put(t, s, challenge(fleet.StepRegister, "", ""))
	again := c
	again.Data = []byte("other")
	wantErr(t, "PutChallenge of a stored nonce", s.PutChallenge(ctx, again), fleet.ErrNonceExists)

	_, err := s.ConsumeChallenge(ctx, fleet.StepRegister, nonce(), t0)
	wantErr(t, "ConsumeChallenge of an unknown nonce", err, fleet.ErrNonceUnknown)
	_, err = s.ConsumeChallenge(ctx, fleet.StepAdmit, c.Nonce, t0)
	wantErr(t, "ConsumeChallenge for another step", err, fleet.ErrNonceForeign)
	_, err = s.ConsumeChallenge(ctx, fleet.StepRegister, c.Nonce, c.Expires)
	wantErr(t, "ConsumeChallenge at Expires", err, fleet.ErrNonceExpired)

	got, err := s.ConsumeChallenge(ctx, fleet.StepRegister, c.Nonce, c.Expires.Add(-time.Microsecond))
	if err != nil {
		t.Fatalf("ConsumeChallenge a microsecond before Expires: %v", err)
	}
	want := c
	want.Used = true
	wantEqual(t, "consumed challenge", got, &want)

	_, err = s.ConsumeChallenge(ctx, fleet.StepRegister, c.Nonce, t0)
	wantErr(t, "ConsumeChallenge twice", err, fleet.ErrNonceUsed)
	_, err = s.ConsumeChallenge(ctx, fleet.StepAdmit, c.Nonce, t0)
	wantErr(t, "ConsumeChallenge used, for another step", err, fleet.ErrNonceForeign)
	wantErr(t, "PutChallenge of a used nonce", s.PutChallenge(ctx, c), fleet.ErrNonceExists)
}

func testAdmit(t *testing.T, s fleet.Store) {
	ctx := t.Context()
	_, err := s.Environment(ctx, digest("nobody"))
	wantErr(t, "Environment of an unknown key", err, fleet.ErrNotFound)

	env := admit(t, s, "env")
	got, err := s.Environment(ctx, env.KeyDigest)
	if err != nil {
		t.Fatalf("Environment: %v", err)
	}
	wantEqual(t, "admitted environment", got, &env)

	// Admitted again (same key, same boot): refused, the nonce untouched.
	c := put(t, s, challenge(fleet.StepAdmit, "", ""))
	again := env
	again.Image = "other"
	wantErr(t, "Admit twice", s.Admit(ctx, c.Nonce, t0, again), fleet.ErrAdmitted)
	wantUnused(t, s, c)
	if got, err := s.Environment(ctx, env.KeyDigest); err != nil || got.Image != env.Image {
		t.Errorf("Environment after a refused Admit: %+v, %v; want the first record", got, err)
	}

	// A new key in a boot already admitted: refused, nothing recorded.
	c = put(t, s, challenge(fleet.StepAdmit, "", ""))
	reset := environment(digest("reset"))
	reset.BootID = env.BootID
	wantErr(t, "Admit of a reused boot", s.Admit(ctx, c.Nonce, t0, reset), fleet.ErrBootReused)
	wantUnused(t, s, c)
	_, err = s.Environment(ctx, reset.KeyDigest)
	wantErr(t, "Environment refused for its boot", err, fleet.ErrNotFound)

	// Environments without a boot ID never collide on it.
	for _, name := range []string{"noboot1", "noboot2"} {
		e := environment(digest(name))
		e.BootID, e.AKDigest, e.Backends, e.Image, e.Admission = "", "", nil, "", nil
		c := put(t, s, challenge(fleet.StepAdmit, "", ""))
		wantErr(t, "Admit without a boot ID", s.Admit(ctx, c.Nonce, t0, e), nil)
		got, err := s.Environment(ctx, e.KeyDigest)
		if err != nil {
			t.Fatalf("Environment: %v", err)
		}
		wantEqual(t, "environment without boot ID", got, &e)
	}
}

func testAdmitBadNonce(t *testing.T, s fleet.Store) {
	ctx := t.Context()
	used := put(t, s, challenge(fleet.StepAdmit, "", ""))
	if _, err := s.ConsumeChallenge(ctx, fleet.StepAdmit, used.Nonce, t0); err != nil {
		t.Fatal(err)
	}
	foreign := put(t, s, challenge(fleet.StepRegister, "", ""))
	expired := put(t, s, challenge(fleet.StepAdmit, "", ""))
	for _, tc := range []struct {
		name  string
		nonce []byte
		now   time.Time
		want  error
	}{
		{"unknown", nonce(), t0, fleet.ErrNonceUnknown},
		{"foreign", foreign.Nonce, t0, fleet.ErrNonceForeign},
		{"used", used.Nonce, t0, fleet.ErrNonceUsed},
		{"expired", expired.Nonce, expired.Expires, fleet.ErrNonceExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := environment(digest(tc.name))
			wantErr(t, "Admit", s.Admit(ctx, tc.nonce, tc.now, env), tc.want)
			_, err := s.Environment(ctx, env.KeyDigest)
			wantErr(t, "Environment after Admit with a bad nonce", err, fleet.ErrNotFound)
		})
	}
	wantUnused(t, s, foreign)
}

func testReserve(t *testing.T, s fleet.Store) {
	ctx := t.Context()
	env, other := admit(t, s, "env"), admit(t, s, "other")
	stranger := environment(digest("stranger"))

	// Refusals record neither the build nor its dispatch challenge.
	c := challenge(fleet.StepDispatch, stranger.KeyDigest, "b0")
	wantErr(t, "Reserve on an environment not admitted",
		s.Reserve(ctx, fleet.Build{BuildID: "b0", EnvKey: stranger.KeyDigest, ReservedAt: t0}, c), fleet.ErrNotFound)
	wantUnknown(t, s, c)
	_, err := s.Build(ctx, "b0")
	wantErr(t, "Build refused for its environment", err, fleet.ErrNotFound)

	disp := reserve(t, s, env, "b1")
	got, err := s.Build(ctx, "b1")
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	wantEqual(t, "reserved build", got, &fleet.Build{BuildID: "b1", EnvKey: env.KeyDigest, State: fleet.BuildReserved, ReservedAt: t0,
		DispatchNonce: disp.Nonce, DispatchExpires: disp.Expires})
	_, err = s.Build(ctx, "nothing")
	wantErr(t, "Build of an unknown ID", err, fleet.ErrNotFound)

	for _, tc := range []struct {
		name  string
		env   fleet.Environment
		build string
		want  error
	}{
		{"environment taken", env, "b2", fleet.ErrEnvironmentTaken},
		{"build taken", other, "b1", fleet.ErrBuildTaken},
		{"both taken", env, "b1", fleet.ErrBuildTaken},
	} {
		c := challenge(fleet.StepDispatch, tc.env.KeyDigest, tc.build)
		wantErr(t, "Reserve, "+tc.name, s.Reserve(ctx, fleet.Build{BuildID: tc.build, EnvKey: tc.env.KeyDigest, ReservedAt: t0}, c), tc.want)
		wantUnknown(t, s, c)
	}
	_, err = s.Build(ctx, "b2")
	wantErr(t, "Build refused for a taken environment", err, fleet.ErrNotFound)
	// The same pair again ("both taken") stored no second challenge: Build
	// still gives the first one's nonce, the answer to a retried Dispatch.
	if got, err := s.Build(ctx, "b1"); err != nil || got.EnvKey != env.KeyDigest ||
		!bytes.Equal(got.DispatchNonce, disp.Nonce) || !got.DispatchExpires.Equal(disp.Expires) {
		t.Errorf("Build b1 after refused Reserves: %+v, %v; want it on %s with nonce %x", got, err, env.KeyDigest, disp.Nonce)
	}

	// A dispatch nonce already issued: the whole reservation is refused.
	c = challenge(fleet.StepDispatch, other.KeyDigest, "b3")
	c.Nonce = disp.Nonce
	wantErr(t, "Reserve with an issued nonce", s.Reserve(ctx, fleet.Build{BuildID: "b3", EnvKey: other.KeyDigest, ReservedAt: t0}, c), fleet.ErrNonceExists)
	_, err = s.Build(ctx, "b3")
	wantErr(t, "Build refused for its nonce", err, fleet.ErrNotFound)

	// A challenge that is not this reservation's is the caller's mistake.
	c = challenge(fleet.StepDispatch, other.KeyDigest, "b-mismatch")
	if err := s.Reserve(ctx, fleet.Build{BuildID: "b4", EnvKey: other.KeyDigest, ReservedAt: t0}, c); err == nil {
		t.Error("Reserve with a challenge for another build: no error")
	}
	_, err = s.Build(ctx, "b4")
	wantErr(t, "Build refused for its challenge", err, fleet.ErrNotFound)

	// The other environment is still free.
	reserve(t, s, other, "b3")
}

func testDispatched(t *testing.T, s fleet.Store) {
	ctx := t.Context()
	env, other := admit(t, s, "env"), admit(t, s, "other")
	disp, otherDisp := reserve(t, s, env, "b1"), reserve(t, s, other, "b2")
	admitNonce := put(t, s, challenge(fleet.StepAdmit, "", ""))
	later := t0.Add(time.Second)

	for _, tc := range []struct {
		name  string
		build string
		nonce []byte
		now   time.Time
		want  error
	}{
		{"unknown build", "nothing", disp.Nonce, later, fleet.ErrNotFound},
		{"unknown nonce", "b1", nonce(), later, fleet.ErrNonceUnknown},
		{"another build's nonce", "b1", otherDisp.Nonce, later, fleet.ErrNonceForeign},
		{"admission nonce", "b1", admitNonce.Nonce, later, fleet.ErrNonceForeign},
		{"expired nonce", "b1", disp.Nonce, disp.Expires, fleet.ErrNonceExpired},
	} {
		wantErr(t, "Dispatched, "+tc.name, s.Dispatched(ctx, tc.build, tc.nonce, tc.now, []byte("x")), tc.want)
	}
	wantErr(t, "Completed before Dispatched", s.Completed(ctx, "b1", nil, later, []byte("x")), fleet.ErrState)
	if got, err := s.Build(ctx, "b1"); err != nil || got.State != fleet.BuildReserved {
		t.Fatalf("Build after refused calls: %+v, %v; want it reserved", got, err)
	}
	wantUnused(t, s, otherDisp)
	wantUnused(t, s, admitNonce)

	wantErr(t, "Dispatched", s.Dispatched(ctx, "b1", disp.Nonce, later, []byte("svr")), nil)
	got, err := s.Build(ctx, "b1")
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	wantEqual(t, "dispatched build", got, &fleet.Build{
		BuildID: "b1", EnvKey: env.KeyDigest, State: fleet.BuildDispatched,
		ReservedAt: t0, DispatchedAt: later, Dispatch: []byte("svr"),
		DispatchNonce: disp.Nonce, DispatchExpires: disp.Expires,
	})
	wantErr(t, "Dispatched replayed", s.Dispatched(ctx, "b1", disp.Nonce, later, []byte("y")), fleet.ErrNonceUsed)

	// A valid dispatch nonce in the wrong state is refused and kept.
	fresh := put(t, s, challenge(fleet.StepDispatch, env.KeyDigest, "b1"))
	wantErr(t, "Dispatched twice", s.Dispatched(ctx, "b1", fresh.Nonce, later, []byte("y")), fleet.ErrState)
	wantUnused(t, s, fresh)
	if got, err := s.Build(ctx, "b1"); err != nil || string(got.Dispatch) != "svr" {
		t.Errorf("Build after a refused Dispatched: %+v, %v; want the first result", got, err)
	}
}

func testCompleted(t *testing.T, s fleet.Store) {
	ctx := t.Context()
	env, other := admit(t, s, "env"), admit(t, s, "other")
	later, done := t0.Add(time.Second), t0.Add(time.Minute)
	var disp fleet.Challenge // b1's
	for _, b := range []struct {
		env   fleet.Environment
		build string
	}{{env, "b1"}, {other, "b2"}} {
		d := reserve(t, s, b.env, b.build)
		if err := s.Dispatched(ctx, b.build, d.Nonce, later, []byte("svr")); err != nil {
			t.Fatalf("Dispatched %s: %v", b.build, err)
		}
		if b.build == "b1" {
			disp = d
		}
	}

	comp := put(t, s, challenge(fleet.StepComplete, env.KeyDigest, "b1"))
	otherComp := put(t, s, challenge(fleet.StepComplete, other.KeyDigest, "b2"))
	dispNonce := put(t, s, challenge(fleet.StepDispatch, env.KeyDigest, "b1"))
	for _, tc := range []struct {
		name  string
		build string
		nonce []byte
		now   time.Time
		want  error
	}{
		{"unknown build", "nothing", nil, done, fleet.ErrNotFound},
		{"unknown nonce", "b1", nonce(), done, fleet.ErrNonceUnknown},
		{"another build's nonce", "b1", otherComp.Nonce, done, fleet.ErrNonceForeign},
		{"dispatch nonce", "b1", dispNonce.Nonce, done, fleet.ErrNonceForeign},
		{"expired nonce", "b1", comp.Nonce, comp.Expires, fleet.ErrNonceExpired},
	} {
		wantErr(t, "Completed, "+tc.name, s.Completed(ctx, tc.build, tc.nonce, tc.now, []byte("x")), tc.want)
	}
	wantUnused(t, s, otherComp)

	wantErr(t, "Completed with a nonce", s.Completed(ctx, "b1", comp.Nonce, done, []byte("vsa")), nil)
	got, err := s.Build(ctx, "b1")
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	wantEqual(t, "completed build", got, &fleet.Build{
		BuildID: "b1", EnvKey: env.KeyDigest, State: fleet.BuildCompleted,
		ReservedAt: t0, DispatchedAt: later, CompletedAt: done, Dispatch: []byte("svr"), Completion: []byte("vsa"),
		DispatchNonce: disp.Nonce, DispatchExpires: disp.Expires,
	})
	wantErr(t, "Completed replayed", s.Completed(ctx, "b1", comp.Nonce, done, []byte("y")), fleet.ErrNonceUsed)
	wantErr(t, "Completed twice", s.Completed(ctx, "b1", nil, done, []byte("y")), fleet.ErrState)
	d := put(t, s, challenge(fleet.StepDispatch, env.KeyDigest, "b1"))
	wantErr(t, "Dispatched after Completed", s.Dispatched(ctx, "b1", d.Nonce, done, []byte("y")), fleet.ErrState)

	wantErr(t, "Completed without a nonce", s.Completed(ctx, "b2", nil, done, []byte("vsa2")), nil)
	if got, err := s.Build(ctx, "b2"); err != nil || got.State != fleet.BuildCompleted || string(got.Completion) != "vsa2" {
		t.Errorf("Build b2: %+v, %v; want completed with vsa2", got, err)
	}
}

func testAK(t *testing.T, s fleet.Store) {
	ctx := t.Context()
	ak := fleet.AK{Digest: digest("ak"), PublicKey: []byte("pkix"), EKCertDigest: digest("ek"), RegisteredAt: t0}
	_, err := s.AK(ctx, ak.Digest)
	wantErr(t, "AK before PutAK", err, fleet.ErrNotFound)
	wantErr(t, "PutAK", s.PutAK(ctx, ak), nil)
	wantErr(t, "PutAK again", s.PutAK(ctx, ak), nil)
	got, err := s.AK(ctx, ak.Digest)
	if err != nil {
		t.Fatalf("AK: %v", err)
	}
	wantEqual(t, "AK", got, &ak)
}

func testPrune(t *testing.T, s fleet.Store) {
	ctx := t.Context()
	var gone, kept []fleet.Challenge
	for _, exp := range []time.Duration{-time.Hour, -time.Microsecond} {
		c := challenge(fleet.StepAdmit, "", "")
		c.Expires = t0.Add(exp)
		gone = append(gone, put(t, s, c))
	}
	used := put(t, s, challenge(fleet.StepAdmit, "", ""))
	if _, err := s.ConsumeChallenge(ctx, fleet.StepAdmit, used.Nonce, t0); err != nil {
		t.Fatal(err)
	}
	kept = append(kept, put(t, s, challenge(fleet.StepAdmit, "", "")))
	env := admit(t, s, "env")
	reserve(t, s, env, "b1")

	n, err := s.Prune(ctx, t0)
	if err != nil || n != 2 {
		t.Errorf("Prune: %d, %v; want 2", n, err)
	}
	for _, c := range gone {
		wantUnknown(t, s, c)
	}
	for _, c := range kept {
		wantUnused(t, s, c)
	}
	_, err = s.ConsumeChallenge(ctx, fleet.StepAdmit, used.Nonce, t0)
	wantErr(t, "a used challenge not yet expired", err, fleet.ErrNonceUsed)
	if n, err := s.Prune(ctx, t0); err != nil || n != 0 {
		t.Errorf("Prune again: %d, %v; want 0", n, err)
	}
	if _, err := s.Environment(ctx, env.KeyDigest); err != nil {
		t.Errorf("Environment after Prune: %v", err)
	}
	if _, err := s.Build(ctx, "b1"); err != nil {
		t.Errorf("Build after Prune: %v", err)
	}
	if n, err := s.Prune(ctx, t0.Add(time.Hour)); err != nil || n != 4 {
		t.Errorf("Prune an hour later: %d, %v; want 4 (3 admission, 1 dispatch)", n, err)
	}
	// The build stays; its dispatch nonce went with its challenge.
	if got, err := s.Build(ctx, "b1"); err != nil || got.DispatchNonce != nil || !got.DispatchExpires.IsZero() {
		t.Errorf("Build after its dispatch challenge was pruned: %+v, %v; want no dispatch nonce", got, err)
	}
}

func testPing(t *testing.T, s fleet.Store) {
	wantErr(t, "Ping", s.Ping(t.Context()), nil)
}

func testReopen(t *testing.T, open Open) {
	ctx := t.Context()
	db := newDB()
	s := open(t, db)
	env := admit(t, s, "env")
	reserve(t, s, env, "b1")
	c := put(t, s, challenge(fleet.StepRegister, "", ""))
	ak := fleet.AK{Digest: digest("ak"), PublicKey: []byte("pkix"), EKCertDigest: digest("ek"), RegisteredAt: t0}
	wantErr(t, "PutAK", s.PutAK(ctx, ak), nil)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = openStore(t, open, db)
	if got, err := s.Environment(ctx, env.KeyDigest); err != nil {
		t.Errorf("Environment after reopen: %v", err)
	} else {
		wantEqual(t, "environment after reopen", got, &env)
	}
	if got, err := s.Build(ctx, "b1"); err != nil || got.State != fleet.BuildReserved {
		t.Errorf("Build after reopen: %+v, %v", got, err)
	}
	if got, err := s.AK(ctx, ak.Digest); err != nil {
		t.Errorf("AK after reopen: %v", err)
	} else {
		wantEqual(t, "AK after reopen", got, &ak)
	}
	wantUnused(t, s, c)
	_, err := s.ConsumeChallenge(ctx, c.Step, c.Nonce, t0)
	wantErr(t, "ConsumeChallenge after reopen, twice", err, fleet.ErrNonceUsed)
	wantErr(t, "Admit after reopen, twice", s.Admit(ctx, put(t, s, challenge(fleet.StepAdmit, "", "")).Nonce, t0, env), fleet.ErrAdmitted)
}

func testRaceConsume(t *testing.T, s fleet.Store, _ string) {
	c := put(t, s, challenge(fleet.StepAdmit, "", ""))
	race(t, []fleet.Store{s}, func(ctx context.Context, _ int) error {
		_, err := s.ConsumeChallenge(ctx, fleet.StepAdmit, c.Nonce, t0)
		return err
	}, fleet.ErrNonceUsed)
}

// testRaceAdmitNonce admits Racers environments under one nonce: one is
// admitted, the others are not recorded.
func testRaceAdmitNonce(t *testing.T, s fleet.Store, round string) {
	c := put(t, s, challenge(fleet.StepAdmit, "", ""))
	envs := make([]fleet.Environment, Racers)
	for i := range envs {
		envs[i] = environment(digest(fmt.Sprintf("%senv%d", round, i)))
	}
	winner := race(t, []fleet.Store{s}, func(ctx context.Context, i int) error {
		return s.Admit(ctx, c.Nonce, t0, envs[i])
	}, fleet.ErrNonceUsed)
	for i, e := range envs {
		if _, err := s.Environment(t.Context(), e.KeyDigest); i != winner {
			wantErr(t, "Environment of a loser", err, fleet.ErrNotFound)
		}
	}
}

// testRaceDispatched reports one dispatch Racers times at once: one moves
// the build, the others find its nonce used.
func testRaceDispatched(t *testing.T, s fleet.Store, round string) {
	build := round + "b"
	d := reserve(t, s, admit(t, s, round+"env"), build)
	winner := race(t, []fleet.Store{s}, func(ctx context.Context, i int) error {
		return s.Dispatched(ctx, build, d.Nonce, t0, []byte(fmt.Sprint(i)))
	}, fleet.ErrNonceUsed)
	if got, err := s.Build(t.Context(), build); err != nil || string(got.Dispatch) != fmt.Sprint(winner) {
		t.Errorf("Build %s: %+v, %v; want the result of racer %d", build, got, err, winner)
	}
}

// testRaceAdmit admits one environment under Racers different nonces: one
// is admitted, the others refused with their nonces left unused.
func testRaceAdmit(t *testing.T, s fleet.Store, round string) {
	env := environment(digest(round + "env"))
	cs := make([]fleet.Challenge, Racers)
	for i := range cs {
		cs[i] = put(t, s, challenge(fleet.StepAdmit, "", ""))
	}
	winner := race(t, []fleet.Store{s}, func(ctx context.Context, i int) error {
		return s.Admit(ctx, cs[i].Nonce, t0, env)
	}, fleet.ErrAdmitted)
	for i, c := range cs {
		if i != winner {
			wantUnused(t, s, c)
		}
	}
}

func testRaceReserveEnvironment(t *testing.T, s fleet.Store, round string) {
	env := admit(t, s, round+"env")
	build := func(i int) string { return fmt.Sprintf("%sb%d", round, i) }
	winner := race(t, []fleet.Store{s}, func(ctx context.Context, i int) error {
		return s.Reserve(ctx, fleet.Build{BuildID: build(i), EnvKey: env.KeyDigest, ReservedAt: t0},
			challenge(fleet.StepDispatch, env.KeyDigest, build(i)))
	}, fleet.ErrEnvironmentTaken)
	for i := range Racers {
		_, err := s.Build(t.Context(), build(i))
		if i == winner {
			wantErr(t, "Build of the winner", err, nil)
		} else {
			wantErr(t, "Build of a loser", err, fleet.ErrNotFound)
		}
	}
}

func testRaceReserveBuild(t *testing.T, s fleet.Store, round string) {
	envs := make([]fleet.Environment, Racers)
	for i := range envs {
		envs[i] = admit(t, s, fmt.Sprintf("%senv%d", round, i))
	}
	build := round + "b"
	winner := race(t, []fleet.Store{s}, func(ctx context.Context, i int) error {
		return s.Reserve(ctx, fleet.Build{BuildID: build, EnvKey: envs[i].KeyDigest, ReservedAt: t0},
			challenge(fleet.StepDispatch, envs[i].KeyDigest, build))
	}, fleet.ErrBuildTaken)
	got, err := s.Build(t.Context(), build)
	if err != nil || got.EnvKey != envs[winner].KeyDigest {
		t.Errorf("Build %s: %+v, %v; want it on the winner's environment %s", build, got, err, envs[winner].KeyDigest)
	}
	// The losers' environments are still free.
	loser := (winner + 1) % Racers
	reserve(t, s, envs[loser], build+"-loser")
}

// testRaceReserveSame races Racers Reserves of one build ID on one
// environment, each with a challenge of its own, as retries of one
// Dispatch on several replicas are: one wins, the others are
// ErrBuildTaken and store nothing, and Build gives every racer the
// winner's nonce.
func testRaceReserveSame(t *testing.T, s fleet.Store, round string) {
	raceReserveSame(t, []fleet.Store{s}, round)
}

func raceReserveSame(t *testing.T, ss []fleet.Store, round string) {
	env := admit(t, ss[0], round+"env-same")
	build := round + "b-same"
	cs := make([]fleet.Challenge, Racers)
	for i := range cs {
		cs[i] = challenge(fleet.StepDispatch, env.KeyDigest, build)
	}
	winner := race(t, ss, func(ctx context.Context, i int) error {
		return ss[i%len(ss)].Reserve(ctx, fleet.Build{BuildID: build, EnvKey: env.KeyDigest, ReservedAt: t0}, cs[i])
	}, fleet.ErrBuildTaken)
	for i, s := range ss {
		got, err := s.Build(t.Context(), build)
		if err != nil || got.EnvKey != env.KeyDigest || !bytes.Equal(got.DispatchNonce, cs[winner].Nonce) ||
			!got.DispatchExpires.Equal(cs[winner].Expires) {
			t.Errorf("store %d: Build %s: %+v, %v; want the winner's nonce %x", i, build, got, err, cs[winner].Nonce)
		}
	}
	for i, c := range cs {
		if i != winner {
			wantUnknown(t, ss[0], c)
		}
	}
}

// testCanceled calls every method with a canceled context: each fails
// with ErrUnavailable (the database did not answer) and writes nothing.
func testCanceled(t *testing.T, s fleet.Store) {
	env := admit(t, s, "env")
	d := reserve(t, s, env, "b1")
	c := challenge(fleet.StepAdmit, "", "")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	calls := map[string]func() error{
		"PutChallenge": func() error { return s.PutChallenge(ctx, c) },
		"ConsumeChallenge": func() error {
			_, err := s.ConsumeChallenge(ctx, d.Step, d.Nonce, t0)
			return err
		},
		"Admit": func() error { return s.Admit(ctx, c.Nonce, t0, environment(digest("other"))) },
		"Environment": func() error {
			_, err := s.Environment(ctx, env.KeyDigest)
			return err
		},
		"Reserve": func() error {
			return s.Reserve(ctx, fleet.Build{BuildID: "b2", EnvKey: env.KeyDigest}, challenge(fleet.StepDispatch, env.KeyDigest, "b2"))
		},
		"Dispatched": func() error { return s.Dispatched(ctx, "b1", d.Nonce, t0, nil) },
		"Completed":  func() error { return s.Completed(ctx, "b1", nil, t0, nil) },
		"Build": func() error {
			_, err := s.Build(ctx, "b1")
			return err
		},
		"PutAK": func() error { return s.PutAK(ctx, fleet.AK{Digest: digest("ak")}) },
		"AK": func() error {
			_, err := s.AK(ctx, digest("ak"))
			return err
		},
		"Prune": func() error {
			_, err := s.Prune(ctx, t0.Add(time.Hour))
			return err
		},
		"Ping": func() error { return s.Ping(ctx) },
	}
	for name, call := range calls {
		wantErr(t, name+" with a canceled context", call(), fleet.ErrUnavailable)
	}
	wantUnknown(t, s, c)
	if got, err := s.Build(t.Context(), "b1"); err != nil || got.State != fleet.BuildReserved {
		t.Errorf("Build after canceled calls: %+v, %v; want it reserved", got, err)
	}
	_, err := s.AK(t.Context(), digest("ak"))
	wantErr(t, "AK after a canceled PutAK", err, fleet.ErrNotFound)
	wantUnused(t, s, d)
}

// testRaceReplicas reserves one environment for Racers build IDs through
// Replicas stores open on one database, as replicas of the service do;
// then one build ID on one environment Racers times (raceReserveSame).
func testRaceReplicas(t *testing.T, open Open) {
	db := newDB()
	ss := make([]fleet.Store, Replicas)
	for i := range ss {
		ss[i] = openStore(t, open, db)
	}
	for r := range RaceRounds {
		env := admit(t, ss[r%Replicas], fmt.Sprintf("r%d-env", r))
		build := func(i int) string { return fmt.Sprintf("r%d-b%d", r, i) }
		winner := race(t, ss, func(ctx context.Context, i int) error {
			return ss[i%Replicas].Reserve(ctx, fleet.Build{BuildID: build(i), EnvKey: env.KeyDigest, ReservedAt: t0},
				challenge(fleet.StepDispatch, env.KeyDigest, build(i)))
		}, fleet.ErrEnvironmentTaken)
		for i, s := range ss {
			if got, err := s.Build(t.Context(), build(winner)); err != nil || got.EnvKey != env.KeyDigest {
				t.Errorf("replica %d: Build %s: %+v, %v", i, build(winner), got, err)
			}
		}
		raceReserveSame(t, ss, fmt.Sprintf("r%d-", r))
	}
}
