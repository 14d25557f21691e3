package fleet_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/attestd/attestd/fleet"
	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
	"github.com/attestd/attestd/fleet/postgres"
	"github.com/attestd/attestd/internal/pgtest"
)

// The PG tests run the service as it is deployed for a fleet: several
// replicas, each a real gRPC server with its own postgres.Store (its own
// connection pool), on one PostgreSQL cluster that the test starts
// (internal/pgtest). They need the postgresql package and never skip.

const (
	pgReplicas = 3
	racers     = 64
	raceRounds = 3
)

// pgFleet starts n replicas on one fresh database of a private cluster.
// Each pool is big enough that racing calls meet in the database, not in
// the pool's queue.
func pgFleet(t *testing.T, n int, opts ...option) (*pgtest.Server, []*testFleet) {
	t.Helper()
	srv := pgtest.Start(t)
	dsn := srv.CreateDB(t, "fleet") + " pool_max_conns=32"
	var replicas []*testFleet
	for range n {
		st, err := postgres.Open(t.Context(), dsn)
		if err != nil {
			t.Fatalf("open the postgres store: %v", err)
		}
		t.Cleanup(func() { st.Close() })
		replicas = append(replicas, startFleet(t, st, opts...))
	}
	return srv, replicas
}

// race runs call(i) for i in [0, racers) at once, each on replica
// i%len(replicas), and returns the errors by i.
func race(replicas []*testFleet, call func(f *testFleet, i int) error) []error {
	errs := make([]error, racers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			<-start
			errs[i] = call(replicas[i%len(replicas)], i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// oneWinner checks that exactly one call succeeded and every other was
// refused with code and one of reasons; it returns the winner.
func oneWinner(t *testing.T, what string, errs []error, code codes.Code, reasons ...fleet.Reason) int {
	t.Helper()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won >= 0:
			t.Fatalf("%s: racers %d and %d both won", what, won, i)
		case err == nil:
			won = i
		case !slices.Contains(reasons, fleet.Reason(fleetv1.Reason(err))):
			t.Fatalf("%s: racer %d: %v, want one of %v", what, i, err, reasons)
		default:
			wantRefusal(t, err, code, fleet.Reason(fleetv1.Reason(err)))
		}
	}
	if won < 0 {
		t.Fatalf("%s: no racer won", what)
	}
	return won
}

// TestPGRacingDispatches: on 3 replicas sharing one PostgreSQL, 64
// concurrent dispatches of one environment to 64 build IDs, and 64 of one
// build ID to 64 admitted environments, spread over the replicas: exactly
// one wins every round, the others are ENVIRONMENT_TAKEN / BUILD_TAKEN, and
// only the winner's build is recorded. The losers' environments stay free:
// the next round races them again, where only BUILD_TAKEN may refuse them.
// Then 64 identical dispatches (one environment, one build ID): all are
// answered with the one nonce stored (raceSameDispatch).
func TestPGRacingDispatches(t *testing.T) {
	_, replicas := pgFleet(t, pgReplicas)
	ctx := context.Background()
	// One environment per build: racers for one build ID need 64 free
	// environments each round, and each round takes one.
	var free []string
	for range racers + raceRounds - 1 {
		e := newEnv(t, 0)
		free = append(free, replicas[len(free)%pgReplicas].admit(t, e).GetKeyDigest())
		e.close()
	}
	for round := range raceRounds {
		t.Run(fmt.Sprintf("round %d one environment %d build IDs", round, racers), func(t *testing.T) {
			raceOneEnvironment(t, replicas, round)
		})
		t.Run(fmt.Sprintf("round %d one build ID %d environments", round, racers), func(t *testing.T) {
			build := fmt.Sprintf("round-%d-shared-build", round)
			envs := free[:racers]
			errs := race(replicas, func(f *testFleet, i int) error {
				_, err := f.Dispatch(ctx, &fleetv1.DispatchRequest{EnvKey: envs[i], BuildId: build})
				return err
			})
			won := oneWinner(t, "dispatches of one build ID", errs, codes.AlreadyExists, fleet.ReasonBuildTaken)
			b, err := replicas[(won+1)%pgReplicas].GetBuild(ctx, &fleetv1.GetBuildRequest{BuildId: build})
			if err != nil || b.GetEnvKey() != envs[won] || b.GetState() != string(fleet.BuildReserved) {
				t.Fatalf("build %s after the race: %v, %v; want reserved on the winner's environment %s", build, b, err, envs[won])
			}
			free = slices.Delete(free, won, won+1)
		})
		t.Run(fmt.Sprintf("round %d one build ID one environment %d times", round, racers), func(t *testing.T) {
			raceSameDispatch(t, replicas, round)
		})
	}
}

// raceSameDispatch admits a fresh environment and has 64 racers dispatch
// it to one build ID, as retries of one Dispatch on several replicas are:
// every one is answered with the one nonce the store holds, which then
// confirms the build on another replica.
func raceSameDispatch(t *testing.T, replicas []*testFleet, round int) {
	ctx := context.Background()
	e := newEnv(t, 0)
	defer e.close()
	key := replicas[round%pgReplicas].admit(t, e).GetKeyDigest()
	build := fmt.Sprintf("round-%d-same-build", round)
	nonces := make([][]byte, racers)
	errs := race(replicas, func(f *testFleet, i int) error {
		d, err := f.Dispatch(ctx, &fleetv1.DispatchRequest{EnvKey: key, BuildId: build})
		nonces[i] = d.GetNonce()
		return err
	})
	b, err := replicas[0].store.Build(ctx, build)
	if err != nil || b.EnvKey != key || b.DispatchNonce == nil {
		t.Fatalf("build %s after the race: %+v, %v; want reserved on %s with a dispatch nonce", build, b, err, key)
	}
	for i, err := range errs {
		if err != nil || !bytes.Equal(nonces[i], b.DispatchNonce) {
			t.Errorf("racer %d: nonce %x, %v; want the stored nonce %x", i, nonces[i], err, b.DispatchNonce)
		}
	}
	if _, err := replicas[(round+1)%pgReplicas].ConfirmDispatch(ctx, &fleetv1.ConfirmDispatchRequest{BuildId: build, Bundle: bind(t, e, build, b.DispatchNonce)}); err != nil {
		t.Fatalf("confirm with the one nonce on another replica: %v", err)
	}
}

// raceOneEnvironment admits a fresh environment and has 64 racers dispatch
// it to as many build IDs; the winner's dispatch is then confirmed on
// another replica, and no loser's build exists.
func raceOneEnvironment(t *testing.T, replicas []*testFleet, round int) {
	ctx := context.Background()
	e := newEnv(t, 0)
	defer e.close()
	key := replicas[round%pgReplicas].admit(t, e).GetKeyDigest()
	build := func(i int) string { return fmt.Sprintf("round-%d-build-%d", round, i) }
	nonces := make([][]byte, racers)
	errs := race(replicas, func(f *testFleet, i int) error {
		d, err := f.Dispatch(ctx, &fleetv1.DispatchRequest{EnvKey: key, BuildId: build(i)})
		nonces[i] = d.GetNonce()
		return err
	})
	won := oneWinner(t, "dispatches of one environment", errs, codes.AlreadyExists, fleet.ReasonEnvironmentTaken)
	for i := range racers {
		if i == won {
			continue
		}
		_, err := replicas[i%pgReplicas].GetBuild(ctx, &fleetv1.GetBuildRequest{BuildId: build(i)})
		wantRefusal(t, err, codes.NotFound, fleet.ReasonBuildUnknown)
	}
	confirm := replicas[(won+1)%pgReplicas]
	if _, err := confirm.ConfirmDispatch(ctx, &fleetv1.ConfirmDispatchRequest{BuildId: build(won), Bundle: bind(t, e, build(won), nonces[won])}); err != nil {
		t.Fatalf("confirm the winning dispatch on another replica: %v", err)
	}
}

// TestPGReplayedNonces: a nonce used on one replica is used on every
// replica. An admission nonce consumed on A and answered again by another
// environment on B is NONCE_USED; 64 racing admissions of one bundle and
// 64 racing confirmations of one dispatch, spread over the replicas, grant
// exactly one; a confirmation replayed on another replica is WRONG_STATE.
func TestPGReplayedNonces(t *testing.T) {
	_, replicas := pgFleet(t, pgReplicas)
	a, b := replicas[0], replicas[1]
	ctx := context.Background()

	t.Run("admission nonce replayed on another replica", func(t *testing.T) {
		nonce := a.challenge(t)
		first := newEnv(t, 0)
		if _, err := a.tryAdmit(t, first, nonce); err != nil {
			t.Fatalf("admit on replica A: %v", err)
		}
		first.close()
		second := newEnv(t, 0)
		defer second.close()
		_, err := b.tryAdmit(t, second, nonce)
		wantRefusal(t, err, codes.FailedPrecondition, fleet.ReasonNonceUsed)
	})

	e := newEnv(t, 0)
	defer e.close()
	t.Run("one admission raced over the replicas", func(t *testing.T) {
		nonce := a.challenge(t)
		a.trustAK(t, e)
		if _, err := e.Attest(ctx, nonce); err != nil {
			t.Fatalf("attestd Attest: %v", err)
		}
		bundle := e.bundle()
		errs := race(replicas, func(f *testFleet, _ int) error {
			_, err := f.Admit(ctx, &fleetv1.AdmitRequest{Nonce: nonce, Bundle: bundle})
			return err
		})
		oneWinner(t, "admissions of one bundle", errs, codes.FailedPrecondition, fleet.ReasonNonceUsed)
	})

	t.Run("one confirmation raced over the replicas then replayed", func(t *testing.T) {
		const build = "replayed-build"
		bundle := bind(t, e, build, a.dispatch(t, hexOf(keyOf(e)), build))
		errs := race(replicas, func(f *testFleet, _ int) error {
			_, err := f.ConfirmDispatch(ctx, &fleetv1.ConfirmDispatchRequest{BuildId: build, Bundle: bundle})
			return err
		})
		// A loser that read the build before the winner committed is
		// refused by the store (the nonce is used, or the state moved on).
		oneWinner(t, "confirmations of one dispatch", errs, codes.FailedPrecondition, fleet.ReasonWrongState, fleet.ReasonNonceUsed)
		_, err := b.ConfirmDispatch(ctx, &fleetv1.ConfirmDispatchRequest{BuildId: build, Bundle: bundle})
		wantRefusal(t, err, codes.FailedPrecondition, fleet.ReasonWrongState)
	})
}

// keyOf is the environment's key digest.
func keyOf(e *env) []byte {
	k := e.KeyDigest()
	return k[:]
}
