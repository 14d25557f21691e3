// Command attestfleet-load runs the fleet load generator (internal/fleetload)
// against a PostgreSQL database you provide: replicas of the service in
// this process, agents on the fake SEV-SNP and TDX guests, and prints the
// figures of each phase; -out writes them with the plots. `make fleet-bench` runs the same load on a private
// cluster, with swtpm environments too, and writes docs/fleet-scale.md.
//
// A tool, not part of attestd: it links the test-only fake TEEs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/attestd/attestd/internal/fleetload"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "attestfleet-load:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("attestfleet-load", flag.ContinueOnError)
	dsn := fs.String("dsn", "", "an empty PostgreSQL database, keyword/value form (required; its tables are created)")
	replicas := fs.Int("replicas", 3, "service replicas, each with its own pool")
	pool := fs.Int("pool", 16, "pool_max_conns of each replica")
	workers := fs.Int("workers", 32, "concurrent callers")
	snp := fs.Int("snp", 200, "builds on the fake SEV-SNP guest")
	tdx := fs.Int("tdx", 200, "builds on fake TDX guests")
	out := fs.String("out", "", "write fleet-results.json and the fleet-*.png plots into this directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dsn == "" || fs.NArg() > 0 {
		return fmt.Errorf("want -dsn and no arguments; see -help")
	}
	created := time.Now().Add(-time.Hour)
	s, err := fleetload.SNP(created)
	if err != nil {
		return err
	}
	x, err := fleetload.TDX(created)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "attestfleet-load")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	logf := func(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }
	res, err := fleetload.Run(ctx, fleetload.Config{
		DSN: *dsn, Replicas: *replicas, PoolSize: *pool, Workers: *workers, Dir: dir, Logf: logf,
		Loads: []fleetload.Load{{Source: s, Builds: *snp}, {Source: x, Builds: *tdx}},
	})
	if res == nil {
		return err
	}
	res.Mode = "attestfleet-load"
	if *out != "" {
		return errors.Join(err, fleetload.Write(res, *out, ""))
	}
	return err
}
