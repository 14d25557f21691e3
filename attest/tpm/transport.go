package tpm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/attestd/attestd/attest"
)

// DefaultTimeout bounds one TPM command when Config.Timeout is zero. A
// discrete TPM answers an ECC key creation in well under a second and swtpm
// in milliseconds; 30 s leaves room for a TPM that is slow but alive and
// for software emulation on a loaded host.
const DefaultTimeout = 30 * time.Second

// transport bounds every exchange with the TPM by a deadline and latches
// the first failure: once a write or read failed, timed out or returned
// something that is not a TPM response, every later exchange fails at once
// with the same error, wrapping attest.ErrDeviceFailed. The TPM's state is
// then unknown (a late response could be taken for the next command's), so
// the only recovery is a new connection: the daemon exits and is restarted.
//
// A transport that supports deadlines (a socket, a pollable device) gets
// them set per operation; any other (the in-process simulator, a device
// that cannot poll) runs each operation in a goroutine that is abandoned
// when the deadline passes.
type transport struct {
	rw      io.ReadWriteCloser
	timeout time.Duration

	quit chan struct{} // closed by Close: ends an exchange in progress

	mu     sync.Mutex // guards failed and closed
	failed error
	closed bool
}

// deadliner is implemented by net.Conn and *os.File.
type deadliner interface {
	SetDeadline(t time.Time) error
}

func newTransport(rw io.ReadWriteCloser, timeout time.Duration) *transport {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &transport{rw: rw, timeout: timeout, quit: make(chan struct{})}
}

// Err returns the latched failure, or nil.
func (t *transport) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}

// fail latches err (the first one wins) and returns the latched error.
func (t *transport) fail(err error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.failed == nil {
		if !errors.Is(err, attest.ErrDeviceFailed) {
			err = fmt.Errorf("%w: %w", attest.ErrDeviceFailed, err)
		}
		t.failed = err
	}
	return t.failed
}

func (t *transport) Write(p []byte) (int, error) { return t.io("write command", t.rw.Write, p) }

func (t *transport) Read(p []byte) (int, error) {
	if f, ok := t.rw.(*os.File); ok {
		return t.io("read response", func(p []byte) (int, error) { return readDevice(f, p) }, p)
	}
	return t.io("read response", t.rw.Read, p)
}

// readDevice reads a response from a TPM character device. os.OpenFile
// opens a pollable device non-blocking, and the kernel then runs each
// command asynchronously: a read before the command finished returns 0
// bytes (which os.File reports as io.EOF). So wait until the device is
// readable instead, under the file's deadline (what go-tpm's tpmutil does
// for a bare *os.File, which this transport hides from it).
func readDevice(f *os.File, p []byte) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, rerr = syscall.Read(int(fd), p)
		return !(rerr == syscall.EAGAIN || (rerr == nil && n == 0))
	}); err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, rerr
	}
	return n, nil
}

func (t *transport) io(what string, op func([]byte) (int, error), p []byte) (int, error) {
	if err := t.Err(); err != nil {
		return 0, err
	}
	if d, ok := t.rw.(deadliner); ok {
		if err := d.SetDeadline(time.Now().Add(t.timeout)); err == nil {
			n, err := op(p)
			if err != nil {
				return n, t.fail(t.describe(what, err))
			}
			return n, nil
		} else if !errors.Is(err, os.ErrNoDeadline) {
			return 0, t.fail(fmt.Errorf("TPM %s: set deadline: %w", what, err))
		}
	}
	type result struct {
		n   int
		err error
	}
	// The goroutine gets its own buffer: if it is abandoned, a late read
	// must not write into the caller's.
	buf := make([]byte, len(p))
	copy(buf, p)
	done := make(chan result, 1)
	go func() {
		n, err := op(buf)
		done <- result{n, err}
	}()
	timer := time.NewTimer(t.timeout)
	defer timer.Stop()
	select {
	case r := <-done:
		copy(p, buf[:r.n])
		if r.err != nil {
			return r.n, t.fail(t.describe(what, r.err))
		}
		return r.n, nil
	case <-timer.C:
		return 0, t.fail(fmt.Errorf("TPM %s: no answer within %v", what, t.timeout))
	case <-t.quit:
		return 0, errClosed
	}
}

func (t *transport) describe(what string, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("TPM %s: no answer within %v", what, t.timeout)
	}
	return fmt.Errorf("TPM %s: %w", what, err)
}

// Close closes the underlying transport once. It does not wait for an
// exchange in progress: closing a socket or device ends a pending read.
func (t *transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	if t.failed == nil {
		t.failed = errClosed
	}
	close(t.quit)
	t.mu.Unlock()
	return t.rw.Close()
}
