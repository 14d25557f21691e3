package doccmd

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/attestd/attestd/internal/petest"
)

// socketWait bounds the wait for attestd's socket: the daemon starts in well
// under a second on an idle machine, but CI machines run at load 5-10.
const socketWait = 60 * time.Second

// buildBinaries builds attestd and attestctl from this tree into a
// directory the sessions put first on PATH.
func buildBinaries(t *testing.T, root string) string {
	bin := filepath.Join(t.TempDir(), "bin")
	cmd := exec.Command("go", "build", "-o", bin+"/", "./cmd/attestd", "./cmd/attestctl", "./cmd/attestfleet")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/attestd ./cmd/attestctl ./cmd/attestfleet: %v\n%s", err, out)
	}
	return bin
}

// newTemplate makes the files the documented commands name, once; each
// session gets a copy (newWorkdir). What depends on the session's daemon
// (ak.pem, policy.yaml) is written by startSession.
func newTemplate(t *testing.T, root, bin string) string {
	dir := t.TempDir()
	write := func(name string, b []byte) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A build: its request, input, output and provenance statement.
	write("request.json", []byte(`[{"name": "source", "uri": "git+https://example.com/app@refs/heads/main",
  "digest": {"gitCommit": "3f2a9c1d5e8b7a6f4c3d2e1f0a9b8c7d6e5f4a3b"}}]`+"\n"))
	write("dep.tar", []byte("dependency bytes\n"))
	app := []byte("app built from dependency bytes\n")
	write("app.bin", app)
	sum := sha256.Sum256(app)
	write("provenance.json", fmt.Appendf(nil, `{"_type": "https://in-toto.io/Statement/v1",
 "subject": [{"name": "app.bin", "digest": {"sha256": "%x"}}],
 "predicateType": "https://slsa.dev/provenance/v1",
 "predicate": {"buildDefinition": {"buildType": "https://example.com/doccmd/v1", "externalParameters": {}},
   "runDetails": {"builder": {"id": "https://example.com/doccmd"}}}}`+"\n", sum))
	// attestd's config for probe-storage: no storage requirement.
	write("attestd.yaml", []byte("backend: tpm\n"))
	// The key that signs verification results.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write("result-key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	// A baked image's files: a root file system, a UKI, a disk image; the
	// bake key, reference values and provenance made by attestctl itself.
	write("rootfs/etc/attestd/config.yaml", []byte("executors: [/usr/bin/build-runner]\nimage_metadata: /usr/lib/attestd/image.json\n"))
	write("rootfs/usr/bin/attestd", []byte("attestd\n"))
	write("rootfs/usr/bin/build-runner", []byte("build-runner\n"))
	write("rootfs/usr/lib/attestd/image.json", []byte(`{"name": "doccmd-runner", "version": "1"}`+"\n"))
	roothash := hex.EncodeToString(sum[:])
	write("uki.efi", petest.UKI("console=ttyS0 roothash="+roothash+" ro", nil))
	write("disk.img", []byte("disk image\n"))
	run(t, dir, bin, "attestctl", "reference", "--root", "rootfs", "--uki", "uki.efi", "--key", "bake-key.pem", "--new-key",
		"--pub-out", "bake-key.pub.pem", "--out", "reference.intoto.json",
		"--provenance-out", "provenance.intoto.json", "--subject", "disk.img", "--subject", "uki.efi", "--param", "suite=bookworm")
	// A real bundle from the image e2e, with its AK, bake key and reference
	// values (verify/testdata/e2e).
	for _, f := range []string{"ak.pem", "bake-key.pub.pem", "bundle.intoto.jsonl", "reference.intoto.json"} {
		b, err := os.ReadFile(filepath.Join(root, "verify/testdata/e2e", f))
		if err != nil {
			t.Fatal(err)
		}
		write(filepath.Join("e2e", f), b)
	}
	write("e2e/policy.yaml", []byte("version: 1\ntrust:\n  tpm:\n    pinned_aks: [ak.pem]\n"))
	return dir
}

// run runs a command of bin in dir and fails the test if it fails.
func run(t *testing.T, dir, bin, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, name), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	return out
}

// A session is one document's sandbox: a working directory with the
// template's files and an attestd of its own on the simulator.
type session struct {
	work, runtime, socket string
}

// startSession copies the template into a fresh working directory, starts
// attestd for it (stopped at the end of the test) and pins its AK in ak.pem.
func startSession(t *testing.T, template, bin string) *session {
	base := t.TempDir()
	s := &session{work: filepath.Join(base, "work"), runtime: filepath.Join(base, "run")}
	s.socket = filepath.Join(s.runtime, "attestd.sock")
	if err := os.CopyFS(s.work, os.DirFS(template)); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, bin, s)
	ak := run(t, s.work, bin, "attestctl", "export-ak", filepath.Join(s.runtime, "launch.intoto.jsonl"))
	if err := os.WriteFile(filepath.Join(s.work, "ak.pem"), ak, 0o644); err != nil {
		t.Fatal(err)
	}
	policy := "version: 1\ntrust:\n  tpm:\n    pinned_aks: [ak.pem]\nbuild:\n  id: build-1\n"
	if err := os.WriteFile(filepath.Join(s.work, "policy.yaml"), []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// startDaemon runs README's first tour command, attestd --backend=simulator
// --runtime-dir DIR, and waits until it wrote its launch attestation and its
// socket answers.
func startDaemon(t *testing.T, bin string, s *session) {
	var log syncBuffer
	cmd := exec.Command(filepath.Join(bin, "attestd"), "--backend=simulator", "--runtime-dir", s.runtime)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("attestd did not stop within 30 s of SIGTERM:\n%s", log.String())
		}
	})
	deadline := time.Now().Add(socketWait)
	for {
		select {
		case err := <-exited:
			t.Fatalf("attestd --backend=simulator --runtime-dir %s exited before serving: %v\n%s", s.runtime, err, log.String())
		default:
		}
		// The socket is taken first, the launch attestation written before
		// serving.
		_, err := os.Stat(filepath.Join(s.runtime, "launch.intoto.jsonl"))
		if err == nil {
			var c net.Conn
			if c, err = net.Dial("unix", s.socket); err == nil {
				c.Close()
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("attestd did not write its launch attestation and answer on %s within %v: %v\n%s", s.socket, socketWait, err, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer the daemon's output goroutine and the test
// can share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runScript runs a session's script with bash, the built binaries first on
// PATH and ATTESTD_SOCKET set to the session's daemon, and returns its
// output (stdout and stderr interleaved) and error.
func (s *session) runScript(ctx context.Context, bin, script string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "bash", "--noprofile", "--norc", "-c", script)
	cmd.Dir = s.work
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"ATTESTD_SOCKET="+s.socket, "HOME="+s.work)
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}
