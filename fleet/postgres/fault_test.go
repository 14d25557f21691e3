package postgres

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/attestd/attestd/fleet"
	"github.com/attestd/attestd/internal/pgtest"
)

// faultBuild is one per-build sequence of the fault test's stream and how
// many of its calls succeeded before the first failure.
type faultBuild struct {
	key, build  string
	admit, disp fleet.Challenge
	ok          int
}

// calls is the per-build sequence the stream runs.
func (f *faultBuild) calls(s fleet.Store, now time.Time) []func(context.Context) error {
	return []func(context.Context) error{
		func(ctx context.Context) error { return s.PutChallenge(ctx, f.admit) },
		func(ctx context.Context) error {
			return s.Admit(ctx, f.admit.Nonce, now, fleet.Environment{KeyDigest: f.key, AdmittedAt: now})
		},
		func(ctx context.Context) error {
			return s.Reserve(ctx, fleet.Build{BuildID: f.build, EnvKey: f.key, ReservedAt: now}, f.disp)
		},
		func(ctx context.Context) error { return s.Dispatched(ctx, f.build, f.disp.Nonce, now, []byte("svr")) },
		func(ctx context.Context) error { return s.Completed(ctx, f.build, nil, now, []byte("vsa")) },
	}
}

// TestFault stops PostgreSQL while a stream of per-build sequences runs:
// calls fail with ErrUnavailable, and every sequence is left at a whole
// step; started again, the same Store serves calls without reopening.
func TestFault(t *testing.T) {
	srv := pgtest.Start(t)
	s, err := Open(t.Context(), srv.CreateDB(t, "fault"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	const (
		before    = 20  // builds completed before the stop
		failures  = 50  // calls failed while stopped
		after     = 20  // builds completed after the restart
		maxBuilds = 1e5 // the stream's bound, should a wait below never end
	)
	now := time.Now().UTC().Truncate(time.Microsecond)
	completed, failed := make(chan struct{}, maxBuilds), make(chan struct{}, maxBuilds)
	quit, done := make(chan struct{}), make(chan []*faultBuild)
	go func() {
		var builds []*faultBuild
		defer func() { done <- builds }()
		for i := 0; i < maxBuilds; i++ {
			select {
			case <-quit:
				return
			default:
			}
			f := &faultBuild{key: fmt.Sprintf("env-%d", i), build: fmt.Sprintf("build-%d", i)}
			f.admit = fleet.Challenge{Nonce: []byte(rand.Text()), Step: fleet.StepAdmit, Created: now, Expires: now.Add(time.Hour)}
			f.disp = fleet.Challenge{Nonce: []byte(rand.Text()), Step: fleet.StepDispatch, EnvKey: f.key, BuildID: f.build, Created: now, Expires: now.Add(time.Hour)}
			builds = append(builds, f)
			for _, call := range f.calls(s, now) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				err := call(ctx)
				cancel()
				if err != nil {
					if !errors.Is(err, fleet.ErrUnavailable) {
						t.Errorf("build %d call %d: %v, want ErrUnavailable", i, f.ok, err)
					}
					failed <- struct{}{}
					// Not a spin while the server is down (a failed
					// connect is quick): maxBuilds then lasts 1000 s.
					time.Sleep(10 * time.Millisecond)
					break
				}
				if f.ok++; f.ok == 5 {
					completed <- struct{}{}
				}
			}
		}
	}()

	// stop ends the stream and returns what it ran; deferred too, so a
	// failed wait does not leave the stream running after the test.
	stop := sync.OnceValue(func() []*faultBuild { close(quit); return <-done })
	defer stop()
	wait := func(c chan struct{}, n int, what string) {
		t.Helper()
		for i := range n {
			select {
			case <-c:
			case <-time.After(5 * time.Minute):
				t.Fatalf("waited 5 minutes for %s: %d of %d seen", what, i, n)
			}
		}
	}
	wait(completed, before, "builds completed before the stop")
	srv.Stop(t)
	drain(completed)
	wait(failed, failures, "calls failed while PostgreSQL is stopped")
	srv.Start(t)
	drain(completed)
	wait(completed, after, "builds completed after the restart (the pool reconnecting)")
	checkWhole(t, s, stop())
}

func drain(c chan struct{}) {
	for len(c) > 0 {
		<-c
	}
}

// checkWhole checks that each build's rows are those of the calls that
// succeeded, or of one more call whose reply was lost: never part of one.
func checkWhole(t *testing.T, s *Store, builds []*faultBuild) {
	ctx := t.Context()
	var midway, lost int
	for _, f := range builds {
		var (
			admitUsed, dispUsed *bool
			envs                int
			state               *string
		)
		err := s.pool.QueryRow(ctx, `SELECT
			(SELECT used FROM challenges WHERE nonce = $1),
			(SELECT count(*) FROM environments WHERE key_digest = $2),
			(SELECT used FROM challenges WHERE nonce = $3),
			(SELECT state FROM builds WHERE build_id = $4)`,
			f.admit.Nonce, f.key, f.disp.Nonce, f.build).Scan(&admitUsed, &envs, &dispUsed, &state)
		if err != nil {
			t.Fatalf("read build %s: %v", f.build, err)
		}
		// How far the rows say the sequence got.
		steps := 0
		switch {
		case state != nil && *state == string(fleet.BuildCompleted):
			steps = 5
		case state != nil && *state == string(fleet.BuildDispatched):
			steps = 4
		case state != nil:
			steps = 3
		case envs == 1:
			steps = 2
		case admitUsed != nil:
			steps = 1
		}
		whole := (envs == 1) == (admitUsed != nil && *admitUsed) &&
			(state != nil) == (dispUsed != nil) &&
			(state != nil && *state != string(fleet.BuildReserved)) == (dispUsed != nil && *dispUsed) &&
			(state == nil || envs == 1)
		if !whole || steps < f.ok || steps > f.ok+1 {
			t.Errorf("%s: %d calls succeeded; rows: admission nonce used %v, environment %d, dispatch nonce used %v, state %v",
				f.build, f.ok, deref(admitUsed), envs, deref(dispUsed), deref(state))
		}
		if f.ok > 0 && f.ok < 5 {
			midway++
		}
		if steps > f.ok {
			lost++
		}
	}
	t.Logf("%d builds: %d cut short after some calls, %d with a change committed whose reply was lost", len(builds), midway, lost)
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}
