package tpm

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/internal/swtpmtest"
	"github.com/attestd/attestd/internal/tpmfault"
)

// recorder is a TPM transport that records every command written to it
// (go-tpm writes a whole command at once and reads a whole response at
// once) and the time the TPM took to answer. Tests can make it refuse a
// command, as a TPM lacking it would, and run something after a response.
type recorder struct {
	rw io.ReadWriteCloser

	mu      sync.Mutex
	cmds    []tpmfault.Command
	busy    time.Duration
	refuse  map[tpmfault.Command]uint32 // answered with this response code, not forwarded
	after   func(tpmfault.Command)      // called after each response, outside the TPM's turn
	pending []byte                      // a refusal to return
	last    tpmfault.Command
}

func newRecorder(rw io.ReadWriteCloser) *recorder { return &recorder{rw: rw} }

func (r *recorder) Write(p []byte) (int, error) {
	cc := tpmfault.Command(0)
	if len(p) >= 10 {
		cc = tpmfault.Command(binary.BigEndian.Uint32(p[6:10]))
	}
	r.mu.Lock()
	r.cmds = append(r.cmds, cc)
	r.last = cc
	rc, refused := r.refuse[cc]
	r.mu.Unlock()
	if refused {
		resp := binary.BigEndian.AppendUint16(nil, 0x8001)
		resp = binary.BigEndian.AppendUint32(resp, 10)
		r.pending = binary.BigEndian.AppendUint32(resp, rc)
		return len(p), nil
	}
	start := time.Now()
	n, err := r.rw.Write(p)
	r.addBusy(time.Since(start))
	return n, err
}

func (r *recorder) Read(p []byte) (int, error) {
	if r.pending != nil {
		n := copy(p, r.pending)
		r.pending = nil
		return n, nil
	}
	start := time.Now()
	n, err := r.rw.Read(p)
	r.addBusy(time.Since(start))
	r.mu.Lock()
	after, cc := r.after, r.last
	r.mu.Unlock()
	if err == nil && after != nil {
		after(cc)
	}
	return n, err
}

func (r *recorder) Close() error { return r.rw.Close() }

func (r *recorder) addBusy(d time.Duration) {
	r.mu.Lock()
	r.busy += d
	r.mu.Unlock()
}

// take returns the commands recorded and the TPM's time since the last take.
func (r *recorder) take() ([]tpmfault.Command, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, d := r.cmds, r.busy
	r.cmds, r.busy = nil, 0
	return c, d
}

// commands are the TPM2_* names of recorded commands.
func commands(cmds []tpmfault.Command) []string {
	extra := map[tpmfault.Command]string{0x169: "TPM2_NV_ReadPublic", 0x191: "TPM2_CreateLoaded"}
	out := make([]string, len(cmds))
	for i, c := range cmds {
		if n, ok := extra[c]; ok {
			out[i] = n
		} else {
			out[i] = c.String()
		}
	}
	return out
}

// extendOutside extends pcr in the SHA-256 bank on the backend's own
// connection, as another TPM user would: the backend is not told.
func extendOutside(t testing.TB, b *Backend, pcr int, data string) {
	t.Helper()
	d := sha256.Sum256([]byte(data))
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := tpm2.PCRExtend(b.tr.rw, tpmutil.Handle(pcr), tpm2.AlgSHA256, d[:], ""); err != nil {
		t.Fatalf("extend PCR %d outside the backend: %v", pcr, err)
	}
}

// readOutside reads the SHA-256 values of pcrs past the backend.
func readOutside(t testing.TB, b *Backend, pcrs []int) map[int][]byte {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[int][]byte{}
	for i := 0; i < len(pcrs); i += maxPCRRead {
		vals, err := tpm2.ReadPCRs(b.tr.rw, tpm2.PCRSelection{Hash: tpm2.AlgSHA256, PCRs: pcrs[i:min(i+maxPCRRead, len(pcrs))]})
		if err != nil {
			t.Fatal(err)
		}
		for p, v := range vals {
			out[p] = v
		}
	}
	return out
}

// checkEvidence verifies ev against the binding and the backend's AK, and
// compares its PCR values with the TPM's.
func checkEvidence(t testing.TB, b *Backend, ev *attest.Evidence, binding attest.Binding) {
	t.Helper()
	claims, checks := Verifier{}.Verify(ev, attest.VerifyOptions{Binding: binding, EnvKey: b.Signer().Public(),
		TrustedAKs: []crypto.PublicKey{b.AKPublic()}})
	if claims == nil {
		for _, c := range checks {
			if !c.OK && !c.Skip {
				t.Errorf("check %s failed: %s", c.Name, c.Detail)
			}
		}
		t.Fatal("evidence does not verify")
	}
	data, err := ev.MustPart(PartPCRs)
	if err != nil {
		t.Fatal(err)
	}
	idx, got, err := decodePCRs(data)
	if err != nil {
		t.Fatal(err)
	}
	if want := b.cfg.quotedPCRs(); !slices.Equal(idx, want) {
		t.Fatalf("evidence has PCRs %v, want %v", idx, want)
	}
	for p, v := range readOutside(t, b, idx) {
		if hex.EncodeToString(got[p]) != hex.EncodeToString(v) {
			t.Errorf("evidence PCR %d = %x, the TPM has %x", p, got[p], v)
		}
	}
}

// TestEvidenceCommandsSWTPM counts, through the fault proxy, the commands
// that reach swtpm: one TPM2_Quote per Evidence once the PCR values are
// known, and the read-back after a PCR changed behind the backend's back.
func TestEvidenceCommandsSWTPM(t *testing.T) {
	proxy := tpmfault.Start(t, swtpmtest.Start(t))
	b := openSWTPM(t, proxy.Socket())
	sent := func() int { return proxy.Stats().Commands }
	runEvidenceCommands(t, b, func(f func()) int {
		before := sent()
		f()
		return sent() - before
	})
}

// runEvidenceCommands drives b through the steady state, its own Extend
// and an outside extend of PCR 11, and checks how many TPM commands
// (count(f): the commands f sent) each Evidence sends and that every
// evidence verifies with the values the TPM has.
func runEvidenceCommands(t *testing.T, b *Backend, count func(func()) int) {
	ctx := context.Background()
	evidence := func(what string, i, want int) {
		t.Helper()
		binding := attest.Bind(attest.PurposeAttest, [32]byte{1}, []byte(strconv.Itoa(i)))
		var ev *attest.Evidence
		var err error
		if n := count(func() { ev, err = b.Evidence(ctx, binding) }); n != want {
			t.Errorf("%s: Evidence %d sent %d TPM commands, want %d", what, i, n, want)
		}
		if err != nil {
			t.Fatalf("%s: Evidence %d: %v", what, i, err)
		}
		checkEvidence(t, b, ev, binding)
	}
	steady := func(what string) {
		t.Helper()
		for i := range 3 {
			evidence(what, i, 1) // TPM2_Quote
		}
	}
	evidence("first", 0, 3) // TPM2_Quote, 2 TPM2_PCR_Read
	steady("after the first")

	digests := map[crypto.Hash][]byte{}
	for _, h := range b.Banks() {
		digests[h] = h.New().Sum(nil)
	}
	if n := count(func() {
		if err := b.Extend(ctx, digests); err != nil {
			t.Fatal(err)
		}
	}); n != 1 {
		t.Errorf("Extend sent %d TPM commands, want 1", n)
	}
	steady("after the backend's own Extend")

	extendOutside(t, b, 11, "ready")
	evidence("after an outside extend of PCR 11", 0, 3) // TPM2_Quote, 2 TPM2_PCR_Read
	steady("after the read-back")
}

func BenchmarkNewSWTPM(b *testing.B) {
	sock := swtpmtest.Start(b)
	benchNew(b, func() (io.ReadWriteCloser, error) {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return nil, err
		}
		return &framedConn{Conn: c}, nil
	})
}

// benchNew measures New (as Open makes it, without a resource manager) and
// reports the TPM's share: the time between writing each command and
// reading its response, and the commands.
func benchNew(b *testing.B, open func() (io.ReadWriteCloser, error)) {
	var busy time.Duration
	var cmds int
	for b.Loop() {
		rw, err := open()
		if err != nil {
			b.Fatal(err)
		}
		rec := newRecorder(rw)
		be, err := New(rec, Config{FirmwareLogPath: "/nonexistent"})
		if err != nil {
			b.Fatal(err)
		}
		c, d := rec.take()
		busy += d
		cmds += len(c)
		be.Close()
	}
	b.ReportMetric(float64(busy.Microseconds())/1e3/float64(b.N), "tpm-ms/op")
	b.ReportMetric(float64(cmds)/float64(b.N), "cmds/op")
}

// benchAttest measures what one fresh attestation needs from the backend:
// Evidence and one signature by the environment key.
func benchAttest(b *testing.B, be *Backend) {
	ctx := context.Background()
	d := sha256.Sum256([]byte("statement"))
	if _, err := be.Evidence(ctx, attest.Binding{}); err != nil { // the first one reads the PCRs
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := be.Evidence(ctx, attest.Binding{1}); err != nil {
			b.Fatal(err)
		}
		if _, err := be.Signer().Sign(nil, d[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
}

// benchRawQuoteSign is the floor benchAttest is compared with: the bare
// TPM2_Quote and TPM2_Sign with the backend's keys, nothing checked.
func benchRawQuoteSign(b *testing.B, be *Backend) {
	sel := tpm2.PCRSelection{Hash: tpm2.AlgSHA256, PCRs: be.cfg.quotedPCRs()}
	d := sha256.Sum256([]byte("statement"))
	be.mu.Lock()
	defer be.mu.Unlock()
	for b.Loop() {
		if _, _, err := tpm2.QuoteRaw(be.rw, be.ak.Handle(), "", "", make([]byte, 32), sel, tpm2.AlgNull); err != nil {
			b.Fatal(err)
		}
		if _, err := tpm2.Sign(be.rw, be.envHandle, "", d[:], nil, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAttestSWTPM(b *testing.B) {
	benchAttest(b, openSWTPM(b, swtpmtest.Start(b)))
}

func BenchmarkRawQuoteSignSWTPM(b *testing.B) {
	benchRawQuoteSign(b, openSWTPM(b, swtpmtest.Start(b)))
}
