package main

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/attestd/attestd/agent"
	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/internal/swtpmtest"
	"github.com/attestd/attestd/scai"
	"github.com/attestd/attestd/verify"
)

// syncBuffer is a goroutine-safe log sink.
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

type testDaemon struct {
	dir    string
	client *apiv1.Client
	log    *syncBuffer
}

// startDaemon runs attestd in-process with args plus a runtime dir and a
// config allowing the test's uid, and waits for its socket.
func startDaemon(t *testing.T, args ...string) *testDaemon {
	t.Helper()
	return startDaemonIn(t, t.TempDir(), args...)
}

// startDaemonIn is startDaemon with the config and runtime dir (dir/run)
// under dir.
func startDaemonIn(t *testing.T, dir string, args ...string) *testDaemon {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte("executors: [/bin/sh]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return startDaemonNoConfig(t, dir, args...)
}

// startDaemonNoConfig is startDaemonIn with the config dir/config.yaml the
// test wrote.
func startDaemonNoConfig(t *testing.T, dir string, args ...string) *testDaemon {
	t.Helper()
	cfg := filepath.Join(dir, "config.yaml")
	run := filepath.Join(dir, "run")
	d := &testDaemon{dir: run, log: &syncBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runFn(ctx, append([]string{"--config", cfg, "--runtime-dir", run}, args...), d.log)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("attestd returned %v on shutdown; want nil", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("attestd did not stop within 20s")
		}
	})
	sock := filepath.Join(run, "attestd.sock")
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("attestd exited early: %v\n%s", err, d.log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("attestd socket did not appear\n%s", d.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c, err := apiv1.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	d.client = c
	return d
}

// runFn is run with stdout discarded: the daemon prints nothing there.
func runFn(ctx context.Context, args []string, stderr io.Writer) error {
	return run(ctx, args, io.Discard, stderr)
}

// verifyLines verifies one attestation given as the self-verifying JSON
// Lines bundle a client writes (the envelope, its inclusion proof if
// batched, and the event log it names), as a consumer reads it.
func verifyLines(lines []byte, opts verify.Options) (*dsse.Envelope, *verify.Result, error) {
	b, err := scai.DecodeBundle(lines)
	if err != nil {
		return nil, nil, err
	}
	if len(b.Envelopes) != 1 || len(b.Logs) != 1 {
		return nil, nil, fmt.Errorf("%d envelopes and %d event logs; want one of each", len(b.Envelopes), len(b.Logs))
	}
	return b.Envelopes[0], verify.Envelope(b.Envelopes[0], verify.MaterialOf(b), opts), nil
}

// attestAndVerify fetches a fresh attestation for a nonce and verifies it
// with opts; it returns the opened attestation.
func attestAndVerify(t *testing.T, d *testDaemon, opts verify.Options) *scai.Attestation {
	t.Helper()
	ctx := context.Background()
	nonce := []byte("nonce from the control plane")
	resp, err := d.client.Attest(ctx, &apiv1.AttestRequest{Nonce: nonce})
	if err != nil {
		t.Fatalf("Attest: %v\n%s", err, d.log)
	}
	opts.Nonce = nonce
	opts.Verifiers = []attest.Verifier{tpm.Verifier{}}
	env, r, err := verifyLines(scai.AttestationLines(resp.GetEnvelope(), resp.GetEventLog(), resp.GetInclusionProof()), opts)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK {
		for _, c := range r.Checks {
			t.Logf("%-20s ok=%v skip=%v %s", c.Name, c.OK, c.Skip, c.Detail)
		}
		t.Fatalf("not verified: %v", r.Failed())
	}
	op, err := scai.Open(env)
	if err != nil {
		t.Fatal(err)
	}
	return op.Attestation
}

// checkLaunchFile checks the launch attestation file in the runtime dir is
// the launch attestation the daemon serves, with the event log it names,
// and that it verifies on its own.
func checkLaunchFile(t *testing.T, d *testDaemon) {
	t.Helper()
	file, err := os.ReadFile(filepath.Join(d.dir, agent.LaunchAttestName))
	if err != nil {
		t.Fatalf("launch attestation not in the runtime dir: %v", err)
	}
	id, err := d.client.GetIdentity(context.Background(), &apiv1.GetIdentityRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if want := scai.AttestationLines(id.GetLaunchAttestation(), id.GetLaunchEventLog(), nil); !bytes.Equal(file, want) {
		t.Errorf("%s is not the launch attestation and event log the daemon serves:\n%s\nwant\n%s", agent.LaunchAttestName, file, want)
	}
	_, r, err := verifyLines(file, verify.Options{InsecureTrustEmbeddedAK: true, Verifiers: []attest.Verifier{tpm.Verifier{}}})
	if err != nil {
		t.Fatalf("%s: %v", agent.LaunchAttestName, err)
	}
	if !r.OK {
		t.Errorf("%s does not verify: %v", agent.LaunchAttestName, r.Failed())
	}
}

func TestDaemonOnSimulator(t *testing.T) {
	d := startDaemon(t, "--backend=simulator")
	if !strings.Contains(d.log.String(), "SIMULATOR") {
		t.Errorf("the simulator is not announced loudly:\n%s", d.log)
	}
	attestAndVerify(t, d, verify.Options{InsecureTrustEmbeddedAK: true})
	checkLaunchFile(t, d)
}

func TestDaemonOnSwtpm(t *testing.T) {
	sw := swtpmtest.StartTPM(t)
	d := startDaemon(t, "--backend=tpm", "--tpm-device=unix:"+sw.Socket)
	// First contact: pin the AK from the launch attestation, as an operator
	// would at a trusted first boot, then verify a fresh attestation with it.
	id, err := d.client.GetIdentity(context.Background(), &apiv1.GetIdentityRequest{})
	if err != nil {
		t.Fatal(err)
	}
	env, err := scai.ParseEnvelope(id.GetLaunchAttestation())
	if err != nil {
		t.Fatal(err)
	}
	op, err := scai.Open(env)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := tpm.AKPublic(op.Attestation.Evidence[0])
	if err != nil {
		t.Fatal(err)
	}
	a := attestAndVerify(t, d, verify.Options{TrustedAKs: []crypto.PublicKey{ak}})
	if _, ok := a.Evidence[0].Part(tpm.PartEKCert); !ok {
		t.Error("swtpm's EK certificate is not in the evidence")
	}
}

func TestDaemonFailures(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		wantMsg  string
	}{
		{"no tpm", []string{"--backend=tpm", "--tpm-device=" + filepath.Join(dir, "nope")}, 1, "no attestation device"},
		{"unknown backend", []string{"--backend=magic"}, 2, `invalid value "magic" for --backend: unknown backend; want auto, tpm, snp, tdx or simulator (see 'attestd --help')`},
		{"bad flag", []string{"--frobnicate"}, 2, "frobnicate"},
		{"missing config", []string{"--config", filepath.Join(dir, "missing.yaml")}, 1, "read config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log syncBuffer
			args := append([]string{"--runtime-dir", filepath.Join(dir, "run")}, tc.args...)
			if tc.name != "missing config" {
				cfg := filepath.Join(dir, "empty.yaml")
				os.WriteFile(cfg, nil, 0o644)
				args = append([]string{"--config", cfg}, args...)
			}
			err := runFn(context.Background(), args, &log)
			if err == nil {
				t.Fatal("run succeeded")
			}
			if got := exitCode(err); got != tc.wantCode {
				t.Errorf("exit code %d, want %d (%v)", got, tc.wantCode, err)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tc.wantMsg)
			}
			if strings.Count(err.Error(), "\n") > 0 {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestAutoNeverPicksSimulator(t *testing.T) {
	if _, err := os.Stat("/dev/tpmrm0"); err == nil {
		t.Skip("this machine has a TPM")
	}
	if _, err := os.Stat("/dev/tpm0"); err == nil {
		t.Skip("this machine has a TPM")
	}
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(cfg, nil, 0o644)
	err := runFn(context.Background(), []string{"--config", cfg, "--backend=auto", "--runtime-dir", t.TempDir()}, &syncBuffer{})
	if !errors.Is(err, attest.ErrNoDevice) {
		t.Fatalf("auto without a TPM: %v, want ErrNoDevice", err)
	}
}

// fakeSystemdNotify listens where the daemon sends sd_notify messages
// (NOTIFY_SOCKET) for the rest of the test.
func fakeSystemdNotify(t *testing.T) *net.UnixConn {
	t.Helper()
	notify := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", notify)
	return conn
}

// TestReadyAfterSocketAndLaunchAttestation checks READY=1 reaches systemd
// only once the socket and the launch attestation exist.
func TestReadyAfterSocketAndLaunchAttestation(t *testing.T) {
	conn := fakeSystemdNotify(t)
	dir := t.TempDir()
	got := make(chan string, 1)
	var seen [2]bool
	go func() {
		buf := make([]byte, 512)
		n, err := conn.Read(buf)
		if err != nil {
			got <- err.Error()
			return
		}
		// Look at the runtime dir at the moment READY arrives.
		_, e1 := os.Stat(filepath.Join(dir, "run", "attestd.sock"))
		_, e2 := os.Stat(filepath.Join(dir, "run", agent.LaunchAttestName))
		seen = [2]bool{e1 == nil, e2 == nil}
		got <- string(buf[:n])
	}()
	startDaemonIn(t, dir, "--backend=simulator")
	select {
	case msg := <-got:
		if msg != "READY=1" {
			t.Fatalf("notify message %q, want READY=1", msg)
		}
		if !seen[0] || !seen[1] {
			t.Fatalf("READY=1 sent before socket (%v) and launch attestation (%v) existed", seen[0], seen[1])
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no READY=1 within 30s")
	}
}
