package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/attestd/attestd/attest/snp/snptest"
	"github.com/attestd/attestd/fleet"
	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
	"github.com/attestd/attestd/internal/pgtest"
)

// killFleet is three `attestfleet serve` processes on one PostgreSQL
// database, and the test's view of the calls made to them.
type killFleet struct {
	procs []*proc
	dev   *snptest.Device
	dsn   string
	dir   string // the agents' files
	// succeeded counts the calls that succeeded; uncertain those that
	// failed with their replica (dead or down) and were retried; tookEffect
	// the retried calls whose retry found that an attempt had taken effect
	// (for a Dispatch, counted by checkFlow: its retry is answered with
	// the nonce the attempt stored); died the calls that failed uncertain
	// on a replica up when they began (killed under them).
	succeeded, uncertain, tookEffect, died atomic.Int64
	// redispatched counts the retried Dispatches among tookEffect.
	redispatched atomic.Int64
}

// startKillFleet builds attestfleet and starts n replicas on a fresh
// database of a private PostgreSQL cluster.
func startKillFleet(t *testing.T, n int, extra string) *killFleet {
	t.Helper()
	bin := buildFleet(t)
	dsn := pgtest.Start(t).CreateDB(t, "fleet")
	dev, err := snptest.New(time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	snpFleetFiles(t, dir, dev)
	f := &killFleet{dev: dev, dsn: dsn, dir: t.TempDir()}
	for i := range n {
		name := fmt.Sprintf("replica-%d", i)
		p := newProc(t, bin, dir, name, dsn+" pool_max_conns=8 application_name="+name, extra)
		p.start(t)
		f.procs = append(f.procs, p)
	}
	return f
}

// live waits for a replica that is up and returns one of them at random.
func (f *killFleet) live() (*proc, error) {
	for deadline := time.Now().Add(procWait); ; time.Sleep(20 * time.Millisecond) {
		var up []*proc
		for _, p := range f.procs {
			if _, ok := p.current(); ok {
				up = append(up, p)
			}
		}
		if len(up) > 0 {
			return up[randN(len(up))], nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("waited %v for a replica that is up", procWait)
		}
	}
}

// call runs op on p's current client, counted in flight on p.
func (f *killFleet) call(p *proc, op func(context.Context, *fleetv1.Client) error) error {
	c, up := p.current()
	p.inflight.Add(1)
	defer p.inflight.Add(-1)
	ctx, cancel := context.WithTimeout(context.Background(), procWait)
	defer cancel()
	err := op(ctx, c)
	switch {
	case err == nil:
		f.succeeded.Add(1)
	case up && uncertain(err):
		f.died.Add(1)
	}
	return err
}

// retry runs op on first (up or not) and, while its outcome is uncertain
// (the replica died under the call, or was down), again on a replica that
// is up. It returns the last outcome and whether an earlier one was
// uncertain: then the call may have taken effect, and the answer says
// what it found.
func (f *killFleet) retry(first *proc, op func(context.Context, *fleetv1.Client) error) (retried bool, err error) {
	p := first
	for range 20 {
		if err = f.call(p, op); !uncertain(err) {
			return retried, err
		}
		retried = true
		f.uncertain.Add(1)
		if p, err = f.live(); err != nil {
			return retried, err
		}
	}
	return retried, fmt.Errorf("20 attempts, each uncertain; the last: %w", err)
}

// flow is one environment's way through the service, as the client saw
// it; the checks compare it with the ledger.
type flow struct {
	n      int
	env    *snpEnv
	key    string
	nonces [][]byte // every nonce a call returned to the client
	// What took effect, and the signed results the client got back (nil
	// when the call that took effect lost its answer with its replica).
	admitted, confirmed, completed bool
	admission, dispatch, vsa       []byte
	// The build IDs raced for the environment; holder is the one that
	// holds it, holderNonce its dispatch nonce, and, when the Dispatch
	// that answered it was a retry, holderAsked when that attempt began.
	candidates  []string
	holder      string
	holderNonce []byte
	holderAsked time.Time
}

// refusedAs reports whether err is a refusal with one of reasons.
func refusedAs(err error, reasons ...fleet.Reason) bool {
	return err != nil && slices.Contains(reasons, fleet.Reason(fleetv1.Reason(err)))
}

// run takes a fresh environment through admission, a race of two
// dispatches, confirmation and completion, each call on a replica at
// random, retried when its replica dies; an answer a retry may not give is
// an error.
func (f *killFleet) run(ctx context.Context, fl *flow) error {
	var err error
	if fl.env, err = launchSNP(ctx, f.dev, f.dir); err != nil {
		return err
	}
	defer fl.env.close()
	fl.key = fl.env.keyHex()
	pick := func() *proc { return f.procs[randN(len(f.procs))] }

	// Admission.
	var nonce []byte
	if _, err := f.retry(pick(), func(ctx context.Context, c *fleetv1.Client) error {
		r, err := c.Challenge(ctx, &fleetv1.ChallengeRequest{Step: fleetv1.Step_STEP_ADMIT})
		nonce = r.GetNonce()
		return err
	}); err != nil {
		return fmt.Errorf("admission challenge: %w", err)
	}
	fl.nonces = append(fl.nonces, nonce)
	if _, err := fl.env.Attest(ctx, nonce); err != nil {
		return fmt.Errorf("attestd Attest: %w", err)
	}
	bundle := fl.env.Bundle().Encode()
	retried, err := f.retry(pick(), func(ctx context.Context, c *fleetv1.Client) error {
		r, err := c.Admit(ctx, &fleetv1.AdmitRequest{Nonce: nonce, Bundle: bundle})
		fl.admission = r.GetEnvironment().GetAdmission()
		return err
	})
	switch {
	case err == nil:
	case retried && refusedAs(err, fleet.ReasonNonceUsed, fleet.ReasonAlreadyAdmitted):
		f.tookEffect.Add(1) // the attempt that died took effect
	default:
		return fmt.Errorf("admit (retried: %v): %w", retried, err)
	}
	fl.admitted = true

	if err := f.dispatchRace(fl); err != nil {
		return err
	}
	if _, err := fl.env.BindBuild(ctx, fl.holder, killRequest, fl.holderNonce); err != nil {
		return fmt.Errorf("attestd BindBuild: %w", err)
	}
	bundle = fl.env.Bundle().Encode()
	retried, err = f.retry(pick(), func(ctx context.Context, c *fleetv1.Client) error {
		r, err := c.ConfirmDispatch(ctx, &fleetv1.ConfirmDispatchRequest{BuildId: fl.holder, Bundle: bundle})
		fl.dispatch = r.GetBuild().GetDispatch()
		return err
	})
	switch {
	case err == nil:
	case retried && refusedAs(err, fleet.ReasonWrongState, fleet.ReasonNonceUsed):
		f.tookEffect.Add(1)
	default:
		return fmt.Errorf("confirm dispatch of %s (retried: %v): %w", fl.holder, retried, err)
	}
	fl.confirmed = true

	// Completion, with a completion challenge.
	if _, err := f.retry(pick(), func(ctx context.Context, c *fleetv1.Client) error {
		r, err := c.Challenge(ctx, &fleetv1.ChallengeRequest{Step: fleetv1.Step_STEP_COMPLETE, BuildId: fl.holder})
		nonce = r.GetNonce()
		return err
	}); err != nil {
		return fmt.Errorf("completion challenge: %w", err)
	}
	fl.nonces = append(fl.nonces, nonce)
	if _, err := fl.env.Complete(ctx, fl.holder, killInputs, killOutputs, nonce); err != nil {
		return fmt.Errorf("attestd Complete: %w", err)
	}
	if _, err := fl.env.SignStatement(ctx, fl.holder, killProv); err != nil {
		return fmt.Errorf("attestd SignStatement: %w", err)
	}
	bundle = fl.env.Bundle().Encode()
	retried, err = f.retry(pick(), func(ctx context.Context, c *fleetv1.Client) error {
		r, err := c.Complete(ctx, &fleetv1.CompleteRequest{BuildId: fl.holder, Bundle: bundle})
		fl.vsa = r.GetBuild().GetCompletion()
		return err
	})
	switch {
	case err == nil:
	case retried && refusedAs(err, fleet.ReasonWrongState, fleet.ReasonNonceUsed):
		f.tookEffect.Add(1)
	default:
		return fmt.Errorf("complete %s (retried: %v): %w", fl.holder, retried, err)
	}
	fl.completed = true
	return nil
}

// dispatchRace dispatches the environment to two build IDs at once on two
// replicas. Exactly one holds it and has its nonce: the one that succeeded,
// first time or retried (a retry of an attempt that took effect before its
// replica died is answered with the nonce that attempt stored); the other
// is ENVIRONMENT_TAKEN.
func (f *killFleet) dispatchRace(fl *flow) error {
	fl.candidates = []string{fmt.Sprintf("kill-%d-a", fl.n), fmt.Sprintf("kill-%d-b", fl.n)}
	type outcome struct {
		nonce   []byte
		err     error
		retried bool
		asked   time.Time // when the last attempt began
	}
	out := make([]outcome, len(fl.candidates))
	first := randN(len(f.procs))
	var wg sync.WaitGroup
	for i, build := range fl.candidates {
		wg.Go(func() {
			o := &out[i]
			o.retried, o.err = f.retry(f.procs[(first+i)%len(f.procs)], func(ctx context.Context, c *fleetv1.Client) error {
				o.asked = time.Now()
				r, err := c.Dispatch(ctx, &fleetv1.DispatchRequest{EnvKey: fl.key, BuildId: build})
				o.nonce = r.GetNonce()
				return err
			})
		})
	}
	wg.Wait()
	var holders []string
	for i, o := range out {
		build := fl.candidates[i]
		switch {
		case o.err == nil && len(o.nonce) == 0:
			return fmt.Errorf("dispatch %s (retried: %v): no nonce", build, o.retried)
		case o.err == nil:
			holders = append(holders, build)
			fl.holder, fl.holderNonce = build, o.nonce
			fl.nonces = append(fl.nonces, o.nonce)
			if o.retried {
				fl.holderAsked = o.asked
			}
		case refusedAs(o.err, fleet.ReasonEnvironmentTaken):
		default:
			return fmt.Errorf("dispatch %s (retried: %v): %w", build, o.retried, o.err)
		}
	}
	if len(holders) != 1 {
		return fmt.Errorf("dispatches of environment %s: %v hold it, want exactly one (%+v)", fl.key, holders, out)
	}
	return nil
}

// TestKillReplicas: three `attestfleet serve` processes on one PostgreSQL
// take concurrent admissions, racing dispatches, confirmations and
// completions of SEV-SNP environments while replicas are SIGKILLed with a
// call in flight, or with a statement of theirs running in PostgreSQL
// (twice two at a time), and started again. A call that dies
// with its replica is retried on another: it took effect whole or not at
// all, and the retry's answer says which. Afterwards the ledger, read from
// PostgreSQL and through the replicas, holds every answer the client got,
// one build per environment, and each build at a whole step.
func TestKillReplicas(t *testing.T) {
	f := startKillFleet(t, 3, "")
	const workers = 6
	// Each round kills these replicas, one after the other, then starts
	// them again. Every other kill waits for a call of the test in flight
	// on the replica, the others for a statement of the replica on the
	// ledger running in PostgreSQL (its application_name).
	rounds := [][]int{{0}, {1}, {2, 0}, {1}, {2}, {0, 1}, {2}, {0}}
	watch, err := pgx.Connect(context.Background(), f.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(context.Background())
	inFlight := func(p *proc) bool { return p.inflight.Load() > 0 }
	inDB := func(p *proc) bool {
		var n int
		err := watch.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = $1 AND state = 'active' AND query ~ '(challenges|builds|environments)'`, p.name).Scan(&n)
		return err == nil && n > 0
	}
	kills := 0

	var (
		mu    sync.Mutex
		flows []*flow
		stop  atomic.Bool
		wg    sync.WaitGroup
	)
	// However the rounds end, the workers stop before the processes do.
	defer func() { stop.Store(true); wg.Wait() }()
	for range workers {
		wg.Go(func() {
			for !stop.Load() {
				mu.Lock()
				fl := &flow{n: len(flows)}
				flows = append(flows, fl)
				mu.Unlock()
				if err := f.run(context.Background(), fl); err != nil {
					t.Errorf("environment %d: %v", fl.n, err)
					return
				}
			}
		})
	}
	func() {
		for r, victims := range rounds {
			for _, v := range victims {
				p, what, cond := f.procs[v], "a call in flight on", inFlight
				if kills++; kills%2 == 0 {
					what, cond = "a statement in PostgreSQL from", inDB
				}
				if err := waitFor(fmt.Sprintf("%s %s (round %d)", what, p.name, r), func() bool { return cond(p) }); err != nil {
					t.Error(err)
					return
				}
				p.kill(t)
			}
			for _, v := range victims {
				f.procs[v].start(t) // the schema is there; no lock is left
			}
			n := f.succeeded.Load() + 15
			if err := waitFor(fmt.Sprintf("15 more calls succeeding after round %d", r), func() bool { return f.succeeded.Load() >= n }); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	stop.Store(true)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, p := range f.procs {
		if _, up := p.current(); !up {
			t.Fatalf("%s is not up after the rounds", p.name)
		}
	}
	completed := 0
	for _, fl := range flows {
		if fl.completed {
			completed++
		}
	}
	// Every flow ran to its end: no environment is left holding a build
	// it cannot confirm (a retried Dispatch gets the nonce back).
	if completed != len(flows) || f.died.Load() == 0 {
		t.Fatalf("%d of %d builds completed, %d calls killed in flight: want all, and some", completed, len(flows), f.died.Load())
	}
	f.checkLedger(t, flows)
	t.Logf("%d environments, each build completed; %d calls succeeded; %d failed with their replica and were retried (%d killed under them, the others sent to a replica down), %d of them had taken effect (%d Dispatches answered again with the nonce they stored)",
		len(flows), f.succeeded.Load(), f.uncertain.Load(), f.died.Load(), f.tookEffect.Load(), f.redispatched.Load())
	f.checkReplicas(t, flows)
}

// waitFor polls cond until it holds (generously: the machine may be
// loaded), naming what it waited for if it never does.
func waitFor(what string, cond func() bool) error {
	for deadline := time.Now().Add(procWait); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("waited %v for %s", procWait, what)
		}
	}
	return nil
}

// TestKillTermDrains: SIGTERM to an `attestfleet serve` process while a
// Dispatch is in flight (held inside PostgreSQL by the test's lock on the
// environment's row): the process takes no new call, the Dispatch
// completes and is recorded once the lock goes, and the process exits 0
// within its drain, its socket removed. (fleet's TestDrain checks the
// drain in process; this adds the signal, the exit status and the store's
// close.)
func TestKillTermDrains(t *testing.T) {
	f := startKillFleet(t, 1, "drain: 25s\n")
	p := f.procs[0]
	ctx := context.Background()
	e, err := launchSNP(ctx, f.dev, f.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer e.close()
	c, _ := p.current()
	ch, err := c.Challenge(ctx, &fleetv1.ChallengeRequest{Step: fleetv1.Step_STEP_ADMIT})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Attest(ctx, ch.GetNonce()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Admit(ctx, &fleetv1.AdmitRequest{Nonce: ch.GetNonce(), Bundle: e.Bundle().Encode()}); err != nil {
		t.Fatalf("admit: %v", err)
	}
	key := e.keyHex()

	// Hold the environment's row: the Dispatch's insert of its build
	// waits for it (the foreign key's share lock).
	db, err := pgx.Connect(ctx, f.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT FROM environments WHERE key_digest = $1 FOR UPDATE`, key); err != nil {
		t.Fatal(err)
	}
	called := make(chan error, 1)
	go func() {
		_, err := c.Dispatch(ctx, &fleetv1.DispatchRequest{EnvKey: key, BuildId: "drained-build"})
		called <- err
	}()
	watch, err := pgx.Connect(ctx, f.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(ctx)
	holder := db.PgConn().PID()
	if err := waitFor("the Dispatch waiting in PostgreSQL for the environment's row", func() bool {
		var n int
		err := watch.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid))`, holder).Scan(&n)
		return err == nil && n > 0
	}); err != nil {
		t.Fatal(err)
	}

	p.signal(t, syscall.SIGTERM)
	if err := waitFor("the stopping replica to refuse a new call", func() bool {
		nc, err := fleetv1.Dial("unix:" + p.sock)
		if err != nil {
			return false
		}
		defer nc.Close()
		_, err = nc.Challenge(ctx, &fleetv1.ChallengeRequest{Step: fleetv1.Step_STEP_ADMIT})
		return status.Code(err) == codes.Unavailable && fleetv1.Reason(err) == ""
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-called:
		t.Fatalf("the Dispatch returned (%v) while its row was held", err)
	default:
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-called; err != nil {
		t.Fatalf("the Dispatch in flight at SIGTERM: %v", err)
	}
	if ws := p.wait(t, "SIGTERM"); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("exit status %v after SIGTERM, want 0\n%s", ws, p.logText())
	}
	if _, err := os.Stat(p.sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket after a graceful stop: %v, want it removed", err)
	}
	var state, env string
	if err := watch.QueryRow(ctx, `SELECT state, env_key FROM builds WHERE build_id = 'drained-build'`).Scan(&state, &env); err != nil ||
		state != string(fleet.BuildReserved) || env != key {
		t.Fatalf("the drained Dispatch's build: %s on %s, %v; want reserved on %s", state, env, err, key)
	}
}
