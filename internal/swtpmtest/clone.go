package swtpmtest

import (
	"os"
	"path/filepath"
	"testing"
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

	sock := serve(tb, dir, stateDir)
	c := *t
	c.Socket = sock
	return &c
}
