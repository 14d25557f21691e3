package fleetload_test

import (
	"flag"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/attestd/attestd/internal/fleetload"
	"github.com/attestd/attestd/internal/pgtest"
)

var (
	docs = flag.String("fleetload.docs", "", "markdown file whose fleet-bench section TestFleetBench replaces (make fleet-bench)")
	out  = flag.String("fleetload.out", "", "directory for the fleet-*.png plots and fleet-results.json (make fleet-bench)")
)

// benchSize is a run's size: builds per backend, replicas, callers.
type benchSize struct {
	mode                    string
	snp, tdx, tpm           int
	replicas, workers, pool int
}

var (
	fullSize  = benchSize{mode: "full", snp: 400, tdx: 400, tpm: 40, replicas: 3, workers: 32, pool: 16}
	quickSize = benchSize{mode: "quick", snp: 40, tdx: 40, tpm: 2, replicas: 3, workers: 16, pool: 16}
)

// TestFleetBench is `make fleet-bench` (FLEET_BENCH_QUICK=1: a short run):
// the load on a private PostgreSQL, the figures written into
// docs/fleet-scale.md and the plots into docs/perf. It runs only when
// -fleetload.docs names the file; TestLoad is its check in make test.
func TestFleetBench(t *testing.T) {
	if *docs == "" || *out == "" {
		t.Skip("writes docs/fleet-scale.md: run make fleet-bench")
	}
	size := fullSize
	if os.Getenv("FLEET_BENCH_QUICK") == "1" {
		size = quickSize
	}
	srv := pgtest.Start(t)
	res, err := fleetload.Run(t.Context(), fleetload.Config{
		DSN: srv.CreateDB(t, "bench"), Replicas: size.replicas, Workers: size.workers, PoolSize: size.pool,
		Loads: sources(t, size.snp, size.tdx, size.tpm), Dir: t.TempDir(), Logf: t.Logf,
	})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	res.Mode = size.mode
	if commit, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		res.Commit = strings.TrimSpace(string(commit))
	}
	if err := fleetload.Write(res, *out, *docs); err != nil {
		t.Fatalf("write the report: %v", err)
	}
}
