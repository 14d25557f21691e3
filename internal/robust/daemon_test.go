package robust

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/scai"
	"github.com/attestd/attestd/verify"
)

// Bounds for waits on a loaded 2-core machine. They are generous on
// purpose: they turn a hang into a failure, they do not time anything.
const (
	startBound = 90 * time.Second // process start to serving (or exit)
	rpcBound   = 60 * time.Second // one RPC
	exitBound  = 60 * time.Second // a daemon that should be on its way out
)

// healthServices are the gRPC health services attestd reports.
var healthServices = []string{"", apiv1.Attestd_ServiceDesc.ServiceName}

// logBuffer collects a daemon's stderr.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines returns the non-empty lines so far.
func (l *logBuffer) lines() []string {
	var out []string
	for _, s := range strings.Split(l.String(), "\n") {
		if strings.TrimSpace(s) != "" {
			out = append(out, s)
		}
	}
	return out
}

// tail is the last n lines, for failure messages.
func (l *logBuffer) tail(n int) string {
	ls := l.lines()
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// daemonOpts configure one attestd process.
type daemonOpts struct {
	device     string        // "unix:/path" of the TPM (a swtpm or a tpmfault proxy)
	dir        string        // holds config.yaml and run/ (the runtime dir)
	tpmTimeout time.Duration // --tpm-timeout; 0 passes none
	env        []string      // added to the environment
	// watchdogPID sets WATCHDOG_PID to the daemon's own PID, as systemd
	// does (through sh -c 'exec', which keeps the PID).
	watchdogPID bool
}

// daemon is a running attestd binary.
type daemon struct {
	t       *testing.T
	runDir  string
	cmd     *exec.Cmd
	log     *logBuffer
	started time.Time

	exited chan struct{}
	exitAt time.Time // set before exited is closed
	state  *os.ProcessState

	client *apiv1.Client
}

const configYAML = "backend: tpm\nexecutors: [/bin/sh]\n"

// startDaemon starts attestd; it is killed in t.Cleanup if still running.
func startDaemon(t *testing.T, o daemonOpts) *daemon {
	t.Helper()
	bin := binaries(t)
	cfg := filepath.Join(o.dir, "config.yaml")
	if _, err := os.Stat(cfg); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(cfg, []byte(configYAML), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := filepath.Join(o.dir, "run")
	args := []string{"--config", cfg, "--runtime-dir", run, "--backend", "tpm", "--tpm-device", o.device}
	if o.tpmTimeout > 0 {
		args = append(args, "--tpm-timeout", o.tpmTimeout.String())
	}
	name := filepath.Join(bin, "attestd")
	if o.watchdogPID {
		args = append([]string{"-c", `WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$0" "$@"`, name}, args...)
		name = "/bin/sh"
	}
	d := &daemon{t: t, runDir: run, log: &logBuffer{}, exited: make(chan struct{})}
	d.cmd = exec.Command(name, args...)
	d.cmd.Env = append(baseEnv(), o.env...)
	d.cmd.Stderr = d.log
	d.cmd.Stdout = d.log
	d.started = time.Now()
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start attestd: %v", err)
	}
	go func() {
		d.cmd.Wait()
		d.exitAt = time.Now()
		d.state = d.cmd.ProcessState
		close(d.exited)
	}()
	t.Cleanup(func() {
		if d.client != nil {
			d.client.Close()
		}
		if !d.hasExited() {
			d.cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("attestd log (pid %d):\n%s", d.cmd.Process.Pid, d.log.tail(40))
		}
	})
	return d
}

// baseEnv is the test's environment without systemd's notify and watchdog
// variables: only the tests that play systemd set those.
func baseEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "NOTIFY_SOCKET" || strings.HasPrefix(k, "WATCHDOG_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func (d *daemon) hasExited() bool {
	select {
	case <-d.exited:
		return true
	default:
		return false
	}
}

func (d *daemon) socket() string { return filepath.Join(d.runDir, "attestd.sock") }

// waitServing waits until the daemon answers GetIdentity (it serves only
// after the launch attestation is written) or exits. It returns an error
// saying which, and what was waited for.
func (d *daemon) waitServing(bound time.Duration) (*apiv1.GetIdentityResponse, error) {
	deadline := time.Now().Add(bound)
	for {
		if d.hasExited() {
			return nil, fmt.Errorf("attestd exited (%v) before serving; last line: %q", d.state, d.lastLine())
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("attestd neither served nor exited within %v of waiting", bound)
		}
		// Probe with a plain connection first: a socket a killed daemon
		// left behind refuses it, and a gRPC client that dialed it would
		// sit in its reconnect backoff (a second or more): the client's
		// delay, not the daemon's.
		if c, err := net.Dial("unix", d.socket()); err == nil {
			c.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d.client == nil {
		c, err := apiv1.Dial(d.socket())
		if err != nil {
			return nil, err
		}
		d.client = c
	}
	for {
		// The socket exists before Launch ends; the API answers after.
		ctx, cancel := context.WithTimeout(context.Background(), time.Until(deadline))
		id, err := d.client.GetIdentity(ctx, &apiv1.GetIdentityRequest{})
		cancel()
		if err == nil {
			return id, nil
		}
		if d.hasExited() {
			return nil, fmt.Errorf("attestd exited (%v) before serving; last line: %q", d.state, d.lastLine())
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("attestd did not answer GetIdentity within %v: %v", bound, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mustServe is waitServing failing the test.
func (d *daemon) mustServe() *apiv1.GetIdentityResponse {
	d.t.Helper()
	id, err := d.waitServing(startBound)
	if err != nil {
		d.t.Fatalf("%v\n%s", err, d.log.tail(30))
	}
	return id
}

// waitExit waits up to bound for the process to end.
func (d *daemon) waitExit(bound time.Duration) bool {
	select {
	case <-d.exited:
		return true
	case <-time.After(bound):
		return false
	}
}

func (d *daemon) exitCode() int { return d.state.ExitCode() }

// lastLine is the daemon's last line of output.
func (d *daemon) lastLine() string {
	ls := d.log.lines()
	if len(ls) == 0 {
		return ""
	}
	return ls[len(ls)-1]
}

// errorLines are the log lines at level ERROR (slog text format).
func (d *daemon) errorLines() []string {
	var out []string
	for _, l := range d.log.lines() {
		if strings.Contains(l, "level=ERROR") {
			out = append(out, l)
		}
	}
	return out
}

func (d *daemon) signal(sig syscall.Signal) {
	if err := d.cmd.Process.Signal(sig); err != nil && !d.hasExited() {
		d.t.Fatalf("signal attestd: %v", err)
	}
}

// watchHealth watches every health service; each channel receives the time
// the service turned NOT_SERVING (and is then closed), or is closed
// without a value when the stream ends otherwise. It waits for SERVING
// first. The watch is cancelled once NOT_SERVING arrives so that it does
// not hold up the daemon's graceful stop.
func (d *daemon) watchHealth() map[string]<-chan time.Time {
	d.t.Helper()
	hc := healthpb.NewHealthClient(d.client.Conn())
	out := map[string]<-chan time.Time{}
	for _, svc := range healthServices {
		ctx, cancel := context.WithCancel(context.Background())
		d.t.Cleanup(cancel)
		stream, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			d.t.Fatalf("health watch %q: %v", svc, err)
		}
		first := make(chan error, 1)
		ch := make(chan time.Time, 1)
		go func() {
			defer cancel()
			defer close(ch)
			m, err := stream.Recv()
			if err == nil && m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				err = fmt.Errorf("status %v", m.GetStatus())
			}
			first <- err
			if err != nil {
				return
			}
			for {
				m, err := stream.Recv()
				if err != nil {
					return
				}
				if m.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
					ch <- time.Now()
					return
				}
			}
		}()
		select {
		case err := <-first:
			if err != nil {
				d.t.Fatalf("health of %q before any fault: %v, want SERVING", svc, err)
			}
		case <-time.After(rpcBound):
			d.t.Fatalf("health watch %q: no first status within %v", svc, rpcBound)
		}
		out[svc] = ch
	}
	return out
}

// checkHealth asks every health service once.
func (d *daemon) checkHealth() map[string]healthpb.HealthCheckResponse_ServingStatus {
	hc := healthpb.NewHealthClient(d.client.Conn())
	out := map[string]healthpb.HealthCheckResponse_ServingStatus{}
	for _, svc := range healthServices {
		ctx, cancel := context.WithTimeout(context.Background(), rpcBound)
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		cancel()
		if err != nil {
			out[svc] = healthpb.HealthCheckResponse_UNKNOWN
			continue
		}
		out[svc] = r.GetStatus()
	}
	return out
}

func rpcCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), rpcBound)
}

// hung reports whether err is the test's own RPC bound running out: the
// daemon did not answer at all.
func hung(err error) bool {
	return status.Code(err) == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded)
}

// pinAK takes the AK from a launch attestation (trust on first use, as an
// operator pins it at a trusted first boot).
func pinAK(launch []byte) (crypto.PublicKey, error) {
	env, err := scai.ParseEnvelope(launch)
	if err != nil {
		return nil, err
	}
	op, err := scai.Open(env)
	if err != nil {
		return nil, err
	}
	if len(op.Attestation.Evidence) == 0 {
		return nil, errors.New("launch attestation carries no evidence")
	}
	return tpm.AKPublic(op.Attestation.Evidence[0])
}

func verifyOpts(ak crypto.PublicKey) verify.Options {
	return verify.Options{TrustedAKs: []crypto.PublicKey{ak}, Verifiers: []attest.Verifier{tpm.Verifier{}}}
}

// attestationLines is an attestation the daemon returned as the
// self-verifying JSON Lines bundle a client writes (scai.AttestationLines),
// or nil when there is no envelope.
func attestationLines(envelope, eventLog, proof []byte) []byte {
	if len(envelope) == 0 {
		return nil
	}
	return scai.AttestationLines(envelope, eventLog, proof)
}

// verifyLines verifies the one attestation of lines (attestationLines) with
// the event log and proof beside it.
func verifyLines(lines []byte, opts verify.Options) (*verify.Result, error) {
	b, err := scai.DecodeBundle(lines)
	if err != nil {
		return nil, err
	}
	if len(b.Envelopes) != 1 || len(b.Logs) != 1 {
		return nil, fmt.Errorf("%d envelopes and %d event logs; want one of each", len(b.Envelopes), len(b.Logs))
	}
	return verify.Envelope(b.Envelopes[0], verify.MaterialOf(b), opts), nil
}

// checkEnvelope verifies one attestation, given as attestationLines, with
// opts; the error lists the failed checks.
func checkEnvelope(lines []byte, opts verify.Options) error {
	r, err := verifyLines(lines, opts)
	if err != nil {
		return err
	}
	if !r.OK {
		return fmt.Errorf("%s attestation does not verify: %v", r.Purpose, failedChecks(r))
	}
	return nil
}

func failedChecks(r *verify.Result) []string {
	var out []string
	for _, c := range r.Checks {
		if !c.OK && !c.Skip {
			out = append(out, c.Name+": "+c.Detail)
		}
	}
	return out
}

// bundleLines is the bundle the daemon returned as attestctl bundle writes
// it: the envelopes, the inclusion proofs and the event log as carriers.
func bundleLines(b *apiv1.GetBundleResponse) []byte {
	lines := slices.Clone(b.GetEnvelopes())
	for _, p := range b.GetInclusionProofs() {
		lines = append(lines, scai.Carrier(scai.PayloadTypeInclusionProof, p))
	}
	return scai.EncodeBundle(append(lines, scai.Carrier(scai.PayloadTypeCEL, b.GetEventLog()))...)
}

// checkBundle verifies a bundle (bundleLines) as attestctl verify does.
func checkBundle(jsonl []byte, opts verify.Options) (*verify.Report, error) {
	rep := verify.BundleReport(jsonl, opts)
	if !rep.OK {
		return rep, fmt.Errorf("bundle does not verify: %v", rep.Failed())
	}
	return rep, nil
}

// lifecycle requests, the same for every call of one environment so that
// repeated calls after a restart are the same request.
func bindRequest(buildID string, nonce []byte) *apiv1.BindBuildRequest {
	return &apiv1.BindBuildRequest{
		BuildId: buildID,
		Request: []*apiv1.ResourceDescriptor{{Name: "source", Uri: "git+https://example.com/app@refs/heads/main",
			Digest: map[string]string{"gitCommit": "3f2a9c1d5e8b7a6f4c3d2e1f0a9b8c7d6e5f4a3b"}}},
		Nonce: nonce,
	}
}

const outputSHA256 = "b5bb9d8014a0f9b1d61e21e796d78dccdf1352f23cd32812f4850b878ae4944c"

func completeRequest(buildID string, nonce []byte) *apiv1.CompleteRequest {
	return &apiv1.CompleteRequest{
		BuildId: buildID,
		Inputs:  []*apiv1.ResourceDescriptor{{Name: "dep.tar", Digest: map[string]string{"sha256": strings.Repeat("11", 32)}}},
		Outputs: []*apiv1.ResourceDescriptor{{Name: "out/app.bin", Digest: map[string]string{"sha256": outputSHA256}}},
		Nonce:   nonce,
	}
}

func provenance(buildID string) []byte {
	return []byte(`{"_type": "https://in-toto.io/Statement/v1",
 "subject": [{"name": "out/app.bin", "digest": {"sha256": "` + outputSHA256 + `"}}],
 "predicateType": "https://slsa.dev/provenance/v1",
 "predicate": {"buildDefinition": {"buildType": "https://example.com/robust/v1", "externalParameters": {}},
   "runDetails": {"builder": {"id": "https://example.com/runners/robust"}, "metadata": {"invocationId": "` + buildID + `"}}}}`)
}
