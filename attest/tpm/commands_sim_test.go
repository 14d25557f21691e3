//go:build cgo

package tpm

import (
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/internal/tpmfault"
)

// newRecordedSim runs the backend on the simulator through a recorder.
func newRecordedSim(t testing.TB, cfg Config) (*Backend, *recorder, *simulator.Simulator) {
	t.Helper()
	sim, err := simulator.Get()
	if err != nil {
		t.Fatalf("start TPM simulator: %v", err)
	}
	rec := newRecorder(sim)
	if cfg.FirmwareLogPath == "" {
		cfg.FirmwareLogPath = filepath.Join(t.TempDir(), "none")
	}
	b, err := New(rec, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b, rec, sim
}

func recCount(rec *recorder) func(func()) int {
	return func(f func()) int {
		rec.take()
		f()
		c, _ := rec.take()
		return len(c)
	}
}

// TestStartCommandsSimulator lists every TPM command of a start, as the
// agent makes it: New, reading the agent PCR in each bank, the launch's
// extends, the launch attestation's quote and signature.
func TestStartCommandsSimulator(t *testing.T) {
	b, rec, _ := newRecordedSim(t, Config{})
	got, times := rec.takeTimed()
	for i, c := range commands(got) {
		t.Logf("%-20s %v", c, times[i])
	}
	want := []string{
		"TPM2_GetCapability", "TPM2_GetCapability", // leftovers: sessions active?, transient objects
		"TPM2_GetCapability",                       // PCR banks
		"TPM2_CreatePrimary",                       // AK
		"TPM2_NV_ReadPublic", "TPM2_NV_ReadPublic", // EK certificates (ECC, RSA): none here
		"TPM2_CreatePrimary", // SRK
		"TPM2_CreateLoaded",  // environment key
		"TPM2_FlushContext",  // SRK
		"TPM2_Certify",       // environment key by the AK
	}
	if !slices.Equal(commands(got), want) {
		t.Errorf("New sent %d commands:\n%v\nwant %d:\n%v", len(got), commands(got), len(want), want)
	}
	ctx := context.Background()
	for _, h := range b.Banks() {
		if _, err := b.Read(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := rec.take(); len(got) != len(b.Banks()) {
		t.Errorf("Read of %d banks sent %v", len(b.Banks()), commands(got))
	}
	digests := map[crypto.Hash][]byte{}
	for _, h := range b.Banks() {
		digests[h] = h.New().Sum(nil)
	}
	for range 5 {
		if err := b.Extend(ctx, digests); err != nil {
			t.Fatal(err)
		}
	}
	rec.take()
	binding := attest.Bind(attest.PurposeLaunch, [32]byte{}, nil)
	ev, err := b.Evidence(ctx, binding)
	if err != nil {
		t.Fatal(err)
	}
	// The SHA-256 Read brought 8 of the 13 quoted PCRs along.
	if got, _ := rec.take(); !slices.Equal(commands(got), []string{"TPM2_Quote", "TPM2_PCR_Read"}) {
		t.Errorf("first Evidence after Read sent %v, want TPM2_Quote, TPM2_PCR_Read", commands(got))
	}
	checkEvidence(t, b, ev, binding)
}

func TestEvidenceCommandsSimulator(t *testing.T) {
	b, rec, _ := newRecordedSim(t, Config{})
	runEvidenceCommands(t, b, recCount(rec))
}

// TestEvidenceReadBackAfterRead: values the agent's Read brought along and
// that then changed are read again.
func TestEvidenceReadBackAfterRead(t *testing.T) {
	b, rec, _ := newRecordedSim(t, Config{})
	ctx := context.Background()
	if _, err := b.Read(ctx, crypto.SHA256); err != nil {
		t.Fatal(err)
	}
	extendOutside(t, b, 0, "late firmware")
	binding := attest.Bind(attest.PurposeLaunch, [32]byte{}, nil)
	var ev *attest.Evidence
	var err error
	// TPM2_Quote, the 5 PCRs Read left out (1), then all 13 (2).
	if n := recCount(rec)(func() { ev, err = b.Evidence(ctx, binding) }); n != 4 {
		t.Errorf("Evidence sent %d commands, want 4", n)
	}
	if err != nil {
		t.Fatal(err)
	}
	checkEvidence(t, b, ev, binding)
}

// TestEvidencePCRsMoved: a PCR that moves after every quote and every
// read makes Evidence give up after quoteAttempts quotes, without failing
// the TPM; once it stops moving, Evidence works again. (A PCR that moved
// once is read back, and the next quote matches.)
func TestEvidencePCRsMoved(t *testing.T) {
	b, rec, sim := newRecordedSim(t, Config{})
	ctx := context.Background()
	if _, err := b.Evidence(ctx, attest.Binding{}); err != nil {
		t.Fatal(err)
	}
	extendOutside(t, b, 11, "phase")
	d := sha256.Sum256([]byte("phase"))
	rec.after = func(cc tpmfault.Command) {
		if cc == tpmfault.CCQuote || cc == tpmfault.CCPCRRead {
			if err := tpm2.PCRExtend(sim, tpmutil.Handle(11), tpm2.AlgSHA256, d[:], ""); err != nil {
				t.Error(err)
			}
		}
	}
	rec.take()
	_, err := b.Evidence(ctx, attest.Binding{1})
	if !errors.Is(err, errPCRsMoved) {
		t.Fatalf("Evidence with PCR 11 moving after every quote: %v, want errPCRsMoved", err)
	}
	if errors.Is(err, attest.ErrDeviceFailed) || b.tr.Err() != nil {
		t.Fatalf("a moving PCR failed the TPM: %v", b.tr.Err())
	}
	got, _ := rec.take()
	if n := countOf(got, tpmfault.CCQuote); n != quoteAttempts {
		t.Errorf("%d quotes, want %d: %v", n, quoteAttempts, commands(got))
	}
	rec.after = nil
	binding := attest.Binding{2}
	ev, err := b.Evidence(ctx, binding)
	if err != nil {
		t.Fatal(err)
	}
	checkEvidence(t, b, ev, binding)
}

func countOf(cmds []tpmfault.Command, cc tpmfault.Command) int {
	n := 0
	for _, c := range cmds {
		if c == cc {
			n++
		}
	}
	return n
}

// TestCreateLoadedFallback: a TPM without TPM2_CreateLoaded (before
// revision 1.38) gets the same key by TPM2_Create and TPM2_Load, and its
// key file loads again.
func TestCreateLoadedFallback(t *testing.T) {
	sim, err := simulator.Get()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := Config{FirmwareLogPath: filepath.Join(dir, "none"), KeyFile: filepath.Join(dir, "envkey.blob")}
	rec := newRecorder(sim)
	rec.refuse = map[tpmfault.Command]uint32{0x191: 0x143} // TPM_RC_COMMAND_CODE
	b, err := New(rec, cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := rec.take()
	for _, cc := range []tpmfault.Command{tpmfault.CCCreate, tpmfault.CCLoad} {
		if countOf(got, cc) != 1 {
			t.Errorf("New without TPM2_CreateLoaded sent %v, want one %v", commands(got), cc)
		}
	}
	binding := attest.Binding{3}
	ev, err := b.Evidence(context.Background(), binding)
	if err != nil {
		t.Fatal(err)
	}
	checkEvidence(t, b, ev, binding)
	pub := b.Signer().Public()
	// Restart without closing (a crash): the key file's key comes back.
	b2, err := New(b.tr.rw.(*recorder).rw.(io.ReadWriteCloser), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if !b2.KeyReused || !keysEqual(b2.Signer().Public(), pub) {
		t.Errorf("key file from the fallback not reused: %s", b2.KeyNotReused)
	}
}

func BenchmarkAttestSimulator(b *testing.B) {
	be, rec, _ := newRecordedSim(b, Config{})
	benchAttest(b, be, rec)
}
