package tpm

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"net"
	"path/filepath"
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
// once) and the time the TPM took to answer it, from writing the command
// to reading the response. Tests can make it refuse a command, as a TPM
// lacking it would, and run something after a response.
type recorder struct {
	rw io.ReadWriteCloser

	mu      sync.Mutex
	cmds    []tpmfault.Command
	times   []time.Duration             // per command
	refuse  map[tpmfault.Command]uint32 // answered with this response code, not forwarded
	after   func(tpmfault.Command)      // called after each response, outside the TPM's turn
	pending []byte                      // a refusal to return
	sent    time.Time                   // when the last command was written
}

func newRecorder(rw io.ReadWriteCloser) *recorder { return &recorder{rw: rw} }

func (r *recorder) Write(p []byte) (int, error) {
	cc := tpmfault.Command(0)
	if len(p) >= 10 {
		cc = tpmfault.Command(binary.BigEndian.Uint32(p[6:10]))
	}
	r.mu.Lock()
	r.cmds = append(r.cmds, cc)
	r.times = append(r.times, 0)
	r.sent = time.Now()
	rc, refused := r.refuse[cc]
	r.mu.Unlock()
	if refused {
		resp := binary.BigEndian.AppendUint16(nil, 0x8001)
		resp = binary.BigEndian.AppendUint32(resp, 10)
		r.pending = binary.BigEndian.AppendUint32(resp, rc)
		return len(p), nil
	}
	return r.rw.Write(p)
}

func (r *recorder) Read(p []byte) (int, error) {
	if r.pending != nil {
		n := copy(p, r.pending)
		r.pending = nil
		return n, nil
	}
	n, err := r.rw.Read(p)
	r.mu.Lock()
	after, cc := r.after, tpmfault.Command(0)
	if len(r.cmds) > 0 {
		cc = r.cmds[len(r.cmds)-1]
		r.times[len(r.times)-1] = time.Since(r.sent)
	}
	r.mu.Unlock()
	if err == nil && after != nil {
		after(cc)
	}
	return n, err
}

func (r *recorder) Close() error { return r.rw.Close() }

// take returns the commands recorded and the TPM's time since the last take.
func (r *recorder) take() ([]tpmfault.Command, time.Duration) {
	c, times := r.takeTimed()
	var busy time.Duration
	for _, t := range times {
		busy += t
	}
	return c, busy
}

// takeTimed returns the commands recorded since the last take and the
// TPM's time for each.
func (r *recorder) takeTimed() ([]tpmfault.Command, []time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, t := r.cmds, r.times
	r.cmds, r.times = nil, nil
	return c, t
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
			if c.Failed() {
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

// TestStartCommandsSWTPM lists the commands of a start on swtpm, which has
// an RSA EK certificate, with a key file: a first start and a restart that
// reloads the key. Nothing is read back or made twice.
func TestStartCommandsSWTPM(t *testing.T) {
	sock := swtpmtest.Start(t)
	dir := t.TempDir()
	cfg := Config{FirmwareLogPath: filepath.Join(dir, "none"), KeyFile: filepath.Join(dir, "envkey.blob")}
	for _, start := range []struct {
		name string
		key  string // the command that makes the env key usable
	}{{"first start", "TPM2_CreateLoaded"}, {"restart", "TPM2_Load"}} {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		rec := newRecorder(&framedConn{Conn: c})
		b, err := New(rec, cfg)
		if err != nil {
			t.Fatal(err)
		}
		cmds, times := rec.takeTimed()
		var total time.Duration
		for i, c := range commands(cmds) {
			t.Logf("%s: %-20s %v", start.name, c, times[i])
			total += times[i]
		}
		t.Logf("%s: %d commands, TPM %v", start.name, len(cmds), total)
		want := []string{"TPM2_GetCapability", "TPM2_GetCapability", "TPM2_GetCapability", "TPM2_CreatePrimary",
			"TPM2_NV_ReadPublic", "TPM2_NV_ReadPublic", "TPM2_GetCapability", "TPM2_NV_Read",
			"TPM2_CreatePrimary", "TPM2_ReadClock", start.key, "TPM2_FlushContext", "TPM2_Certify"}
		if got := commands(cmds); !slices.Equal(got, want) {
			t.Errorf("%s: %d commands\n%v\nwant %d\n%v", start.name, len(got), got, len(want), want)
		}
		ev, err := b.Evidence(context.Background(), attest.Binding{})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := ev.Part(PartEKCert); !ok {
			t.Errorf("%s: no EK certificate in the evidence", start.name)
		}
		if b.KeyReused != (start.key == "TPM2_Load") {
			t.Errorf("%s: KeyReused %v (%s)", start.name, b.KeyReused, b.KeyNotReused)
		}
		b.Close()
	}
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

// benchNew measures New (as Open makes it, without a resource manager):
// its wall time, the TPM's share of it (from writing each command to
// reading its response) and its commands. Opening the transport and Close
// are outside the figures.
func benchNew(b *testing.B, open func() (io.ReadWriteCloser, error)) {
	var wall, busy time.Duration
	var cmds int
	for b.Loop() {
		rw, err := open()
		if err != nil {
			b.Fatal(err)
		}
		rec := newRecorder(rw)
		start := time.Now()
		be, err := New(rec, Config{FirmwareLogPath: "/nonexistent"})
		if err != nil {
			b.Fatal(err)
		}
		wall += time.Since(start)
		c, d := rec.take()
		busy += d
		cmds += len(c)
		be.Close()
	}
	n := float64(b.N)
	b.ReportMetric(float64(wall.Microseconds())/1e3/n, "new-ms")
	b.ReportMetric(float64(busy.Microseconds())/1e3/n, "tpm-ms")
	b.ReportMetric(float64(cmds)/n, "cmds")
}

// benchAttest measures what one fresh attestation needs from the backend,
// Evidence and one signature by the environment key, against its floor:
// the bare TPM2_Quote (same PCRs, same AK) and TPM2_Sign (same key) with
// nothing checked. The two alternate in each iteration so that both see the
// same load on a shared machine; times are medians. rec, when set, is the
// backend's transport: the attestation's TPM commands (mean) and TPM time
// (median) are reported too.
func benchAttest(b *testing.B, be *Backend, rec *recorder) {
	ctx := context.Background()
	sel := tpm2.PCRSelection{Hash: tpm2.AlgSHA256, PCRs: be.cfg.quotedPCRs()}
	d := sha256.Sum256([]byte("statement"))
	if _, err := be.Evidence(ctx, attest.Binding{}); err != nil { // the first one reads the PCRs
		b.Fatal(err)
	}
	raw := func() {
		be.mu.Lock()
		defer be.mu.Unlock()
		if _, _, err := tpm2.QuoteRaw(be.rw, be.ak.Handle(), "", "", make([]byte, 32), sel, tpm2.AlgNull); err != nil {
			b.Fatal(err)
		}
		if _, err := tpm2.Sign(be.rw, be.envHandle, "", d[:], nil, nil); err != nil {
			b.Fatal(err)
		}
	}
	attestation := func(i int) {
		if _, err := be.Evidence(ctx, attest.Binding{byte(i), 1}); err != nil {
			b.Fatal(err)
		}
		if _, err := be.Signer().Sign(nil, d[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
	var raws, atts, busy []time.Duration
	var cmds int
	i := 0
	for b.Loop() {
		start := time.Now()
		raw()
		mid := time.Now()
		if rec != nil {
			rec.take()
		}
		attestation(i)
		raws, atts = append(raws, mid.Sub(start)), append(atts, time.Since(mid))
		if rec != nil {
			c, t := rec.take()
			cmds, busy = cmds+len(c), append(busy, t)
		}
		i++
	}
	median := func(ds []time.Duration) time.Duration {
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	mr, ma := median(raws), median(atts)
	b.ReportMetric(float64(mr.Microseconds()), "raw-µs")
	b.ReportMetric(float64(ma.Microseconds()), "attest-µs")
	b.ReportMetric(float64(ma)/float64(mr), "attest/raw")
	if rec != nil {
		b.ReportMetric(float64(cmds)/float64(len(atts)), "cmds/attest")
		b.ReportMetric(float64(median(busy).Microseconds()), "tpm-µs/attest")
	}
}

func BenchmarkAttestSWTPM(b *testing.B) {
	c, err := net.Dial("unix", swtpmtest.Start(b))
	if err != nil {
		b.Fatal(err)
	}
	rec := newRecorder(&framedConn{Conn: c})
	be, err := New(rec, Config{FirmwareLogPath: "/nonexistent"})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	benchAttest(b, be, rec)
}
