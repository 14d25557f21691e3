package measure

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
)

// The reference constructors must give exactly the events the daemon's
// constructors give for the same files.
func TestReferenceEventsMatchDaemonEvents(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "attestd")
	meta := filepath.Join(dir, "image.json")
	os.WriteFile(bin, []byte("binary"), 0o755)
	os.WriteFile(meta, []byte(`{"name":"x"}`), 0o644)
	cmdline := `console=ttyS0 roothash=abcd "usrhash=ef01" ro`

	daemon, err := BinaryEvent(bin)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := FileEventFromDigest(EventBinary, bin, sha256.Sum256([]byte("binary")))
	if err != nil {
		t.Fatal(err)
	}
	same(t, "binary", daemon, ref)

	daemon, err = ExecutorEvent(bin)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ = FileEventFromDigest(EventExecutor, bin, sha256.Sum256([]byte("binary")))
	same(t, "executor", daemon, ref)

	for _, tc := range []struct {
		name, meta string
		sum        *[32]byte
	}{
		{"present", meta, ptr(sha256.Sum256([]byte(`{"name":"x"}`)))},
		{"absent", filepath.Join(dir, "missing.json"), nil},
		{"none", "", nil},
	} {
		daemon, err := ImageEvent(tc.meta, cmdline)
		if err != nil {
			t.Fatal(err)
		}
		ref, err := ImageEventFromDigest(tc.meta, tc.sum, cmdline)
		if err != nil {
			t.Fatal(err)
		}
		same(t, "image/"+tc.name, daemon, ref)
	}
	if _, err := ImageEventFromDigest("", nil, "roothash=a roothash=b"); err == nil {
		t.Error("a repeated roothash= was accepted")
	}
	if _, err := FileEventFromDigest(EventSeparator, bin, [32]byte{}); err == nil {
		t.Error("FileEventFromDigest accepted a separator")
	}
}

func TestPredictRegisterMatchesLog(t *testing.T) {
	reg := newFakeRegister(crypto.SHA256)
	l, err := OpenLog(LogConfig{Path: filepath.Join(t.TempDir(), "log.cel"), Index: 13, Kind: PCR})
	if err != nil {
		t.Fatal(err)
	}
	evs := []Event{mustJSONEvent(EventBinary, FileMeasurement{Path: "/a", SHA256: "00"}), SeparatorEvent()}
	for _, e := range evs {
		if err := l.Record(context.Background(), reg, e); err != nil {
			t.Fatal(err)
		}
	}
	got, err := PredictRegister(crypto.SHA256, evs)
	if err != nil {
		t.Fatal(err)
	}
	if want := reg.vals[crypto.SHA256]; !bytes.Equal(got, want) {
		t.Errorf("PredictRegister = %x, register %x", got, want)
	}
	recs := l.Records()
	prefix, ok := LaunchPrefix(recs)
	if !ok || len(prefix) != 2 {
		t.Errorf("LaunchPrefix = %d records, %v", len(prefix), ok)
	}
}

func ptr[T any](v T) *T { return &v }

func same(t *testing.T, name string, a, b Event) {
	t.Helper()
	if a.Type != b.Type || !bytes.Equal(a.Data, b.Data) {
		t.Errorf("%s: daemon %s %s, reference %s %s", name, a.Type, a.Data, b.Type, b.Data)
	}
}
