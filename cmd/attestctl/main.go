// Command attestctl talks to attestd (identity, attest, log, the build
// lifecycle) and verifies its attestations (verify). Exit codes: 0 success /
// verified, 1 not verified or the daemon refused, 2 bad usage or unreadable
// input. Its reference is generated from the command definitions:
// docs/cli/attestctl.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
