package fleet

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
	"github.com/attestd/attestd/verifier"
	"github.com/attestd/attestd/verify"
)

// Defaults of Config.
const (
	DefaultNonceLifetime = 5 * time.Minute
	DefaultMaxBundle     = 16 << 20
	DefaultHealthEvery   = 5 * time.Second
	DefaultPruneEvery    = time.Minute
	DefaultKeepExpired   = time.Hour
	DefaultDrain         = 10 * time.Second
)

// nonceSize is the size of every nonce the service issues.
const nonceSize = 32

// Config is how a Server runs. Store, Verifier, Signer and Results'
// VerifierID and PolicyURI are required; zero values of the rest are the
// defaults.
type Config struct {
	Store    Store
	Verifier *verifier.Verifier
	// Signer signs the admission and dispatch results (SVR) and the VSAs.
	Signer crypto.Signer
	// Results name the verifier and the policy in the signed results
	// (Time is set per call).
	Results verify.ResultOptions
	// EKRoots anchor the EK certificates of AK registration, with
	// EKIntermediates; nil refuses registration (EK_UNTRUSTED).
	EKRoots         *x509.CertPool
	EKIntermediates []*x509.Certificate
	// NonceLifetime is how long a challenge, dispatch or registration nonce
	// may be used.
	NonceLifetime time.Duration
	// MaxBundle bounds a bundle or launch attestation in a request; the
	// gRPC receive limit is a little above it, so that a bundle just over
	// the bound is refused as TOO_LARGE.
	MaxBundle int
	// MaxConcurrentCalls bounds the calls in progress per connection (0: gRPC's default).
	MaxConcurrentCalls uint32
	// HealthEvery is how often the store is pinged for the health service.
	HealthEvery time.Duration
	// PruneEvery is how often expired challenges are deleted, once they
	// expired KeepExpired ago (until then a late call is told
	// NONCE_EXPIRED rather than NONCE_UNKNOWN).
	PruneEvery, KeepExpired time.Duration
	// Drain bounds a graceful stop: calls in progress get this long to
	// finish once Serve's context is done.
	Drain time.Duration
	// TLS, when set, serves the API over TLS (with ClientCAs and
	// RequireAndVerifyClientCert: mutual TLS); nil serves plain gRPC, for
	// a unix socket or a private network.
	TLS *tls.Config
	// Registerer takes the service's metrics; nil keeps them private.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Now is the service's clock (nonce expiry, record times); nil means
	// time.Now.
	Now func() time.Time
}

// Server is one replica of the fleet verifier: stateless, all its state in
// the Store, so any replica can take any call.
type Server struct {
	fleetv1.UnimplementedFleetServer
	cfg    Config
	store  Store
	m      *metrics
	log    *slog.Logger
	health *health.Server
	// storeDown asks the health loop to ping the store now (a call saw it
	// unavailable).
	storeDown chan struct{}
}

// New checks cfg and sets up a Server.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("fleet: no store")
	case cfg.Verifier == nil:
		return nil, errors.New("fleet: no verifier")
	case cfg.Signer == nil:
		return nil, errors.New("fleet: no result signing key")
	}
	if cfg.Results.VerifierID == "" || cfg.Results.PolicyURI == "" {
		return nil, errors.New("fleet: the result options need a verifier ID and a policy URI")
	}
	setDefaults(&cfg)
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("fleet: metrics: %w", err)
	}
	s := &Server{cfg: cfg, store: cfg.Store, m: m, log: cfg.Logger, health: health.NewServer(), storeDown: make(chan struct{}, 1)}
	s.setServing(false)
	return s, nil
}

func setDefaults(cfg *Config) {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.NonceLifetime, DefaultNonceLifetime)
	def(&cfg.HealthEvery, DefaultHealthEvery)
	def(&cfg.PruneEvery, DefaultPruneEvery)
	def(&cfg.KeepExpired, DefaultKeepExpired)
	def(&cfg.Drain, DefaultDrain)
	if cfg.MaxBundle <= 0 {
		cfg.MaxBundle = DefaultMaxBundle
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
}

// grpcOverhead is the room above MaxBundle for a request's other fields.
const grpcOverhead = 64 << 10

// Serve serves the API, gRPC health and reflection on ln until ctx is
// done, then stops gracefully: new calls are refused, calls in progress
// get cfg.Drain to finish. It also keeps the health status and prunes
// expired challenges. It returns nil after a stop ctx asked for. Serve
// runs once per Server.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(s.cfg.MaxBundle + grpcOverhead),
		grpc.MaxSendMsgSize(fleetv1.MaxMessageSize),
		grpc.ChainUnaryInterceptor(s.intercept),
	}
	if s.cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.cfg.TLS)))
	}
	if s.cfg.MaxConcurrentCalls > 0 {
		opts = append(opts, grpc.MaxConcurrentStreams(s.cfg.MaxConcurrentCalls))
	}
	gs := grpc.NewServer(opts...)
	fleetv1.RegisterFleetServer(gs, s)
	healthpb.RegisterHealthServer(gs, s.health)
	reflection.Register(gs)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.watchStore(gctx) })
	g.Go(func() error { return s.prune(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		s.stop(gs)
		return nil
	})
	g.Go(func() error {
		if err := gs.Serve(ln); gctx.Err() == nil {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	})
	return g.Wait()
}

// stop stops gs gracefully, cutting the calls still in progress after
// cfg.Drain.
func (s *Server) stop(gs *grpc.Server) {
	s.health.Shutdown()
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(s.cfg.Drain):
		s.log.Warn("calls still in progress after the drain time; stopping them", "drain", s.cfg.Drain)
		gs.Stop()
	}
}

// setServing sets the health of the server and of the Fleet service.
func (s *Server) setServing(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(fleetv1.Fleet_ServiceDesc.ServiceName, st)
}

// watchStore pings the store every HealthEvery (and at once when a call
// found it unavailable): health is SERVING while it answers.
func (s *Server) watchStore(ctx context.Context) error {
	t := time.NewTicker(s.cfg.HealthEvery)
	defer t.Stop()
	up := false
	for {
		pctx, cancel := context.WithTimeout(ctx, s.cfg.HealthEvery)
		err := s.store.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if ok := err == nil; ok != up {
			up = ok
			s.setServing(ok)
			s.m.storeUp.Set(map[bool]float64{false: 0, true: 1}[ok])
			if ok {
				s.log.Info("store answers: serving")
			} else {
				s.log.Warn("store unavailable: not serving", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.storeDown:
		}
	}
}

// prune deletes challenges that expired KeepExpired ago, every PruneEvery.
func (s *Server) prune(ctx context.Context) error {
	t := time.NewTicker(s.cfg.PruneEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		n, err := timed(s, "prune", func() (int, error) { return s.store.Prune(ctx, s.cfg.Now().Add(-s.cfg.KeepExpired)) })
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("prune expired challenges failed", "err", err)
		case n > 0:
			s.log.Debug("pruned expired challenges", "count", n)
		}
	}
}

// intercept turns every error a method returns into its refusal status (one
// place), and counts and logs it.
func (s *Server) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if err == nil {
		return resp, nil
	}
	method, ok := strings.CutPrefix(info.FullMethod, "/"+fleetv1.Fleet_ServiceDesc.ServiceName+"/")
	if !ok { // health, reflection
		return resp, err
	}
	r := asRefusal(err)
	s.m.refusals.WithLabelValues(method, string(r.reason)).Inc()
	level := slog.LevelInfo
	switch r.reason {
	case ReasonStoreUnavailable:
		level = slog.LevelWarn
		select {
		case s.storeDown <- struct{}{}:
		default:
		}
	case ReasonInternal:
		level = slog.LevelError
	}
	s.log.Log(ctx, level, "refused", "method", method, "reason", r.reason, "detail", r.msg)
	return nil, r.grpcStatus()
}

// timed runs one store operation and records its latency.
func timed[T any](s *Server, op string, f func() (T, error)) (T, error) {
	start := time.Now()
	v, err := f()
	s.m.store.WithLabelValues(op).Observe(time.Since(start).Seconds())
	return v, err
}

// timedErr is timed for an operation with no result.
func timedErr(s *Server, op string, f func() error) error {
	_, err := timed(s, op, func() (struct{}, error) { return struct{}{}, f() })
	return err
}

// newNonce is a fresh random nonce.
func newNonce() ([]byte, error) {
	n := make([]byte, nonceSize)
	if _, err := rand.Read(n); err != nil {
		return nil, fmt.Errorf("random nonce: %w", err)
	}
	return n, nil
}

// newChallenge is a fresh challenge for step, issued now.
func (s *Server) newChallenge(step Step, envKey, buildID string) (Challenge, error) {
	n, err := newNonce()
	if err != nil {
		return Challenge{}, err
	}
	// Whole microseconds, as the stores keep times: a retried Dispatch
	// answers the expiry read back, the same as the first answer.
	now := s.cfg.Now().Truncate(time.Microsecond)
	return Challenge{Nonce: n, Step: step, EnvKey: envKey, BuildID: buildID, Created: now, Expires: now.Add(s.cfg.NonceLifetime)}, nil
}
