package robust

import (
	"crypto"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/internal/swtpmtest"
	"github.com/attestd/attestd/internal/tpmfault"
)

// tpmTimeout is the --tpm-timeout of the fault tests.
const tpmTimeout = 2 * time.Second

// The lifecycle phases a fault test puts the daemon in before the fault.
const (
	launched   = "launched"
	dispatched = "dispatched"
)

// outcome is what the contract allows after a fault.
type outcome int

const (
	// tpmFault: the daemon must see a TPM fault: every TPM call
	// Unavailable, health NOT_SERVING, one ERROR "TPM unavailable", exit
	// non-zero.
	tpmFault outcome = iota
	// corrupted: each call either Unavailable (then as tpmFault) or a
	// success whose attestation verifies.
	corrupted
	// slow: every call succeeds.
	slow
)

type faultCase struct {
	name    string
	timeout time.Duration // --tpm-timeout
	arm     func(p *tpmfault.Proxy) <-chan tpmfault.Hit
	want    outcome
}

var faultCases = []faultCase{
	{"drop", tpmTimeout, func(p *tpmfault.Proxy) <-chan tpmfault.Hit { return p.Every(tpmfault.Drop) }, tpmFault},
	// Each response 0.5s late, well inside a 5s deadline.
	{"delay", 5 * time.Second, func(p *tpmfault.Proxy) <-chan tpmfault.Hit { return p.Every(tpmfault.Delay(500 * time.Millisecond)) }, slow},
	{"corrupt-quote", tpmTimeout, func(p *tpmfault.Proxy) <-chan tpmfault.Hit { return p.Next(tpmfault.Corrupt.On(tpmfault.CCQuote)) }, corrupted},
	{"corrupt-sign", tpmTimeout, func(p *tpmfault.Proxy) <-chan tpmfault.Hit { return p.Next(tpmfault.Corrupt.On(tpmfault.CCSign)) }, corrupted},
	// No corrupt-pcrread here: serving, attestd reads no PCRs (one
	// TPM2_Quote per attestation; attest/tpm/pcrs.go). It reads them when it
	// starts: TestCorruptPCRReadAtStart.
	{"corrupt-header-quote", tpmTimeout, func(p *tpmfault.Proxy) <-chan tpmfault.Hit {
		return p.Next(tpmfault.CorruptHeader.On(tpmfault.CCQuote))
	}, corrupted},
	{"corrupt-extend", tpmTimeout, func(p *tpmfault.Proxy) <-chan tpmfault.Hit { return p.Next(tpmfault.Corrupt.On(tpmfault.CCPCRExtend)) }, corrupted},
	{"close", tpmTimeout, func(p *tpmfault.Proxy) <-chan tpmfault.Hit { return p.Next(tpmfault.Close) }, tpmFault},
	{"kill", tpmTimeout, func(p *tpmfault.Proxy) <-chan tpmfault.Hit {
		ch := make(chan tpmfault.Hit, 1)
		ch <- p.Kill()
		return ch
	}, tpmFault},
}

// faultEnv is a daemon talking to a fresh swtpm through a fault proxy.
type faultEnv struct {
	t         *testing.T
	proxy     *tpmfault.Proxy
	opts      daemonOpts
	d         *daemon
	ak        crypto.PublicKey
	keyDigest string
	phase     string
}

const faultBuildID = "build-fault-1"

var dispatchNonce = []byte("dispatch nonce of the fault test")

// setupFault starts swtpm (a clone of base), the proxy and attestd, waits
// until it serves, pins the AK and, for dispatched, binds a build.
func setupFault(t *testing.T, base *swtpmtest.TPM, phase string, timeout time.Duration, opts ...func(*daemonOpts)) *faultEnv {
	t.Helper()
	sw := base.Clone(t)
	p := tpmfault.Start(t, sw.Socket)
	o := daemonOpts{device: "unix:" + p.Socket(), dir: shortDir(t), tpmTimeout: timeout}
	for _, f := range opts {
		f(&o)
	}
	d := startDaemon(t, o)
	id := d.mustServe()
	ak, err := pinAK(id.GetLaunchAttestation())
	if err != nil {
		t.Fatalf("pin AK: %v", err)
	}
	f := &faultEnv{t: t, proxy: p, opts: o, d: d, ak: ak, keyDigest: id.GetKeyDigest(), phase: phase}
	if phase == dispatched {
		ctx, cancel := rpcCtx()
		defer cancel()
		r, err := d.client.BindBuild(ctx, bindRequest(faultBuildID, dispatchNonce))
		if err != nil {
			t.Fatalf("BindBuild before the fault: %v", err)
		}
		if err := f.check(attestationLines(r.GetEnvelope(), r.GetEventLog(), nil), attest.PurposeDispatch, dispatchNonce); err != nil {
			t.Fatalf("before the fault: %v", err)
		}
	}
	return f
}

// shortDir is a temp dir with a short path: the daemon's socket goes in it
// and unix socket paths are limited to 108 bytes.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "robust")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// check verifies an attestation the daemon returned (attestationLines),
// with the pinned AK.
func (f *faultEnv) check(lines []byte, purpose attest.Purpose, nonce []byte) error {
	opts := verifyOpts(f.ak)
	opts.Nonces = map[attest.Purpose][]byte{purpose: nonce}
	return checkEnvelope(lines, opts)
}

// callResult is one RPC made around the fault.
type callResult struct {
	name    string
	err     error
	env     []byte // the attestation returned, if any, with its event log and proof (attestationLines)
	purpose attest.Purpose
	nonce   []byte
	took    time.Duration
}

// tpmCalls makes, concurrently, the calls of this phase that need the TPM:
// two admissions and BindBuild (launched) or Extend (dispatched). Each is
// bounded by rpcBound; a call that runs into it hung.
func (f *faultEnv) tpmCalls() []callResult {
	c := f.d.client
	calls := []func() callResult{
		func() callResult { return f.attest(c, []byte("admission nonce A")) },
		func() callResult { return f.attest(c, []byte("admission nonce B")) },
	}
	if f.phase == launched {
		calls = append(calls, func() callResult {
			ctx, cancel := rpcCtx()
			defer cancel()
			r, err := c.BindBuild(ctx, bindRequest(faultBuildID, dispatchNonce))
			return callResult{name: "BindBuild", err: err, env: attestationLines(r.GetEnvelope(), r.GetEventLog(), nil), purpose: attest.PurposeDispatch, nonce: dispatchNonce}
		})
	} else {
		calls = append(calls, func() callResult {
			ctx, cancel := rpcCtx()
			defer cancel()
			_, err := c.Extend(ctx, &apiv1.ExtendRequest{Domain: "deps", Operation: "fetch", Content: []byte("dep.tar")})
			return callResult{name: "Extend", err: err}
		})
	}
	out := make([]callResult, len(calls))
	var wg sync.WaitGroup
	for i, call := range calls {
		wg.Go(func() {
			start := time.Now()
			out[i] = call()
			out[i].took = time.Since(start)
		})
	}
	wg.Wait()
	return out
}

func (f *faultEnv) attest(c *apiv1.Client, nonce []byte) callResult {
	ctx, cancel := rpcCtx()
	defer cancel()
	r, err := c.Attest(ctx, &apiv1.AttestRequest{Nonce: nonce})
	return callResult{name: "Attest", err: err, env: attestationLines(r.GetEnvelope(), r.GetEventLog(), r.GetInclusionProof()), purpose: attest.PurposeAttest, nonce: nonce}
}

// faultTimes are measured from the fault (the proxy's hit) on; negative
// when not observed.
type faultTimes struct {
	notServing, exit time.Duration
}

func TestTPMFaults(t *testing.T) {
	base := swtpmtest.StartTPM(t)
	binaries(t)
	var mu sync.Mutex
	var summary []string
	t.Run("group", func(t *testing.T) {
		for _, fc := range faultCases {
			for _, phase := range []string{launched, dispatched} {
				t.Run(fc.name+"/"+phase, func(t *testing.T) {
					t.Parallel()
					line := "stopped early: see its log"
					t.Cleanup(func() {
						verdict := "ok  "
						if t.Failed() {
							verdict = "FAIL"
						}
						mu.Lock()
						summary = append(summary, fmt.Sprintf("%-32s %s %s", fc.name+"/"+phase, verdict, line))
						mu.Unlock()
					})
					line = runFault(t, base, fc, phase)
				})
			}
		}
	})
	slices.Sort(summary)
	t.Logf("fault results (--tpm-timeout %v unless said; load %s):\n%s", tpmTimeout, loadavg(), strings.Join(summary, "\n"))
}

// runFault runs one fault case and returns a line for the summary.
func runFault(t *testing.T, base *swtpmtest.TPM, fc faultCase, phase string) string {
	f := setupFault(t, base, phase, fc.timeout)
	health := f.d.watchHealth()
	hitc := fc.arm(f.proxy)
	results := f.tpmCalls()
	var hit tpmfault.Hit
	select {
	case hit = <-hitc:
	case <-time.After(exitBound):
		t.Fatalf("the %s fault was never applied: the calls made no TPM command it matches (calls: %v)", fc.name, describe(results))
	}
	t.Logf("fault %v at +0; calls: %v", hit, describe(results))

	var unavailable int
	for _, r := range results {
		switch code := status.Code(r.err); {
		case hung(r.err):
			t.Errorf("%s hung: no answer within %v of the fault", r.name, rpcBound)
		case code == codes.Unavailable && fc.want != slow:
			unavailable++
		case code != codes.OK:
			t.Errorf("%s: %v; want %s", r.name, r.err, map[outcome]string{tpmFault: "Unavailable", corrupted: "Unavailable or a verified attestation", slow: "success"}[fc.want])
		case fc.want == tpmFault:
			t.Errorf("%s succeeded after a %s fault; want Unavailable", r.name, fc.name)
		case r.env != nil:
			if err := f.check(r.env, r.purpose, r.nonce); err != nil {
				t.Errorf("%s returned an attestation from a failed TPM exchange: %v", r.name, err)
			}
		}
	}
	switch {
	case fc.want == slow:
		return f.expectHealthy(fc, results)
	case fc.want == corrupted && unavailable == 0:
		t.Logf("corruption (%v) went unnoticed and harmless: every call succeeded and verified", hit)
		return fmt.Sprintf("unnoticed (%v): calls succeeded and verified", hit.Command) + f.expectHealthyAfterFault()
	case unavailable < len(results) && fc.want == corrupted:
		t.Logf("%d of %d calls Unavailable, the others verified", unavailable, len(results))
	}
	tm := f.expectFaultHandling(hit, health, fc.timeout)
	line := fmt.Sprintf("%-32s fault→NOT_SERVING %s  fault→exit %s", hit.String()+":", seconds(tm.notServing), seconds(tm.exit))
	return line + f.expectRestart(fc.name == "kill")
}

// expectRestart plays systemd restarting the daemon after it exited on a
// TPM fault, on the same runtime dir: with the TPM answering again it must
// recover (same env key, same build, a fresh admission that verifies);
// with the TPM dead it must refuse, naming the reason.
func (f *faultEnv) expectRestart(tpmDead bool) string {
	t := f.t
	f.proxy.Heal()
	d := startDaemon(t, f.opts)
	id, err := d.waitServing(startBound)
	if tpmDead {
		switch {
		case err == nil:
			t.Errorf("restart on a dead TPM served")
		case !d.hasExited():
			t.Errorf("restart on a dead TPM: %v", err)
		case d.exitCode() == 0 || !strings.HasPrefix(d.lastLine(), "attestd: "):
			t.Errorf("restart on a dead TPM: exit %v, last line %q; want a refusal naming its reason", d.state, d.lastLine())
		}
		return "; restart refused"
	}
	if err != nil {
		t.Errorf("restart after the fault, with the TPM answering again: %v", err)
		return "; restart FAILED"
	}
	if id.GetKeyDigest() != f.keyDigest {
		t.Errorf("restart: env key %s, before the fault %s", id.GetKeyDigest(), f.keyDigest)
	}
	// Launched: the fault may have hit BindBuild after its event was logged.
	if got := id.GetBuildId(); got != faultBuildID && (f.phase == dispatched || got != "") {
		t.Errorf("restart: build ID %q; want %q", got, faultBuildID)
	}
	f.d = d
	r := f.attest(d.client, []byte("admission after the restart"))
	if r.err != nil {
		t.Errorf("Attest after the restart: %v", r.err)
	} else if err := f.check(r.env, attest.PurposeAttest, r.nonce); err != nil {
		t.Errorf("Attest after the restart: %v", err)
	}
	d.signal(syscall.SIGTERM)
	d.waitExit(exitBound)
	return "; restart recovered"
}

// seconds formats a measured time; a negative one was not observed.
func seconds(d time.Duration) string {
	if d < 0 {
		return "  never"
	}
	return fmt.Sprintf("%6.2fs", d.Seconds())
}

func describe(rs []callResult) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, fmt.Sprintf("%s→%s (%.1fs)", r.name, status.Code(r.err), r.took.Seconds()))
	}
	return strings.Join(parts, ", ")
}

// expectFaultHandling checks the daemon's answer to a TPM fault: health
// NOT_SERVING, TPM calls Unavailable, one ERROR line, exit non-zero with
// an "attestd: " last line. It returns the times from the fault.
func (f *faultEnv) expectFaultHandling(hit tpmfault.Hit, health map[string]<-chan time.Time, timeout time.Duration) faultTimes {
	t := f.t
	tm := faultTimes{notServing: -1, exit: -1}
	bound := timeout + exitBound
	var notServing []time.Duration
	for _, svc := range healthServices {
		select {
		case at, ok := <-health[svc]:
			if !ok {
				t.Errorf("health %q: the watch ended without NOT_SERVING", svc)
				continue
			}
			notServing = append(notServing, at.Sub(hit.At))
		case <-time.After(bound):
			t.Errorf("health %q: not NOT_SERVING within %v of the fault (now %v)", svc, bound, f.d.checkHealth()[svc])
		}
	}
	if len(notServing) == len(healthServices) {
		tm.notServing = slices.Max(notServing)
	}
	// Still up? Another TPM call must be Unavailable too, never hang.
	if !f.d.hasExited() {
		r := f.attest(f.d.client, []byte("admission after the fault"))
		if code := status.Code(r.err); code != codes.Unavailable {
			t.Errorf("Attest after the fault: %v; want Unavailable", r.err)
		}
	}
	if !f.d.waitExit(bound) {
		t.Fatalf("attestd still running %v after the fault; want it to exit for systemd to restart it", time.Since(hit.At).Round(time.Second))
	}
	tm.exit = f.d.exitAt.Sub(hit.At)
	if code := f.d.exitCode(); code == 0 {
		t.Errorf("attestd exited 0 after a TPM fault; want non-zero (%v)", f.d.state)
	}
	if last := f.d.lastLine(); !strings.HasPrefix(last, "attestd: ") {
		t.Errorf("last line %q; want one starting \"attestd: \"", last)
	}
	errs := f.d.errorLines()
	if len(errs) != 1 || !strings.Contains(errs[0], `msg="TPM unavailable"`) {
		t.Errorf("ERROR lines:\n%s\nwant exactly one, msg=\"TPM unavailable\"", strings.Join(errs, "\n"))
	}
	t.Logf("fault→NOT_SERVING %v, fault→exit %v, exit code %d, last line %q",
		tm.notServing.Round(time.Millisecond), tm.exit.Round(time.Millisecond), f.d.exitCode(), f.d.lastLine())
	return tm
}

// expectHealthy reports on a slow TPM that left the daemon serving (the
// calls' results were checked by the caller), then checks it is healthy.
func (f *faultEnv) expectHealthy(fc faultCase, results []callResult) string {
	var longest time.Duration
	for _, r := range results {
		longest = max(longest, r.took)
	}
	line := fmt.Sprintf("calls succeeded, slowest %.1fs (--tpm-timeout %v)", longest.Seconds(), fc.timeout)
	return line + f.expectHealthyAfterFault()
}

// expectHealthyAfterFault checks the daemon still serves after a fault
// it did not (and need not) notice, then stops it with SIGTERM.
func (f *faultEnv) expectHealthyAfterFault() string {
	t := f.t
	f.proxy.Heal()
	for svc, st := range f.d.checkHealth() {
		if st != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q: %v; want SERVING", svc, st)
		}
	}
	r := f.attest(f.d.client, []byte("admission after healing"))
	if r.err != nil {
		t.Errorf("Attest after healing: %v", r.err)
	} else if err := f.check(r.env, attest.PurposeAttest, r.nonce); err != nil {
		t.Errorf("Attest after healing: %v", err)
	}
	if errs := f.d.errorLines(); len(errs) > 0 {
		t.Errorf("ERROR lines on a TPM that answered:\n%s", strings.Join(errs, "\n"))
	}
	f.d.signal(syscall.SIGTERM)
	if !f.d.waitExit(exitBound) {
		t.Fatalf("attestd did not exit within %v of SIGTERM", exitBound)
	}
	if code := f.d.exitCode(); code != 0 {
		t.Errorf("SIGTERM: exit code %d (%v); want 0", code, f.d.state)
	}
	return "; still serving, SIGTERM exit 0"
}

// TestSIGTERMWhileTPMHangs: a TPM command hangs (deadline far away);
// SIGTERM must still end the daemon promptly.
func TestSIGTERMWhileTPMHangs(t *testing.T) {
	base := swtpmtest.StartTPM(t)
	binaries(t)
	for _, phase := range []string{launched, dispatched} {
		t.Run(phase, func(t *testing.T) {
			t.Parallel()
			const far = 10 * time.Minute
			f := setupFault(t, base, phase, far)
			hitc := f.proxy.Every(tpmfault.Drop)
			calls := make(chan []callResult, 1)
			go func() { calls <- f.tpmCalls() }()
			var hit tpmfault.Hit
			select {
			case hit = <-hitc:
			case <-time.After(rpcBound):
				t.Fatal("no TPM command reached the proxy within the bound")
			}
			sent := time.Now()
			f.d.signal(syscall.SIGTERM)
			if !f.d.waitExit(exitBound) {
				t.Fatalf("attestd did not exit within %v of SIGTERM while a TPM command (%v) hung (--tpm-timeout %v)", exitBound, hit.Command, far)
			}
			t.Logf("SIGTERM with %v hanging → exit after %v, code %d, last line %q (load %s)",
				hit.Command, f.d.exitAt.Sub(sent).Round(time.Millisecond), f.d.exitCode(), f.d.lastLine(), loadavg())
			select {
			case rs := <-calls:
				for _, r := range rs {
					if r.err == nil {
						t.Errorf("%s succeeded on a hung TPM", r.name)
					}
				}
			case <-time.After(rpcBound):
				t.Error("calls still waiting after attestd exited")
			}
		})
	}
}

// loadavg is the 1-minute load average, for the logs.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}
