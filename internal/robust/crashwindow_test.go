package robust

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/internal/swtpmtest"
	"github.com/attestd/attestd/internal/tpmfault"
	"github.com/attestd/attestd/measure"
)

// windowCase is a crash at an instant the crash loop hits only by luck:
// the proxy holds one PCR extend (the TPM never runs it) after the daemon
// synced its record to the event log, and the daemon is SIGKILLed while it
// waits.
type windowCase struct {
	name string
	// skip: PCR extends let through before the held one; -1 means the
	// launch's last (the separator's).
	skip int
	// call is the RPC whose extend is held, on a daemon that served; nil:
	// the extend is held during the first launch.
	call func(ctx context.Context, e *crashEnv, c *apiv1.Client) error
	// interrupted: the crash interrupts the first launch, which cannot
	// recover (errReplace); otherwise the restart must recover.
	interrupted bool
	// fresh: nothing reached the register, so the restart sees a new boot
	// and launches afresh; otherwise its restart event names the record it
	// completed.
	fresh bool
}

var windowCases = []windowCase{
	{name: "launch-first-event", skip: 0, fresh: true},
	{name: "launch-second-event", skip: 1, interrupted: true},
	{name: "launch-separator", skip: -1},
	{name: "build-id", call: func(ctx context.Context, e *crashEnv, c *apiv1.Client) error {
		e.bindSent = true
		_, err := c.BindBuild(ctx, bindRequest(e.buildID(), e.nonce("dispatch")))
		return err
	}},
	{name: "runtime-event", call: func(ctx context.Context, e *crashEnv, c *apiv1.Client) error {
		_, err := c.Extend(ctx, &apiv1.ExtendRequest{Domain: "build", Operation: "step", Content: []byte("step 1")})
		return err
	}},
	{name: "complete", call: func(ctx context.Context, e *crashEnv, c *apiv1.Client) error {
		_, err := c.Complete(ctx, completeRequest(e.buildID(), e.nonce("complete")))
		return err
	}},
}

// TestCrashWindows kills attestd between syncing an event to its log and
// extending the register — in the first launch, at its separator, at
// dispatch, during a runtime measurement and at completion — and checks the
// restart: it recovers (the register catches up with the log, the restart
// event says which record it completed; same key, same build; the build
// then finishes and its bundle verifies), or, for a crash inside the first
// launch after the register moved, serves a launch that verifiers fail,
// saying so. A crash before the first extend leaves the register at zero:
// the restart cannot tell it from a new boot and launches afresh.
func TestCrashWindows(t *testing.T) {
	base := swtpmtest.StartTPM(t)
	binaries(t)
	launchExtends := countLaunchExtends(t, base)
	for _, wc := range windowCases {
		t.Run(wc.name, func(t *testing.T) {
			t.Parallel()
			skip := wc.skip
			if skip < 0 {
				skip = launchExtends - 1
			}
			crashWindow(t, base, wc, skip)
		})
	}
}

// countLaunchExtends is how many PCR extends a first launch makes, from a
// clean launch on another clone: the records up to the separator, one
// extend per bank each.
func countLaunchExtends(t *testing.T, base *swtpmtest.TPM) int {
	t.Helper()
	d := startDaemon(t, daemonOpts{device: "unix:" + base.Clone(t).Socket, dir: shortDir(t)})
	d.mustServe()
	recs, err := eventLog(d.client)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		if r.Type == measure.EventSeparator {
			return (i + 1) * len(r.Digests)
		}
	}
	t.Fatal("the first launch's event log has no separator")
	return 0
}

func crashWindow(t *testing.T, base *swtpmtest.TPM, wc windowCase, skip int) {
	p := tpmfault.Start(t, base.Clone(t).Socket)
	st := newCrashStats()
	e := &crashEnv{t: t, st: st, n: 0, device: "unix:" + p.Socket(), dir: shortDir(t)}
	hold := tpmfault.Hold.On(tpmfault.CCPCRExtend).Skip(skip)

	var d *daemon
	var hit <-chan tpmfault.Hit
	if wc.call == nil {
		hit = p.Next(hold)
		d = startDaemon(t, daemonOpts{device: e.device, dir: e.dir})
	} else {
		d = startDaemon(t, daemonOpts{device: e.device, dir: e.dir})
		id := d.mustServe()
		if err := e.checkRecovered(d, id); err != nil {
			t.Fatalf("first start: %v", err)
		}
		e.servedBefore = true
		if wc.name == "runtime-event" || wc.name == "complete" {
			ctx, cancel := rpcCtx()
			_, err := d.client.BindBuild(ctx, bindRequest(e.buildID(), e.nonce("dispatch")))
			cancel()
			if err != nil {
				t.Fatalf("BindBuild: %v", err)
			}
			e.bindSent, e.bound = true, true
		}
		hit = p.Next(hold)
		go func() {
			ctx, cancel := rpcCtx()
			defer cancel()
			wc.call(ctx, e, d.client) // fails: the daemon is killed while it waits
		}()
	}
	var h tpmfault.Hit
	select {
	case h = <-hit:
	case <-d.exited:
		t.Fatalf("attestd exited before the held extend: %q", d.lastLine())
	case <-time.After(startBound):
		t.Fatalf("no PCR extend %d within %v", skip+1, startBound)
	}
	d.cmd.Process.Kill()
	if !d.waitExit(exitBound) {
		t.Fatal("attestd outlived SIGKILL")
	}
	p.Heal()
	t.Logf("killed while %v waited", h)

	// Restart until the environment is done (verified) or replaced.
	e.crashed = true
	done := false
	for n := 2; !done && n < 6 && !t.Failed(); n++ {
		done = e.start(n, nil)
	}
	switch {
	case wc.interrupted && st.replaced != 1:
		t.Errorf("restart after a crash in the first launch: replaced %d, recovered %d; want the interrupted launch served and failed by the verifier", st.replaced, st.recovered)
	case !wc.interrupted && (st.recovered == 0 || st.verified != 1):
		t.Errorf("restart: recovered %d, final bundle verified %d; want both", st.recovered, st.verified)
	}
	rs := restartEvents(t, filepath.Join(e.dir, "run", "attestd.cel"))
	if len(rs) == 0 {
		t.Fatal("no restart event in the event log")
	}
	first := rs[0]
	if (first.CompletedSeq != nil) == wc.fresh {
		t.Errorf("first restart event: completedSeq %v; want %s", first.CompletedSeq,
			map[bool]string{true: "none (a fresh launch; the restart is a later, clean one)", false: "the record the register lacked"}[wc.fresh])
	}
	if first.InterruptedLaunch != wc.interrupted {
		t.Errorf("first restart event: interruptedLaunch %v, want %v", first.InterruptedLaunch, wc.interrupted)
	}
	if wc.fresh {
		if _, err := os.Stat(filepath.Join(e.dir, "run", "attestd.cel.stale")); err != nil {
			t.Errorf("the crashed launch's log was not set aside: %v", err)
		}
	}
}

// restartEvents decodes the restart events of the event log file at path.
func restartEvents(t *testing.T, path string) []measure.Restart {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := measure.ParseCEL(raw)
	if err != nil {
		t.Fatalf("event log: %v", err)
	}
	var out []measure.Restart
	for _, r := range recs {
		if r.Type != measure.EventRestart {
			continue
		}
		var rs measure.Restart
		if err := measure.DecodeEventData(r.Data, &rs); err != nil {
			t.Fatalf("restart event %d: %v", r.Seq, err)
		}
		out = append(out, rs)
	}
	return out
}
