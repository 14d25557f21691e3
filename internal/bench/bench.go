// Package bench is the benchmark harness of `make bench` (issue 12): it runs
// the real attestd binary on swtpm, drives it over its unix socket with the
// Go client, compares it with the raw TPM work it needs, and writes the
// figures (a markdown table and PNG plots) into docs/.
//
// Each figure is a ratio or a rate from one run, with the machine's load
// noted: the build machine is shared, and no figure here is a test
// assertion. The harness measures whatever the code does today; a scenario
// that fails is reported as failing and the others go on.
//
// It is a tool, not part of attestd: only cmd/attestd-bench imports it.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Scenario names, for Config.Scenarios.
const (
	ScenarioAttest      = "attest"      // one Attest over gRPC vs raw Quote + Sign, tmpfs and disk
	ScenarioConcurrency = "concurrency" // 1…64 callers on a TPM taking 100 ms per command
	ScenarioVerify      = "verify"      // in-process verification per core: TPM, SEV-SNP, TDX
	ScenarioStart       = "start"       // exec to READY=1 vs the TPM time and hashing it needs
	ScenarioEvents      = "events"      // Extend latency and bundle size by event count; RSS at 10,000 events
	ScenarioDescriptors = "descriptors" // bundle size by descriptors in Complete
)

// AllScenarios in the order they run.
var AllScenarios = []string{ScenarioAttest, ScenarioConcurrency, ScenarioVerify, ScenarioStart, ScenarioEvents, ScenarioDescriptors}

// Params size the scenarios.
type Params struct {
	Mode string // full, quick or tiny: named in the report

	// AttestRounds × AttestPerRound gRPC attestations, and as many raw
	// ones, interleaved round by round.
	AttestRounds, AttestPerRound int
	// Callers are the concurrency levels; each runs CallerDuration, then
	// waits for the calls in flight. TPMDelay is the time every TPM
	// command takes there.
	Callers        []int
	CallerDuration time.Duration
	TPMDelay       time.Duration
	// Starts daemon starts are timed.
	Starts int
	// Events are the event counts of the Extend series, each in a fresh
	// environment; EventBudget bounds the whole series (the largest run
	// stops extending when it is spent, and says so).
	Events      []int
	EventBudget time.Duration
	// Descriptors are the input and output counts given to Complete.
	Descriptors []int
	// VerifyDuration is how long each verification loop runs.
	VerifyDuration time.Duration
}

// FullParams: `make bench`, about 5 minutes on a loaded 2-core machine while
// Extend stops at the event log's limit (about 25,000 events), about 12 once
// 100,000 events fit.
func FullParams() Params {
	return Params{
		Mode:         "full",
		AttestRounds: 20, AttestPerRound: 25,
		Callers: []int{1, 2, 4, 8, 16, 32, 64}, CallerDuration: 15 * time.Second, TPMDelay: 100 * time.Millisecond,
		Starts:         11,
		Events:         []int{10, 100, 1000, 10000, 100000},
		EventBudget:    8 * time.Minute,
		Descriptors:    []int{10, 64, 256},
		VerifyDuration: 5 * time.Second,
	}
}

// QuickParams: BENCH_QUICK=1, a few minutes.
func QuickParams() Params {
	return Params{
		Mode:         "quick",
		AttestRounds: 5, AttestPerRound: 10,
		Callers: []int{1, 4, 16, 64}, CallerDuration: 4 * time.Second, TPMDelay: 100 * time.Millisecond,
		Starts:         3,
		Events:         []int{10, 100, 1000, 10000},
		EventBudget:    3 * time.Minute,
		Descriptors:    []int{10, 256},
		VerifyDuration: time.Second,
	}
}

// TinyParams: the smoke test; seconds.
func TinyParams() Params {
	return Params{
		Mode:         "tiny",
		AttestRounds: 2, AttestPerRound: 3,
		Callers: []int{1, 2}, CallerDuration: 300 * time.Millisecond, TPMDelay: 20 * time.Millisecond,
		Starts:         1,
		Events:         []int{10, 30},
		EventBudget:    time.Minute,
		Descriptors:    []int{10},
		VerifyDuration: 100 * time.Millisecond,
	}
}

// Config is one run of the harness.
type Config struct {
	// Root is the module's directory (cmd/attestd is built from it).
	Root   string
	Params Params
	// Scenarios to run; nil means AllScenarios.
	Scenarios []string
	// OutDir receives the plots (PNG) and results.json.
	OutDir string
	// Docs, when set, is the markdown file whose section between
	// MarkerBegin and MarkerEnd is replaced by the report; plots are
	// linked relative to it.
	Docs string
	// TmpfsDir and DiskDir hold the daemon's runtime directory in the
	// tmpfs and disk variants; "" means /dev/shm and /var/tmp.
	TmpfsDir, DiskDir string
	// Log receives progress lines; nil means os.Stderr.
	Log io.Writer
}

// harness is the state of one run.
type harness struct {
	cfg     Config
	p       Params
	tmp     string // short: unix socket paths are limited
	swtpm   *swtpmFactory
	attestd string // binary
	log     io.Writer
}

// Run runs the scenarios and writes the results.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	if cfg.Log == nil {
		cfg.Log = os.Stderr
	}
	if cfg.Scenarios == nil {
		cfg.Scenarios = AllScenarios
	}
	for _, s := range cfg.Scenarios {
		if !slices.Contains(AllScenarios, s) {
			return nil, fmt.Errorf("unknown scenario %q (have %s)", s, strings.Join(AllScenarios, ", "))
		}
	}
	if cfg.TmpfsDir == "" {
		cfg.TmpfsDir = "/dev/shm"
	}
	if cfg.DiskDir == "" {
		cfg.DiskDir = "/var/tmp"
	}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "ab")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	h := &harness{cfg: cfg, p: cfg.Params, tmp: tmp, log: cfg.Log}

	res := &Results{
		Date: time.Now().UTC(), Mode: cfg.Params.Mode, LoadStart: loadAvg(),
		GOMAXPROCS: runtime.GOMAXPROCS(0), NumCPU: runtime.NumCPU(), Commit: gitCommit(cfg.Root),
		CPU: cpuModel(), Scenarios: cfg.Scenarios, Errors: map[string]string{},
	}
	start := time.Now()
	h.logf("load %s; manufacturing a swtpm, building cmd/attestd", res.LoadStart)
	if h.swtpm, err = newSwtpmFactory(ctx, tmp); err != nil {
		return nil, err
	}
	if h.attestd, err = buildAttestd(ctx, cfg.Root, tmp, "attestd"); err != nil {
		return nil, err
	}
	for _, s := range cfg.Scenarios {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		t0 := time.Now()
		h.logf("scenario %s", s)
		if err := h.run(ctx, s, res); err != nil {
			res.Errors[s] = err.Error()
			h.logf("scenario %s failed: %v", s, err)
		}
		h.logf("scenario %s took %v", s, time.Since(t0).Round(time.Second))
	}
	res.LoadEnd = loadAvg()
	res.Duration = time.Since(start).Round(time.Second)
	h.logf("load %s; took %v", res.LoadEnd, res.Duration)
	return res, h.write(res)
}

func (h *harness) run(ctx context.Context, scenario string, res *Results) (err error) {
	switch scenario {
	case ScenarioAttest:
		for _, fs := range []struct{ name, dir string }{{"tmpfs", h.cfg.TmpfsDir}, {"disk", h.cfg.DiskDir}} {
			r := h.attestVsRaw(ctx, fs.name, fs.dir)
			res.Attest = append(res.Attest, r)
		}
	case ScenarioConcurrency:
		res.Concurrency, err = h.concurrency(ctx)
	case ScenarioVerify:
		res.Verify, err = h.verify(ctx)
	case ScenarioStart:
		res.Start, err = h.start(ctx)
	case ScenarioEvents:
		res.Events, err = h.events(ctx)
	case ScenarioDescriptors:
		res.Descriptors, err = h.descriptors(ctx)
	}
	return err
}

// write puts results.json and the plots into OutDir and the report into
// Docs.
func (h *harness) write(res *Results) error { return Write(res, h.cfg.OutDir, h.cfg.Docs) }

// Write puts results.json and the plots of res into outDir and, when docs
// is set, the report into its generated section. With results read back
// from a results.json it redraws the report without running anything.
func Write(res *Results, outDir, docs string) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(outDir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	plots, err := writePlots(res, outDir)
	if err != nil {
		return fmt.Errorf("plots: %w", err)
	}
	if docs == "" {
		return nil
	}
	rel := make([]string, len(plots))
	for i, p := range plots {
		if rel[i], err = filepath.Rel(filepath.Dir(docs), p); err != nil {
			return err
		}
	}
	return updateDocs(docs, report(res, rel))
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.log, "bench: %s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// loadAvg is /proc/loadavg's first three fields.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func gitCommit(root string) string {
	cmd := exec.Command("git", "describe", "--always", "--dirty", "--abbrev=12")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
