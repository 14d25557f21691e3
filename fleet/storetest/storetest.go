// Package storetest is the conformance suite every fleet.Store passes
// (fleet/sqlite, fleet/postgres): each method and sentinel of the contract,
// that a refused or canceled call changes nothing, that data survives a
// reopen, and that racing calls have exactly one winner. Races start
// Racers goroutines together at a gate and count outcomes; nothing in the
// suite depends on timing.
//
// Where the contract leaves it open, the suite fixes which error wins when
// several apply: a nonce's own errors come in the order unknown, foreign,
// used, expired; Admit and Reserve check the nonce or build ID before the
// environment; Dispatched and Completed check the build exists, then the
// nonce, then the build's state. Times are whole microseconds, the
// precision both stores keep.
//
// Test-only: it imports "testing".
package storetest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/attestd/attestd/fleet"
)

// Open opens the store under test on the database named db (lower-case
// letters, digits and '_'), creating it empty the first time. Opening the
// same name again after Close must give the same data. Names are unique
// within one Run. The suite closes every store it opens.
type Open func(t *testing.T, db string) fleet.Store

// Racers is how many goroutines each race starts; RaceRounds how many
// times a race runs on one store (the first round also warms a pooled
// store's prepared statements, so later rounds meet in the database);
// Replicas how many stores on one database RaceReplicas races through.
const (
	Racers     = 64
	RaceRounds = 3
	Replicas   = 3
)

// t0 is the suite's "now".
var t0 = time.Date(2026, 11, 30, 12, 0, 0, 123456000, time.UTC)

// ttl is how long the suite's challenges live.
const ttl = 5 * time.Minute

var dbSeq atomic.Int64

// Run runs the suite against the stores open returns.
func Run(t *testing.T, open Open) {
	tests := []struct {
		name string
		run  func(*testing.T, fleet.Store)
	}{
		{"Challenge", testChallenge},
		{"Admit", testAdmit},
		{"AdmitBadNonce", testAdmitBadNonce},
		{"Reserve", testReserve},
		{"Dispatched", testDispatched},
		{"Completed", testCompleted},
		{"AK", testAK},
		{"Prune", testPrune},
		{"Ping", testPing},
		{"Canceled", testCanceled},
		{"RaceConsume", rounds(testRaceConsume)},
		{"RaceAdmit", rounds(testRaceAdmit)},
		{"RaceAdmitNonce", rounds(testRaceAdmitNonce)},
		{"RaceDispatched", rounds(testRaceDispatched)},
		{"RaceReserveEnvironment", rounds(testRaceReserveEnvironment)},
		{"RaceReserveBuild", rounds(testRaceReserveBuild)},
		{"RaceReserveSame", rounds(testRaceReserveSame)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, openStore(t, open, newDB())) })
	}
	t.Run("Reopen", func(t *testing.T) { testReopen(t, open) })
	t.Run("RaceReplicas", func(t *testing.T) { testRaceReplicas(t, open) })
}

// rounds runs a race test RaceRounds times on one store, each round with
// names of its own.
func rounds(race func(t *testing.T, s fleet.Store, round string)) func(*testing.T, fleet.Store) {
	return func(t *testing.T, s fleet.Store) {
		for r := range RaceRounds {
			race(t, s, fmt.Sprintf("r%d-", r))
		}
	}
}

func newDB() string { return fmt.Sprintf("storetest_%d", dbSeq.Add(1)) }

func openStore(t *testing.T, open Open, db string) fleet.Store {
	t.Helper()
	s := open(t, db)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return s
}

// Bench runs the per-build sequence — PutChallenge, Admit, Reserve,
// Dispatched, Completed — b.N times on s, each time for a new environment
// and build.
func Bench(b *testing.B, s fleet.Store) {
	run := fmt.Sprintf("bench-%x", nonce()[:4])
	b.ResetTimer()
	for i := range b.N {
		if err := build(b.Context(), s, run, i); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchParallel is Bench from GOMAXPROCS×p goroutines (b.SetParallelism),
// as a service's concurrent calls are: a store that batches commits (a
// server's group commit) does better per build than in Bench.
func BenchParallel(b *testing.B, s fleet.Store, p int) {
	run := fmt.Sprintf("bench-%x", nonce()[:4])
	var seq atomic.Int64
	b.SetParallelism(p)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := build(b.Context(), s, run, int(seq.Add(1))); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// build runs the per-build sequence for environment and build i of run.
func build(ctx context.Context, s fleet.Store, run string, i int) error {
	key := digest(fmt.Sprintf("%s-env-%d", run, i))
	id := fmt.Sprintf("%s-build-%d", run, i)
	admit := challenge(fleet.StepAdmit, "", "")
	disp := challenge(fleet.StepDispatch, key, id)
	if err := s.PutChallenge(ctx, admit); err != nil {
		return err
	}
	if err := s.Admit(ctx, admit.Nonce, t0, environment(key)); err != nil {
		return err
	}
	if err := s.Reserve(ctx, fleet.Build{BuildID: id, EnvKey: key, ReservedAt: t0}, disp); err != nil {
		return err
	}
	if err := s.Dispatched(ctx, id, disp.Nonce, t0, []byte("dispatch")); err != nil {
		return err
	}
	return s.Completed(ctx, id, nil, t0, []byte("vsa"))
}

// nonce returns 32 fresh random bytes.
func nonce() []byte {
	n := make([]byte, 32)
	rand.Read(n)
	return n
}

// digest is the hex SHA-256 of s, the form of the store's keys.
func digest(s string) string {
	d := sha256.Sum256([]byte(s))
	return hex.EncodeToString(d[:])
}

// challenge is a fresh challenge created at t0, expiring ttl later.
func challenge(step fleet.Step, env, build string) fleet.Challenge {
	return fleet.Challenge{
		Nonce: nonce(), Step: step, EnvKey: env, BuildID: build,
		Data: []byte("data:" + string(step)), Created: t0, Expires: t0.Add(ttl),
	}
}

// environment is a full record for the environment key key, booted in a
// boot of its own.
func environment(key string) fleet.Environment {
	return fleet.Environment{
		KeyDigest: key, BootID: "boot-" + key, AKDigest: digest("ak-" + key),
		Backends: []string{"tpm", "snp"}, Image: "sha256:" + digest("image"), Level: 2,
		AdmittedAt: t0, Admission: []byte("svr-" + key),
	}
}

// put stores a challenge, failing the test on error.
func put(t *testing.T, s fleet.Store, c fleet.Challenge) fleet.Challenge {
	t.Helper()
	if err := s.PutChallenge(t.Context(), c); err != nil {
		t.Fatalf("PutChallenge(%s): %v", c.Step, err)
	}
	return c
}

// admit admits a new environment named name and returns its record.
func admit(t *testing.T, s fleet.Store, name string) fleet.Environment {
	t.Helper()
	env := environment(digest(name))
	c := put(t, s, challenge(fleet.StepAdmit, "", ""))
	if err := s.Admit(t.Context(), c.Nonce, t0, env); err != nil {
		t.Fatalf("Admit(%s): %v", name, err)
	}
	return env
}

// reserve binds build to env and returns the dispatch challenge.
func reserve(t *testing.T, s fleet.Store, env fleet.Environment, build string) fleet.Challenge {
	t.Helper()
	c := challenge(fleet.StepDispatch, env.KeyDigest, build)
	if err := s.Reserve(t.Context(), fleet.Build{BuildID: build, EnvKey: env.KeyDigest, ReservedAt: t0}, c); err != nil {
		t.Fatalf("Reserve(%s): %v", build, err)
	}
	return c
}

// wantErr fails the test unless err is (wraps) want; want nil means no
// error.
func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Errorf("%s: %v, want no error", what, err)
	case want != nil && !errors.Is(err, want):
		t.Errorf("%s: %v, want %v", what, err, want)
	}
}

// wantUnused fails the test unless c can still be consumed for its step.
func wantUnused(t *testing.T, s fleet.Store, c fleet.Challenge) {
	t.Helper()
	_, err := s.ConsumeChallenge(t.Context(), c.Step, c.Nonce, t0)
	wantErr(t, fmt.Sprintf("nonce of a refused call: ConsumeChallenge(%s)", c.Step), err, nil)
}

// wantUnknown fails the test unless c's nonce was never stored.
func wantUnknown(t *testing.T, s fleet.Store, c fleet.Challenge) {
	t.Helper()
	_, err := s.ConsumeChallenge(t.Context(), c.Step, c.Nonce, t0)
	wantErr(t, fmt.Sprintf("nonce of a refused call: ConsumeChallenge(%s)", c.Step), err, fleet.ErrNonceUnknown)
}

// wantEqual fails the test if got differs from want (empty and nil slices
// are equal; times compare with Equal).
func wantEqual(t *testing.T, what string, got, want any) {
	t.Helper()
	if d := cmp.Diff(want, got, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("%s (-want +got):\n%s", what, d)
	}
}

// race calls fn(i) for i in [0, Racers) from Racers goroutines released
// together (racer i pings ss[i%len(ss)] first), and checks that exactly one returns nil and every other one an
// error wrapping lose. It returns the winner's index.
func race(t *testing.T, ss []fleet.Store, fn func(ctx context.Context, i int) error, lose error) int {
	t.Helper()
	ctx := t.Context()
	gate := make(chan struct{})
	errs := make([]error, Racers)
	ready, done := make(chan error), make(chan int)
	for i := range Racers {
		go func() {
			// A ping each first, all at once, so a pooled store has its
			// connections open when the gate opens and the racers meet in
			// the database, not in the pool's queue.
			ready <- ss[i%len(ss)].Ping(ctx)
			<-gate
			errs[i] = fn(ctx, i)
			done <- i
		}()
	}
	for range Racers {
		if err := <-ready; err != nil {
			t.Errorf("Ping before the race: %v", err)
		}
	}
	close(gate)
	for range Racers {
		<-done
	}
	winner, wins := -1, 0
	for i, err := range errs {
		switch {
		case err == nil:
			winner, wins = i, wins+1
		case !errors.Is(err, lose):
			t.Errorf("racer %d: %v, want %v", i, err, lose)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of %d racers won, want exactly 1", wins, Racers)
	}
	return winner
}
