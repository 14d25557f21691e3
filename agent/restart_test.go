package agent

import (
	"context"
	"crypto"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/internal/swtpmtest"
	"github.com/attestd/attestd/verify"
)

// TestRestartKeepsTheBuildOnSwtpm: a daemon restart within the boot keeps
// the build binding (a second build ID is still refused), keeps the env key
// and records the restart; the bundle still verifies as one chain.
func TestRestartKeepsTheBuildOnSwtpm(t *testing.T) {
	sw := swtpmtest.StartTPM(t)
	f := newFixture(t)
	keyFile := filepath.Join(f.dir, "run", KeyFileName)
	if err := os.MkdirAll(filepath.Dir(keyFile), 0o750); err != nil {
		t.Fatal(err)
	}
	open := func() *tpm.Backend {
		b, err := tpm.Open(tpm.Config{Device: "unix:" + sw.Socket, KeyFile: keyFile})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ctx := context.Background()

	b1 := open()
	a1 := f.agent(t, b1)
	if err := a1.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	first, err := a1.BindBuild(ctx, "build-1", testRequest, []byte("dispatch"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a1.Extend(ctx, "deps", "fetch", []byte("lib@sha256:00")); err != nil {
		t.Fatal(err)
	}
	b1.Close() // the daemon stops

	b2 := open()
	defer b2.Close()
	if !b2.KeyReused {
		t.Fatalf("env key not reloaded: %s", b2.KeyNotReused)
	}
	a2 := f.agent(t, b2)
	if err := a2.Launch(ctx); err != nil {
		t.Fatalf("relaunch: %v", err)
	}
	if a2.KeyDigest() != a1.KeyDigest() {
		t.Fatal("the env key changed across a restart")
	}
	if _, err := a2.BindBuild(ctx, "build-2", testRequest, nil); !errors.Is(err, errState) {
		t.Fatalf("second build ID after restart: %v, want errState", err)
	}
	again, err := a2.BindBuild(ctx, "build-1", testRequest, nil)
	if err != nil || !again.Repeated || string(again.Envelope) != string(first.Envelope) {
		t.Fatalf("same build ID after restart: %v", err)
	}
	_, recs := a2.EventLog()
	var types []string
	for _, r := range recs {
		types = append(types, r.Type.String())
	}
	if !strings.Contains(strings.Join(types, ","), "build-id,runtime,restart") {
		t.Fatalf("events after restart: %v", types)
	}
	if _, err := a2.Complete(ctx, "build-1", testInputs, testOutputs, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a2.SignStatement(ctx, "build-1", provenance(strings.Repeat("3", 64))); err != nil {
		t.Fatal(err)
	}
	rep := verify.BundleReport(a2.Bundle().Encode(), verify.Options{
		Nonces:     map[attest.Purpose][]byte{attest.PurposeDispatch: []byte("dispatch")},
		BuildID:    "build-1",
		TrustedAKs: []crypto.PublicKey{b2.AKPublic()},
		Verifiers:  testVerifiers(),
	})
	if !rep.OK {
		t.Fatalf("bundle after restart: %v", rep.Failed())
	}
}

// failingBackend fails Evidence on demand: a TPM error mid-call.
type failingBackend struct {
	attest.Backend
	fail bool
}

func (f *failingBackend) Evidence(ctx context.Context, b attest.Binding) (*attest.Evidence, error) {
	if f.fail {
		return nil, errors.New("TPM_RC_FAILURE (injected)")
	}
	return f.Backend.Evidence(ctx, b)
}

// TestQuoteFailureIsReported: a failing quote after the build ID was
// extended is reported, the build stays bound (the register cannot be
// undone), and a retry with the same build ID completes the dispatch.
func TestQuoteFailureIsReported(t *testing.T) {
	fb := &failingBackend{Backend: newBackend(t, openSim(t))}
	a := newFixture(t).agent(t, fb)
	ctx := context.Background()
	if err := a.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	fb.fail = true
	if _, err := a.BindBuild(ctx, "build-1", testRequest, nil); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("BindBuild with a failing TPM: %v", err)
	}
	if _, err := a.BindBuild(ctx, "build-2", testRequest, nil); !errors.Is(err, errState) {
		t.Fatalf("another build after a failed dispatch quote: %v", err)
	}
	fb.fail = false
	r, err := a.BindBuild(ctx, "build-1", testRequest, nil)
	if err != nil || r.Repeated {
		t.Fatalf("retry: %+v %v", r, err)
	}
	fb.fail = true
	if _, err := a.Complete(ctx, "build-1", testInputs, testOutputs, nil); err == nil {
		t.Fatal("Complete with a failing TPM succeeded")
	}
	if _, err := a.SignStatement(ctx, "build-1", provenance(strings.Repeat("3", 64))); !errors.Is(err, errState) {
		t.Fatalf("SignStatement before a completion attestation exists: %v", err)
	}
	fb.fail = false
	if _, err := a.Complete(ctx, "build-1", testInputs, testOutputs, nil); err != nil {
		t.Fatalf("retry Complete: %v", err)
	}
	if _, err := a.Complete(ctx, "build-1", testInputs, testOutputs, nil); !errors.Is(err, errState) {
		t.Fatalf("Complete after success: %v", err)
	}
}

// TestStateAheadOfLogRefused: a state directory holding a completion the event log
// does not record (edited, or from elsewhere) stops the daemon.
func TestStateAheadOfLogRefused(t *testing.T) {
	sim := openSim(t)
	f := newFixture(t)
	ctx := context.Background()
	b1 := newBackend(t, sim)
	a1 := f.agent(t, b1)
	if err := a1.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a1.BindBuild(ctx, "build-1", testRequest, nil); err != nil {
		t.Fatal(err)
	}
	b1.Close()
	if err := putState(filepath.Join(f.dir, "run"), stateComplete, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	err := f.agent(t, newBackend(t, sim)).Launch(ctx)
	if err == nil || !strings.Contains(err.Error(), "does not record") {
		t.Fatalf("Launch with state ahead of the log: %v", err)
	}
}
