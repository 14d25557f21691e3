package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/attestd/attestd/fleet"
	"github.com/attestd/attestd/fleet/postgres"
	"github.com/attestd/attestd/fleet/sqlite"
	"github.com/attestd/attestd/verifier"
)

// serve is the whole service: it returns when ctx is cancelled (nil, after
// draining) or on the first error.
func serve(ctx context.Context, path string, log *slog.Logger, ready func(api, metrics string)) error {
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	v, err := verifier.New(cfg.policy, verifier.Config{})
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sc := cfg.service
	sc.Store, sc.Verifier, sc.Registerer, sc.Logger = store, v, reg, log
	srv, err := fleet.New(sc)
	if err != nil {
		return err
	}
	ln, err := listen(cfg.listen)
	if err != nil {
		return err
	}
	defer ln.Close()

	var mln net.Listener
	if cfg.metrics != "" {
		if mln, err = net.Listen("tcp", cfg.metrics); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		defer mln.Close()
		log.Info("metrics", "address", mln.Addr().String())
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(gctx, ln) })
	if mln != nil {
		g.Go(func() error { return serveMetrics(gctx, mln, reg) })
	}
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("systemd notify failed", "err", err)
	}
	log.Info("serving", "address", ln.Addr().String(), "store", cfg.storeName(), "policy_sha256", fmt.Sprintf("%x", cfg.policy.Digest), "version", version)
	if ready != nil {
		maddr := ""
		if mln != nil {
			maddr = mln.Addr().String()
		}
		ready(ln.Addr().String(), maddr)
	}
	return g.Wait()
}

// openStore opens the configured store.
func openStore(ctx context.Context, cfg *config) (fleet.Store, error) {
	if cfg.postgres != "" {
		return postgres.Open(ctx, cfg.postgres)
	}
	return sqlite.Open(ctx, cfg.sqlite)
}

// storeName names the store in logs, without credentials.
func (c *config) storeName() string {
	if c.postgres != "" {
		return "postgres"
	}
	return "sqlite:" + c.sqlite
}

// listen listens on "unix:/path" (mode 0660; a stale socket is removed, a
// live one is an error) or "host:port".
func listen(addr string) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, "unix:")
	if !ok {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen: %w", err)
		}
		return ln, nil
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("listen %s: another process serves on this socket", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("listen: remove stale socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen: %w", err)
	}
	return ln, nil
}

// serveMetrics serves /metrics until ctx is done.
func serveMetrics(ctx context.Context, ln net.Listener, reg *prometheus.Registry) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
	})
	if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}
