// Command attestd-bench is `make bench`: it runs the benchmark harness of
// internal/bench against the real attestd on swtpm and writes the figures
// into docs/performance.md and the plots into docs/perf/. BENCH_QUICK=1 (or
// -quick) runs a shorter series.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/attestd/attestd/internal/bench"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "attestd-bench:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("attestd-bench", flag.ContinueOnError)
	quick := fs.Bool("quick", os.Getenv("BENCH_QUICK") == "1", "shorter series (also BENCH_QUICK=1)")
	docs := fs.String("docs", "docs/performance.md", "markdown file whose generated section is replaced (\"\" for none)")
	out := fs.String("out", "docs/perf", "directory for the plots and results.json")
	scenarios := fs.String("scenarios", "", "comma-separated scenarios (default all: "+strings.Join(bench.AllScenarios, ",")+")")
	root := fs.String("root", "", "module directory (default: the one go env GOMOD names)")
	from := fs.String("from", "", "redraw the report and plots from this results.json instead of running")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *from != "" {
		return redraw(*from, *out, *docs)
	}
	if *root == "" {
		gomod, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil || strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
			return fmt.Errorf("find the module (go env GOMOD): %v; run from the repository or pass -root", err)
		}
		*root = filepath.Dir(strings.TrimSpace(string(gomod)))
	}
	cfg := bench.Config{Root: *root, Params: bench.FullParams(), OutDir: *out, Docs: *docs}
	if *quick {
		cfg.Params = bench.QuickParams()
	}
	if *scenarios != "" {
		cfg.Scenarios = strings.Split(*scenarios, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if len(res.Errors) > 0 {
		fmt.Fprintf(os.Stderr, "attestd-bench: %d scenario(s) failed; see %s\n", len(res.Errors), *docs)
	}
	return nil
}

// redraw writes the report and plots of a saved run.
func redraw(path, out, docs string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var res bench.Results
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return bench.Write(&res, out, docs)
}
