package tpm

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/attestd/attestd/attest"
)

// silentRW accepts writes and never answers reads (a hung TPM without
// deadline support), until closed.
type silentRW struct{ closed chan struct{} }

func (s *silentRW) Write(p []byte) (int, error) { return len(p), nil }
func (s *silentRW) Read([]byte) (int, error)    { <-s.closed; return 0, io.EOF }
func (s *silentRW) Close() error                { close(s.closed); return nil }

// TestTransportDeadline: a TPM that does not answer fails the exchange
// within the deadline, with or without deadline support in the transport,
// and the failure is latched for every later exchange.
func TestTransportDeadline(t *testing.T) {
	a, b := net.Pipe() // supports deadlines
	defer b.Close()
	go io.Copy(io.Discard, b)
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.SetNonblock(fds[0], true)
	dev := os.NewFile(uintptr(fds[0]), "device") // a pollable *os.File, as a TPM device is
	defer syscall.Close(fds[1])
	for name, rw := range map[string]io.ReadWriteCloser{
		"socket":      a,
		"device file": dev,
		"no deadline": &silentRW{closed: make(chan struct{})},
	} {
		t.Run(name, func(t *testing.T) {
			tr := newTransport(rw, 50*time.Millisecond)
			defer tr.Close()
			if _, err := tr.Write([]byte("command")); err != nil {
				t.Fatalf("write: %v", err)
			}
			_, err := tr.Read(make([]byte, 16))
			if !errors.Is(err, attest.ErrDeviceFailed) {
				t.Fatalf("read from a silent TPM: %v, want ErrDeviceFailed", err)
			}
			if _, err2 := tr.Write([]byte("next")); !errors.Is(err2, attest.ErrDeviceFailed) {
				t.Fatalf("write after a failure: %v, want the latched failure", err2)
			}
		})
	}
}

// TestTransportCloseEndsExchange: Close ends an exchange that waits for a
// TPM answer, so shutdown never waits for a hung TPM.
func TestTransportCloseEndsExchange(t *testing.T) {
	tr := newTransport(&silentRW{closed: make(chan struct{})}, time.Hour)
	done := make(chan error, 1)
	go func() {
		_, err := tr.Read(make([]byte, 16))
		done <- err
	}()
	tr.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("read after Close succeeded")
		}
	case <-time.After(time.Minute):
		t.Fatal("read still waiting for the TPM a minute after Close")
	}
}

// TestOpenHungTPM: a swtpm socket that accepts but never answers fails
// Open with ErrDeviceFailed after the deadline instead of hanging.
func TestOpenHungTPM(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "hung.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go io.Copy(io.Discard, c)
		}
	}()
	_, err = Open(Config{Device: "unix:" + sock, Timeout: 100 * time.Millisecond, FirmwareLogPath: filepath.Join(t.TempDir(), "none")})
	if !errors.Is(err, attest.ErrDeviceFailed) {
		t.Fatalf("Open on a hung TPM: %v, want ErrDeviceFailed", err)
	}
}
