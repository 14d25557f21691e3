// Package pgtest starts a private PostgreSQL cluster for a test, from the
// distribution's server binaries (Debian: /usr/lib/postgresql/N/bin, from
// the postgresql package that scripts/install-deps.sh installs): initdb in
// a temp directory, the server listening only on a unix socket in that
// directory (no TCP port), torn down in t.Cleanup. It never uses a system
// cluster. As root the server runs as the "postgres" user, since
// PostgreSQL refuses to run as root.
//
// Test-only: it imports "testing" and must never be imported by non-test
// code.
package pgtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Waits are generous: the machines that run the tests are small and busy.
const (
	readyTimeout    = 2 * time.Minute
	shutdownTimeout = time.Minute
)

// Options change how the cluster runs; the zero value is the fast one
// tests want.
type Options struct {
	// Durable keeps fsync on, as a production server runs: for
	// benchmarks whose figures must include the cost of a commit. Off, a
	// commit is not flushed to disk (the data dies with the test anyway).
	Durable bool
}

// Server is a running (or stopped) private PostgreSQL cluster.
type Server struct {
	dir  string // holds data/, the socket and server.log
	bin  string // the directory of initdb and postgres
	opts Options
	cred *syscall.Credential
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	err  error         // cmd's exit, once done is closed
}

// Start creates a cluster in a temp directory and starts it; it stops in
// t.Cleanup. Without the server binaries the test fails, naming
// scripts/install-deps.sh: the tests that use this run in CI, never skip.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith is Start with options.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, err := binDir()
	if err != nil {
		t.Fatalf("%v: run scripts/install-deps.sh (package postgresql)", err)
	}
	// unix socket paths are limited to ~108 bytes: keep the directory short.
	dir, err := os.MkdirTemp("", "pgtest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &Server{dir: dir, bin: bin, opts: opts}
	if os.Geteuid() == 0 {
		if s.cred, err = postgresUser(); err != nil {
			t.Fatalf("%v: run scripts/install-deps.sh (package postgresql creates it)", err)
		}
		if err := os.Chown(dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	initdb := s.command(filepath.Join(bin, "initdb"), "-D", s.data(), "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--no-locale", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if s.running() {
			s.Stop(t)
		}
	})
	s.Start(t)
	return s
}

// DSN is the connection string for database db (e.g. "postgres") as the
// superuser "postgres", over the cluster's socket.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("host=%s port=5432 user=postgres dbname=%s sslmode=disable", s.dir, db)
}

// CreateDB creates an empty database named name and returns its DSN.
func (s *Server) CreateDB(t testing.TB, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	c, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		t.Fatalf("connect to create database %q: %v", name, err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create database %q: %v", name, err)
	}
	return s.DSN(name)
}

// Start starts the stopped server and waits until it accepts connections.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	if s.running() {
		t.Fatal("pgtest: Start: the server is running")
	}
	log, err := os.OpenFile(filepath.Join(s.dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	s.cmd = s.command(filepath.Join(s.bin, "postgres"), "-D", s.data(), "-k", s.dir,
		"-c", "listen_addresses=", "-c", "fsync="+strconv.FormatBool(s.opts.Durable), "-c", "max_connections=200")
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		log.Close()
		t.Fatalf("start postgres: %v", err)
	}
	s.done = make(chan struct{})
	go func() { s.err = s.cmd.Wait(); log.Close(); close(s.done) }()
	if err := s.waitReady(); err != nil {
		t.Fatalf("postgres did not accept connections on %s: %v\n%s", s.dir, err, s.Log())
	}
}

// Stop shuts the server down (fast shutdown: open transactions roll back,
// clients are disconnected) and waits for it to exit.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if !s.running() {
		t.Fatal("pgtest: Stop: the server is not running")
	}
	s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(shutdownTimeout):
		s.cmd.Process.Kill()
		<-s.done
		t.Fatalf("postgres did not shut down within %v of SIGINT; killed\n%s", shutdownTimeout, s.Log())
	}
}

// Log returns the server's log so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
	return string(b)
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

func (s *Server) running() bool {
	if s.done == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// command runs name as the postgres user when we are root.
func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = s.dir
	cmd.Env = []string{"LC_ALL=C", "PATH=" + s.bin + ":/usr/bin:/bin"}
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd
}

// waitReady waits until the server answers a connection on its socket.
func (s *Server) waitReady() error {
	deadline := time.Now().Add(readyTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("postgres exited: %v", s.err)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := pgconn.Connect(ctx, s.DSN("postgres"))
		if err == nil {
			c.Close(ctx)
			cancel()
			return nil
		}
		cancel()
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("still refused after %v: %v", readyTimeout, last)
}

// binDir finds the server binaries: the newest /usr/lib/postgresql/N/bin
// (Debian keeps them off PATH), else initdb on PATH.
func binDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(d string) int { v, _ := strconv.Atoi(filepath.Base(filepath.Dir(d))); return v }
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil && isExec(filepath.Join(filepath.Dir(p), "postgres")) {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("PostgreSQL server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin or on PATH")
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// postgresUser is the credential of the system user "postgres".
func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and PostgreSQL refuses to: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user postgres: uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user postgres: gid %q: %w", u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}
