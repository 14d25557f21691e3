// Package e2e runs the built binaries end to end: attestd on a software TPM
// (swtpm) and the shell executor of docs/integrating.md, verified with
// attestctl as a consumer would.
package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attestd/attestd/internal/swtpmtest"
)

// moduleRoot is the repository root (tests run in their package dir).
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// buildBinaries builds attestd and attestctl into a temp dir.
func buildBinaries(t *testing.T, root string) string {
	t.Helper()
	bin := t.TempDir()
	cmd := exec.Command("go", "build", "-o", bin+"/", "./cmd/attestd", "./cmd/attestctl")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type runner struct {
	t   *testing.T
	env []string
	dir string
	bin string
}

func (r *runner) run(name string, args ...string) (int, string) {
	r.t.Helper()
	if !strings.Contains(name, "/") {
		name = filepath.Join(r.bin, name)
	}
	cmd := exec.Command(name, args...)
	cmd.Env = r.env
	cmd.Dir = r.dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		r.t.Fatalf("%s: %v", name, err)
	}
	return 0, out.String()
}

func (r *runner) must(name string, args ...string) string {
	r.t.Helper()
	code, out := r.run(name, args...)
	if code != 0 {
		r.t.Fatalf("%s %s: exit %d\n%s", name, strings.Join(args, " "), code, out)
	}
	return out
}

func TestShellExecutorOnSwtpm(t *testing.T) {
	root := moduleRoot(t)
	bin := buildBinaries(t, root)
	sw := swtpmtest.StartTPM(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("backend: tpm\nexecutors: [/bin/sh]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run")
	ctx, cancel := context.WithCancel(context.Background())
	daemon := exec.CommandContext(ctx, filepath.Join(bin, "attestd"), "--config", cfg, "--runtime-dir", run, "--tpm-device", "unix:"+sw.Socket)
	var dlog bytes.Buffer
	daemon.Stderr = &dlog
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); daemon.Wait() })
	sock := filepath.Join(run, "attestd.sock")
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("attestd did not start:\n%s", dlog.String())
		}
	}
	work := t.TempDir()
	r := &runner{t: t, dir: work, bin: bin, env: append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "ATTESTD_SOCKET="+sock)}

	// The control plane: first contact pins the AK (trust on first use; see
	// docs/verifying.md), admission with a fresh nonce.
	r.must("attestctl", "identity", "--out", "launch.intoto.jsonl")
	if err := os.WriteFile(filepath.Join(work, "ak.pem"), []byte(r.must("attestctl", "export-ak", "launch.intoto.jsonl")), 0o644); err != nil {
		t.Fatal(err)
	}
	// The file identity writes is the one attestd keeps in its runtime dir:
	// the launch attestation and the event log it names, verifiable as is.
	for _, f := range []string{filepath.Join(work, "launch.intoto.jsonl"), filepath.Join(run, "launch.intoto.jsonl")} {
		if out := r.must("attestctl", "verify", "--trust-ak", "ak.pem", f); !strings.Contains(out, "VERIFIED") {
			t.Errorf("verify %s:\n%s", f, out)
		}
	}
	admission := strings.Repeat("a1", 32)
	r.must("attestctl", "attest", "--nonce", admission, "--out", "admission.intoto.jsonl")
	r.must("attestctl", "verify", "--nonce", admission, "--trust-ak", "ak.pem", "admission.intoto.jsonl")

	// The executor: the documented script.
	dispatch := strings.Repeat("d1", 32)
	r.must(filepath.Join(root, "docs/examples/shell-executor.sh"), "build-1042", work, dispatch)

	// What identity, bind and complete wrote verifies as a chain without the
	// daemon's bundle: each file carries the event log its attestation names.
	var chain []byte
	for _, f := range []string{"launch.intoto.jsonl", "dispatch.intoto.jsonl", "complete.intoto.jsonl"} {
		b, err := os.ReadFile(filepath.Join(work, f))
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, b...)
	}
	if err := os.WriteFile(filepath.Join(work, "chain.intoto.jsonl"), chain, 0o644); err != nil {
		t.Fatal(err)
	}
	if out := r.must("attestctl", "verify", "--nonce", "dispatch="+dispatch, "--build-id", "build-1042", "--trust-ak", "ak.pem",
		"chain.intoto.jsonl"); !strings.Contains(out, "VERIFIED") {
		t.Errorf("verify launch, dispatch and completion files:\n%s", out)
	}

	// The consumer: the whole bundle, chained.
	out := r.must("attestctl", "verify", "--nonce", "attest="+admission, "--nonce", "dispatch="+dispatch,
		"--build-id", "build-1042", "--trust-ak", "ak.pem", "build.intoto.jsonl")
	for _, want := range []string{"chain-event-log", "statement-subjects", "build-events", "VERIFIED"} {
		if !strings.Contains(out, want) {
			t.Errorf("verify output lacks %q:\n%s", want, out)
		}
	}

	// Negative: a second build, another build ID expected, another nonce.
	if code, out := r.run("attestctl", "bind", "--build-id", "build-2"); code != 1 || !strings.Contains(out, "FailedPrecondition") {
		t.Errorf("second build: exit %d\n%s", code, out)
	}
	for _, tc := range []struct {
		args  []string
		check string
	}{
		{[]string{"--build-id", "build-9"}, "chain-build-id"},
		{[]string{"--nonce", "dispatch=" + strings.Repeat("00", 32)}, "nonce"},
	} {
		args := append(append([]string{"verify", "--trust-ak", "ak.pem"}, tc.args...), "build.intoto.jsonl")
		code, out := r.run("attestctl", args...)
		if code != 1 || !strings.Contains(out, tc.check) {
			t.Errorf("verify %v: exit %d, want 1 naming %s\n%s", tc.args, code, tc.check, out)
		}
	}
}

// TestIntegratingDocShowsTheTestedScript keeps docs/integrating.md and the
// script this test runs identical.
func TestIntegratingDocShowsTheTestedScript(t *testing.T) {
	root := moduleRoot(t)
	script, err := os.ReadFile(filepath.Join(root, "docs/examples/shell-executor.sh"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs/integrating.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, script) {
		t.Fatal("docs/integrating.md does not contain docs/examples/shell-executor.sh verbatim; paste the script into it")
	}
}
