package measure

import (
	"context"
	"crypto"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-eventlog/cel"
	pb "github.com/google/go-eventlog/proto/state"
	"github.com/google/go-eventlog/register"
)

func TestRecordReplayMatchesRegister(t *testing.T) {
	reg := newFakeRegister(crypto.SHA256, crypto.SHA1)
	evs := append(launchEvents(t), RestartEvent([32]byte{1}, [32]byte{2}, Recovery{}), Event{Type: EventBuildID, Data: []byte(`{"buildId":"b-1"}`)})
	l, path := newTestLog(t, reg, evs)

	recs, err := ParseCEL(l.Bytes())
	if err != nil {
		t.Fatalf("ParseCEL: %v", err)
	}
	if diff := cmp.Diff(l.Records(), recs); diff != "" {
		t.Errorf("ParseCEL(Bytes()) differs from Records() (-want +got):\n%s", diff)
	}
	for i, r := range recs {
		if r.Type != evs[i].Type || string(r.Data) != string(evs[i].Data) {
			t.Errorf("record %d = %s %s, want %s %s", i, r.Type, r.Data, evs[i].Type, evs[i].Data)
		}
	}
	for _, bank := range reg.Banks() {
		got, err := Replay(recs, bank, "PCR", 13)
		if err != nil {
			t.Fatalf("Replay(%v): %v", bank, err)
		}
		if want := reg.value(bank); !cmp.Equal(got, want) {
			t.Errorf("Replay(%v) = %x, register %x", bank, got, want)
		}
		if err := CheckReplay(recs, bank, "PCR", 13, reg.value(bank)); err != nil {
			t.Errorf("CheckReplay(%v): %v", bank, err)
		}
	}

	// The file is what Bytes returns, and go-eventlog's own replay agrees.
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(file, l.Bytes()) {
		t.Error("file differs from Bytes()")
	}
	lib, err := cel.DecodeToCEL(bytesBuffer(file))
	if err != nil {
		t.Fatalf("cel.DecodeToCEL: %v", err)
	}
	for bank, algo := range map[crypto.Hash]pb.HashAlgo{crypto.SHA256: pb.HashAlgo_SHA256, crypto.SHA1: pb.HashAlgo_SHA1} {
		pcrs := register.PCRBank{TCGHashAlgo: algo, PCRs: []register.PCR{{Index: 13, Digest: reg.value(bank), DigestAlg: bank}}}
		if err := lib.Replay(pcrs); err != nil {
			t.Errorf("go-eventlog Replay(%v): %v", bank, err)
		}
		for _, r := range lib.Records() {
			if err := cel.VerifyDigests(Event{Type: EventType(r.Content.Value[0]), Data: r.Content.Value[5:]}, r.Digests); err != nil {
				t.Errorf("go-eventlog VerifyDigests: %v", err)
			}
		}
	}

	// Reopening loads the same records and state.
	l2, err := OpenLog(LogConfig{Path: path, Kind: PCR, Index: 13})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if diff := cmp.Diff(l.Records(), l2.Records()); diff != "" {
		t.Errorf("reopened records differ (-want +got):\n%s", diff)
	}
	if !l2.Frozen() {
		t.Error("reopened log not frozen after separator")
	}
}

func TestRTMRLog(t *testing.T) {
	reg := newFakeRegister(crypto.SHA384)
	path := filepath.Join(t.TempDir(), "events.cel")
	l, err := OpenLog(LogConfig{Path: path, Kind: RTMR, Index: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range launchEvents(t) {
		if err := l.Record(context.Background(), reg, e); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := ParseCEL(l.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if recs[0].Kind != "RTMR" || recs[0].Index != 3 {
		t.Errorf("record 0 is for %s%d, want RTMR3", recs[0].Kind, recs[0].Index)
	}
	if err := CheckReplay(recs, crypto.SHA384, "RTMR", 3, reg.value(crypto.SHA384)); err != nil {
		t.Errorf("CheckReplay: %v", err)
	}
	// The CEL carries the CC MR index (RTMR3 = 4), as go-eventlog expects.
	lib, err := cel.DecodeToCEL(bytesBuffer(l.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	bank := register.RTMRBank{RTMRs: []register.RTMR{{Index: 3, Digest: reg.value(crypto.SHA384)}}}
	if err := lib.Replay(bank); err != nil {
		t.Errorf("go-eventlog Replay: %v", err)
	}
}

func TestExtendFailureLeavesLogAhead(t *testing.T) {
	reg := newFakeRegister(crypto.SHA256, crypto.SHA1)
	evs := launchEvents(t)
	l, path := newTestLog(t, reg, evs[:2])

	reg.fail = errors.New("TPM gone")
	err := l.Record(context.Background(), reg, evs[2])
	if !errors.Is(err, ErrLogAhead) || !errors.Is(err, reg.fail) {
		t.Fatalf("Record with failing Extend = %v, want ErrLogAhead wrapping the cause", err)
	}
	reg.fail = nil

	// The file holds the event; the register does not.
	reopened, err := OpenLog(LogConfig{Path: path, Kind: PCR, Index: 13})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	recs := reopened.Records()
	if len(recs) != 3 || recs[2].Type != EventImage {
		t.Fatalf("file has %d records, want 3 ending in image", len(recs))
	}
	var mm *ReplayMismatchError
	err = CheckReplay(recs, crypto.SHA256, "PCR", 13, reg.value(crypto.SHA256))
	if !errors.As(err, &mm) {
		t.Fatalf("CheckReplay = %v, want *ReplayMismatchError", err)
	}
	if mm.Register != "PCR13" || !cmp.Equal(mm.Want, reg.value(crypto.SHA256)) {
		t.Errorf("mismatch = %+v", mm)
	}
	// The first two records still explain the register.
	if err := CheckReplay(recs[:2], crypto.SHA256, "PCR", 13, reg.value(crypto.SHA256)); err != nil {
		t.Errorf("CheckReplay(first 2): %v", err)
	}

	calls := reg.calls
	if err := l.Record(context.Background(), reg, evs[3]); !errors.Is(err, ErrLogAhead) {
		t.Errorf("Record after divergence = %v, want ErrLogAhead", err)
	}
	if reg.calls != calls {
		t.Error("Record after divergence extended the register")
	}
}

func TestWriteFailureDoesNotExtend(t *testing.T) {
	for _, tc := range []struct {
		name   string
		breakF func(path string) error
	}{
		{"file removed", os.Remove},
		{"file appended by someone else", func(p string) error {
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			f.Write([]byte{0})
			return f.Close()
		}},
		{"file renamed away", func(p string) error { return os.Rename(p, p+".old") }},
		{"file replaced by a copy", func(p string) error {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if err := os.WriteFile(p+".new", b, 0o640); err != nil {
				return err
			}
			return os.Rename(p+".new", p)
		}},
		{"file truncated", func(p string) error { return os.Truncate(p, 0) }},
		{"path is a directory", func(p string) error {
			if err := os.Remove(p); err != nil {
				return err
			}
			return os.Mkdir(p, 0o700)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newFakeRegister(crypto.SHA256)
			evs := launchEvents(t)
			l, path := newTestLog(t, reg, evs[:1])
			if err := tc.breakF(path); err != nil {
				t.Fatal(err)
			}
			calls := reg.calls
			if err := l.Record(context.Background(), reg, evs[1]); err == nil {
				t.Fatal("Record succeeded with a broken file")
			}
			if reg.calls != calls {
				t.Error("register extended although the write failed")
			}
			if n := len(l.Records()); n != 1 {
				t.Errorf("log has %d records, want 1", n)
			}
		})
	}
}

func TestFrozen(t *testing.T) {
	reg := newFakeRegister(crypto.SHA256)
	evs := launchEvents(t)
	l, path := newTestLog(t, reg, evs[:4])
	if l.Frozen() {
		t.Fatal("frozen before separator")
	}
	if err := l.Record(context.Background(), reg, SeparatorEvent()); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"same", "reopened"} {
		log := l
		if name == "reopened" {
			var err error
			if log, err = OpenLog(LogConfig{Path: path, Kind: PCR, Index: 13}); err != nil {
				t.Fatal(err)
			}
		}
		if !log.Frozen() {
			t.Errorf("%s: not frozen after separator", name)
		}
		for _, tc := range []struct {
			ev     Event
			frozen bool
		}{
			{evs[0], true},
			{evs[1], true},
			{evs[2], true},
			{evs[3], true},
			{SeparatorEvent(), true},
			{RestartEvent([32]byte{}, [32]byte{}, Recovery{}), false},
			{Event{Type: EventBuildID, Data: []byte(`{}`)}, false},
			{Event{Type: EventRuntime, Data: []byte(`{}`)}, false},
			{Event{Type: EventComplete, Data: []byte(`{}`)}, false},
		} {
			err := log.Record(context.Background(), reg, tc.ev)
			if got := errors.Is(err, ErrFrozen); got != tc.frozen {
				t.Errorf("%s: Record(%s) = %v, want frozen=%v", name, tc.ev.Type, err, tc.frozen)
			}
			if !tc.frozen && err != nil {
				t.Errorf("%s: Record(%s): %v", name, tc.ev.Type, err)
			}
		}
	}
}

func TestOpenLogTornRecord(t *testing.T) {
	reg := newFakeRegister(crypto.SHA256, crypto.SHA1)
	l, path := newTestLog(t, reg, launchEvents(t))
	full := l.Bytes()
	recs := l.Records()
	lastLen := len(encodeAll(t, recs[len(recs)-1:]))
	lastOff := len(full) - lastLen
	for _, cut := range []int{1, 4, 5, lastLen / 2, lastLen - 1} {
		if err := os.WriteFile(path, full[:len(full)-cut], 0o640); err != nil {
			t.Fatal(err)
		}
		_, err := OpenLog(LogConfig{Path: path, Kind: PCR, Index: 13})
		var pe *ParseError
		if !errors.As(err, &pe) || !errors.Is(err, ErrTruncated) {
			t.Fatalf("cut %d: OpenLog = %v, want *ParseError wrapping ErrTruncated", cut, err)
		}
		if pe.Offset != lastOff || pe.Record != len(recs)-1 {
			t.Errorf("cut %d: error at offset %d record %d, want %d record %d", cut, pe.Offset, pe.Record, lastOff, len(recs)-1)
		}
		if !strings.Contains(err.Error(), path) {
			t.Errorf("cut %d: error %q does not name the file", cut, err)
		}
	}
}

func TestOpenLogRejects(t *testing.T) {
	reg := newFakeRegister(crypto.SHA256)
	_, path := newTestLog(t, reg, launchEvents(t)[:2])
	for _, tc := range []struct {
		name string
		cfg  LogConfig
	}{
		{"no path", LogConfig{Kind: PCR, Index: 13}},
		{"no kind", LogConfig{Path: path, Index: 13}},
		{"PCR16 resettable", LogConfig{Path: path, Kind: PCR, Index: 16}},
		{"PCR23 resettable", LogConfig{Path: path, Kind: PCR, Index: 23}},
		{"PCR24", LogConfig{Path: path, Kind: PCR, Index: 24}},
		{"RTMR4", LogConfig{Path: path, Kind: RTMR, Index: 4}},
		{"other PCR than the file", LogConfig{Path: path, Kind: PCR, Index: 14}},
		{"RTMR for a PCR file", LogConfig{Path: path, Kind: RTMR, Index: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := OpenLog(tc.cfg); err == nil {
				t.Error("OpenLog succeeded")
			}
		})
	}
}

func TestOpenLogRejectsChangedEvent(t *testing.T) {
	reg := newFakeRegister(crypto.SHA256)
	l, path := newTestLog(t, reg, launchEvents(t))
	recs := l.Records()
	recs[1].Data = []byte(`{"path":"/etc/evil.yaml","sha256":"00"}`)
	if err := os.WriteFile(path, encodeAll(t, recs), 0o640); err != nil {
		t.Fatal(err)
	}
	var de *DigestError
	if _, err := OpenLog(LogConfig{Path: path, Kind: PCR, Index: 13}); !errors.As(err, &de) || de.Record != 1 {
		t.Errorf("OpenLog = %v, want *DigestError for record 1", err)
	}
}

func TestReset(t *testing.T) {
	reg := newFakeRegister(crypto.SHA256)
	l, path := newTestLog(t, reg, launchEvents(t))
	old := l.Bytes()
	if err := l.Reset(); err != nil {
		t.Fatal(err)
	}
	stale, err := os.ReadFile(path + ".stale")
	if err != nil || !cmp.Equal(stale, old) {
		t.Fatalf("stale file = %d bytes, %v; want the old log", len(stale), err)
	}
	if l.Frozen() || len(l.Records()) != 0 || len(l.Bytes()) != 0 {
		t.Fatal("log not empty after Reset")
	}
	fresh := newFakeRegister(crypto.SHA256)
	for _, e := range launchEvents(t) {
		if err := l.Record(context.Background(), fresh, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := CheckReplay(l.Records(), crypto.SHA256, "PCR", 13, fresh.value(crypto.SHA256)); err != nil {
		t.Errorf("CheckReplay after Reset: %v", err)
	}
}

func TestConcurrentRecord(t *testing.T) {
	reg := newFakeRegister(crypto.SHA256)
	l, _ := newTestLog(t, reg, launchEvents(t))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 5 {
				ev := Event{Type: EventRuntime, Data: []byte{'0' + byte(i), '0' + byte(j)}}
				if err := l.Record(context.Background(), reg, ev); err != nil {
					t.Error(err)
				}
				_ = l.Bytes()
				_ = l.Records()
			}
		})
	}
	wg.Wait()
	if err := CheckReplay(l.Records(), crypto.SHA256, "PCR", 13, reg.value(crypto.SHA256)); err != nil {
		t.Errorf("CheckReplay: %v", err)
	}
}

func TestRecordCanceled(t *testing.T) {
	reg := newFakeRegister(crypto.SHA256)
	l, _ := newTestLog(t, reg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Record(ctx, reg, SeparatorEvent()); !errors.Is(err, context.Canceled) {
		t.Errorf("Record = %v, want context.Canceled", err)
	}
	if len(l.Bytes()) != 0 || reg.calls != 0 {
		t.Error("canceled Record wrote or extended")
	}
}
