//go:build cgo

package tpm

import (
	"context"
	"crypto"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	eventlogdata "github.com/google/go-eventlog/testdata"
	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/attesttest"
	"github.com/attestd/attestd/measure"
)

var update = flag.Bool("update", false, "rewrite testdata/evidence.json from the simulator")

// newSimBackend runs the backend on the go-tpm-tools simulator (one global
// instance: tests using it must not run in parallel).
func newSimBackend(t testing.TB, cfg Config) *Backend {
	t.Helper()
	sim, err := simulator.Get()
	if err != nil {
		t.Fatalf("start TPM simulator: %v", err)
	}
	if cfg.FirmwareLogPath == "" {
		cfg.FirmwareLogPath = filepath.Join(t.TempDir(), "none")
	}
	b, err := New(sim, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

func TestConformanceSimulator(t *testing.T) {
	attesttest.RunOptions(t, func(t *testing.T) attest.Backend { return newSimBackend(t, Config{}) },
		Verifier{}, attesttest.Options{Trust: pinAK})
}

func TestConformanceSimulatorInsecureEmbeddedAK(t *testing.T) {
	attesttest.Run(t, func(t *testing.T) attest.Backend { return newSimBackend(t, Config{PCR: 14, BootPCRs: []int{0, 7}}) }, Verifier{})
}

func TestSimulatorEvidenceShape(t *testing.T) {
	b := newSimBackend(t, Config{})
	if got := b.Register(); got != (measure.Register{Kind: measure.PCR, Index: 13}) {
		t.Errorf("Register() = %v, want PCR13", got)
	}
	if got := b.Banks(); len(got) == 0 || got[0] != crypto.SHA1 {
		t.Logf("Banks() = %v", got)
	}
	kd, err := attest.KeyDigest(b.Signer().Public())
	if err != nil {
		t.Fatal(err)
	}
	binding := attest.Bind(attest.PurposeAttest, kd, []byte("nonce"))
	ev, err := b.Evidence(context.Background(), binding)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		PartAKPublic: MediaTypeTPMTPublic, PartEnvKeyPublic: MediaTypeTPMTPublic,
		PartCertifyInfo: MediaTypeTPMSAttest, PartCertifySignature: MediaTypeTPMTSignature,
		PartQuoteInfo: MediaTypeTPMSAttest, PartQuoteSignature: MediaTypeTPMTSignature,
		PartPCRs: MediaTypePCRs,
	}
	for _, p := range ev.Parts {
		if want[p.Name] != p.MediaType {
			t.Errorf("part %q has media type %q, want %q", p.Name, p.MediaType, want[p.Name])
		}
		delete(want, p.Name)
	}
	for name := range want {
		t.Errorf("missing part %q", name)
	}
	_, checks := Verifier{}.Verify(ev, attest.VerifyOptions{Binding: binding, EnvKey: b.Signer().Public()})
	if c := checks[1]; c.Name != CheckAKTrusted || c.OK {
		t.Errorf("zero VerifyOptions trust: check %+v, want %s failed", c, CheckAKTrusted)
	}
	_, checks = Verifier{}.Verify(ev, attest.VerifyOptions{Binding: binding, EnvKey: b.Signer().Public(), InsecureTrustEmbeddedAK: true})
	if c := checks[1]; !c.OK || c.Detail != "UNSAFE: trusting the AK shipped in the evidence" {
		t.Errorf("InsecureTrustEmbeddedAK: check %+v", c)
	}
	if *update {
		writeGolden(t, ev, binding, b)
	}
}

func writeGolden(t *testing.T, ev *attest.Evidence, binding attest.Binding, b *Backend) {
	env, err := marshalPKIX(b.Signer().Public())
	if err != nil {
		t.Fatal(err)
	}
	ak, err := marshalPKIX(b.AKPublic())
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.MarshalIndent(goldenEvidence{ev, binding, env, ak}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("testdata/evidence.json", data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSignerAfterClose(t *testing.T) {
	sim, err := simulator.Get()
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(sim, Config{FirmwareLogPath: filepath.Join(t.TempDir(), "none")})
	if err != nil {
		t.Fatal(err)
	}
	s := b.Signer()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	d := make([]byte, 32)
	if _, err := s.Sign(nil, d, crypto.SHA256); err == nil {
		t.Error("Sign after Close succeeded")
	}
	if _, err := b.Evidence(context.Background(), attest.Binding{}); err == nil {
		t.Error("Evidence after Close succeeded")
	}
}

func BenchmarkEvidenceSimulator(b *testing.B) {
	be := newSimBackend(b, Config{})
	benchEvidence(b, be)
}

// simWithFirmwareLog replays a real firmware event log (from go-eventlog's
// test data) into the simulator's PCRs 0-7, as firmware would, and returns
// a backend that ships the log.
func simWithFirmwareLog(t *testing.T) *Backend {
	t.Helper()
	b := simFirmwareBackend(t, true)
	t.Cleanup(func() { b.Close() })
	return b
}

// simFirmwareBackend is a simulator backend that ships go-eventlog's Ubuntu
// 21.04 firmware log, replayed into PCRs 0-7 when replay is set (else the
// PCRs stay as they are at reset). The caller closes it, which releases the
// simulator.
func simFirmwareBackend(tb testing.TB, replay bool) *Backend {
	tb.Helper()
	raw := eventlogdata.Ubuntu2104NoSecureBootEventLog
	el, err := tcg.ParseEventLog(raw, tcg.ParseOpts{})
	if err != nil {
		tb.Fatal(err)
	}
	sim, err := simulator.Get()
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range el.Events(register.HashSHA256) {
		if !replay || e.Index > 7 || e.Type == eventTypeNoAction || e.Digest == nil {
			continue
		}
		if err := tpm2.PCRExtend(sim, tpmutil.Handle(e.Index), tpm2.AlgSHA256, e.Digest, ""); err != nil {
			tb.Fatal(err)
		}
	}
	path := filepath.Join(tb.TempDir(), "binary_bios_measurements")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		tb.Fatal(err)
	}
	b, err := New(sim, Config{FirmwareLogPath: path})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

const eventTypeNoAction = 0x3

func TestFirmwareLog(t *testing.T) {
	b := simWithFirmwareLog(t)
	kd, _ := attest.KeyDigest(b.Signer().Public())
	binding := attest.Bind(attest.PurposeAttest, kd, []byte("n"))
	ev, err := b.Evidence(context.Background(), binding)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := ev.Part(PartEventLog); !ok || p.MediaType != MediaTypeEventLog {
		t.Fatalf("no %s part", PartEventLog)
	}
	opts := attest.VerifyOptions{Binding: binding, EnvKey: b.Signer().Public(), TrustedAKs: []crypto.PublicKey{b.AKPublic()}}
	claims, checks := Verifier{}.Verify(ev, opts)
	if c := checks[len(checks)-1]; c.Name != CheckFirmwareLog || !c.OK || c.Skip || claims == nil {
		t.Fatalf("firmware-log check %+v (claims %v)", c, claims != nil)
	}
	// A log that does not match the PCRs fails.
	other := replacePart(ev, PartEventLog, eventlogdata.Debian10EventLog)
	_, checks = Verifier{}.Verify(other, opts)
	if c := checks[len(checks)-1]; c.OK || !strings.Contains(c.Detail, "does not replay") {
		t.Errorf("firmware-log check with a foreign log: %+v", c)
	}
}

func TestConformanceSimulatorWithFirmwareLog(t *testing.T) {
	attesttest.RunOptions(t, func(t *testing.T) attest.Backend { return simWithFirmwareLog(t) }, Verifier{},
		// Only the event digests of a firmware log are authenticated (by
		// replay); event data and no-action events are not, so a flipped
		// byte there goes unnoticed by design.
		attesttest.Options{Trust: pinAK, MaySkip: []string{}, Unauthenticated: []string{PartEventLog}})
}

// TestConcurrentUse runs Evidence, Extend, Read and Sign from several
// goroutines; with -race it proves the one mutex covers all TPM access.
func TestConcurrentUse(t *testing.T) {
	b := newSimBackend(t, Config{})
	ctx := context.Background()
	digests := map[crypto.Hash][]byte{}
	for _, h := range b.Banks() {
		digests[h] = make([]byte, h.Size())
	}
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 10 {
		wg.Add(4)
		go func() { defer wg.Done(); _, err := b.Evidence(ctx, attest.Binding{byte(i)}); errs <- err }()
		go func() { defer wg.Done(); errs <- b.Extend(ctx, digests) }()
		go func() { defer wg.Done(); _, err := b.Read(ctx, crypto.SHA256); errs <- err }()
		go func() {
			defer wg.Done()
			_, err := b.Signer().Sign(nil, make([]byte, 32), crypto.SHA256)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func BenchmarkNewSimulator(b *testing.B) {
	benchNew(b, func() (io.ReadWriteCloser, error) { return simulator.Get() })
}
