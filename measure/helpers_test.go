package measure

import (
	"context"
	"crypto"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// fakeRegister is an in-memory register with several banks. It extends the
// way a TPM PCR or TDX RTMR does: new = H(old || digest).
type fakeRegister struct {
	mu    sync.Mutex
	banks []crypto.Hash
	vals  map[crypto.Hash][]byte
	fail  error // returned by Extend when set
	calls int
}

func newFakeRegister(banks ...crypto.Hash) *fakeRegister {
	f := &fakeRegister{banks: banks, vals: map[crypto.Hash][]byte{}}
	for _, h := range banks {
		f.vals[h] = make([]byte, h.Size())
	}
	return f
}

func (f *fakeRegister) Banks() []crypto.Hash { return f.banks }

func (f *fakeRegister) Extend(_ context.Context, d map[crypto.Hash][]byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail != nil {
		return f.fail
	}
	for _, h := range f.banks {
		w := h.New()
		w.Write(f.vals[h])
		w.Write(d[h])
		f.vals[h] = w.Sum(nil)
	}
	return nil
}

func (f *fakeRegister) value(h crypto.Hash) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]byte(nil), f.vals[h]...)
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// launchEvents returns a realistic launch sequence, separator last.
func launchEvents(t testing.TB) []Event {
	t.Helper()
	dir := t.TempDir()
	bin, err := BinaryEvent(writeFile(t, dir, "attestd", "\x7fELF attestd"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ConfigEvent("/etc/attestd/config.yaml", []byte("register: 13\n"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := ImageEvent(writeFile(t, dir, "image.json", `{"name":"builder"}`), "quiet roothash=abcd usrhash=ef01")
	if err != nil {
		t.Fatal(err)
	}
	exe, err := ExecutorEvent(writeFile(t, dir, "runner", "runner binary"))
	if err != nil {
		t.Fatal(err)
	}
	return []Event{bin, cfg, img, exe, SeparatorEvent()}
}

// newTestLog opens a PCR13 log in a temp dir and records evs.
func newTestLog(t testing.TB, reg *fakeRegister, evs []Event) (*Log, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "events.cel")
	l, err := OpenLog(LogConfig{Path: path, Kind: PCR, Index: 13})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if err := l.Record(context.Background(), reg, e); err != nil {
			t.Fatalf("Record(%s): %v", e.Type, err)
		}
	}
	return l, path
}

func encodeAll(t testing.TB, recs []Record) []byte {
	t.Helper()
	var out []byte
	for _, r := range recs {
		b, err := encodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}
