package measure

import (
	"bytes"
	"context"
	"crypto"
	"encoding/binary"
	"errors"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-eventlog/cel"
)

func tlv(typ uint8, val ...[]byte) []byte {
	v := bytes.Join(val, nil)
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(v)))
	return append(b, v...)
}

func u64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

func TestParseCELRejects(t *testing.T) {
	sha := bytes.Repeat([]byte{1}, 32)
	recnum := tlv(0, u64(0))
	pcr13 := tlv(1, []byte{13})
	digests := tlv(3, tlv(0x0b, sha))
	content := tlv(ContentType, tlv(uint8(EventSeparator), []byte(`{"phase":"launch"}`)))
	good := bytes.Join([][]byte{recnum, pcr13, digests, content}, nil)
	if _, err := ParseCEL(good); err != nil {
		t.Fatalf("ParseCEL(good): %v", err)
	}
	huge := []byte{0, 0xff, 0xff, 0xff, 0xff}

	for _, tc := range []struct {
		name string
		in   []byte
		want error // nil: any error
	}{
		{"too large", make([]byte, MaxLogSize+1), ErrLogTooLarge},
		{"short header", []byte{0, 0, 0}, ErrTruncated},
		{"huge length", huge, ErrTruncated},
		{"huge digest entry", bytes.Join([][]byte{recnum, pcr13, {3, 0, 0, 0, 5, 0x0b, 0xff, 0xff, 0xff, 0xff}, content}, nil), nil},
		{"truncated content", good[:len(good)-1], ErrTruncated},
		{"good then garbage", append(append([]byte{}, good...), 0), ErrTruncated},
		{"recnum wrong size", bytes.Join([][]byte{tlv(0, []byte{1}), pcr13, digests, content}, nil), nil},
		{"NV index type", bytes.Join([][]byte{recnum, tlv(2, []byte{1}), digests, content}, nil), nil},
		{"PCR24", bytes.Join([][]byte{recnum, tlv(1, []byte{24}), digests, content}, nil), nil},
		{"RTMR4", bytes.Join([][]byte{recnum, tlv(108, []byte{5}), digests, content}, nil), nil},
		{"MRTD", bytes.Join([][]byte{recnum, tlv(108, []byte{0}), digests, content}, nil), nil},
		{"fields out of order", bytes.Join([][]byte{recnum, pcr13, content, digests}, nil), nil},
		{"no digests", bytes.Join([][]byte{recnum, pcr13, tlv(3), content}, nil), nil},
		{"short digest", bytes.Join([][]byte{recnum, pcr13, tlv(3, tlv(0x0b, sha[:31])), content}, nil), nil},
		{"duplicate bank", bytes.Join([][]byte{recnum, pcr13, tlv(3, tlv(0x0b, sha), tlv(0x0b, sha)), content}, nil), nil},
		{"unknown bank", bytes.Join([][]byte{recnum, pcr13, tlv(3, tlv(0x99, sha)), content}, nil), nil},
		{"event type 0", bytes.Join([][]byte{recnum, pcr13, digests, tlv(ContentType, tlv(0, []byte("{}")))}, nil), nil},
		{"content two TLVs", bytes.Join([][]byte{recnum, pcr13, digests, tlv(ContentType, tlv(5), tlv(5))}, nil), nil},
		{"content short", bytes.Join([][]byte{recnum, pcr13, digests, tlv(ContentType, []byte{5})}, nil), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := ParseCEL(tc.in)
			if err == nil {
				t.Fatalf("ParseCEL succeeded: %+v", recs)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("ParseCEL = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestParseCELForeignContent(t *testing.T) {
	sha := bytes.Repeat([]byte{1}, 32)
	in := bytes.Join([][]byte{tlv(0, u64(0)), tlv(1, []byte{13}), tlv(3, tlv(0x0b, sha)), tlv(0x50, []byte("cos"))}, nil)
	recs, err := ParseCEL(in)
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{{Seq: 0, Index: 13, Kind: "PCR", Digests: map[crypto.Hash][]byte{crypto.SHA256: sha}, ContentType: 0x50, Data: []byte("cos")}}
	if diff := cmp.Diff(want, recs); diff != "" {
		t.Errorf("ParseCEL (-want +got):\n%s", diff)
	}
	var re *ReplayError
	if _, err := Replay(recs, crypto.SHA256, "PCR", 13); !errors.As(err, &re) {
		t.Errorf("Replay of foreign content = %v, want *ReplayError", err)
	}
}

// seedLogs returns real logs written by Log, for fuzzing.
func seedLogs(f testing.TB) [][]byte {
	var out [][]byte
	for _, c := range []struct {
		kind  RegisterKind
		index int
		banks []crypto.Hash
	}{
		{PCR, 13, []crypto.Hash{crypto.SHA256, crypto.SHA1}},
		{RTMR, 3, []crypto.Hash{crypto.SHA384}},
	} {
		l, err := OpenLog(LogConfig{Path: filepath.Join(f.TempDir(), "events.cel"), Kind: c.kind, Index: c.index})
		if err != nil {
			f.Fatal(err)
		}
		reg := newFakeRegister(c.banks...)
		for _, e := range append(launchEvents(f), RestartEvent([32]byte{1}, [32]byte{2}, Recovery{})) {
			if err := l.Record(context.Background(), reg, e); err != nil {
				f.Fatal(err)
			}
		}
		out = append(out, l.Bytes())
	}
	return out
}

func FuzzParseCEL(f *testing.F) {
	for _, b := range seedLogs(f) {
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{})
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := ParseCEL(b)
		if err != nil {
			return
		}
		checkLibraryAgrees(t, b, recs)
		// What parses re-encodes to something that parses the same.
		again, err := ParseCEL(encodeAll(t, recs))
		if err != nil {
			t.Fatalf("re-encoded log does not parse: %v", err)
		}
		// reflect.DeepEqual is what cmp.Diff checks here, at a tenth of
		// the cost; the diff is only worth its price on a failure.
		if !reflect.DeepEqual(recs, again) {
			t.Fatalf("round trip (-first +second):\n%s", cmp.Diff(recs, again))
		}
		if len(recs) > 0 {
			for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384} {
				_, _ = Replay(recs, h, recs[0].Kind, recs[0].Index)
			}
		}
	})
}

func FuzzParseCmdline(f *testing.F) {
	for _, s := range []string{
		"BOOT_IMAGE=/vmlinuz root=LABEL=root ro quiet roothash=0123abcd usrhash=4567",
		// The UKI's command line as images/bake.sh writes it.
		"console=ttyS0 roothash=" + zeros(64) + " ro panic=-1 no_timer_check systemd.show_status=error",
		`a="x y" "b=c d" -- init`, `"`, `""`, "=x", "a==", "\t\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m := ParseCmdline(s)
		for k := range m {
			if k == "" {
				t.Fatalf("empty key from %q", s)
			}
		}
		if len(splitCmdline(s)) > len(s) {
			t.Fatalf("more parameters than bytes in %q", s)
		}
		_, _ = ImageEvent("", s)
	})
}

func BenchmarkRecordReplay100(b *testing.B) {
	evs := make([]Event, 100)
	for i := range evs {
		evs[i] = Event{Type: EventRuntime, Data: []byte(`{"path":"/usr/bin/step","sha256":"` + zeros(64) + `"}`)}
	}
	for b.Loop() {
		b.StopTimer()
		path := filepath.Join(b.TempDir(), "events.cel")
		b.StartTimer()
		reg := newFakeRegister(crypto.SHA256, crypto.SHA1)
		l, err := OpenLog(LogConfig{Path: path, Kind: PCR, Index: 13})
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range evs {
			if err := l.Record(context.Background(), reg, e); err != nil {
				b.Fatal(err)
			}
		}
		recs, err := ParseCEL(l.Bytes())
		if err != nil {
			b.Fatal(err)
		}
		if err := CheckReplay(recs, crypto.SHA256, "PCR", 13, reg.value(crypto.SHA256)); err != nil {
			b.Fatal(err)
		}
	}
}

// checkLibraryAgrees decodes each record of b, which ParseCEL decoded to
// recs, with go-eventlog's decoder: ParseCEL's own decoder must accept only
// what the library accepts, and read the same fields.
func checkLibraryAgrees(t *testing.T, b []byte, recs []Record) {
	t.Helper()
	for i, off := 0, 0; off < len(b); i++ {
		n, err := scanRecord(b[off:])
		if err != nil {
			t.Fatalf("record %d: ParseCEL accepted a log that does not frame: %v", i, err)
		}
		lib, err := cel.DecodeToCEL(bytes.NewBuffer(bytes.Clone(b[off : off+n])))
		if err != nil || len(lib.Records()) != 1 {
			t.Fatalf("record %d: go-eventlog refuses what ParseCEL accepted: %v", i, err)
		}
		c, r := lib.Records()[0], recs[i]
		kind, index := PCR, int(c.Index)
		if c.IndexType == cel.CCMRType {
			kind, index = RTMR, index-ccmrIndexShift
		}
		content := r.Data
		if r.ContentType == ContentType {
			content, _ = cel.TLV{Type: uint8(r.Type), Value: r.Data}.MarshalBinary()
		}
		if c.RecNum != r.Seq || kind != r.Kind || index != r.Index || c.Content.Type != r.ContentType ||
			!bytes.Equal(c.Content.Value, content) || !reflect.DeepEqual(c.Digests, r.Digests) {
			t.Fatalf("record %d: go-eventlog reads %+v, ParseCEL %+v", i, c, r)
		}
		off += n
	}
}

// TestParseCELAgreesWithLibrary runs the fuzz check on the seed logs.
func TestParseCELAgreesWithLibrary(t *testing.T) {
	for _, b := range seedLogs(t) {
		recs, err := ParseCEL(b)
		if err != nil {
			t.Fatal(err)
		}
		checkLibraryAgrees(t, b, recs)
	}
}
