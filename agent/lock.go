package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// LockName is the single-instance lock file in the runtime directory.
const LockName = "attestd.lock"

// ErrLocked means another attestd holds the runtime directory's lock.
var ErrLocked = errors.New("another attestd is running")

// InstanceLock is held for the life of the daemon. The kernel releases it
// when the process exits, however it exits.
type InstanceLock struct{ f *os.File }

// Lock takes the single-instance lock of runtime directory dir (an exclusive
// flock on dir/attestd.lock) without waiting; if another process holds it,
// the error wraps ErrLocked. Take it before opening the evidence backend, so
// that a second daemon stops before it touches a TPM the first one is using.
// The file is never removed: a removed lock file would let a third daemon
// lock a new file while the first still runs.
func Lock(dir string) (*InstanceLock, error) {
	path := filepath.Join(dir, LockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := flock(f); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is locked%s", ErrLocked, path, holder(path))
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// The PID is for the message a second daemon prints; the lock is the flock.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &InstanceLock{f: f}, nil
}

// Close releases the lock.
func (l *InstanceLock) Close() error { return l.f.Close() }

func flock(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// holder names the PID recorded in the lock file, if there is one.
func holder(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return ""
	}
	return fmt.Sprintf(" by pid %d", pid)
}
