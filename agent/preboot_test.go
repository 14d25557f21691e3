package agent

import (
	"bytes"
	"context"
	"crypto"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/internal/swtpmtest"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/verify"
)

// firmwareLog writes a crypto-agile TCG PC Client event log holding a
// firmware event on PCR 0 and systemd-stub's sysext event on PCR 13 with
// the digests d (one per bank of banks), as OVMF would record it.
func firmwareLog(t *testing.T, dir string, banks []crypto.Hash, d map[crypto.Hash][]byte) string {
	t.Helper()
	algIDs := map[crypto.Hash]uint16{crypto.SHA1: 0x04, crypto.SHA256: 0x0B, crypto.SHA384: 0x0C, crypto.SHA512: 0x0D}
	var b, spec bytes.Buffer
	le := func(w *bytes.Buffer, vs ...any) {
		for _, v := range vs {
			binary.Write(w, binary.LittleEndian, v)
		}
	}
	spec.WriteString("Spec ID Event03\x00")
	le(&spec, uint32(0), uint8(0), uint8(2), uint8(0), uint8(2), uint32(len(banks)))
	for _, h := range banks {
		le(&spec, algIDs[h], uint16(h.Size()))
	}
	spec.WriteByte(0)
	le(&b, uint32(0), uint32(3)) // EV_NO_ACTION: the Spec ID event
	b.Write(make([]byte, 20))
	le(&b, uint32(spec.Len()))
	b.Write(spec.Bytes())
	event := func(pcr, typ uint32, data []byte, d map[crypto.Hash][]byte) {
		le(&b, pcr, typ, uint32(len(banks)))
		for _, h := range banks {
			le(&b, algIDs[h])
			if d == nil {
				w := h.New()
				w.Write(data)
				b.Write(w.Sum(nil))
			} else {
				b.Write(d[h])
			}
		}
		le(&b, uint32(len(data)))
		b.Write(data)
	}
	event(0, 8, []byte("firmware version"), nil)
	var desc []byte
	for _, u := range utf16.Encode([]rune(measure.SysextDescription + "\x00")) {
		desc = binary.LittleEndian.AppendUint16(desc, u)
	}
	event(13, 0x0D, desc, d) // EV_IPL
	path := filepath.Join(dir, "binary_bios_measurements")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// sysext is what systemd-stub measures for one image, in the banks of b.
func sysext(t *testing.T, b *tpm.Backend, content string) measure.PrebootMeasurement {
	t.Helper()
	m, err := measure.SysextPreboot([]measure.SysextFile{{Name: "tools.raw", Size: int64(len(content)), Content: bytes.NewReader([]byte(content))}}, b.Banks())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// The image ships a system extension: systemd-stub extended PCR 13 before
// attestd started. attestd finds the event in the firmware log, records it
// as the first record of its log, launches, and its attestations verify,
// also after a restart in the same boot.
//
// It needs swtpm (SHA-256 bank only, like the runner image's): go-eventlog
// reads no SHA-512 digests from a firmware log, so a TPM with a SHA-512
// bank (the simulator) is refused (TestSysextSHA512BankRefuses).
func TestSysextOnTheRegister(t *testing.T) {
	sw := swtpmtest.StartTPM(t)
	f := newFixture(t)
	b := swtpmBackend(t, sw, f.dir)
	ctx := context.Background()
	m := sysext(t, b, "a system extension image")
	if err := b.Extend(ctx, m.Digests); err != nil { // what the stub did
		t.Fatal(err)
	}
	f.firmwareLog = firmwareLog(t, f.dir, b.Banks(), m.Digests)
	a := f.agent(t, b)
	if err := a.Launch(ctx); err != nil {
		t.Fatalf("Launch with a sysext on PCR 13: %v", err)
	}
	r := mustVerify(t, a.launchAttestation().Encode(), verify.Options{TrustedAKs: []crypto.PublicKey{b.AKPublic()}})
	var types []measure.EventType
	for _, e := range r.Events {
		types = append(types, e.Type)
	}
	want := []measure.EventType{measure.EventPreboot, measure.EventBinary, measure.EventConfig, measure.EventImage, measure.EventExecutor, measure.EventSeparator}
	if !equalTypes(types, want) {
		t.Fatalf("events %v, want %v", types, want)
	}
	if !bytes.Equal(r.Events[0].Data, m.Event.Data) {
		t.Fatalf("preboot event %s, want %s", r.Events[0].Data, m.Event.Data)
	}
	for h, d := range m.Digests {
		if !bytes.Equal(r.Events[0].Digests[h], d) {
			t.Fatalf("preboot %v digest %x, want the firmware log's %x", h, r.Events[0].Digests[h], d)
		}
	}
	checkSysextReference(t, r, m)
	env, err := a.Attest(ctx, []byte("nonce"))
	if err != nil {
		t.Fatal(err)
	}
	mustVerify(t, env.Encode(), verify.Options{Nonce: []byte("nonce"), TrustedAKs: []crypto.PublicKey{b.AKPublic()}})
	a.Close()
	b.Close()

	// A restart in the same boot keeps the log, preboot record first.
	b2 := swtpmBackend(t, sw, f.dir)
	a2 := f.agent(t, b2)
	if err := a2.Launch(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	_, recs := a2.EventLog()
	if recs[0].Type != measure.EventPreboot || recs[len(recs)-1].Type != measure.EventRestart || a2.events.Preboot() != 1 {
		t.Fatalf("after restart: first %v, last %v, %d preboot", recs[0].Type, recs[len(recs)-1].Type, a2.events.Preboot())
	}
	mustVerify(t, a2.launchAttestation().Encode(), verify.Options{TrustedAKs: []crypto.PublicKey{b2.AKPublic()}})
}

// checkSysextReference appraises r against reference values that predict
// the sysext m (as attestctl reference --sysext does) and against ones
// that predict none (an image that ships no system extension).
func checkSysextReference(t *testing.T, r *verify.Result, m measure.PrebootMeasurement) {
	t.Helper()
	prefix, ok := measure.LaunchPrefix(r.Events)
	if !ok {
		t.Fatal("no launch prefix")
	}
	var evs []measure.Event
	var refEvents []verify.ReferenceEvent
	for _, rec := range prefix[1:] {
		evs = append(evs, measure.Event{Type: rec.Type, Data: rec.Data})
		refEvents = append(refEvents, verify.ReferenceEvent{Type: rec.Type.String(), Data: rec.Data})
	}
	pre := verify.ReferenceEvent{Type: "preboot", Data: m.Event.Data, SHA256: hex.EncodeToString(m.Digests[crypto.SHA256]), What: "system extensions: tools.raw"}
	withSysext, err := measure.PredictWithPreboot(crypto.SHA256, []measure.PrebootMeasurement{m}, evs)
	if err != nil {
		t.Fatal(err)
	}
	without, err := measure.PredictRegister(crypto.SHA256, evs)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		agent  verify.AgentReference
		ok     bool
		detail string
	}{
		{"the image ships the sysext", verify.AgentReference{Register: "PCR13", Launch: hex.EncodeToString(withSysext), Events: append([]verify.ReferenceEvent{pre}, refEvents...)}, true, "preboot: system extensions: tools.raw"},
		{"the image ships none", verify.AgentReference{Register: "PCR13", Launch: hex.EncodeToString(without), Events: refEvents}, false, "first difference at event 0: preboot"},
	} {
		checks := r.Appraise(&verify.ReferenceValues{Bank: "sha256", Agent: tc.agent})
		if len(checks) != 1 || checks[0].Name != verify.CheckRefAgentRegister {
			t.Fatalf("%s: checks %+v", tc.name, checks)
		}
		if c := checks[0]; c.OK != tc.ok || !strings.Contains(c.Detail, tc.detail) {
			t.Errorf("%s: %s ok=%v %q, want ok=%v naming %q", tc.name, c.Name, c.OK, c.Detail, tc.ok, tc.detail)
		}
	}
}

// swtpmBackend opens the TPM backend on sw, with its env key file in the
// fixture's runtime directory; it is closed at the end of the test.
func swtpmBackend(t *testing.T, sw *swtpmtest.TPM, dir string) *tpm.Backend {
	t.Helper()
	keyFile := filepath.Join(dir, "run", KeyFileName)
	if err := os.MkdirAll(filepath.Dir(keyFile), 0o750); err != nil {
		t.Fatal(err)
	}
	b, err := tpm.Open(tpm.Config{Device: "unix:" + sw.Socket, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// The firmware log does not explain the register (another sysext than it
// records, none at all, or no firmware log): attestd refuses to start and
// says which register to choose instead.
func TestSysextUnexplainedRefuses(t *testing.T) {
	sw := swtpmtest.StartTPM(t)
	for _, tc := range []struct {
		name string
		log  func(t *testing.T, dir string, b *tpm.Backend) string
	}{
		{"another image in the log", func(t *testing.T, dir string, b *tpm.Backend) string {
			return firmwareLog(t, dir, b.Banks(), sysext(t, b, "another image").Digests)
		}},
		{"no firmware log", func(t *testing.T, dir string, b *tpm.Backend) string { return filepath.Join(dir, "none") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			b := swtpmBackend(t, sw.Clone(t), f.dir)
			ctx := context.Background()
			if err := b.Extend(ctx, sysext(t, b, "a system extension image").Digests); err != nil {
				t.Fatal(err)
			}
			f.firmwareLog = tc.log(t, f.dir, b)
			err := f.agent(t, b).Launch(ctx)
			if !errors.Is(err, ErrUnexplainedRegister) {
				t.Fatalf("Launch: %v, want ErrUnexplainedRegister", err)
			}
			if tc.name == "another image in the log" && !errors.Is(err, measure.ErrPrebootUnexplained) {
				t.Fatalf("Launch: %v, want it to wrap measure.ErrPrebootUnexplained", err)
			}
			t.Log(err)
			if _, statErr := os.Stat(filepath.Join(f.dir, "run", LaunchAttestName)); statErr == nil {
				t.Fatal("a launch attestation was written")
			}
		})
	}
}

// A TPM with a bank the firmware log cannot give (go-eventlog reads no
// SHA-512 digests; the simulator allocates SHA-512): refused, as any
// register the firmware log does not explain in every bank.
func TestSysextSHA512BankRefuses(t *testing.T) {
	b := newBackend(t, openSim(t))
	if !slices.Contains(b.Banks(), crypto.SHA512) {
		t.Skip("the simulator has no SHA-512 bank")
	}
	m := sysext(t, b, "a system extension image")
	if err := b.Extend(context.Background(), m.Digests); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t)
	f.firmwareLog = firmwareLog(t, f.dir, b.Banks(), m.Digests)
	err := f.agent(t, b).Launch(context.Background())
	if !errors.Is(err, ErrUnexplainedRegister) || !errors.Is(err, measure.ErrPrebootUnexplained) {
		t.Fatalf("Launch: %v, want ErrUnexplainedRegister wrapping measure.ErrPrebootUnexplained", err)
	}
}

func equalTypes(a, b []measure.EventType) bool { return slices.Equal(a, b) }
