// Package fleettest starts fleet verifier replicas for tests: each a
// fleet.Server serving gRPC on a loopback port, with a client, stopped in
// t.Cleanup. Start several on one Store for a fleet of replicas.
//
// Test-only: it imports "testing" and must never be imported by non-test
// code (internal/archtest keeps it out of the binaries).
package fleettest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/attestd/attestd/fleet"
	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
	"github.com/attestd/attestd/verifier"
	"github.com/attestd/attestd/verify"
)

// Replica is one running replica and a client of it.
type Replica struct {
	*fleetv1.Client
	// Addr is the replica's host:port.
	Addr string
	// Config is what the replica runs with.
	Config fleet.Config
	// Stop stops the replica gracefully (Serve's context is done) and
	// returns what Serve returned; later calls return the same.
	Stop func() error
}

// Config is a replica's config on st with the test defaults: a policy that
// trusts no AK of its own (register AKs, or put them in st with PutAK), a
// fresh P-256 result key, example URIs, no logs, a fast health ping.
func Config(t testing.TB, st fleet.Store) fleet.Config {
	t.Helper()
	p := verify.NewPolicy()
	if err := p.Seal(); err != nil {
		t.Fatal(err)
	}
	v, err := verifier.New(p, verifier.Config{})
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return fleet.Config{
		Store: st, Verifier: v, Signer: key,
		Results:     verify.ResultOptions{VerifierID: "https://ci.example/fleet", PolicyURI: "https://ci.example/policy.yaml"},
		HealthEvery: 20 * time.Millisecond,
		Logger:      slog.New(slog.DiscardHandler),
	}
}

// Start starts a replica with cfg on 127.0.0.1 and dials it.
func Start(t testing.TB, cfg fleet.Config) *Replica {
	t.Helper()
	srv, err := fleet.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	c, err := fleetv1.Dial(ln.Addr().String())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	r := &Replica{Client: c, Addr: ln.Addr().String(), Config: cfg}
	r.Stop = sync.OnceValue(func() error { cancel(); return <-done })
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Errorf("replica %s: serve: %v", r.Addr, err)
		}
		c.Close()
	})
	return r
}
