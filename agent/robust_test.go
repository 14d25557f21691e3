package agent

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/verify"
)

// dyingBackend stands for a daemon killed between writing a record to the
// log and extending the register: from the dieAt-th Extend on, Extend
// changes nothing and fails.
type dyingBackend struct {
	attest.Backend
	extends, dieAt int
}

var errDied = errors.New("daemon killed before the extend (injected)")

func (d *dyingBackend) Extend(ctx context.Context, digests map[crypto.Hash][]byte) error {
	d.extends++
	if d.dieAt > 0 && d.extends >= d.dieAt {
		return errDied
	}
	return d.Backend.Extend(ctx, digests)
}

// restartEvent decodes the last restart event of a.
func restartEvent(t *testing.T, a *Agent) measure.Restart {
	t.Helper()
	_, recs := a.EventLog()
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Type == measure.EventRestart {
			var r measure.Restart
			if err := measure.DecodeEventData(recs[i].Data, &r); err != nil {
				t.Fatal(err)
			}
			return r
		}
	}
	t.Fatal("no restart event")
	return measure.Restart{}
}

// TestRestartCompletesARecordTheRegisterLacks: the daemon died after the
// build-id record reached the log but before the extend. The restart
// extends it, says so in the restart event, keeps the build, and the
// register proves the whole log.
func TestRestartCompletesARecordTheRegisterLacks(t *testing.T) {
	sim := openSim(t)
	f := newFixture(t)
	ctx := context.Background()
	d := &dyingBackend{Backend: newBackend(t, sim)}
	a1 := f.agent(t, d)
	if err := a1.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	d.dieAt = d.extends + 1
	if _, err := a1.BindBuild(ctx, "build-1", testRequest, nil); !errors.Is(err, errDied) {
		t.Fatalf("BindBuild on a dying daemon: %v", err)
	}

	b2 := newBackend(t, sim)
	a2 := f.agent(t, b2)
	if err := a2.Launch(ctx); err != nil {
		t.Fatalf("restart after a crash between log and extend: %v", err)
	}
	r := restartEvent(t, a2)
	_, recs := a2.EventLog()
	if r.CompletedSeq == nil || recs[*r.CompletedSeq].Type != measure.EventBuildID {
		t.Fatalf("restart event %+v: want completedSeq naming the build-id record", r)
	}
	if _, err := a2.BindBuild(ctx, "build-2", testRequest, nil); !errors.Is(err, errState) {
		t.Fatalf("a second build after recovery: %v", err)
	}
	res, err := a2.BindBuild(ctx, "build-1", testRequest, []byte("n"))
	if err != nil {
		t.Fatalf("BindBuild retried after recovery: %v", err)
	}
	mustVerify(t, res.Encode(), verify.Options{Nonce: []byte("n"), TrustedAKs: []crypto.PublicKey{b2.AKPublic()}})
}

// TestRestartCutsAPartialRecord: the daemon died while writing a record:
// the restart cuts it off (it never reached the register) and says so.
func TestRestartCutsAPartialRecord(t *testing.T) {
	sim := openSim(t)
	f := newFixture(t)
	ctx := context.Background()
	a1 := f.agent(t, newBackend(t, sim))
	if err := a1.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	raw, _ := a1.EventLog()
	path := filepath.Join(f.dir, "run", EventLogName)
	last := raw[len(raw)-lastRecordLen(t, raw):]
	half := last[:len(last)/2] // the first half of a record: a torn write
	if err := os.WriteFile(path, append(bytes.Clone(raw), half...), 0o640); err != nil {
		t.Fatal(err)
	}
	b2 := newBackend(t, sim)
	a2 := f.agent(t, b2)
	if err := a2.Launch(ctx); err != nil {
		t.Fatalf("restart with a partial record at the end of the log: %v", err)
	}
	if r := restartEvent(t, a2); r.DroppedBytes != len(half) {
		t.Fatalf("restart event %+v: want droppedBytes %d", r, len(half))
	}
	env, err := a2.Attest(ctx, []byte("n"))
	if err != nil {
		t.Fatal(err)
	}
	mustVerify(t, env.Encode(), verify.Options{Nonce: []byte("n"), TrustedAKs: []crypto.PublicKey{b2.AKPublic()}})
}

// TestInterruptedLaunchIsRecordedAndFails: a daemon that died during launch
// restarts, records that in the log, measures the launch again, and the
// verifier fails the launch check (the environment should be replaced).
func TestInterruptedLaunchIsRecordedAndFails(t *testing.T) {
	sim := openSim(t)
	f := newFixture(t)
	ctx := context.Background()
	d := &dyingBackend{Backend: newBackend(t, sim), dieAt: 3}
	if err := f.agent(t, d).Launch(ctx); !errors.Is(err, errDied) {
		t.Fatalf("Launch on a dying daemon: %v", err)
	}
	b2 := newBackend(t, sim)
	a2 := f.agent(t, b2)
	if err := a2.Launch(ctx); err != nil {
		t.Fatalf("restart after a crash during launch: %v", err)
	}
	if r := restartEvent(t, a2); !r.InterruptedLaunch || r.CompletedSeq == nil {
		t.Fatalf("restart event %+v: want interruptedLaunch and the pending record completed", r)
	}
	env, err := a2.Attest(ctx, []byte("n"))
	if err != nil {
		t.Fatal(err)
	}
	res := verifyEnvelope(t, env.Encode(), verify.Options{Nonce: []byte("n"), TrustedAKs: []crypto.PublicKey{b2.AKPublic()}})
	if failed := res.Failed(); res.OK || len(failed) != 1 || failed[0] != verify.CheckLaunch {
		t.Fatalf("interrupted launch: ok=%v failed=%v; want only %s to fail", res.OK, failed, verify.CheckLaunch)
	}
}

// TestLimits fills every bound an executor can push and checks each gives
// ResourceExhausted while the build can still be completed, signed and
// fetched whole over the socket.
func TestLimits(t *testing.T) {
	a, _, c := serve(t)
	ctx := context.Background()
	code := func(err error) codes.Code { return status.Code(toStatus(err)) }

	for i := range maxAdmissions + 2 {
		if _, err := a.Attest(ctx, []byte(fmt.Sprintf("admission %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	// Admissions are kept once answered; Bundle waits for that.
	if n := len(a.Bundle().Envelopes) - 1; n != maxAdmissions {
		t.Fatalf("%d admissions kept, want %d", n, maxAdmissions)
	}
	if ents, _ := os.ReadDir(stateDir(a.opts.RuntimeDir)); len(ents) != maxAdmissions {
		t.Fatalf("%d files in the state directory, want %d", len(ents), maxAdmissions)
	}
	if _, err := a.BindBuild(ctx, "build-1", testRequest, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Attest(ctx, []byte("after dispatch")); err != nil {
		t.Fatal(err)
	}
	if n := len(a.state.Admissions); n != maxAdmissions {
		t.Fatalf("an attestation after dispatch was kept: %d admissions", n)
	}

	content := bytes.Repeat([]byte{'x'}, maxExtendContent)
	events := 0
	for {
		_, err := a.Extend(ctx, "fill", "content", content)
		if err != nil {
			if !errors.Is(err, errLimit) || code(err) != codes.ResourceExhausted {
				t.Fatalf("Extend %d: %v (code %v), want ResourceExhausted", events, err, code(err))
			}
			break
		}
		events++
	}
	raw, _ := a.EventLog()
	t.Logf("runtime events until the limit: %d; event log %d bytes (limit for runtime events %d)", events, len(raw), maxRuntimeLog)
	if _, err := a.Extend(ctx, "small", "op", nil); err != nil && !errors.Is(err, errLimit) {
		t.Fatalf("small Extend at the limit: %v", err)
	}
	if _, err := a.Complete(ctx, "build-1", testInputs, testOutputs, nil); err != nil {
		t.Fatalf("Complete with the runtime events at their limit: %v", err)
	}

	big := func(i int) []byte {
		st := provenance(strings.Repeat("3", 64))
		pad := strings.Repeat("p", maxStatement-len(st)-64)
		return bytes.Replace(st, []byte(`"buildType":"https://example.com/t"`), []byte(fmt.Sprintf(`"buildType":"https://example.com/t%d","pad":"%s"`, i, pad)), 1)
	}
	first, err := a.SignStatement(ctx, "build-1", big(0))
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < maxSigned; i++ {
		if _, err := a.SignStatement(ctx, "build-1", big(i)); err != nil {
			t.Fatalf("SignStatement %d: %v", i, err)
		}
	}
	if _, err := a.SignStatement(ctx, "build-1", big(maxSigned)); !errors.Is(err, errLimit) || code(err) != codes.ResourceExhausted {
		t.Fatalf("SignStatement past the limit: %v", err)
	}
	again, err := a.SignStatement(ctx, "build-1", big(0))
	if err != nil || !bytes.Equal(again, first) {
		t.Fatalf("the same statement again: %v (same envelope %v)", err, bytes.Equal(again, first))
	}

	resp, err := c.GetBundle(ctx, &apiv1.GetBundleRequest{})
	if err != nil {
		t.Fatalf("GetBundle at every limit: %v", err)
	}
	bundle := BundleOf(resp).Encode()
	t.Logf("bundle at every limit: %d attestations, %d bytes as JSON Lines (response limit %d)", len(resp.GetEnvelopes()), len(bundle), apiv1.MaxResponseSize)
	if want := 1 + maxAdmissions + 2 + maxSigned; len(resp.GetEnvelopes()) != want {
		t.Fatalf("bundle has %d attestations, want %d", len(resp.GetEnvelopes()), want)
	}
	if rep := verify.BundleReport(bundle, verify.Options{InsecureTrustEmbeddedAK: true, Verifiers: testVerifiers()}); !rep.OK {
		t.Fatalf("the bundle at every limit does not verify: %v", rep.Failed())
	}
}

// TestStatusCodesForFailures: limits, a failed device and a full disk each
// have their own code.
func TestStatusCodesForFailures(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("x: %w", errLimit), codes.ResourceExhausted},
		{fmt.Errorf("x: %w", measure.ErrLogFull), codes.ResourceExhausted},
		{fmt.Errorf("x: %w", attest.ErrDeviceFailed), codes.Unavailable},
		{fmt.Errorf("x: %w", errStorage), codes.Unavailable},
		{fmt.Errorf("x: %w", measure.ErrLogWrite), codes.Unavailable},
	} {
		if got := status.Code(toStatus(tc.err)); got != tc.want {
			t.Errorf("toStatus(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// verifyEnvelope verifies the first attestation of a bundle (an
// attestation with its event log) with every test verifier.
func verifyEnvelope(t *testing.T, raw []byte, opts verify.Options) *verify.Result {
	t.Helper()
	opts.Verifiers = testVerifiers()
	rep := verify.BundleReport(raw, opts)
	if len(rep.Results) == 0 {
		t.Fatal("the bundle holds no attestation")
	}
	return rep.Results[0]
}

// mountTinyTmpfs mounts a tmpfs of size bytes at a new temp dir (root
// only; CI runs as root and must run this test).
func mountTinyTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0750", size)); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mount a tmpfs for the full-disk test (CI runs as root and must run it): %v", err)
		}
		t.Skipf("mount a tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// fillDisk writes 4 KiB files into dir until the file system is full and
// returns them.
func fillDisk(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	page := bytes.Repeat([]byte{1}, 4096)
	for i := 0; ; i++ {
		p := filepath.Join(dir, fmt.Sprintf("filler-%d", i))
		if err := os.WriteFile(p, page, 0o600); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatal(err)
			}
			os.Remove(p)
			return files
		}
		files = append(files, p)
	}
}

// TestFullDisk: with the runtime dir full, a BindBuild whose small event
// still fits binds the build and the reply (Unavailable) says so; an Extend
// whose event does not fit records nothing (Unavailable); once there is room
// again both succeed and the register still proves the log.
func TestFullDisk(t *testing.T) {
	sim := openSim(t)
	f := newFixture(t)
	run := mountTinyTmpfs(t, 512<<10)
	b := newBackend(t, sim)
	a, err := New(Options{Config: f.cfg, Backend: b, RuntimeDir: run, BinaryPath: f.binary, Version: "test",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := a.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	code := func(err error) codes.Code { return status.Code(toStatus(err)) }

	filler := fillDisk(t, run)
	_, err = a.BindBuild(ctx, "build-1", testRequest, nil)
	if code(err) != codes.Unavailable || !errors.Is(err, errStorage) || !strings.Contains(status.Convert(toStatus(err)).Message(), `bound to build "build-1"`) {
		t.Fatalf("BindBuild on a full disk: %v (code %v), want Unavailable saying the build is bound", err, code(err))
	}
	if ph, id := a.Phase(); ph != string(phaseDispatched) || id != "build-1" {
		t.Fatalf("phase %s %q, want dispatched to build-1", ph, id)
	}
	before := a.events.Len()
	_, err = a.Extend(ctx, "deps", "fetch", bytes.Repeat([]byte{'x'}, maxExtendContent))
	if code(err) != codes.Unavailable || !errors.Is(err, measure.ErrLogWrite) {
		t.Fatalf("Extend on a full disk: %v (code %v), want Unavailable, nothing recorded", err, code(err))
	}
	if a.events.Len() != before {
		t.Fatalf("a failed Extend left %d records, want %d", a.events.Len(), before)
	}

	for _, p := range filler {
		os.Remove(p)
	}
	res, err := a.BindBuild(ctx, "build-1", testRequest, nil)
	if err != nil || res.Repeated {
		t.Fatalf("BindBuild once there is room: %+v, %v", res, err)
	}
	if _, err := a.Extend(ctx, "deps", "fetch", bytes.Repeat([]byte{'x'}, maxExtendContent)); err != nil {
		t.Fatalf("Extend once there is room: %v", err)
	}
	env, err := a.Attest(ctx, []byte("n"))
	if err != nil {
		t.Fatal(err)
	}
	mustVerify(t, env.Encode(), verify.Options{Nonce: []byte("n"), TrustedAKs: []crypto.PublicKey{b.AKPublic()}})
}
