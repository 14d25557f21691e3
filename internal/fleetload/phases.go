package fleetload

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/attestd/attestd/fleet"
	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
	"github.com/attestd/attestd/verifier"
)

// Call types, the measured phases in the order they run.
const (
	CallAdmit    = "admit"
	CallDispatch = "dispatch"
	CallConfirm  = "confirm"
	CallComplete = "complete"
)

// build is one build of a load: its environment and what it sends.
type build struct {
	id, envKey                 string
	env                        *env
	admitNonce, admitBundle    []byte
	dispatchNonce              []byte
	dispatchBundle, doneBundle []byte
}

// load runs one source's builds through the phases.
func (r *run) load(ctx context.Context, l Load) ([]Phase, error) {
	name := l.Source.Name()
	r.cfg.Logf("%s: preparing %d environments and their admissions", name, l.Builds)
	trips0 := r.proxy.Trips()
	size0, err := r.db.size(ctx)
	if err != nil {
		return nil, fmt.Errorf("database size: %w", err)
	}
	builds, err := r.prepare(ctx, l)
	defer func() {
		for _, b := range builds {
			b.env.close()
		}
	}()
	if err != nil {
		return nil, err
	}
	challengeTrips := r.proxy.Trips() - trips0
	var phases []Phase
	measure := func(call string, f func(context.Context, *replica, *build) (int, error)) error {
		p, err := r.phase(ctx, name, call, builds, f)
		phases = append(phases, p)
		return err
	}
	if err := measure(CallAdmit, admit); err != nil {
		return phases, err
	}
	if err := measure(CallDispatch, dispatch); err != nil {
		return phases, err
	}
	r.cfg.Logf("%s: agents bind and complete %d builds", name, len(builds))
	for _, b := range builds {
		if b.dispatchBundle, b.doneBundle, err = b.env.run(ctx, b.id, b.dispatchNonce); err != nil {
			return phases, fmt.Errorf("build %s: %w", b.id, err)
		}
	}
	if err := measure(CallConfirm, confirm); err != nil {
		return phases, err
	}
	if err := measure(CallComplete, complete); err != nil {
		return phases, err
	}
	phases[0].ChallengeTrips = challengeTrips
	last := &phases[len(phases)-1]
	if last.RowsAfter, err = r.db.rows(ctx); err != nil {
		return phases, fmt.Errorf("count rows: %w", err)
	}
	size, err := r.db.size(ctx)
	if err != nil {
		return phases, fmt.Errorf("database size: %w", err)
	}
	last.DBGrowth = size - size0
	return phases, nil
}

// prepare makes the environments and their admission bundles: a challenge
// from a replica (long-lived), answered by the agent; a TPM's AK is
// registered in the store, as AK registration would.
func (r *run) prepare(ctx context.Context, l Load) ([]*build, error) {
	var builds []*build
	for i := range l.Builds {
		b := &build{id: fmt.Sprintf("%s-build-%d", l.Source.Name(), i)}
		dir, err := os.MkdirTemp(r.cfg.Dir, b.id)
		if err != nil {
			return builds, err
		}
		backend, err := l.Source.Backend(ctx)
		if err != nil {
			return builds, fmt.Errorf("environment %d: %w", i, err)
		}
		if b.env, err = launch(ctx, backend, dir); err != nil {
			backend.Close()
			return builds, fmt.Errorf("environment %d: %w", i, err)
		}
		builds = append(builds, b)
		c, err := r.replicas[i%len(r.replicas)].Challenge(ctx, &fleetv1.ChallengeRequest{Step: fleetv1.Step_STEP_ADMIT})
		if err != nil {
			return builds, fmt.Errorf("challenge: %w", err)
		}
		b.admitNonce = c.GetNonce()
		if b.admitBundle, err = b.env.attest(ctx, b.admitNonce); err != nil {
			return builds, fmt.Errorf("environment %d: %w", i, err)
		}
		if err := r.registerAK(ctx, b.admitBundle); err != nil {
			return builds, err
		}
	}
	return builds, nil
}

// registerAK puts the bundle's TPM AK into the store, if it has one.
func (r *run) registerAK(ctx context.Context, bundle []byte) error {
	f, err := verifier.Inspect(bundle)
	if err != nil {
		return fmt.Errorf("inspect an admission bundle: %w", err)
	}
	if f.AKDigest == "" {
		return nil
	}
	ak := fleet.AK{Digest: f.AKDigest, PublicKey: f.AK, EKCertDigest: "fleetload", RegisteredAt: time.Now()}
	if err := r.setup.PutAK(ctx, ak); err != nil {
		return fmt.Errorf("register AK %s: %w", f.AKDigest, err)
	}
	return nil
}

// The calls of the phases; each returns the bytes of bundle it sent.

func admit(ctx context.Context, rep *replica, b *build) (int, error) {
	resp, err := rep.Admit(ctx, &fleetv1.AdmitRequest{Nonce: b.admitNonce, Bundle: b.admitBundle})
	b.envKey = resp.GetEnvironment().GetKeyDigest()
	return len(b.admitBundle), err
}

func dispatch(ctx context.Context, rep *replica, b *build) (int, error) {
	resp, err := rep.Dispatch(ctx, &fleetv1.DispatchRequest{EnvKey: b.envKey, BuildId: b.id})
	b.dispatchNonce = resp.GetNonce()
	return 0, err
}

func confirm(ctx context.Context, rep *replica, b *build) (int, error) {
	_, err := rep.ConfirmDispatch(ctx, &fleetv1.ConfirmDispatchRequest{BuildId: b.id, Bundle: b.dispatchBundle})
	return len(b.dispatchBundle), err
}

func complete(ctx context.Context, rep *replica, b *build) (int, error) {
	_, err := rep.Complete(ctx, &fleetv1.CompleteRequest{BuildId: b.id, Bundle: b.doneBundle})
	return len(b.doneBundle), err
}

// phase runs call for every build, cfg.Workers at a time, build i on
// replica i mod Replicas, and measures it. A call that fails is counted
// and its error kept; the phase goes on.
func (r *run) phase(ctx context.Context, source, call string, builds []*build, f func(context.Context, *replica, *build) (int, error)) (Phase, error) {
	p := Phase{Backend: source, Call: call, Calls: len(builds)}
	lat := make([]time.Duration, len(builds))
	bytes := make([]int, len(builds))
	errs := make([]error, len(builds))
	next := make(chan int)
	before := r.snapshot()
	var wg sync.WaitGroup
	for range r.cfg.Workers {
		wg.Go(func() {
			for i := range next {
				start := time.Now()
				bytes[i], errs[i] = f(ctx, r.replicas[i%len(r.replicas)], builds[i])
				lat[i] = time.Since(start)
			}
		})
	}
	for i := range builds {
		next <- i
	}
	close(next)
	wg.Wait()
	p.measured(before, r.snapshot(), lat, bytes)
	for i, err := range errs {
		if err != nil {
			p.Failed++
			if p.FirstError == "" {
				p.FirstError = fmt.Sprintf("%s %s: %v", call, builds[i].id, err)
			}
		}
	}
	r.cfg.Logf("%s %s: %d calls, %d failed, p50 %v p99 %v, %.0f calls per CPU second", source, call, p.Calls, p.Failed,
		p.P50, p.P99, p.PerCPUSecond())
	if p.Failed > 0 {
		return p, fmt.Errorf("%d of %d %s calls failed; the first: %s", p.Failed, p.Calls, call, p.FirstError)
	}
	return p, ctx.Err()
}
