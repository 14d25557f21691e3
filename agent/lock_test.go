package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestLock(t *testing.T) {
	dir := t.TempDir()
	l, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	// flock locks belong to open files: a second open in this process
	// conflicts as another process would.
	if _, err := Lock(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Lock: %v, want ErrLocked", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = Lock(dir)
	if err != nil {
		t.Fatalf("Lock after Close: %v", err)
	}
	l.Close()
}

// TestLockHelperProcess is not a test: it is the first daemon of
// TestLockReleasedOnCrash. It takes the lock, says so and waits to be
// killed.
func TestLockHelperProcess(t *testing.T) {
	dir := os.Getenv("ATTESTD_TEST_LOCK_DIR")
	if dir == "" {
		t.Skip("helper process")
	}
	if _, err := Lock(dir); err != nil {
		fmt.Println(err)
		os.Exit(3)
	}
	fmt.Println("locked")
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// TestLockReleasedOnCrash: a daemon killed with SIGKILL leaves its lock file
// behind, and the kernel has released the lock.
func TestLockReleasedOnCrash(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelperProcess$")
	cmd.Env = append(os.Environ(), "ATTESTD_TEST_LOCK_DIR="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "locked" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper: %q, %v", line, err)
	}
	_, err = Lock(dir)
	if !errors.Is(err, ErrLocked) {
		t.Errorf("Lock while another process holds it: %v, want ErrLocked", err)
	}
	t.Logf("error: %v", err) // names the file and the holder's pid
	cmd.Process.Kill()
	cmd.Wait()
	l, err := Lock(dir)
	if err != nil {
		t.Fatalf("Lock after the holder was killed: %v", err)
	}
	l.Close()
}
