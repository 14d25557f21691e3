// Package robust runs the built attestd (CGO_ENABLED=0, backend tpm) on
// swtpm and makes it suffer:
//
//   - TestTPMFaults, TestSIGTERMWhileTPMHangs, TestWatchdogStopsWhenTPMHangs:
//     a fault-injecting proxy (internal/tpmfault) between attestd and swtpm
//     drops, delays, corrupts or cuts off TPM responses, or kills the TPM,
//     with the daemon launched or bound to a build;
//   - TestCrashWindows: SIGKILL while the proxy holds a PCR extend whose
//     event is already in the log (the instants a random kill rarely hits);
//   - TestCrashLoop: SIGKILL at random instants (seeded, logged) through the
//     build lifecycle, restarting on the same runtime dir and swtpm (no
//     resource manager).
//
// The tests need swtpm (scripts/install-deps.sh); they fail in CI without
// it and skip elsewhere. Times are logged (go test -v), never asserted;
// every wait has a generous bound that names what it waited for. Knobs
// (environment):
//
//	ATTESTD_CRASH_ITERATIONS  crash-loop kills (default 60)
//	ATTESTD_CRASH_SEED        crash-loop seed (default: time-based, logged)
//	ATTESTD_CRASH_LENIENT=1   report restarts that refuse instead of failing
package robust

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var build struct {
	once sync.Once
	dir  string
	err  error
	out  []byte
}

// binaries builds attestd and attestctl (CGO_ENABLED=0, as shipped) once
// per test binary and returns the directory holding them.
func binaries(t *testing.T) string {
	t.Helper()
	build.once.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			build.err = err
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		dir, err := os.MkdirTemp("", "robust-bin")
		if err != nil {
			build.err = err
			return
		}
		build.dir = dir
		cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/attestd", "./cmd/attestctl")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		build.out, build.err = cmd.CombinedOutput()
	})
	if build.err != nil {
		t.Fatalf("go build attestd attestctl: %v\n%s", build.err, build.out)
	}
	return build.dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}
