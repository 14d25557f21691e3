package fleet_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/attestd/attestd/fleet"
	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
	"github.com/attestd/attestd/fleet/sqlite"
)

// TestOversized: a bundle over limits.max_bundle is TOO_LARGE; one over the
// gRPC receive limit is refused by gRPC itself (ResourceExhausted, no
// reason: the service never sees it).
func TestOversized(t *testing.T) {
	const limit = 1 << 20
	f := newFleet(t, func(c *fleet.Config) { c.MaxBundle = limit })
	ctx := context.Background()
	_, err := f.Admit(ctx, &fleetv1.AdmitRequest{Nonce: make([]byte, 32), Bundle: make([]byte, limit+1)})
	wantRefusal(t, err, codes.ResourceExhausted, fleet.ReasonTooLarge)
	_, err = f.ConfirmDispatch(ctx, &fleetv1.ConfirmDispatchRequest{BuildId: "b", Bundle: make([]byte, limit+1)})
	wantRefusal(t, err, codes.ResourceExhausted, fleet.ReasonTooLarge)
	_, err = f.StartRegistration(ctx, &fleetv1.StartRegistrationRequest{LaunchAttestation: make([]byte, limit+1)})
	wantRefusal(t, err, codes.ResourceExhausted, fleet.ReasonTooLarge)
	_, err = f.Complete(ctx, &fleetv1.CompleteRequest{BuildId: "b", Bundle: make([]byte, 2*limit)})
	if status.Code(err) != codes.ResourceExhausted || fleetv1.Reason(err) != "" {
		t.Fatalf("a request over the receive limit: %v (reason %q), want gRPC's ResourceExhausted", err, fleetv1.Reason(err))
	}
}

// unavailable is a Store that fails every call with fleet.ErrUnavailable
// while down, as a database that does not answer.
type unavailable struct {
	fleet.Store
	down atomic.Bool
}

func (u *unavailable) err(op string) error {
	if u.down.Load() {
		return fmt.Errorf("%s: %w: connection refused", op, fleet.ErrUnavailable)
	}
	return nil
}

func (u *unavailable) PutChallenge(ctx context.Context, c fleet.Challenge) error {
	if err := u.err("put challenge"); err != nil {
		return err
	}
	return u.Store.PutChallenge(ctx, c)
}

func (u *unavailable) Admit(ctx context.Context, nonce []byte, now time.Time, e fleet.Environment) error {
	if err := u.err("admit"); err != nil {
		return err
	}
	return u.Store.Admit(ctx, nonce, now, e)
}

func (u *unavailable) AK(ctx context.Context, digest string) (*fleet.AK, error) {
	if err := u.err("ak"); err != nil {
		return nil, err
	}
	return u.Store.AK(ctx, digest)
}

func (u *unavailable) Reserve(ctx context.Context, b fleet.Build, c fleet.Challenge) error {
	if err := u.err("reserve"); err != nil {
		return err
	}
	return u.Store.Reserve(ctx, b, c)
}

func (u *unavailable) Ping(ctx context.Context) error {
	if err := u.err("ping"); err != nil {
		return err
	}
	return u.Store.Ping(ctx)
}

// TestStoreUnavailable: while the store does not answer, every call that
// needs it is Unavailable (STORE_UNAVAILABLE) and grants nothing, health is
// NOT_SERVING; once it answers again, health is SERVING and calls succeed.
func TestStoreUnavailable(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "fleet.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	u := &unavailable{Store: st}
	f := startFleet(t, u)
	waitHealth(t, f, healthpb.HealthCheckResponse_SERVING)

	e := newEnv(t, 0)
	f.trustAK(t, e)
	nonce := f.challenge(t)
	if _, err := e.Attest(ctx, nonce); err != nil {
		t.Fatal(err)
	}
	u.down.Store(true)
	_, err = f.Challenge(ctx, &fleetv1.ChallengeRequest{Step: fleetv1.Step_STEP_ADMIT})
	wantRefusal(t, err, codes.Unavailable, fleet.ReasonStoreUnavailable)
	_, err = f.Admit(ctx, &fleetv1.AdmitRequest{Nonce: nonce, Bundle: e.bundle()})
	wantRefusal(t, err, codes.Unavailable, fleet.ReasonStoreUnavailable)
	waitHealth(t, f, healthpb.HealthCheckResponse_NOT_SERVING)

	u.down.Store(false)
	waitHealth(t, f, healthpb.HealthCheckResponse_SERVING)
	// Nothing was granted while down: the nonce is still unused.
	if _, err := f.Admit(ctx, &fleetv1.AdmitRequest{Nonce: nonce, Bundle: e.bundle()}); err != nil {
		t.Fatalf("admit after the store came back: %v", err)
	}
}

// waitHealth waits until the replica's health is want (the health loop
// pings every 20 ms here; the wait is generous for a loaded machine).
func waitHealth(t *testing.T, f *testFleet, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	hc := healthpb.NewHealthClient(f.Conn())
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: fleetv1.Fleet_ServiceDesc.ServiceName})
		if err == nil && resp.GetStatus() == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 30s for health %v: last %v, %v", want, resp.GetStatus(), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReplicas: three replicas on one SQLite store (see replicas; on
// PostgreSQL: pg_replicas_test.go).
func TestReplicas(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "fleet.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	replicas(t, st)
}

// replicas runs three replicas on st: 64 racing dispatches of one
// environment to different builds, spread over the replicas, grant exactly
// one; the dispatch is confirmed on a second replica and completed on a
// third.
func replicas(t *testing.T, st fleet.Store) {
	ctx := context.Background()
	replicas := []*testFleet{startFleet(t, st), startFleet(t, st), startFleet(t, st)}
	e := newEnv(t, 0)
	key := replicas[0].admit(t, e).GetKeyDigest()
	const racers = 64
	var wg sync.WaitGroup
	errs := make([]error, racers)
	nonces := make([][]byte, racers)
	for i := range racers {
		wg.Go(func() {
			d, err := replicas[i%len(replicas)].Dispatch(ctx, &fleetv1.DispatchRequest{EnvKey: key, BuildId: fmt.Sprintf("build-%d", i)})
			errs[i], nonces[i] = err, d.GetNonce()
		})
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won >= 0:
			t.Fatalf("builds %d and %d were both dispatched to one environment", won, i)
		case err == nil:
			won = i
		case fleetv1.Reason(err) != string(fleet.ReasonEnvironmentTaken):
			t.Fatalf("racer %d: %v, want ENVIRONMENT_TAKEN", i, err)
		}
	}
	if won < 0 {
		t.Fatal("no dispatch won")
	}
	build := fmt.Sprintf("build-%d", won)
	if _, err := replicas[1].ConfirmDispatch(ctx, &fleetv1.ConfirmDispatchRequest{BuildId: build, Bundle: bind(t, e, build, nonces[won])}); err != nil {
		t.Fatalf("confirm on another replica: %v", err)
	}
	if _, err := replicas[2].Complete(ctx, &fleetv1.CompleteRequest{BuildId: build, Bundle: finish(t, e, build, nil)}); err != nil {
		t.Fatalf("complete on a third replica: %v", err)
	}
}

// gated is a Store whose Reserve waits for release, to hold a call in
// progress.
type gated struct {
	fleet.Store
	entered, release chan struct{}
}

func (g *gated) Reserve(ctx context.Context, b fleet.Build, c fleet.Challenge) error {
	close(g.entered)
	<-g.release
	return g.Store.Reserve(ctx, b, c)
}

// TestDrain: a replica told to stop takes no new call and lets the call in
// progress finish; Serve returns nil once it has.
func TestDrain(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "fleet.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	g := &gated{Store: st, entered: make(chan struct{}), release: make(chan struct{})}
	f := startFleet(t, g, func(c *fleet.Config) { c.Drain = time.Minute })
	key := f.admit(t, newEnv(t, 0)).GetKeyDigest()

	called := make(chan error, 1)
	go func() {
		_, err := f.Dispatch(ctx, &fleetv1.DispatchRequest{EnvKey: key, BuildId: "build-1"})
		called <- err
	}()
	<-g.entered
	stopped := make(chan error, 1)
	go func() { stopped <- f.Stop() }()
	// Wait until the replica takes no new call.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, err := f.Challenge(ctx, &fleetv1.ChallengeRequest{Step: fleetv1.Step_STEP_ADMIT})
		if status.Code(err) == codes.Unavailable && fleetv1.Reason(err) == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 30s for the stopping replica to refuse new calls: last %v", err)
		}
	}
	close(g.release)
	if err := <-called; err != nil {
		t.Fatalf("the call in progress at the stop: %v", err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Serve after a graceful stop: %v", err)
	}
	if b, err := st.Build(ctx, "build-1"); err != nil || b.State != fleet.BuildReserved {
		t.Fatalf("the drained call's build: %v, %v", b, err)
	}
}
