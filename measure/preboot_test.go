package measure

import (
	"bytes"
	"context"
	"crypto"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"
)

// tcgEvent is one event of a test firmware log.
type tcgEvent struct {
	pcr  uint32
	typ  uint32
	data []byte
	// digest per bank; nil: the hash of data
	digest map[crypto.Hash][]byte
}

var tcgAlgIDs = map[crypto.Hash]uint16{crypto.SHA1: 0x04, crypto.SHA256: 0x0B, crypto.SHA384: 0x0C}

// buildTCGLog returns a crypto-agile TCG PC Client event log (a Spec ID
// event, then evs) with digests in banks, and the PCR values it replays to.
func buildTCGLog(t testing.TB, banks []crypto.Hash, evs []tcgEvent) ([]byte, map[uint32]map[crypto.Hash][]byte) {
	t.Helper()
	var b bytes.Buffer
	le := func(v any) { binary.Write(&b, binary.LittleEndian, v) }
	var spec bytes.Buffer
	spec.WriteString("Spec ID Event03\x00")
	for _, v := range []any{uint32(0), uint8(0), uint8(2), uint8(0), uint8(2), uint32(len(banks))} {
		binary.Write(&spec, binary.LittleEndian, v) // platform class, version 2.0 errata 0, UINTN size, algorithms
	}
	for _, h := range banks {
		binary.Write(&spec, binary.LittleEndian, []uint16{tcgAlgIDs[h], uint16(h.Size())})
	}
	spec.WriteByte(0) // vendor info size
	le(uint32(0))
	le(uint32(3)) // EV_NO_ACTION
	b.Write(make([]byte, 20))
	le(uint32(spec.Len()))
	b.Write(spec.Bytes())
	pcrs := map[uint32]map[crypto.Hash][]byte{}
	for _, e := range evs {
		le(e.pcr)
		le(e.typ)
		le(uint32(len(banks)))
		if pcrs[e.pcr] == nil {
			pcrs[e.pcr] = map[crypto.Hash][]byte{}
			for _, h := range banks {
				pcrs[e.pcr][h] = make([]byte, h.Size())
			}
		}
		for _, h := range banks {
			d := e.digest[h]
			if d == nil {
				w := h.New()
				w.Write(e.data)
				d = w.Sum(nil)
			}
			le(tcgAlgIDs[h])
			b.Write(d)
			if e.typ != 3 {
				pcrs[e.pcr][h] = ExtendAll(h, pcrs[e.pcr][h], [][]byte{d})
			}
		}
		le(uint32(len(e.data)))
		b.Write(e.data)
	}
	return b.Bytes(), pcrs
}

func utf16z(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s + "\x00")) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return b
}

var testBanks = []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384}

// sysextLog is a firmware log with some firmware events and systemd-stub's
// sysext event on PCR 13 (its digest: the archive of one image).
func sysextLog(t testing.TB) ([]byte, map[crypto.Hash][]byte, PrebootMeasurement) {
	t.Helper()
	img := []byte("a system extension image")
	m, err := SysextPreboot([]SysextFile{{Name: "tools.raw", Size: int64(len(img)), Content: bytes.NewReader(img)}}, testBanks)
	if err != nil {
		t.Fatal(err)
	}
	raw, pcrs := buildTCGLog(t, testBanks, []tcgEvent{
		{pcr: 0, typ: 8, data: []byte("firmware version")},
		{pcr: 4, typ: 0x80000003, data: []byte("an application")},
		{pcr: 13, typ: 3, data: []byte("no action: not extended")},
		{pcr: 13, typ: 0x0D, data: utf16z(SysextDescription), digest: m.Digests},
		{pcr: 12, typ: 0x0D, data: utf16z("credentials")},
	})
	return raw, pcrs[13], m
}

func TestPrebootFromTCGLog(t *testing.T) {
	raw, pcr13, want := sysextLog(t)
	got, err := PrebootFromTCGLog(raw, Register{Kind: PCR, Index: 13}, pcr13)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("%d preboot events, want 1", len(got))
	}
	if !bytes.Equal(got[0].Event.Data, want.Event.Data) {
		t.Errorf("event data %s, want what SysextPreboot predicts: %s", got[0].Event.Data, want.Event.Data)
	}
	for _, h := range testBanks {
		if !bytes.Equal(got[0].Digests[h], want.Digests[h]) {
			t.Errorf("%v digest %x, want %x", h, got[0].Digests[h], want.Digests[h])
		}
	}
	var p Preboot
	if err := DecodeEventData(got[0].Event.Data, &p); err != nil {
		t.Fatal(err)
	}
	if p != (Preboot{Source: PrebootSourceTCG, EventType: "EV_IPL", EventTypeValue: 13, Description: SysextDescription}) {
		t.Errorf("preboot data %+v", p)
	}
}

func TestPrebootFromTCGLogRefuses(t *testing.T) {
	raw, pcr13, _ := sysextLog(t)
	other := map[crypto.Hash][]byte{}
	for h, v := range pcr13 {
		other[h] = ExtendAll(h, v, [][]byte{make([]byte, h.Size())})
	}
	sha256Only, _ := buildTCGLog(t, []crypto.Hash{crypto.SHA256}, []tcgEvent{{pcr: 13, typ: 0x0D, data: []byte("x")}})
	for _, tc := range []struct {
		name    string
		raw     []byte
		reg     Register
		current map[crypto.Hash][]byte
	}{
		{"register moved on", raw, Register{Kind: PCR, Index: 13}, other},
		{"no events on the register", raw, Register{Kind: PCR, Index: 14}, pcr13},
		{"a bank the log lacks", sha256Only, Register{Kind: PCR, Index: 13}, pcr13},
		{"an RTMR", raw, Register{Kind: RTMR, Index: 3}, pcr13},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := PrebootFromTCGLog(tc.raw, tc.reg, tc.current)
			if !errors.Is(err, ErrPrebootUnexplained) {
				t.Fatalf("err = %v, want ErrPrebootUnexplained", err)
			}
		})
	}
	if _, err := PrebootFromTCGLog([]byte("not a log"), Register{Kind: PCR, Index: 13}, pcr13); err == nil || errors.Is(err, ErrPrebootUnexplained) {
		t.Fatalf("garbage log: %v, want a parse error", err)
	}
}

func TestPrebootText(t *testing.T) {
	for _, tc := range []struct {
		data []byte
		text string
		ok   bool
	}{
		{utf16z("System extension initrd"), "System extension initrd", true},
		{[]byte("loader.conf\x00"), "loader.conf", true},
		{[]byte("ab"), "ab", true}, // not U+6261
		{[]byte{0xff, 0x00, 0x01}, "", false},
		{[]byte{}, "", false},
		{bytes.Repeat([]byte("a"), maxPrebootText+1), "", false},
	} {
		got, ok := prebootText(tc.data)
		if got != tc.text || ok != tc.ok {
			t.Errorf("prebootText(%q) = %q, %v; want %q, %v", tc.data, got, ok, tc.text, tc.ok)
		}
	}
}

// A preboot record is accepted before every record of attestd's own, and
// refused anywhere after one: its digest cannot be checked.
func TestPrebootReplayPosition(t *testing.T) {
	_, pcr13, m := sysextLog(t)
	reg := newFakeRegister(testBanks...)
	// The register as the firmware left it.
	reg.vals = map[crypto.Hash][]byte{}
	for h, v := range pcr13 {
		reg.vals[h] = bytes.Clone(v)
	}
	path := filepath.Join(t.TempDir(), "events.cel")
	l, err := OpenLog(LogConfig{Path: path, Kind: PCR, Index: 13})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.RecordPreboot(m); err != nil {
		t.Fatal(err)
	}
	if reg.calls != 0 {
		t.Fatal("RecordPreboot extended the register")
	}
	if err := l.Record(context.Background(), reg, m.Event); err == nil {
		t.Fatal("Record extended a preboot event")
	}
	for _, e := range launchEvents(t) {
		if err := l.Record(context.Background(), reg, e); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.RecordPreboot(m); !errors.Is(err, ErrPrebootPosition) {
		t.Fatalf("RecordPreboot after attestd's events: %v, want ErrPrebootPosition", err)
	}
	recs := l.Records()
	for _, h := range testBanks {
		if err := CheckReplay(recs, h, PCR, 13, reg.value(h)); err != nil {
			t.Fatalf("replay %v: %v", h, err)
		}
	}
	if prefix, ok := LaunchPrefix(recs); !ok || prefix[0].Type != EventPreboot || len(prefix) != len(recs) {
		t.Fatalf("launch prefix %d of %d records, ok=%v", len(prefix), len(recs), ok)
	}
	l2, err := OpenLog(LogConfig{Path: path, Kind: PCR, Index: 13})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if l2.Preboot() != 1 || l2.Len() != len(recs) {
		t.Fatalf("reopened: %d preboot of %d records", l2.Preboot(), l2.Len())
	}
	if _, err := l2.RecordPreboot(m); !errors.Is(err, ErrPrebootPosition) {
		t.Fatalf("RecordPreboot after reopening: %v", err)
	}
	l2.Close()

	// The same preboot record moved after the binary event.
	moved := []Record{recs[1], recs[0]}
	moved[0].Seq, moved[1].Seq = 0, 1
	var re *ReplayError
	if _, err := Replay(moved, crypto.SHA256, PCR, 13); !errors.Is(err, ErrPrebootPosition) || !errors.As(err, &re) || re.Record != 1 {
		t.Fatalf("preboot after an own event: %v, want a ReplayError for record 1 wrapping ErrPrebootPosition", err)
	}
	if err := os.WriteFile(path, encodeAll(t, moved), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenLog(LogConfig{Path: path, Kind: PCR, Index: 13}); !errors.Is(err, ErrPrebootPosition) {
		t.Fatalf("OpenLog of a log with a preboot event after an own one: %v", err)
	}
}

// The archive SysextPreboot hashes is a cpio archive the kernel (and cpio)
// can unpack, laid out as systemd-stub's pack_cpio lays it out.
func TestSysextArchive(t *testing.T) {
	files := func() []SysextFile {
		return []SysextFile{
			{Name: "b.raw", Size: 5, Content: strings.NewReader("bbbbb")},
			{Name: "a.RAW", Size: 2, Content: strings.NewReader("aa")},
		}
	}
	var buf bytes.Buffer
	sorted := []SysextFile{files()[1], files()[0]}
	if err := writeSysextCPIO(&buf, sorted); err != nil {
		t.Fatal(err)
	}
	arch := buf.Bytes()
	if len(arch)%4 != 0 {
		t.Fatalf("archive of %d bytes, not a multiple of 4", len(arch))
	}
	// The trailer exactly as in the strings of Debian's systemd-stub 252 binary.
	if !bytes.HasSuffix(arch, []byte("07070100000000000000000000000000000000000000010000000000000000000000000000000000000000000000000000000B00000000TRAILER!!!\x00\x00\x00\x00")) {
		t.Fatal("archive does not end in the stub's trailer")
	}
	if !bytes.HasPrefix(arch, []byte("070701"+"00000001"+"0000416d")) {
		t.Fatalf("first header %q", arch[:22])
	}
	m, err := SysextPreboot(files(), []crypto.Hash{crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	w := crypto.SHA256.New()
	w.Write(arch)
	if !bytes.Equal(m.Digests[crypto.SHA256], w.Sum(nil)) {
		t.Fatal("SysextPreboot's digest is not the archive's, images sorted by name")
	}
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed: the unpacking half needs it")
	}
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-id", "--quiet")
	cmd.Dir, cmd.Stdin = dir, bytes.NewReader(arch)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio: %v: %s", err, out)
	}
	for name, want := range map[string]string{"a.RAW": "aa", "b.raw": "bbbbb"} {
		got, err := os.ReadFile(filepath.Join(dir, ".extra", "sysext", name))
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v", name, got, err)
		}
	}
}

func TestSysextPrebootRefuses(t *testing.T) {
	for _, name := range []string{"", ".hidden.raw", "tools.img", "dir/tools.raw", "tööls.raw", strings.Repeat("a", 252) + ".raw"} {
		if _, err := SysextPreboot([]SysextFile{{Name: name, Content: strings.NewReader("")}}, testBanks); err == nil {
			t.Errorf("SysextPreboot accepted %q, which the stub skips", name)
		}
	}
	two := []SysextFile{{Name: "a.raw", Content: strings.NewReader("")}, {Name: "a.raw", Content: strings.NewReader("")}}
	if _, err := SysextPreboot(two, testBanks); err == nil {
		t.Error("SysextPreboot accepted a name twice")
	}
	if _, err := SysextPreboot([]SysextFile{{Name: "a.raw", Size: 3, Content: strings.NewReader("a")}}, testBanks); err == nil {
		t.Error("SysextPreboot accepted a short image")
	}
}

func FuzzPrebootFromTCGLog(f *testing.F) {
	raw, pcr13, _ := sysextLog(f)
	f.Add(raw)
	for _, name := range []string{"ovmf-uki-firmware.log", "ovmf-e2e-firmware.log"} {
		if b, err := os.ReadFile(filepath.Join("testdata", name)); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, err := PrebootFromTCGLog(b, Register{Kind: PCR, Index: 13}, pcr13)
		if err != nil {
			return
		}
		// What it accepts replays to the register in every bank.
		for h, want := range pcr13 {
			var ds [][]byte
			for _, m := range ms {
				ds = append(ds, m.Digests[h])
			}
			if got := ExtendAll(h, make([]byte, h.Size()), ds); !bytes.Equal(got, want) {
				t.Fatalf("%v: accepted events replay to %x, register %x", h, got, want)
			}
		}
	})
}
