package tpm

import (
	"context"
	"path/filepath"
	"testing"

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
