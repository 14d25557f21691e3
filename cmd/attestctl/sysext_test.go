package main

import (
	"bytes"
	"crypto"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attestd/attestd/measure"
)

// --sysext predicts what systemd-stub measures: one archive of all the
// images, whatever order the flags give them in.
func TestSysextReference(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "b.raw"), filepath.Join(dir, "a.raw")
	for p, c := range map[string]string{a: "image b", b: "image a"} {
		if err := os.WriteFile(p, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := sysextReference([]string{a, b}, 13)
	if err != nil {
		t.Fatal(err)
	}
	want, err := measure.SysextPreboot([]measure.SysextFile{
		{Name: "a.raw", Size: 7, Content: strings.NewReader("image a")},
		{Name: "b.raw", Size: 7, Content: strings.NewReader("image b")},
	}, []crypto.Hash{crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.m.Digests[crypto.SHA256], want.Digests[crypto.SHA256]) || !bytes.Equal(got.m.Event.Data, want.Event.Data) {
		t.Fatalf("prediction %x %s, want %x %s", got.m.Digests[crypto.SHA256], got.m.Event.Data, want.Digests[crypto.SHA256], want.Event.Data)
	}
	if !strings.Contains(got.what, "a.raw sha256:") || !strings.Contains(got.what, "b.raw sha256:") {
		t.Errorf("what %q does not name the images", got.what)
	}
	if p, err := sysextReference(nil, 13); p != nil || err != nil {
		t.Errorf("no --sysext: %v, %v", p, err)
	}
	if _, err := sysextReference([]string{a}, 14); !errors.Is(err, errUsage) {
		t.Errorf("--sysext with attestd on PCR 14: %v, want a usage error", err)
	}
}
