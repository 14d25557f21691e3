package tpm

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/internal/swtpmtest"
)

// TestReopenAfterCrashFlushesLeftovers: a daemon that dies without
// flushing leaves its AK and env key loaded in a TPM without a resource
// manager. Each new start flushes them, so starts never run out of object
// slots (swtpm has three).
func TestReopenAfterCrashFlushesLeftovers(t *testing.T) {
	sock := swtpmtest.Start(t)
	dir := t.TempDir()
	cfg := Config{Device: "unix:" + sock, KeyFile: filepath.Join(dir, "envkey.blob"), FirmwareLogPath: filepath.Join(dir, "none")}
	var first []byte
	for i := range 6 {
		b, err := Open(cfg)
		if err != nil {
			t.Fatalf("start %d after %d crashes: %v", i, i, err)
		}
		if i > 0 && b.Flushed < 2 {
			t.Errorf("start %d flushed %d handles, want the AK and env key of the crashed one", i, b.Flushed)
		}
		ev, err := b.Evidence(context.Background(), attest.Binding{})
		if err != nil {
			t.Fatalf("start %d: evidence: %v", i, err)
		}
		pub, _ := ev.MustPart(PartEnvKeyPublic)
		if first == nil {
			first = pub
		} else if string(pub) != string(first) {
			t.Errorf("start %d: the env key changed across a crash within the boot", i)
		}
		b.tr.rw.Close() // die: no flush, no orderly close
	}
}

// TestReopenFlushesLeftoverSession: a session a killed attestd left (e.g.
// during ActivateCredential) is found and flushed at the next start; after
// a clean Close nothing is left to flush.
func TestReopenFlushesLeftoverSession(t *testing.T) {
	sock := swtpmtest.Start(t)
	cfg := Config{Device: "unix:" + sock, FirmwareLogPath: filepath.Join(t.TempDir(), "none")}
	b, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tpm2.StartAuthSession(b.rw, tpm2.HandleNull, tpm2.HandleNull, make([]byte, 16), nil,
		tpm2.SessionPolicy, tpm2.AlgNull, tpm2.AlgSHA256); err != nil {
		t.Fatal(err)
	}
	b.tr.rw.Close() // die with the AK, the env key and the session loaded
	b, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if b.Flushed != 3 {
		t.Errorf("start after a crash flushed %d handles, want 3 (AK, env key, session)", b.Flushed)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Flushed != 0 {
		t.Errorf("start after a clean stop flushed %d handles, want 0", b.Flushed)
	}
}
