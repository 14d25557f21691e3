package robust

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/internal/swtpmtest"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/verify"
)

// crashExtends is how many runtime measurements each build records.
const crashExtends = 30

// crashConfig are the crash loop's knobs (see the package comment).
type crashConfig struct {
	iterations int
	seed       uint64
	lenient    bool
}

func crashConfigFromEnv(t *testing.T) crashConfig {
	c := crashConfig{iterations: 60, seed: uint64(time.Now().UnixNano())}
	if s := os.Getenv("ATTESTD_CRASH_ITERATIONS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("ATTESTD_CRASH_ITERATIONS=%q: want a positive number", s)
		}
		c.iterations = n
	}
	if s := os.Getenv("ATTESTD_CRASH_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("ATTESTD_CRASH_SEED=%q: want a number", s)
		}
		c.seed = n
	}
	c.lenient = os.Getenv("ATTESTD_CRASH_LENIENT") == "1"
	return c
}

// crashStats are counted over the whole loop.
type crashStats struct {
	kills          int            // SIGKILLs sent
	killedInLaunch int            // starts killed before they served (judged by the next start)
	judged         int            // starts after a crash that served, refused, died or hung
	recovered      int            // … of which served and passed the recovery checks
	unrecovered    int            // starts that served but failed a recovery check
	replaced       int            // … served an interrupted launch, which verifiers fail (errReplace)
	refused        map[string]int // reason → count
	silent, hangs  int
	envs, verified int            // environments; final bundles verified
	killSteps      map[string]int // what the driver was doing at the kill
	repairs        map[string]int // what restarts said they repaired (their log; informational)
	launchEst      time.Duration  // process start → serving, last seen
}

func newCrashStats() *crashStats {
	return &crashStats{refused: map[string]int{}, killSteps: map[string]int{}, repairs: map[string]int{},
		launchEst: 500 * time.Millisecond}
}

// TestCrashLoop kills attestd with SIGKILL at random instants (seeded,
// logged) while a build goes through its lifecycle, restarts it on the
// same runtime dir and swtpm (no resource manager), and checks every
// restart recovers — same env key, same build, a second build refused —
// or refuses with a named reason; a recovered environment's final bundle
// verifies and its event log shows the restart.
func TestCrashLoop(t *testing.T) {
	cfg := crashConfigFromEnv(t)
	base := swtpmtest.StartTPM(t)
	binaries(t)
	t.Logf("crash loop: %d kills, seed %d (replay with ATTESTD_CRASH_SEED=%d), strict=%v, load %s",
		cfg.iterations, cfg.seed, cfg.seed, !cfg.lenient, loadavg())
	rng := rand.New(rand.NewPCG(cfg.seed, 0x61747465737464))
	st := newCrashStats()
	start := time.Now()
	for e := 0; st.kills < cfg.iterations; e++ {
		st.envs++
		t.Run(fmt.Sprintf("env%02d", e), func(t *testing.T) {
			(&crashEnv{t: t, cfg: cfg, st: st, rng: rng, n: e}).run(base)
		})
		if st.hangs > 0 {
			t.Log("stopping after a hang")
			break
		}
	}
	// An interrupted first launch cannot recover, by design (errReplace).
	rate := 0.0
	if n := st.judged - st.replaced; n > 0 {
		rate = 100 * float64(st.recovered) / float64(n)
	}
	var reasons []string
	refused := 0
	for r, n := range st.refused {
		reasons = append(reasons, fmt.Sprintf("  %3d× %s", n, r))
		refused += n
	}
	slices.Sort(reasons)
	var steps, repairs []string
	for s, n := range st.killSteps {
		steps = append(steps, fmt.Sprintf("%s %d", s, n))
	}
	for s, n := range st.repairs {
		repairs = append(repairs, fmt.Sprintf("%s %d", s, n))
	}
	slices.Sort(steps)
	slices.Sort(repairs)
	t.Logf("crash loop: %d kills (%d during launch) in %d environments, %v, load %s\n"+
		"restarts judged %d: recovered %d (%.0f%% of those that can), interrupted first launch (replace, by design) %d, served but failed a check %d, refused %d, silent %d, hung %d; final bundles verified %d\n"+
		"kill points: %s\nrepairs the restarts logged: %s\nrefusal reasons:\n%s",
		st.kills, st.killedInLaunch, st.envs, time.Since(start).Round(time.Second), loadavg(),
		st.judged, st.recovered, rate, st.replaced, st.unrecovered, refused, st.silent, st.hangs, st.verified,
		strings.Join(steps, ", "), strings.Join(repairs, ", "), strings.Join(reasons, "\n"))
}

// crashEnv is one build environment: one swtpm boot, one runtime dir, one
// build, restarted until its build is done and verified after a restart,
// or a restart refuses.
type crashEnv struct {
	t   *testing.T
	cfg crashConfig
	st  *crashStats
	rng *rand.Rand
	n   int

	device string
	dir    string

	ak           crypto.PublicKey // pinned at the first start that served
	keyDigest    string
	bindSent     bool // BindBuild was called: the build may be bound
	bound        bool // BindBuild succeeded: the build is bound
	servedBefore bool // a start of this environment served (so its launch is frozen)
	crashed      bool // the previous start was killed
}

func (e *crashEnv) buildID() string { return fmt.Sprintf("build-%02d", e.n) }

func (e *crashEnv) nonce(purpose string) []byte {
	return []byte(fmt.Sprintf("%s nonce of environment %02d", purpose, e.n))
}

// killPlan says when a start is killed: during launch (delay after the
// process started), or delay after the driver began the RPC of a lifecycle
// step (extend: the first one numbered nth or more). A start that never
// gets to its step is killed once its driver is done (idle).
type killPlan struct {
	inLaunch bool
	delay    time.Duration
	step     string
	nth      int
}

// killSteps are the lifecycle steps a kill is aimed at: the RPCs that
// change the register, the event log or state.json.
var killSteps = []string{"attest", "bind", "extend", "complete", "sign"}

func (p *killPlan) String() string {
	switch {
	case p == nil:
		return "no kill"
	case p.inLaunch:
		return fmt.Sprintf("kill -9 %v after start", p.delay.Round(time.Millisecond))
	case p.step == "extend":
		return fmt.Sprintf("kill -9 %v into extend %d", p.delay.Round(time.Millisecond), p.nth)
	default:
		return fmt.Sprintf("kill -9 %v into %s", p.delay.Round(time.Millisecond), p.step)
	}
}

// drawKill draws the next kill from the seeded generator (the same numbers
// whatever is used, so the sequence depends on the seed only).
func (e *crashEnv) drawKill() *killPlan {
	inLaunch := e.rng.IntN(4) == 0
	frac := e.rng.Float64()
	step := killSteps[e.rng.IntN(len(killSteps))]
	nth := 1 + e.rng.IntN(crashExtends)
	into := time.Duration(e.rng.Int64N(int64(maxKillInto)))
	if e.st.kills >= e.cfg.iterations {
		return nil
	}
	if inLaunch {
		return &killPlan{inLaunch: true, delay: time.Duration(frac * float64(e.st.launchEst))}
	}
	return &killPlan{step: step, nth: nth, delay: into}
}

// maxKillInto bounds how far into an RPC a kill lands: an Extend, a quote
// or a signature takes the daemon milliseconds to tens of milliseconds.
const maxKillInto = 30 * time.Millisecond

func (e *crashEnv) run(base *swtpmtest.TPM) {
	e.device = "unix:" + base.Clone(e.t).Socket
	e.dir = shortDir(e.t)
	for n := 1; ; n++ {
		if done := e.start(n, e.drawKill()); done {
			return
		}
	}
}

// driveResult is how the lifecycle driver of one start ended.
type driveResult struct {
	err    error
	final  bool           // the final bundle and log were fetched: the environment is done
	checks []func() error // checks of what the daemon returned, to run after the start
}

// errKilled marks driver steps cut short by our own kill.
var errKilled = errors.New("killed by the test")

// startRun is one start of attestd in the crash loop.
type startRun struct {
	label  string
	plan   *killPlan
	d      *daemon
	killed atomic.Bool
	step   atomic.Value // what the driver is doing, for the kill log
	timer  *time.Timer
}

func (r *startRun) killNow() {
	if r.killed.CompareAndSwap(false, true) {
		r.d.cmd.Process.Kill()
	}
}

// killAfter arms the planned kill.
func (r *startRun) killAfter(d time.Duration) { r.timer = time.AfterFunc(d, r.killNow) }

// at records the driver's step (n: the extend's number) and arms the kill
// when the plan aims at it. Only the driver goroutine calls it.
func (r *startRun) at(step string, n int) {
	r.step.Store(step)
	if r.timer != nil || r.plan == nil || r.plan.inLaunch {
		return
	}
	name, _, _ := strings.Cut(step, " ")
	if name == r.plan.step && (name != "extend" || n >= r.plan.nth) {
		r.killAfter(r.plan.delay)
	}
}

// start runs attestd once; it returns true when the environment is done.
func (e *crashEnv) start(n int, plan *killPlan) bool {
	afterCrash := e.crashed
	r := &startRun{plan: plan, label: fmt.Sprintf("start %d (%s)", n, map[bool]string{true: "after a crash", false: "clean"}[afterCrash])}
	r.step.Store("launch")
	r.d = startDaemon(e.t, daemonOpts{device: e.device, dir: e.dir})
	if plan != nil && plan.inLaunch {
		// If it serves first, the kill lands early in the lifecycle.
		r.killAfter(plan.delay)
	}
	id, err := r.d.waitServing(startBound)
	if err != nil {
		return e.notServed(r, afterCrash, err)
	}
	e.st.launchEst = time.Since(r.d.started)
	e.countRepairs(r.d)
	if afterCrash {
		e.st.judged++
	}
	if err := e.checkRecovered(r.d, id); errors.Is(err, errReplace) && afterCrash {
		e.st.replaced++
		e.t.Logf("%s: served after a crash in the first launch: %v", r.label, err)
		r.d.signal(syscall.SIGTERM)
		r.d.waitExit(exitBound)
		return true
	} else if err != nil {
		e.st.unrecovered++
		e.t.Errorf("%s: served, but: %v", r.label, err)
	} else if afterCrash {
		e.st.recovered++
	}
	// The final bundle counts only at a restart of an environment whose
	// earlier start served (its launch was frozen: the log must show the
	// restart).
	verifyFinal := e.servedBefore
	e.servedBefore = true
	return e.serve(r, id, verifyFinal)
}

// countRepairs counts what a restart's log says it repaired: evidence
// that the loop's kills land in the windows that need repair. Log text is
// read for the report only; nothing is asserted on it.
func (e *crashEnv) countRepairs(d *daemon) {
	for _, l := range d.log.lines() {
		for _, c := range []struct{ text, name string }{
			{`msg="flushed objects`, "leftover-objects-flushed"},
			{"completed_record=true", "logged-record-extended"},
			{"interrupted_launch=true", "interrupted-launch"},
		} {
			if strings.Contains(l, c.text) {
				e.st.repairs[c.name]++
			}
		}
		if strings.Contains(l, "dropped_bytes=") && !strings.Contains(l, "dropped_bytes=0") {
			e.st.repairs["partial-record-dropped"]++
		}
	}
}

// notServed accounts for a start that did not serve: killed by us during
// launch, refused (or died), or hung.
func (e *crashEnv) notServed(r *startRun, afterCrash bool, err error) bool {
	switch {
	case r.killed.Load():
		r.d.waitExit(exitBound)
		e.st.kills++
		e.st.killedInLaunch++
		e.st.killSteps["launch"]++
		e.crashed = true
		e.t.Logf("%s: %s: killed before it served", r.label, r.plan)
		return false
	case r.d.hasExited():
		if afterCrash {
			e.st.judged++
		}
		return e.refused(r.label, r.d)
	default:
		e.st.hangs++
		if afterCrash {
			e.st.judged++
		}
		r.killNow()
		e.t.Errorf("%s: hang: %v", r.label, err)
		return true
	}
}

// serve drives the lifecycle on a serving daemon until the planned kill,
// or until the environment is done.
func (e *crashEnv) serve(r *startRun, id *apiv1.GetIdentityResponse, verifyFinal bool) bool {
	t, st, d := e.t, e.st, r.d
	done := make(chan driveResult, 1)
	go func() { done <- e.drive(d, id, r, verifyFinal) }()
	var res driveResult
	select {
	case res = <-done:
	case <-d.exited:
		res = <-done
	}
	if d.hasExited() && !r.killed.Load() {
		st.silent++
		t.Errorf("%s: attestd exited on its own while serving (%v); last line %q", r.label, d.state, d.lastLine())
		return true
	}
	if res.err != nil && !errors.Is(res.err, errKilled) {
		t.Errorf("%s: %v", r.label, res.err)
	}
	// What the daemon returned before the kill must check out.
	checked := true
	for _, c := range res.checks {
		if err := c(); err != nil {
			checked = false
			t.Errorf("%s: %v", r.label, err)
		}
	}
	switch {
	case res.final:
		if r.timer != nil {
			r.timer.Stop()
		}
		if r.killed.Load() {
			e.killed(r)
		}
		d.signal(syscall.SIGTERM)
		d.waitExit(exitBound)
		if checked {
			st.verified++
		}
		t.Logf("%s: served in %v; final bundle fetched (verified: %v)", r.label, st.launchEst.Round(time.Millisecond), checked)
		return true
	case r.plan == nil:
		// No kills left: stop it cleanly; the next start verifies.
		d.signal(syscall.SIGTERM)
		if !d.waitExit(exitBound) {
			t.Fatalf("%s: attestd did not stop within %v of SIGTERM", r.label, exitBound)
		}
		e.crashed = false
		t.Logf("%s: served in %v; no kills left, stopped cleanly", r.label, st.launchEst.Round(time.Millisecond))
		return res.err != nil && !errors.Is(res.err, errKilled)
	}
	// Wait for the kill; a start that did not get to the step aimed at is
	// killed now, idle.
	if r.timer == nil {
		r.step.Store("idle")
		r.killNow()
	}
	if !d.waitExit(r.plan.delay + exitBound) {
		t.Fatalf("%s: attestd still running %v after the planned kill", r.label, exitBound)
	}
	if !r.killed.Load() {
		st.silent++
		t.Errorf("%s: attestd exited on its own while serving (%v); last line %q", r.label, d.state, d.lastLine())
		return true
	}
	at := e.killed(r)
	t.Logf("%s: served in %v, phase %s; %s, during %q", r.label, st.launchEst.Round(time.Millisecond), id.GetPhase(), r.plan, at)
	return false
}

// killed counts our kill of a start that served; it returns the step the
// driver was at.
func (e *crashEnv) killed(r *startRun) string {
	r.d.waitExit(exitBound)
	at, _ := r.step.Load().(string)
	e.st.kills++
	e.st.killSteps[strings.Fields(at)[0]]++
	e.crashed = true
	return at
}

// refused classifies a start that exited before serving without our kill.
func (e *crashEnv) refused(label string, d *daemon) bool {
	last := d.lastLine()
	if code := d.exitCode(); code == 0 || !strings.HasPrefix(last, "attestd: ") {
		e.st.silent++
		e.t.Errorf("%s: silent failure: exit %v, last line %q; want a refusal naming its reason (\"attestd: …\")", label, d.state, last)
		return true
	}
	reason := hexRun.ReplaceAllString(strings.TrimPrefix(last, "attestd: "), "…")
	reason = tmpPath.ReplaceAllString(reason, "$$DIR")
	e.st.refused[reason]++
	if e.cfg.lenient {
		e.t.Logf("%s: refused (lenient: not a failure): %s", label, last)
	} else {
		e.t.Errorf("%s: refused to recover: %s", label, last)
	}
	return true
}

// errReplace: the daemon died during the environment's first launch; the
// restart measured the launch again after a restart event saying so, and
// verifiers fail such a launch (docs/measure-events.md): the platform
// replaces the environment. By design, neither a recovery nor a failure.
var errReplace = errors.New("interrupted launch: the verifier fails this environment (replace it)")

// checkLaunch verifies a launch attestation (attestationLines: with the
// event log it names). One that fails only the launch check, over an event
// log whose restart event before the separator says the launch was
// interrupted, is errReplace.
func checkLaunch(launch []byte, opts verify.Options) error {
	r, err := verifyLines(launch, opts)
	if err != nil {
		return fmt.Errorf("launch attestation: %w", err)
	}
	if r.OK {
		if interruptedLaunch(r.Events) {
			return errors.New("launch attestation of an interrupted launch verifies; want the verifier to fail it")
		}
		return nil
	}
	failed := failedChecks(r)
	if interruptedLaunch(r.Events) && len(failed) == 1 && strings.HasPrefix(failed[0], verify.CheckLaunch+":") {
		return errReplace
	}
	return fmt.Errorf("launch attestation does not verify: %v", failed)
}

// interruptedLaunch reports whether a restart event before the separator
// records an interrupted launch.
func interruptedLaunch(recs []measure.Record) bool {
	for _, r := range recs {
		switch r.Type {
		case measure.EventSeparator:
			return false
		case measure.EventRestart:
			var rs measure.Restart
			if measure.DecodeEventData(r.Data, &rs) == nil && rs.InterruptedLaunch {
				return true
			}
		}
	}
	return false
}

var (
	hexRun  = regexp.MustCompile(`[0-9a-f]{16,}`)
	tmpPath = regexp.MustCompile(`/tmp/robust[^/ ]*`)
)

// launchFile is the launch attestation in the runtime dir, as documented
// (docs/operating.md): the envelope and the event log it names.
const launchFile = "launch.intoto.jsonl"

// checkRecovered checks what a start that served must show: the launch
// attestation written and verifying, the environment's key, its build.
func (e *crashEnv) checkRecovered(d *daemon, id *apiv1.GetIdentityResponse) error {
	file, err := os.ReadFile(filepath.Join(d.runDir, launchFile))
	if err != nil {
		return fmt.Errorf("launch attestation: %v", err)
	}
	launch := attestationLines(id.GetLaunchAttestation(), id.GetLaunchEventLog(), nil)
	if !bytes.Equal(file, launch) {
		return fmt.Errorf("%s is not the launch attestation and event log the daemon serves", launchFile)
	}
	if e.ak == nil {
		if e.ak, err = pinAK(id.GetLaunchAttestation()); err != nil {
			return fmt.Errorf("pin AK: %v", err)
		}
	}
	if err := checkLaunch(launch, verifyOpts(e.ak)); err != nil {
		return err
	}
	switch {
	case e.keyDigest == "":
		e.keyDigest = id.GetKeyDigest()
	case id.GetKeyDigest() != e.keyDigest:
		return fmt.Errorf("env key %s, before the crash %s", id.GetKeyDigest(), e.keyDigest)
	}
	switch got := id.GetBuildId(); {
	case e.bound && got != e.buildID():
		return fmt.Errorf("build ID %q after the restart; the environment was bound to %q", got, e.buildID())
	case got != "" && got != e.buildID():
		return fmt.Errorf("SECOND BUILD: bound to %q; only %q was ever requested", got, e.buildID())
	case got != "" && !e.bindSent:
		return fmt.Errorf("bound to %q before BindBuild was called", got)
	case got != "":
		e.bound = true
	}
	return nil
}
