package agent

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm-tools/simulator"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/scai"
	"github.com/attestd/attestd/verify"
)

// nopCloser keeps a shared simulator open when one backend closes.
type nopCloser struct{ io.ReadWriter }

func (nopCloser) Close() error { return nil }

// openSim opens the (single, global) TPM simulator for the test.
func openSim(t testing.TB) *simulator.Simulator {
	t.Helper()
	sim, err := simulator.Get()
	if err != nil {
		t.Fatalf("simulator: %v", err)
	}
	t.Cleanup(func() { sim.Close() })
	return sim
}

func newBackend(t testing.TB, rw io.ReadWriter) *tpm.Backend {
	t.Helper()
	b, err := tpm.New(nopCloser{rw}, tpm.Config{})
	if err != nil {
		t.Fatalf("tpm backend: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

type fixture struct {
	dir         string
	cfg         *Config
	binary      string
	firmwareLog string // the firmware event log the agent reads; none by default
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "attestd-binary")
	exe := filepath.Join(dir, "runner")
	img := filepath.Join(dir, "image.json")
	for p, content := range map[string]string{bin: "daemon bytes", exe: "runner bytes", img: `{"name":"test"}`} {
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw := []byte("register: 13\nimage_metadata: " + img + "\nexecutors: [" + exe + "]\n")
	cfg, err := ParseConfig(filepath.Join(dir, "config.yaml"), raw)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{dir: dir, cfg: cfg, binary: bin, firmwareLog: filepath.Join(dir, "no-firmware-log")}
}

func (f *fixture) agent(t testing.TB, b attest.Backend) *Agent {
	t.Helper()
	a, err := New(Options{
		Config:          f.cfg,
		Backend:         b,
		RuntimeDir:      filepath.Join(f.dir, "run"),
		BinaryPath:      f.binary,
		Cmdline:         "console=ttyS0 roothash=" + strings.Repeat("ab", 32),
		Version:         "test",
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
		FirmwareLogPath: f.firmwareLog,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { a.Close() }) // before the temp dir goes: it waits for admissions being kept
	return a
}

// mustVerify verifies the first attestation of a bundle (an attestation
// with its event log: Attestation.Encode) and returns its result.
func mustVerify(t *testing.T, raw []byte, opts verify.Options) *verify.Result {
	t.Helper()
	r := verifyEnvelope(t, raw, opts)
	if !r.OK {
		for _, c := range r.Checks {
			t.Logf("%-20s ok=%v skip=%v %s", c.Name, c.OK, c.Skip, c.Detail)
		}
		t.Fatalf("not verified: %v", r.Failed())
	}
	return r
}

func TestLaunchAndAttest(t *testing.T) {
	sim := openSim(t)
	b := newBackend(t, sim)
	f := newFixture(t)
	a := f.agent(t, b)
	ctx := context.Background()
	if _, err := a.Attest(ctx, []byte("nonce")); !errors.Is(err, errNotLaunched) {
		t.Fatalf("Attest before Launch: got %v, want errNotLaunched", err)
	}
	if err := a.Launch(ctx); err != nil {
		t.Fatalf("Launch: %v", err)
	}
	onDisk, err := os.ReadFile(filepath.Join(f.dir, "run", LaunchAttestName))
	if err != nil {
		t.Fatal(err)
	}
	if string(onDisk) != string(a.launchAttestation().Encode()) {
		t.Fatal("launch attestation on disk differs from the served one")
	}
	r := mustVerify(t, onDisk, verify.Options{TrustedAKs: []crypto.PublicKey{b.AKPublic()}})
	if r.Purpose != attest.PurposeLaunch {
		t.Errorf("purpose = %q", r.Purpose)
	}
	var types []measure.EventType
	for _, e := range r.Events {
		types = append(types, e.Type)
	}
	want := []measure.EventType{measure.EventBinary, measure.EventConfig, measure.EventImage, measure.EventExecutor, measure.EventSeparator}
	if len(types) != len(want) {
		t.Fatalf("events %v, want %v", types, want)
	}
	for i := range want {
		if types[i] != want[i] {
			t.Fatalf("events %v, want %v", types, want)
		}
	}

	nonce := []byte("0123456789abcdef")
	env, err := a.Attest(ctx, nonce)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	mustVerify(t, env.Encode(), verify.Options{Nonce: nonce, TrustedAKs: []crypto.PublicKey{b.AKPublic()}})

	// The same attestation with another expected nonce must fail on "nonce".
	rr := verifyEnvelope(t, env.Encode(), verify.Options{Nonce: []byte("other"), TrustedAKs: []crypto.PublicKey{b.AKPublic()}})
	if rr.OK || !contains(rr.Failed(), verify.CheckNonce) {
		t.Fatalf("wrong nonce: failed=%v", rr.Failed())
	}
	// Without a trusted AK it must not verify.
	rr = verifyEnvelope(t, env.Encode(), verify.Options{Nonce: nonce})
	if rr.OK || !contains(rr.Failed(), tpm.CheckAKTrusted) {
		t.Fatalf("no trusted AK: failed=%v", rr.Failed())
	}

	for _, bad := range [][]byte{nil, {}, make([]byte, attest.MaxNonceSize+1)} {
		if _, err := a.Attest(ctx, bad); !errors.Is(err, attest.ErrNonceSize) {
			t.Errorf("nonce of %d bytes: got %v, want ErrNonceSize", len(bad), err)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestRestartSameBootRecordsRestart(t *testing.T) {
	sim := openSim(t)
	f := newFixture(t)
	ctx := context.Background()
	b1 := newBackend(t, sim)
	a1 := f.agent(t, b1)
	if err := a1.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	_, before := a1.EventLog()
	b1.Close() // the daemon exits

	// A second daemon in the same boot: same TPM, register already extended.
	b2 := newBackend(t, sim)
	a2 := f.agent(t, b2)
	if err := a2.Launch(ctx); err != nil {
		t.Fatalf("relaunch: %v", err)
	}
	_, after := a2.EventLog()
	if len(after) != len(before)+1 || after[len(after)-1].Type != measure.EventRestart {
		t.Fatalf("after restart: %d events (last %v), want %d ending in restart", len(after), after[len(after)-1].Type, len(before)+1)
	}
	env, err := a2.Attest(ctx, []byte("n"))
	if err != nil {
		t.Fatal(err)
	}
	mustVerify(t, env.Encode(), verify.Options{Nonce: []byte("n"), TrustedAKs: []crypto.PublicKey{b2.AKPublic()}})
}

func TestNewBootSetsStaleLogAside(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	func() {
		sim := openSim(t)
		a := f.agent(t, newBackend(t, sim))
		if err := a.Launch(ctx); err != nil {
			t.Fatal(err)
		}
		sim.Close() // a reboot: the next simulator starts with zeroed PCRs
	}()
	sim := openSim(t)
	a := f.agent(t, newBackend(t, sim))
	if err := a.Launch(ctx); err != nil {
		t.Fatalf("launch after reboot: %v", err)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "run", EventLogName+".stale")); err != nil {
		t.Fatalf("stale log not set aside: %v", err)
	}
	_, recs := a.EventLog()
	if recs[0].Type != measure.EventBinary {
		t.Fatalf("fresh log starts with %v", recs[0].Type)
	}
}

func TestUnexplainedRegisterRefusesToStart(t *testing.T) {
	sim := openSim(t)
	b := newBackend(t, sim)
	d := sha256.Sum256([]byte("someone else"))
	digests := map[crypto.Hash][]byte{}
	for _, h := range b.Banks() {
		hh := h.New()
		hh.Write(d[:])
		digests[h] = hh.Sum(nil)
	}
	if err := b.Extend(context.Background(), digests); err != nil {
		t.Fatal(err)
	}
	a := newFixture(t).agent(t, b)
	err := a.Launch(context.Background())
	if !errors.Is(err, ErrUnexplainedRegister) {
		t.Fatalf("Launch with an unexplained register: %v", err)
	}
}

func TestTamperedLogOnDiskRefusesToStart(t *testing.T) {
	sim := openSim(t)
	f := newFixture(t)
	ctx := context.Background()
	b1 := newBackend(t, sim)
	if err := f.agent(t, b1).Launch(ctx); err != nil {
		t.Fatal(err)
	}
	b1.Close()
	// Drop the last record by rewriting the log without it.
	path := filepath.Join(f.dir, "run", EventLogName)
	raw, _ := os.ReadFile(path)
	recs, err := measure.ParseCEL(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) < 2 {
		t.Fatal("too few records")
	}
	if err := os.WriteFile(path, raw[:len(raw)-lastRecordLen(t, raw)], 0o600); err != nil {
		t.Fatal(err)
	}
	err = f.agent(t, newBackend(t, sim)).Launch(ctx)
	if err == nil || !strings.Contains(err.Error(), "does not explain") {
		t.Fatalf("Launch with a log missing its last record: %v", err)
	}
}

// lastRecordLen finds the encoded length of the last CEL record by parsing
// prefixes.
func lastRecordLen(t *testing.T, raw []byte) int {
	t.Helper()
	all, _ := measure.ParseCEL(raw)
	for cut := 1; cut < len(raw); cut++ {
		recs, err := measure.ParseCEL(raw[:len(raw)-cut])
		if err == nil && len(recs) == len(all)-1 {
			return cut
		}
	}
	t.Fatal("cannot find last record")
	return 0
}

func FuzzParseConfig(f *testing.F) {
	// The config the build-runner image ships.
	raw, err := os.ReadFile("../images/rootfs/config.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add([]byte("backend: tpm\nregister: 13\nexecutors: [/bin/sh]\nallow: {executors: {uids: [1]}}\n"))
	f.Add([]byte("tpm:\n  device: unix:/run/swtpm.sock\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig("fuzz.yaml", b)
		if err == nil && ValidateRegister(c.Register) != nil {
			t.Fatalf("accepted register %d", c.Register)
		}
	})
}

func testVerifiers() []attest.Verifier { return []attest.Verifier{tpm.Verifier{}} }

// The TPM env key checks its own signatures (a TPM's answer is verified
// before use), so scai does not verify each one a second time.
func TestTPMSignerChecksItsSignatures(t *testing.T) {
	if _, ok := newBackend(t, openSim(t)).Signer().(scai.CheckedSigner); !ok {
		t.Fatal("the TPM backend's signer is not a scai.CheckedSigner")
	}
}

// Without a config file at the default path the daemon runs on the
// defaults and measures them as an empty config (the README's first tour
// command: no --config).
func TestLaunchWithoutConfigFile(t *testing.T) {
	cfg, err := LoadConfig(DefaultConfigPath)
	if _, statErr := os.Stat(DefaultConfigPath); statErr == nil {
		cfg, err = ParseConfig(DefaultConfigPath, []byte{}) // this machine has one: the same defaults
	}
	if err != nil {
		t.Fatalf("LoadConfig without a file: %v", err)
	}
	f := newFixture(t)
	f.cfg = cfg
	a := f.agent(t, newBackend(t, openSim(t)))
	if err := a.Launch(context.Background()); err != nil {
		t.Fatalf("Launch on the defaults: %v", err)
	}
	_, recs := a.EventLog()
	var cm measure.FileMeasurement
	if err := json.Unmarshal(recs[1].Data, &cm); err != nil || recs[1].Type != measure.EventConfig {
		t.Fatalf("record 1: %v %s (%v)", recs[1].Type, recs[1].Data, err)
	}
	if empty := sha256.Sum256(nil); cm.Path != DefaultConfigPath || cm.SHA256 != hex.EncodeToString(empty[:]) {
		t.Fatalf("config measured as %+v, want %s with the digest of an empty file", cm, DefaultConfigPath)
	}
}
