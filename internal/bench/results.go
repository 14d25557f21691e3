package bench

import (
	"slices"
	"time"
)

// Results are the figures of one run (written to results.json as well).
type Results struct {
	Date       time.Time
	Mode       string
	Commit     string
	CPU        string
	GOMAXPROCS int
	NumCPU     int
	// LoadStart and LoadEnd are /proc/loadavg (1, 5, 15 minutes).
	LoadStart, LoadEnd string
	Duration           time.Duration
	Scenarios          []string

	Attest      []AttestResult
	Concurrency *ConcurrencyResult
	Verify      []VerifyResult
	Start       *StartResult
	Events      *EventsResult
	Descriptors []SizePoint
	// Errors are the scenarios that failed as a whole.
	Errors map[string]string
}

// AttestResult compares one fresh attestation over gRPC with the raw TPM
// commands it needs, with the runtime directory on one file system.
type AttestResult struct {
	FS, Dir, FSType string
	N               int // of each
	Attest, Raw     Dist
	// TPMPerAttest is the TPM's busy time per gRPC attestation, and
	// Commands the commands it ran per attestation.
	TPMPerAttest time.Duration
	Commands     string
	Err          string
}

// Ratio is the gRPC attestation's median over the raw work's.
func (a AttestResult) Ratio() float64 { return ratio(a.Attest.P50, a.Raw.P50) }

// Dist summarises latencies.
type Dist struct {
	N             int
	P50, P90, P99 time.Duration
	Min, Max      time.Duration
}

func distOf(ds []time.Duration) Dist {
	if len(ds) == 0 {
		return Dist{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return Dist{N: len(s), P50: pct(s, 50), P90: pct(s, 90), P99: pct(s, 99), Min: s[0], Max: s[len(s)-1]}
}

// pct is the nearest-rank percentile of sorted s.
func pct(s []time.Duration, p int) time.Duration {
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

func median(ds []time.Duration) time.Duration { return distOf(ds).P50 }

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// ConcurrencyResult is Attest throughput by number of callers on a TPM that
// takes Delay per command.
type ConcurrencyResult struct {
	Delay  time.Duration
	Levels []CallerLevel
	// Memory is the daemon's after the last level (VmRSS, VmHWM).
	Memory memory
	Err    string
}

// CallerLevel is one concurrency level.
type CallerLevel struct {
	Callers int
	Done    int
	Elapsed time.Duration
	PerSec  float64
	Wait    Dist
	// PeakRSS is the daemon's highest VmRSS sampled during the level.
	PeakRSS int64
	Err     string
}

// VerifyResult is in-process verification throughput of one input.
type VerifyResult struct {
	What  string // e.g. "TPM attestation", "TPM bundle"
	Bytes int
	Count int // attestations verified per iteration
	N     int // iterations
	// PerCPUSecond is iterations per second of CPU time (GOMAXPROCS=1);
	// PerWallSecond per second of wall time, which a loaded machine
	// lowers.
	PerCPUSecond, PerWallSecond float64
	Err                         string
}

// StartResult is daemon start (exec to READY=1) against the work it
// cannot avoid: the TPM's busy time and hashing the measured files.
type StartResult struct {
	Runs []StartRun
	// Hash is the time sha256sum takes over the measured files
	// (HashBytes), the fastest of three runs.
	Hash      time.Duration
	HashBytes int64
	Files     []string
}

// StartRun is one daemon start.
type StartRun struct {
	Ready    time.Duration
	TPM      time.Duration
	Commands int
}

// Ratio is the median over the runs of Ready / (TPM + Hash).
func (s *StartResult) Ratio() float64 {
	var rs []float64
	for _, r := range s.Runs {
		rs = append(rs, ratio(r.Ready, r.TPM+s.Hash))
	}
	if len(rs) == 0 {
		return 0
	}
	slices.Sort(rs)
	return rs[(len(rs)-1)/2]
}

// EventsResult is the Extend series.
type EventsResult struct {
	// Points are the event counts asked for.
	Points []EventPoint
	// Curve is the Extend latency of the largest run at log-spaced event
	// numbers, for the plot.
	Curve []CurvePoint
	// FailedAt is the event the largest run's Extend failed at (0: none)
	// with FailErr; Stopped says it stopped when its time budget was spent.
	FailedAt int
	FailErr  string
	Stopped  string
	// At10k is the daemon's memory after its 10,000th event; AfterBundle10k
	// after Complete and GetBundle in that environment.
	At10k, AfterBundle10k memory
}

// EventPoint is one event count.
type EventPoint struct {
	Events int
	// Latency is the median Extend latency of the events just before and
	// at the Events-th (up to 100 of them) in the largest run.
	Latency time.Duration
	// Reached is how many events the run for this point recorded; the
	// bundle (Complete, then GetBundle) has BundleBytes in
	// BundleEnvelopes, or failed with BundleErr.
	Reached         int
	BundleBytes     int
	BundleEnvelopes int
	BundleErr       string
	Err             string
}

// CurvePoint is one point of the latency curve.
type CurvePoint struct {
	Events  int
	Latency time.Duration
}

// SizePoint is the bundle size with N inputs and N outputs in Complete.
type SizePoint struct {
	N     int
	Bytes int
	Err   string
}
