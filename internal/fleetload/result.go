package fleetload

import (
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Result is one run: the machine, the load and every measured phase.
type Result struct {
	Date       time.Time
	Commit     string // set by the caller
	Mode       string // set by the caller: "full", "quick"
	CPUModel   string
	NumCPU     int
	GOMAXPROCS int
	// LoadStart and LoadEnd are /proc/loadavg's 1/5/15-minute load.
	LoadStart, LoadEnd string
	Replicas, Workers  int
	PoolSize           int
	// WarmUp is the number of admission challenges issued to open the
	// replicas' connections before anything was measured.
	WarmUp   int
	Duration time.Duration
	Phases   []Phase
}

// Phase is one call type replayed for every build of one backend.
type Phase struct {
	Backend, Call string
	Calls, Failed int
	FirstError    string `json:",omitempty"`
	// Wall is the phase's duration; CPU this process's CPU time in it (the
	// replicas, the callers and the proxy); DBCPU PostgreSQL's (0 when it
	// is not on this machine).
	Wall, CPU, DBCPU time.Duration
	// Trips are the database round trips of the phase; ChallengeTrips
	// (first phase of a backend only) those of the admission challenges
	// issued while preparing.
	Trips, ChallengeTrips int64
	P50, P99, Mean        time.Duration
	// Verify and Store are the service's own time summed over the
	// phase's calls (attestfleet_verify_seconds, attestfleet_store_seconds).
	Verify, Store time.Duration
	Bytes         int64 // bundle bytes sent
	// RowsAfter and DBGrowth (last phase of a backend only): the table
	// rows after it, the database's growth over the backend's load.
	RowsAfter Rows
	DBGrowth  int64
}

// PerCPUSecond is the phase's calls per second of the process's CPU time.
func (p Phase) PerCPUSecond() float64 {
	if p.CPU <= 0 {
		return 0
	}
	return float64(p.Calls) / p.CPU.Seconds()
}

// snapshot is what a phase is measured against.
type snapshot struct {
	at            time.Time
	cpu, dbCPU    time.Duration
	trips         int64
	verify, store time.Duration
}

func (r *run) snapshot() snapshot {
	s := snapshot{at: time.Now(), cpu: processCPU(), dbCPU: r.db.cpu(), trips: r.proxy.Trips()}
	for _, rep := range r.replicas {
		s.verify += histogramSum(rep, "attestfleet_verify_seconds")
		s.store += histogramSum(rep, "attestfleet_store_seconds")
	}
	return s
}

// histogramSum is the sum of a histogram over all its labels.
func histogramSum(rep *replica, name string) time.Duration {
	mfs, err := rep.metrics.Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetHistogram().GetSampleSum()
			}
		}
	}
	return time.Duration(sum * float64(time.Second))
}

// measured fills in the phase from the snapshots around it and its calls.
func (p *Phase) measured(before, after snapshot, lat []time.Duration, bytes []int) {
	p.Wall, p.CPU, p.DBCPU = after.at.Sub(before.at), after.cpu-before.cpu, after.dbCPU-before.dbCPU
	p.Trips, p.Verify, p.Store = after.trips-before.trips, after.verify-before.verify, after.store-before.store
	sorted := slices.Sorted(slices.Values(lat))
	p.P50, p.P99 = quantile(sorted, 0.50), quantile(sorted, 0.99)
	var sum time.Duration
	for _, l := range lat {
		sum += l
	}
	if len(lat) > 0 {
		p.Mean = sum / time.Duration(len(lat))
	}
	for _, b := range bytes {
		p.Bytes += int64(b)
	}
}

// quantile of sorted (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func newResult(cfg Config) *Result {
	return &Result{
		Date: time.Now().UTC(), CPUModel: cpuModel(), NumCPU: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
		LoadStart: loadAvg(), Replicas: cfg.Replicas, Workers: cfg.Workers, PoolSize: cfg.PoolSize,
	}
}

func (res *Result) finish() {
	res.LoadEnd = loadAvg()
	res.Duration = time.Since(res.Date).Round(time.Second)
}

// loadAvg is the 1, 5 and 15-minute load average.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
