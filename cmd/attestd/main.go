// Command attestd is the attestation daemon of a build environment. See
// README.md and docs/architecture.md.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"
)

// stopDeadline bounds shutdown after SIGTERM or SIGINT. run normally
// returns well within it (calls in progress get shutdownGrace, then the TPM
// is closed under them); if anything still holds on, the process exits
// anyway rather than keep systemd waiting.
const stopDeadline = 15 * time.Second

// defaultMemoryLimit is the Go runtime's soft memory limit unless
// GOMEMLIMIT says otherwise: near the daemon's limits (a 32 MiB event log
// served by GetBundle) the heap would otherwise grow to twice what is live
// (docs/robustness.md, "Memory").
const defaultMemoryLimit = 64 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	context.AfterFunc(ctx, func() {
		time.AfterFunc(stopDeadline, func() {
			fmt.Fprintf(os.Stderr, "attestd: still stopping %v after the signal; exiting now\n", stopDeadline)
			os.Exit(1)
		})
	})
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exit(err, os.Stderr))
}
