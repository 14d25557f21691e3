// Package fleetload is the fleet verifier's load generator (`make
// fleet-bench`, docs/fleet-scale.md): N replicas of the service (fleet.Server,
// real gRPC servers, each with its own postgres.Store pool) on one
// PostgreSQL database, driven with real bundles from attestd agents on
// the fake SEV-SNP and TDX guests and on swtpm.
//
// Attestations answer the service's own nonces, so they are made outside
// the measured phases: the admission challenges are issued with a long
// lifetime and answered first; the agents bind and complete their builds
// between the admit/dispatch phases and the confirm/complete phases. Each
// measured phase replays one call type for every build, concurrently, and
// records its latencies, the process's CPU time (not wall time: the
// machine is shared), PostgreSQL's CPU time, the database round trips (a
// counting proxy in front of PostgreSQL) and the service's own verify and
// store histograms.
//
// It is a tool, not part of the service: it links the test-only fake
// TEEs; its tests (make fleet-bench) and cmd/attestfleet-load run it.
package fleetload

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/attestd/attestd/fleet"
	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
	"github.com/attestd/attestd/fleet/postgres"
	"github.com/attestd/attestd/verifier"
	"github.com/attestd/attestd/verify"
)

// Config sizes a run.
type Config struct {
	// DSN names an empty PostgreSQL database (keyword/value form). Its
	// CPU time is read from /proc when the server runs on this machine.
	DSN string
	// Replicas of the service, each with its own connection pool.
	Replicas int
	// PoolSize is each replica's pool_max_conns (0: pgxpool's default).
	PoolSize int
	// Workers are the concurrent callers of each measured phase.
	Workers int
	// Loads are run one after the other: each source's builds go through
	// every phase before the next source starts.
	Loads []Load
	// Dir is a scratch directory (the agents' files, the proxy's socket).
	Dir string
	// Logf reports progress; nil is silent.
	Logf func(format string, args ...any)
}

// Load is a number of builds, each in a new environment from Source.
type Load struct {
	Source Source
	Builds int
}

// nonceLifetime outlives a run: admission challenges are issued before the
// measured phases and answered in them.
const nonceLifetime = 24 * time.Hour

// replica is one running service replica and its client.
type replica struct {
	*fleetv1.Client
	metrics *prometheus.Registry
	store   fleet.Store
	stop    func() error
}

// run is one load run's state.
type run struct {
	cfg      Config
	replicas []*replica
	setup    fleet.Store // the load's own store: AK registration
	proxy    *tripProxy
	db       *dbStats
}

// Run starts the replicas and runs every load through the phases.
func Run(ctx context.Context, cfg Config) (res *Result, err error) {
	if cfg.Replicas < 1 || cfg.Workers < 1 || len(cfg.Loads) == 0 {
		return nil, errors.New("fleetload: want at least one replica, one worker and one load")
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	r := &run{cfg: cfg}
	defer func() { err = errors.Join(err, r.close()) }()
	if r.setup, err = postgres.Open(ctx, cfg.DSN); err != nil {
		return nil, fmt.Errorf("open the store: %w", err)
	}
	if r.db, err = openDBStats(ctx, cfg.DSN); err != nil {
		return nil, err
	}
	proxyDir, err := os.MkdirTemp(cfg.Dir, "pg")
	if err != nil {
		return nil, err
	}
	var dsn string
	if r.proxy, dsn, err = startProxy(cfg.DSN, proxyDir); err != nil {
		return nil, err
	}
	if cfg.PoolSize > 0 {
		dsn += fmt.Sprintf(" pool_max_conns=%d", cfg.PoolSize)
	}
	v, err := r.verifier()
	if err != nil {
		return nil, err
	}
	for range cfg.Replicas {
		rep, err := startReplica(ctx, dsn, v)
		if err != nil {
			return nil, err
		}
		r.replicas = append(r.replicas, rep)
	}
	res = newResult(cfg)
	if res.WarmUp, err = r.warmUp(ctx); err != nil {
		return nil, err
	}
	for _, l := range cfg.Loads {
		phases, err := r.load(ctx, l)
		res.Phases = append(res.Phases, phases...)
		if err != nil {
			return res, fmt.Errorf("%s load: %w", l.Source.Name(), err)
		}
	}
	res.finish()
	return res, nil
}

// verifier is the service's verifier, trusting every source's evidence.
func (r *run) verifier() (*verifier.Verifier, error) {
	p := verify.NewPolicy()
	files := map[string][]byte{}
	for _, l := range r.cfg.Loads {
		l.Source.Trust(p, files)
	}
	if err := p.Resolve(func(name string) ([]byte, error) {
		if b, ok := files[name]; ok {
			return b, nil
		}
		return nil, fmt.Errorf("%s: %w", name, os.ErrNotExist)
	}); err != nil {
		return nil, fmt.Errorf("load policy: %w", err)
	}
	if err := p.Seal(); err != nil {
		return nil, fmt.Errorf("load policy: %w", err)
	}
	return verifier.New(p, verifier.Config{})
}

// startReplica starts one replica on its own pool of the database.
func startReplica(ctx context.Context, dsn string, v *verifier.Verifier) (*replica, error) {
	st, err := postgres.Open(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("open a replica's store: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		st.Close()
		return nil, err
	}
	reg := prometheus.NewRegistry()
	srv, err := fleet.New(fleet.Config{
		Store: st, Verifier: v, Signer: key, Registerer: reg, NonceLifetime: nonceLifetime,
		Results: verify.ResultOptions{VerifierID: "https://fleetload.invalid/verifier", PolicyURI: "https://fleetload.invalid/policy"},
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		st.Close()
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	c, err := fleetv1.Dial(ln.Addr().String())
	if err != nil {
		cancel()
		st.Close()
		return nil, err
	}
	return &replica{Client: c, metrics: reg, store: st, stop: func() error {
		cancel()
		return errors.Join(<-done, c.Close(), st.Close())
	}}, nil
}

func (r *run) close() error {
	var errs []error
	for _, rep := range r.replicas {
		errs = append(errs, rep.stop())
	}
	if r.proxy != nil {
		errs = append(errs, r.proxy.close())
	}
	if r.db != nil {
		r.db.close()
	}
	if r.setup != nil {
		errs = append(errs, r.setup.Close())
	}
	return errors.Join(errs...)
}

// warmUp opens the replicas' connections before anything is measured:
// Workers concurrent admission challenges per replica, a few times. It
// returns how many challenges it issued.
func (r *run) warmUp(ctx context.Context) (int, error) {
	const rounds = 4
	g, gctx := errgroup.WithContext(ctx)
	for _, rep := range r.replicas {
		for range r.cfg.Workers {
			g.Go(func() error {
				for range rounds {
					if _, err := rep.Challenge(gctx, &fleetv1.ChallengeRequest{Step: fleetv1.Step_STEP_ADMIT}); err != nil {
						return fmt.Errorf("warm-up challenge: %w", err)
					}
				}
				return nil
			})
		}
	}
	return len(r.replicas) * r.cfg.Workers * rounds, g.Wait()
}
