package measure

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestViewSizeBytes(t *testing.T) {
	reg := newFakeRegister(crypto.SHA256, crypto.SHA1)
	l, path := newTestLog(t, reg, launchEvents(t))
	view := l.View()
	before := bytes.Clone(view)
	if l.Size() != len(view) || !bytes.Equal(l.Bytes(), view) {
		t.Fatalf("Size %d, len(View) %d, Bytes equal %v", l.Size(), len(view), bytes.Equal(l.Bytes(), view))
	}
	file, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(file, view) {
		t.Fatalf("file differs from View: %v", err)
	}
	// Bytes is a copy; View is not.
	b := l.Bytes()
	b[0] ^= 0xff
	if !bytes.Equal(l.View(), before) {
		t.Fatal("changing Bytes() changed the log")
	}
	// An earlier view is unchanged by later records (appending to it does
	// not reach the Log's memory either) and by Reset.
	for i := range 200 {
		if err := l.Record(context.Background(), reg, RuntimeEvent("d", "o", []byte{byte(i)})); err != nil {
			t.Fatal(err)
		}
	}
	_ = append(view, 1, 2, 3)
	if !bytes.Equal(view, before) {
		t.Fatal("a view changed after later records")
	}
	if now := l.View(); !bytes.HasPrefix(now, before) || l.Size() != len(now) {
		t.Fatal("the log does not extend the earlier view")
	}
	if err := CheckReplay(l.Records(), crypto.SHA256, "PCR", 13, reg.value(crypto.SHA256)); err != nil {
		t.Fatal(err)
	}
	if err := l.Reset(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(view, before) || l.Size() != 0 || len(l.View()) != 0 || l.Len() != 0 {
		t.Fatal("Reset changed an earlier view or left records")
	}
}

// TestRef: the digest Ref keeps up is the SHA-256 of the view it returns,
// before and after records, after a reopen and after Reset.
func TestRef(t *testing.T) {
	reg := newFakeRegister(crypto.SHA256)
	l, path := newTestLog(t, reg, launchEvents(t))
	check := func(what string, l *Log) {
		t.Helper()
		view, sum := l.Ref()
		if sum != sha256.Sum256(view) || !bytes.Equal(view, l.View()) {
			t.Fatalf("%s: Ref's digest is not the SHA-256 of its view", what)
		}
	}
	check("opened", l)
	for i := range 50 {
		if err := l.Record(context.Background(), reg, RuntimeEvent("d", "o", []byte{byte(i)})); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			check("after a record", l)
		}
	}
	check("after records", l)
	l.Close()
	again, err := OpenLog(LogConfig{Path: path, Kind: PCR, Index: 13})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	check("reopened", again)
	if err := again.Reset(); err != nil {
		t.Fatal(err)
	}
	check("reset", again)
}

// TestBuild checks Log.Build against BuildFromLog(Records()) after each
// event, recorded and reopened.
func TestBuild(t *testing.T) {
	d1, d2 := [32]byte{1}, [32]byte{2}
	for _, tc := range []struct {
		name string
		evs  []Event
	}{
		{"completed", []Event{BuildIDEvent("b", d1), RuntimeEvent("d", "o", nil), CompleteEvent("b", d2), RestartEvent(d1, d2, Recovery{})}},
		{"two build IDs", []Event{BuildIDEvent("a", d1), BuildIDEvent("b", d1), CompleteEvent("b", d2)}},
		{"complete before dispatch", []Event{CompleteEvent("b", d2), BuildIDEvent("b", d1)}},
		{"other build completed", []Event{BuildIDEvent("a", d1), CompleteEvent("b", d2)}},
		{"bad JSON", []Event{{Type: EventBuildID, Data: []byte("{")}, CompleteEvent("b", d2)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newFakeRegister(crypto.SHA256)
			l, path := newTestLog(t, reg, launchEvents(t))
			check := func(l *Log, what string) {
				t.Helper()
				want, wantErr := BuildFromLog(l.Records())
				got, err := l.Build()
				if diff := cmp.Diff(want, got); diff != "" || (err == nil) != (wantErr == nil) ||
					(err != nil && err.Error() != wantErr.Error()) {
					t.Errorf("%s: Build() = %+v, %v; BuildFromLog = %+v, %v (-want +got):\n%s", what, got, err, want, wantErr, diff)
				}
				// What Build returns is a copy.
				if got.Dispatch != nil {
					got.Dispatch.BuildID = "changed"
					if again, _ := l.Build(); again.Dispatch.BuildID == "changed" {
						t.Errorf("%s: Build returns the Log's own data", what)
					}
				}
			}
			check(l, "launched")
			for _, e := range tc.evs {
				if err := l.Record(context.Background(), reg, e); err != nil {
					t.Fatal(err)
				}
				check(l, "after "+e.Type.String())
			}
			reopened, err := OpenLog(LogConfig{Path: path, Kind: PCR, Index: 13})
			if err != nil {
				t.Fatal(err)
			}
			defer reopened.Close()
			check(reopened, "reopened")
		})
	}
}

func TestClose(t *testing.T) {
	reg := newFakeRegister(crypto.SHA256)
	l, path := newTestLog(t, reg, launchEvents(t))
	view, recs := l.View(), l.Records()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	calls := reg.calls
	if err := l.Record(context.Background(), reg, RuntimeEvent("d", "o", nil)); !errors.Is(err, ErrLogClosed) {
		t.Errorf("Record after Close = %v, want ErrLogClosed", err)
	}
	if err := l.Reset(); !errors.Is(err, ErrLogClosed) {
		t.Errorf("Reset after Close = %v, want ErrLogClosed", err)
	}
	if reg.calls != calls {
		t.Error("Record after Close extended the register")
	}
	if !bytes.Equal(l.View(), view) || !bytes.Equal(l.Bytes(), view) || l.Len() != len(recs) || !l.Frozen() ||
		!cmp.Equal(l.Records(), recs) {
		t.Error("accessors changed after Close")
	}
	if _, err := os.Stat(path + ".stale"); !errors.Is(err, os.ErrNotExist) {
		t.Error("Reset after Close set the log aside")
	}
	// The file is as it was, and opens again.
	l2, err := OpenLog(LogConfig{Path: path, Kind: PCR, Index: 13})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if !bytes.Equal(l2.View(), view) {
		t.Error("reopened log differs")
	}
	if err := l2.Record(context.Background(), reg, RuntimeEvent("d", "o", nil)); err != nil {
		t.Fatal(err)
	}
	if err := CheckReplay(l2.Records(), crypto.SHA256, "PCR", 13, reg.value(crypto.SHA256)); err != nil {
		t.Error(err)
	}
}

// TestResetWritesNewFile checks the records after Reset go to the new file,
// never to the stale one the Log had open.
func TestResetWritesNewFile(t *testing.T) {
	reg := newFakeRegister(crypto.SHA256)
	l, path := newTestLog(t, reg, launchEvents(t))
	old := l.Bytes()
	if err := l.Reset(); err != nil {
		t.Fatal(err)
	}
	fresh := newFakeRegister(crypto.SHA256)
	for _, e := range launchEvents(t)[:2] {
		if err := l.Record(context.Background(), fresh, e); err != nil {
			t.Fatal(err)
		}
	}
	stale, err := os.ReadFile(path + ".stale")
	if err != nil || !bytes.Equal(stale, old) {
		t.Fatalf("stale file changed: %v", err)
	}
	file, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(file, l.View()) || l.Len() != 2 {
		t.Fatalf("new file is not the log: %v", err)
	}
}

// TestSyncFailureCutsBack: a record whose sync fails is cut off the file,
// nothing is extended, and the Log goes on.
func TestSyncFailureCutsBack(t *testing.T) {
	reg := newFakeRegister(crypto.SHA256)
	l, path := newTestLog(t, reg, launchEvents(t))
	before := l.Bytes()
	failed := errors.New("disk on fire")
	l.syncData = func(*os.File) error { return failed }
	calls := reg.calls
	err := l.Record(context.Background(), reg, RuntimeEvent("d", "o", nil))
	if !errors.Is(err, ErrLogWrite) || !errors.Is(err, failed) {
		t.Fatalf("Record = %v, want ErrLogWrite wrapping the sync error", err)
	}
	if reg.calls != calls {
		t.Error("register extended although the sync failed")
	}
	if file, _ := os.ReadFile(path); !bytes.Equal(file, before) || !bytes.Equal(l.View(), before) {
		t.Fatal("the record was not cut back")
	}
	l.syncData = syncData
	if err := l.Record(context.Background(), reg, RuntimeEvent("d", "o", nil)); err != nil {
		t.Fatalf("Record after a failed sync: %v", err)
	}
	if err := CheckReplay(l.Records(), crypto.SHA256, "PCR", 13, reg.value(crypto.SHA256)); err != nil {
		t.Error(err)
	}
}

// TestLargeLog round-trips 100,000 records through OpenLog and records more.
func TestLargeLog(t *testing.T) {
	n := 100000
	if testing.Short() {
		n = 10000
	}
	cel := benchCEL(t, n)
	path := filepath.Join(t.TempDir(), "events.cel")
	if err := os.WriteFile(path, cel, 0o640); err != nil {
		t.Fatal(err)
	}
	l, err := OpenLog(LogConfig{Path: path, Kind: PCR, Index: 13})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Len() != n || l.Size() != len(cel) || !l.Frozen() {
		t.Fatalf("Len %d Size %d Frozen %v, want %d %d true", l.Len(), l.Size(), l.Frozen(), n, len(cel))
	}
	if b, err := l.Build(); err != nil || b.Dispatch == nil || b.Dispatch.BuildID != "b-1" || b.Complete != nil {
		t.Fatalf("Build = %+v, %v", b, err)
	}
	ext := nopExtender(benchBanks)
	last, err := l.RecordWithin(context.Background(), ext, CompleteEvent("b-1", [32]byte{2}), MaxLogSize)
	if err != nil || last.Seq != uint64(n) {
		t.Fatalf("RecordWithin = seq %d, %v", last.Seq, err)
	}
	recs := l.Records()
	if len(recs) != n+1 {
		t.Fatalf("%d records, want %d", len(recs), n+1)
	}
	reopened, err := OpenLog(LogConfig{Path: path, Kind: PCR, Index: 13})
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	if !bytes.Equal(reopened.View(), l.View()) || reopened.Len() != n+1 {
		t.Fatal("reopened log differs")
	}
	if b, err := reopened.Build(); err != nil || b.Complete == nil {
		t.Fatalf("Build after completion = %+v, %v", b, err)
	}
	// OpenLog replayed every bank; one more through the decoded records.
	want, err := Replay(recs, crypto.SHA256, "PCR", 13)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := ReplayPrefixes(recs, crypto.SHA256, "PCR", 13, []int{n, len(recs)})
	if err != nil || !bytes.Equal(vals[1], want) {
		t.Fatalf("ReplayPrefixes = %x, %v; Replay %x", vals, err, want)
	}
}

// TestMaxLogSizeHolds measures a typical runtime event (32 bytes of
// content, labels as an executor names its steps) in the bank sets a TPM
// or TDX backend extends, and checks 100,000 of them fit in MaxLogSize with
// the agent's 64 KiB reserve; the figures are in docs/measure-events.md.
func TestMaxLogSizeHolds(t *testing.T) {
	content := bytes.Repeat([]byte{0xab}, 32)
	for _, tc := range []struct {
		name  string
		banks []crypto.Hash
		kind  RegisterKind
		index int
	}{
		{"TPM sha256", []crypto.Hash{crypto.SHA256}, PCR, 13},
		{"TPM sha1 sha256 sha384", []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384}, PCR, 13},
		{"TPM all four banks", []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512}, PCR, 13},
		{"TDX RTMR3 sha384", []crypto.Hash{crypto.SHA384}, RTMR, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, labels := range [][2]string{
				{"ci.example.com/runner", "step-42/exec"},
				{strings.Repeat("d", 64), strings.Repeat("o", 64)},
			} {
				e := RuntimeEvent(labels[0], labels[1], content)
				d := map[crypto.Hash][]byte{}
				for _, h := range tc.banks {
					d[h], _ = e.GenerateDigest(h)
				}
				b, err := encodeRecord(Record{Seq: 99999, Index: tc.index, Kind: tc.kind, Digests: d, ContentType: ContentType, Type: e.Type, Data: e.Data})
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("labels %d+%d bytes: %d bytes a record, 100,000 records %.1f MiB", len(labels[0]), len(labels[1]), len(b), float64(100000*len(b))/(1<<20))
				if 100000*len(b)+64<<10 > MaxLogSize {
					t.Errorf("100,000 records of %d bytes do not fit in MaxLogSize %d with 64 KiB to spare", len(b), MaxLogSize)
				}
			}
		})
	}
}

// FuzzOpenLog opens arbitrary files as logs: OpenLog's one-pass check must
// accept exactly the logs that parse and replay in the banks of record 0,
// and then agree with the decoded records on count, freeze and build.
func FuzzOpenLog(f *testing.F) {
	for _, b := range seedLogs(f) {
		f.Add(b, false)
		f.Add(b[:len(b)-3], true)
	}
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, b []byte, repair bool) {
		recs, perr := ParseCEL(b)
		if perr != nil && !repair {
			if _, err := openBytes(t, b, false); err == nil {
				t.Fatalf("OpenLog accepted a log ParseCEL refuses: %v", perr)
			}
			return
		}
		l, err := openBytes(t, b, repair)
		if err != nil {
			return
		}
		defer l.Close()
		got := l.Records()
		if perr == nil && l.Dropped() != 0 {
			t.Fatalf("dropped %d bytes of a log that parses", l.Dropped())
		}
		if perr == nil && !reflect.DeepEqual(got, recs) {
			t.Fatal("Records differs from ParseCEL")
		}
		if l.Len() != len(got) || l.Size()+l.Dropped() != len(b) {
			t.Fatalf("Len %d Size %d Dropped %d for %d records of %d bytes", l.Len(), l.Size(), l.Dropped(), len(got), len(b))
		}
		frozen := false
		for _, r := range got {
			frozen = frozen || r.Type == EventSeparator
		}
		if l.Frozen() != frozen {
			t.Fatalf("Frozen %v, records say %v", l.Frozen(), frozen)
		}
		want, wantErr := BuildFromLog(got)
		build, err := l.Build()
		if !reflect.DeepEqual(build, want) || (err == nil) != (wantErr == nil) {
			t.Fatalf("Build = %+v, %v; BuildFromLog = %+v, %v", build, err, want, wantErr)
		}
		if len(got) > 0 {
			for h := range got[0].Digests {
				if _, err := Replay(got, h, got[0].Kind, got[0].Index); err != nil {
					t.Fatalf("OpenLog accepted a log that does not replay in %v: %v", h, err)
				}
			}
		}
	})
}

// openBytes opens b as a log for the register of its first record (PCR13
// if it has none).
func openBytes(t *testing.T, b []byte, repair bool) (*Log, error) {
	path := filepath.Join(t.TempDir(), "events.cel")
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}
	cfg := LogConfig{Path: path, Kind: PCR, Index: 13, RepairTail: repair}
	var r Record
	if _, err := decodeRecord(bytes.Clone(b), &r); err == nil {
		cfg.Kind, cfg.Index = r.Kind, r.Index
	}
	return OpenLog(cfg)
}
