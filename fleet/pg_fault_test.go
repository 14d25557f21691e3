package fleet_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/attestd/attestd/fleet"
	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
)

// challengeLoad keeps every replica busy issuing admission challenges (a
// store write each) until stopped, and counts the calls that succeeded and
// those refused as STORE_UNAVAILABLE; any other outcome fails the test.
type challengeLoad struct {
	ok, unavailable atomic.Int64
	quit            chan struct{}
	wg              sync.WaitGroup
}

func startChallengeLoad(t *testing.T, replicas []*testFleet) *challengeLoad {
	l := &challengeLoad{quit: make(chan struct{})}
	for _, f := range replicas {
		l.wg.Go(func() {
			for {
				select {
				case <-l.quit:
					return
				default:
				}
				_, err := f.Challenge(context.Background(), &fleetv1.ChallengeRequest{Step: fleetv1.Step_STEP_ADMIT})
				switch {
				case err == nil:
					l.ok.Add(1)
				case status.Code(err) == codes.Unavailable && fleetv1.Reason(err) == string(fleet.ReasonStoreUnavailable):
					l.unavailable.Add(1)
				default:
					t.Errorf("challenge under load: %v, want success or STORE_UNAVAILABLE", err)
					return
				}
			}
		})
	}
	t.Cleanup(l.stop)
	return l
}

func (l *challengeLoad) stop() {
	select {
	case <-l.quit:
	default:
		close(l.quit)
	}
	l.wg.Wait()
}

// waitCount waits until c reaches n (generous: the machine may be loaded).
func waitCount(t *testing.T, c *atomic.Int64, n int64, what string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for c.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("waited 2 minutes for %d %s: saw %d", n, what, c.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPGFault stops PostgreSQL under load on 3 replicas: every call that
// needs the database is Unavailable (STORE_UNAVAILABLE), health goes
// NOT_SERVING, and nothing is granted: a dispatch, an admission and a
// dispatch confirmation asked for while it is down leave no record, and
// their nonces stay unused. Started again, health is SERVING and the same
// calls succeed, with no replica restarted.
func TestPGFault(t *testing.T) {
	srv, replicas := pgFleet(t, pgReplicas)
	ctx := context.Background()
	for _, f := range replicas {
		waitHealth(t, f, healthpb.HealthCheckResponse_SERVING)
	}

	// Made while the database answers, asked for while it does not.
	held := newEnv(t, 0)
	heldKey := replicas[0].admit(t, held).GetKeyDigest()
	confirmBundle := bind(t, held, "held-build", replicas[1].dispatch(t, heldKey, "held-build"))
	held.close()
	free := newEnv(t, 0)
	freeKey := replicas[2].admit(t, free).GetKeyDigest()
	free.close()
	late := newEnv(t, 0)
	replicas[0].trustAK(t, late)
	admitNonce := replicas[0].challenge(t)
	if _, err := late.Attest(ctx, admitNonce); err != nil {
		t.Fatalf("attestd Attest: %v", err)
	}
	admitBundle := late.bundle()
	late.close()

	load := startChallengeLoad(t, replicas)
	waitCount(t, &load.ok, 50, "challenges issued before the stop")
	srv.Stop(t)
	waitCount(t, &load.unavailable, 50, "challenges refused while PostgreSQL is stopped")
	for _, f := range replicas {
		waitHealth(t, f, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	for i, f := range replicas {
		_, err := f.Dispatch(ctx, &fleetv1.DispatchRequest{EnvKey: freeKey, BuildId: "down-build"})
		wantRefusal(t, err, codes.Unavailable, fleet.ReasonStoreUnavailable)
		_, err = f.Admit(ctx, &fleetv1.AdmitRequest{Nonce: admitNonce, Bundle: admitBundle})
		wantRefusal(t, err, codes.Unavailable, fleet.ReasonStoreUnavailable)
		_, err = f.ConfirmDispatch(ctx, &fleetv1.ConfirmDispatchRequest{BuildId: "held-build", Bundle: confirmBundle})
		wantRefusal(t, err, codes.Unavailable, fleet.ReasonStoreUnavailable)
		_, err = f.GetBuild(ctx, &fleetv1.GetBuildRequest{BuildId: "held-build"})
		wantRefusal(t, err, codes.Unavailable, fleet.ReasonStoreUnavailable)
		t.Logf("replica %d refused every call while PostgreSQL was stopped", i)
	}

	srv.Start(t)
	for _, f := range replicas {
		waitHealth(t, f, healthpb.HealthCheckResponse_SERVING)
	}
	okBefore := load.ok.Load()
	waitCount(t, &load.ok, okBefore+50, "challenges issued after the restart")
	load.stop()

	// Nothing was granted while down: no dispatch recorded, the held
	// build still waits for its confirmation with no result, and each
	// nonce is still there to be used once.
	_, err := replicas[0].GetBuild(ctx, &fleetv1.GetBuildRequest{BuildId: "down-build"})
	wantRefusal(t, err, codes.NotFound, fleet.ReasonBuildUnknown)
	b, err := replicas[1].GetBuild(ctx, &fleetv1.GetBuildRequest{BuildId: "held-build"})
	if err != nil || b.GetState() != string(fleet.BuildReserved) || len(b.GetDispatch()) != 0 {
		t.Fatalf("held build after the restart: %v, %v; want reserved with no dispatch result", b, err)
	}
	if _, err := replicas[1].Dispatch(ctx, &fleetv1.DispatchRequest{EnvKey: freeKey, BuildId: "down-build"}); err != nil {
		t.Fatalf("dispatch after the restart: %v", err)
	}
	if _, err := replicas[2].Admit(ctx, &fleetv1.AdmitRequest{Nonce: admitNonce, Bundle: admitBundle}); err != nil {
		t.Fatalf("admit after the restart: %v", err)
	}
	if _, err := replicas[0].ConfirmDispatch(ctx, &fleetv1.ConfirmDispatchRequest{BuildId: "held-build", Bundle: confirmBundle}); err != nil {
		t.Fatalf("confirm after the restart: %v", err)
	}
	t.Logf("challenges under load: %d issued, %d refused as unavailable", load.ok.Load(), load.unavailable.Load())
}
