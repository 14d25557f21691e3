package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/attestd/attestd/internal/pgtest"
)

// TestLoadCommand runs a tiny load through the command on a private
// PostgreSQL and checks what it wrote.
func TestLoadCommand(t *testing.T) {
	srv := pgtest.Start(t)
	out := t.TempDir()
	err := run([]string{"-dsn", srv.CreateDB(t, "load"), "-replicas", "2", "-workers", "2", "-snp", "2", "-tdx", "2", "-out", out})
	if err != nil {
		t.Fatalf("attestfleet-load: %v", err)
	}
	for _, f := range []string{"fleet-results.json", "fleet-per-core.png", "fleet-latency.png", "fleet-time.png"} {
		if fi, err := os.Stat(filepath.Join(out, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	if err := run([]string{"-replicas", "2"}); err == nil {
		t.Error("no -dsn: no error")
	}
}
