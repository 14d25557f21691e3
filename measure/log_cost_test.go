package measure

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"os"
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
