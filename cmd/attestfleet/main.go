// Command attestfleet is the fleet verifier service of a build platform's
// control plane. See docs/fleet.md.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// stopDeadline bounds shutdown after SIGTERM or SIGINT: serve drains calls
// in progress for its drain time (default 10s) first.
const stopDeadline = 30 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	context.AfterFunc(ctx, func() {
		time.AfterFunc(stopDeadline, func() {
			fmt.Fprintf(os.Stderr, "attestfleet: still stopping %v after the signal; exiting now\n", stopDeadline)
			os.Exit(1)
		})
	})
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exit(err, os.Stderr))
}
