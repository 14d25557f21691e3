package main

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/attestd/attestd/agent"
	apiv1 "github.com/attestd/attestd/agent/api/v1"
)

// stuckTPM is a unix socket that accepts connections and never answers, as
// a swtpm busy with another client looks; it reports each connection.
func stuckTPM(t *testing.T) (path string, connected <-chan struct{}) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "stuck-tpm.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	c := make(chan struct{}, 1)
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, conn)
			select {
			case c <- struct{}{}:
			default:
			}
		}
	}()
	return path, c
}

// TestSecondDaemonFailsBeforeTPM: a second attestd on the runtime dir of a
// running one stops at the single-instance lock, before it opens its TPM
// (here one that would never answer), and the first keeps serving.
func TestSecondDaemonFailsBeforeTPM(t *testing.T) {
	dir := t.TempDir()
	first := startDaemonIn(t, dir, "--backend=simulator")
	tpmPath, connected := stuckTPM(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	var log syncBuffer
	go func() {
		done <- runFn(ctx, []string{"--config", filepath.Join(dir, "config.yaml"), "--runtime-dir", first.dir,
			"--backend=tpm", "--tpm-device=unix:" + tpmPath}, &log)
	}()
	var err error
	select {
	case err = <-done:
	case <-connected:
		// Do not wait for it: a daemon stuck on a TPM may not return.
		t.Fatalf("the second daemon got as far as connecting to the TPM\n%s", log.String())
	}
	if !errors.Is(err, agent.ErrLocked) {
		t.Fatalf("second daemon: %v, want agent.ErrLocked\n%s", err, log.String())
	}
	if got := exitCode(err); got != 1 {
		t.Errorf("exit code %d, want 1", got)
	}
	t.Logf("second daemon: %v", err)

	if _, err := os.Stat(filepath.Join(first.dir, agent.SocketName)); err != nil {
		t.Errorf("the first daemon's socket: %v", err)
	}
	if _, err := first.client.GetIdentity(context.Background(), &apiv1.GetIdentityRequest{}); err != nil {
		t.Errorf("the first daemon after the second failed: %v", err)
	}
}
