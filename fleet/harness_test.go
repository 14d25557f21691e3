package fleet_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm-tools/simulator"
	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/attestd/attestd/agent"
	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/fleet"
	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
	"github.com/attestd/attestd/fleet/fleettest"
	"github.com/attestd/attestd/fleet/sqlite"
	"github.com/attestd/attestd/verifier"
)

// The tests drive the service through its gRPC API, on a real SQLite
// store, with real bundles: each environment is a real agent on the
// in-process TPM simulator, reset (a new boot) for each one.

var (
	sim     *simulator.Simulator
	simErr  error
	simOnce sync.Once
)

func TestMain(m *testing.M) {
	code := m.Run()
	if sim != nil {
		sim.Close()
	}
	os.Exit(code)
}

var (
	testRequest = []*ita.ResourceDescriptor{{Name: "source", Uri: "git+https://example.com/app", Digest: map[string]string{"gitCommit": strings.Repeat("1", 40)}}}
	testInputs  = []*ita.ResourceDescriptor{{Name: "dep.tgz", Digest: map[string]string{"sha256": strings.Repeat("2", 64)}}}
	testOutputs = []*ita.ResourceDescriptor{{Name: "app.bin", Digest: map[string]string{"sha256": strings.Repeat("3", 64)}}}
	provenance  = `{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"app.bin","digest":{"sha256":"` + strings.Repeat("3", 64) +
		`"}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{"buildDefinition":{"buildType":"https://example.com/t"}}}`
)

type nopCloser struct{ io.ReadWriter }

func (nopCloser) Close() error { return nil }

// env is one build environment: a launched agent on the simulator. Only
// one env may be open at a time (the simulator holds one backend's
// objects); close it before the next.
type env struct {
	*agent.Agent
	backend *tpm.Backend
	closed  bool
}

// newEnv boots a fresh environment: a new boot of the simulator (its reset
// count moves on) with the agent on PCR 13, or with sameBootPCR set, a
// second agent in the same boot on that PCR; a new env key; a launch.
func newEnv(t *testing.T, sameBootPCR int) *env {
	t.Helper()
	simOnce.Do(func() { sim, simErr = simulator.Get() })
	if simErr != nil {
		t.Fatalf("TPM simulator: %v", simErr)
	}
	pcr := sameBootPCR
	if pcr == 0 {
		pcr = 13
		if err := sim.Reset(); err != nil {
			t.Fatalf("reset the simulator: %v", err)
		}
	}
	b, err := tpm.New(nopCloser{sim}, tpm.Config{PCR: pcr, FirmwareLogPath: "/nonexistent"})
	if err != nil {
		t.Fatalf("TPM backend: %v", err)
	}
	return launch(t, b, pcr)
}

// launch starts an agent on backend b, extending pcr, and launches it.
func launch(t *testing.T, b *tpm.Backend, pcr int) *env {
	t.Helper()
	dir := t.TempDir()
	bin, exe, img := filepath.Join(dir, "attestd"), filepath.Join(dir, "runner"), filepath.Join(dir, "image.json")
	for p, c := range map[string]string{bin: "daemon bytes", exe: "runner bytes", img: `{"name":"test"}`} {
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := agent.ParseConfig(filepath.Join(dir, "config.yaml"), []byte("register: "+strconv.Itoa(pcr)+"\nimage_metadata: "+img+"\nexecutors: ["+exe+"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Options{Config: cfg, Backend: b, RuntimeDir: filepath.Join(dir, "run"), BinaryPath: bin,
		Cmdline: "console=ttyS0 roothash=" + strings.Repeat("ab", 32), Version: "test", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	if err := a.Launch(context.Background()); err != nil {
		b.Close()
		t.Fatalf("launch: %v", err)
	}
	e := &env{Agent: a, backend: b}
	t.Cleanup(e.close)
	return e
}

func (e *env) close() {
	if !e.closed {
		e.closed = true
		e.Agent.Close()
		e.backend.Close()
	}
}

// bundle is the environment's bundle as GetBundle gives it.
func (e *env) bundle() []byte { return e.Bundle().Encode() }

// clock is the service's clock, moved by the tests.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testFleet is one replica and a client, with the clock it runs by.
type testFleet struct {
	*fleettest.Replica
	store fleet.Store
	clock *clock
}

// option changes the service's config before it starts.
type option func(*fleet.Config)

func newFleet(t *testing.T, opts ...option) *testFleet {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "fleet.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return startFleet(t, st, opts...)
}

// startFleet starts a replica on st (several may share one store).
func startFleet(t *testing.T, st fleet.Store, opts ...option) *testFleet {
	t.Helper()
	ck := &clock{now: time.Now()}
	cfg := fleettest.Config(t, st)
	cfg.Now = ck.Now
	for _, o := range opts {
		o(&cfg)
	}
	return &testFleet{Replica: fleettest.Start(t, cfg), store: st, clock: ck}
}

// trustAK registers the environment's AK directly in the store, as
// FinishRegistration would: the test policy trusts no AK of its own.
func (f *testFleet) trustAK(t *testing.T, e *env) {
	t.Helper()
	facts, err := verifier.Inspect(e.bundle())
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.PutAK(context.Background(), fleet.AK{Digest: facts.AKDigest, PublicKey: facts.AK, EKCertDigest: strings.Repeat("0", 64), RegisteredAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

// admit runs the admission of e: Challenge, attestd Attest, Admit.
func (f *testFleet) admit(t *testing.T, e *env) *fleetv1.Environment {
	t.Helper()
	resp, err := f.tryAdmit(t, e, f.challenge(t))
	if err != nil {
		t.Fatalf("admit: %v", err)
	}
	return resp.GetEnvironment()
}

func (f *testFleet) challenge(t *testing.T) []byte {
	t.Helper()
	c, err := f.Challenge(context.Background(), &fleetv1.ChallengeRequest{Step: fleetv1.Step_STEP_ADMIT})
	if err != nil {
		t.Fatalf("challenge: %v", err)
	}
	return c.GetNonce()
}

// tryAdmit has e attest to nonce and asks for its admission.
func (f *testFleet) tryAdmit(t *testing.T, e *env, nonce []byte) (*fleetv1.AdmitResponse, error) {
	t.Helper()
	f.trustAK(t, e)
	if _, err := e.Attest(context.Background(), nonce); err != nil {
		t.Fatalf("attestd Attest: %v", err)
	}
	return f.Admit(context.Background(), &fleetv1.AdmitRequest{Nonce: nonce, Bundle: e.bundle()})
}

// dispatch asks for build to be bound to the environment and returns the
// dispatch nonce.
func (f *testFleet) dispatch(t *testing.T, envKey, build string) []byte {
	t.Helper()
	d, err := f.Dispatch(context.Background(), &fleetv1.DispatchRequest{EnvKey: envKey, BuildId: build})
	if err != nil {
		t.Fatalf("dispatch %s: %v", build, err)
	}
	return d.GetNonce()
}

// bind has e bind build with nonce (attestd BindBuild) and returns its
// bundle.
func bind(t *testing.T, e *env, build string, nonce []byte) []byte {
	t.Helper()
	if _, err := e.BindBuild(context.Background(), build, testRequest, nonce); err != nil {
		t.Fatalf("attestd BindBuild: %v", err)
	}
	return e.bundle()
}

// finish has e complete build (with nonce, may be nil) and sign its
// provenance, and returns its bundle.
func finish(t *testing.T, e *env, build string, nonce []byte) []byte {
	t.Helper()
	ctx := context.Background()
	if _, err := e.Complete(ctx, build, testInputs, testOutputs, nonce); err != nil {
		t.Fatalf("attestd Complete: %v", err)
	}
	if _, err := e.SignStatement(ctx, build, []byte(provenance)); err != nil {
		t.Fatalf("attestd SignStatement: %v", err)
	}
	return e.bundle()
}

// wantRefusal checks err is a refusal with code and reason.
func wantRefusal(t *testing.T, err error, code codes.Code, reason fleet.Reason) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v %s", code, reason)
	}
	if got := status.Code(err); got != code || fleetv1.Reason(err) != string(reason) {
		t.Fatalf("got %v %q (%v), want %v %s", got, fleetv1.Reason(err), err, code, reason)
	}
	if reason.Code() != code {
		t.Fatalf("reason %s has code %v, the test wants %v", reason, reason.Code(), code)
	}
}
