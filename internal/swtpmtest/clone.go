package swtpmtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Clone starts another swtpm from a copy of t's persistent state: the same
// manufacturing (seeds, EK and its certificate, CA paths) without running
// swtpm_setup again, which takes seconds. The clone is a separate TPM that
// has just been powered on: its PCRs are reset and it holds no transient
// objects. Tests that need many throw-away TPMs make one with StartTPM and
// clone it. The clone stops in tb.Cleanup.
func (t *TPM) Clone(tb testing.TB) *TPM {
	tb.Helper()
	state, err := os.ReadFile(filepath.Join(filepath.Dir(t.Socket), "state", "tpm2-00.permall"))
	if err != nil {
		tb.Fatalf("read swtpm state to clone: %v", err)
	}
	dir, err := os.MkdirTemp("", "swtpm")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	stateDir := filepath.Join(dir, "state")
	if err := os.Mkdir(stateDir, 0o700); err != nil {
		tb.Fatal(err)
	}
	write(tb, filepath.Join(stateDir, "tpm2-00.permall"), string(state))

	sock := filepath.Join(dir, "tpm.sock")
	cmd := exec.Command("swtpm", "socket", "--tpm2",
		"--server", "type=unixio,path="+sock,
		"--ctrl", "type=unixio,path="+filepath.Join(dir, "ctrl.sock"),
		"--tpmstate", "dir="+stateDir,
		"--flags", "not-need-init,startup-clear")
	logf, err := os.Create(filepath.Join(dir, "swtpm.log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		tb.Fatalf("start swtpm: %v", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); logf.Close(); close(exited) }()
	tb.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	if err := waitSocket(sock, exited, &waitErr); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "swtpm.log"))
		tb.Fatalf("swtpm clone did not come up: %v\n%s", err, log)
	}
	c := *t
	c.Socket = sock
	return &c
}
