package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/attestd/attestd/agent"
	"github.com/attestd/attestd/attest/snp"
	"github.com/attestd/attestd/attest/snp/snptest"
	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
)

// The helpers of kill_test.go: the attestfleet binary run as processes on
// one PostgreSQL database, and build environments on the fake SEV-SNP
// guest (attest/snp/snptest: reports really signed by a test-only AMD
// chain), which many agents can share at once.

// procWait bounds every wait on a replica process: generous, for a small
// machine under load.
const procWait = 2 * time.Minute

// buildFleet builds the attestfleet binary (cgo off, as shipped) into a
// temp dir.
func buildFleet(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/", ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/attestfleet: %v\n%s", err, out)
	}
	return filepath.Join(dir, "attestfleet")
}

// snpFleetFiles writes the policy (trusting the fake SEV-SNP chain of dev)
// and a result key into dir.
func snpFleetFiles(t *testing.T, dir string, dev *snptest.Device) {
	t.Helper()
	var roots []byte
	for _, r := range dev.Roots()[snptest.ProductLine] {
		for _, c := range [][]byte{r.ProductCerts.Ark.Raw, r.ProductCerts.Ask.Raw} {
			roots = append(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
		}
	}
	write(t, filepath.Join(dir, "snp-roots.pem"), string(roots))
	write(t, filepath.Join(dir, "policy.yaml"), "version: 1\ntrust:\n  snp:\n    roots: snp-roots.pem\n    product: "+snptest.ProductLine+"\n")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "result-key.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
}

// proc is one replica: an `attestfleet serve` process (started again after
// it is killed) on its own unix socket, and a client of its current run.
type proc struct {
	name, bin, config, sock, log string
	// inflight counts the test's calls to this replica in progress.
	inflight atomic.Int64

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited
	client  *fleetv1.Client
	up      bool              // started, SERVING, not being stopped
	clients []*fleetv1.Client // every run's, closed at the end
}

// newProc writes replica name's config (extra appended) into dir; start
// runs it.
func newProc(t *testing.T, bin, dir, name, dsn, extra string) *proc {
	t.Helper()
	p := &proc{name: name, bin: bin, config: filepath.Join(dir, name+".yaml"), sock: filepath.Join(dir, name+".sock"), log: filepath.Join(dir, name+".log")}
	write(t, p.config, "listen: unix:"+p.sock+"\nstore:\n  postgres: "+strconv.Quote(dsn)+
		"\npolicy: policy.yaml\nresults:\n  key: result-key.pem\nnonce_lifetime: 1h\nhealth:\n  every: 200ms\n"+extra)
	t.Cleanup(func() { p.cleanup(t) })
	return p
}

// start runs the process and waits until it answers SERVING on a new
// client.
func (p *proc) start(t *testing.T) {
	t.Helper()
	log, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(p.bin, "serve", "--config", p.config)
	cmd.Stdout, cmd.Stderr = log, log
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if err := cmd.Start(); err != nil {
		log.Close()
		t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); log.Close(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	if err := p.waitServing(done); err != nil {
		t.Fatalf("%s: %v\n%s", p.name, err, p.logText())
	}
}

// waitServing waits until the socket takes connections (a killed run's
// stale socket refuses them) and health is SERVING, then makes the client
// of this run current.
func (p *proc) waitServing(done chan struct{}) error {
	deadline := time.Now().Add(procWait)
	for {
		select {
		case <-done:
			return fmt.Errorf("exited while starting")
		default:
		}
		if c, err := net.Dial("unix", p.sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waited %v for the socket to take connections", procWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c, err := fleetv1.Dial("unix:" + p.sock)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.clients = append(p.clients, c)
	p.mu.Unlock()
	hc := healthpb.NewHealthClient(c.Conn())
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waited %v for SERVING: %v, %v", procWait, r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.mu.Lock()
	p.client, p.up = c, true
	p.mu.Unlock()
	return nil
}

// signal marks the replica down and sends it sig.
func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	p.mu.Lock()
	p.up = false
	cmd := p.cmd
	p.mu.Unlock()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: signal %v: %v", p.name, sig, err)
	}
}

// wait waits for the process to exit and returns how.
func (p *proc) wait(t *testing.T, after string) syscall.WaitStatus {
	t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	select {
	case <-done:
	case <-time.After(procWait):
		t.Fatalf("%s: waited %v for the process to exit after %s\n%s", p.name, procWait, after, p.logText())
	}
	return cmd.ProcessState.Sys().(syscall.WaitStatus)
}

// kill SIGKILLs the replica and waits until it is gone.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	p.signal(t, syscall.SIGKILL)
	if ws := p.wait(t, "SIGKILL"); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("%s: exit status %v after SIGKILL, want killed by it\n%s", p.name, ws, p.logText())
	}
}

// current is the client of the replica's current run, and whether it is
// up.
func (p *proc) current() (*fleetv1.Client, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.client, p.up
}

func (p *proc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// cleanup stops a process still running (SIGTERM, then SIGKILL) and closes
// the clients.
func (p *proc) cleanup(t *testing.T) {
	p.mu.Lock()
	cmd, done, clients := p.cmd, p.done, p.clients
	p.mu.Unlock()
	if cmd != nil {
		select {
		case <-done:
		default:
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(procWait):
				cmd.Process.Kill()
				<-done
				t.Errorf("%s: still running %v after SIGTERM at cleanup; killed", p.name, procWait)
			}
		}
	}
	for _, c := range clients {
		c.Close()
	}
}

// uncertain reports whether err leaves a call's outcome unknown: the
// replica died under it or was not there (no reason: the service did not
// answer). Refusals carry a reason.
func uncertain(err error) bool {
	if err == nil || fleetv1.Reason(err) != "" {
		return false
	}
	c := status.Code(err)
	return c == codes.Unavailable || c == codes.Canceled
}

// What every environment builds (as fleet's tests do).
var (
	killRequest = []*ita.ResourceDescriptor{{Name: "source", Uri: "git+https://example.com/app", Digest: map[string]string{"gitCommit": strings.Repeat("1", 40)}}}
	killInputs  = []*ita.ResourceDescriptor{{Name: "dep.tgz", Digest: map[string]string{"sha256": strings.Repeat("2", 64)}}}
	killOutputs = []*ita.ResourceDescriptor{{Name: "app.bin", Digest: map[string]string{"sha256": strings.Repeat("3", 64)}}}
	killProv    = []byte(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"app.bin","digest":{"sha256":"` + strings.Repeat("3", 64) +
		`"}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{"buildDefinition":{"buildType":"https://example.com/t"}}}`)
)

// snpEnv is one build environment: a launched agent on the fake SEV-SNP
// guest, with an environment key of its own.
type snpEnv struct {
	*agent.Agent
	backend *snp.Backend
}

// launchSNP launches an environment with its files in a new directory
// under base.
func launchSNP(ctx context.Context, dev *snptest.Device, base string) (*snpEnv, error) {
	dir, err := os.MkdirTemp(base, "env")
	if err != nil {
		return nil, err
	}
	b, err := snp.New(snp.Config{Provider: dev})
	if err != nil {
		return nil, err
	}
	bin, exe, img := filepath.Join(dir, "attestd"), filepath.Join(dir, "runner"), filepath.Join(dir, "image.json")
	for p, c := range map[string]string{bin: "daemon bytes", exe: "runner bytes", img: `{"name":"kill"}`} {
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			b.Close()
			return nil, err
		}
	}
	cfg, err := agent.ParseConfig(filepath.Join(dir, "config.yaml"), []byte("image_metadata: "+img+"\nexecutors: ["+exe+"]\n"))
	if err != nil {
		b.Close()
		return nil, err
	}
	a, err := agent.New(agent.Options{Config: cfg, Backend: b, RuntimeDir: filepath.Join(dir, "run"), BinaryPath: bin,
		Cmdline: "console=ttyS0", FirmwareLogPath: "/nonexistent", Version: "test", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Close()
		return nil, err
	}
	if err := a.Launch(ctx); err != nil {
		a.Close()
		b.Close()
		return nil, fmt.Errorf("launch: %w", err)
	}
	return &snpEnv{Agent: a, backend: b}, nil
}

func (e *snpEnv) close() {
	e.Agent.Close()
	e.backend.Close()
}

// keyHex is the environment's key digest as the service names it.
func (e *snpEnv) keyHex() string {
	kd := e.KeyDigest()
	return fmt.Sprintf("%x", kd[:])
}

// randN is a random int in [0, n).
func randN(n int) int { return mrand.IntN(n) }
