package measure

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func sumHex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestCollectors(t *testing.T) {
	dir := t.TempDir()
	bin := writeFile(t, dir, "attestd", "binary")
	cfg := writeFile(t, dir, "config.yaml", "a: 1\n")
	meta := writeFile(t, dir, "image.json", "{}")
	missing := filepath.Join(dir, "missing")
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		collect func() (Event, error)
		want    Event
		wantErr error // nil: any error is a failure; errAny: any error
	}{
		{"binary", func() (Event, error) { return BinaryEvent(bin) },
			Event{EventBinary, []byte(`{"path":"` + bin + `","sha256":"` + sumHex("binary") + `"}`)}, nil},
		{"executor", func() (Event, error) { return ExecutorEvent(bin) },
			Event{EventExecutor, []byte(`{"path":"` + bin + `","sha256":"` + sumHex("binary") + `"}`)}, nil},
		{"config content", func() (Event, error) { return ConfigEvent("/etc/attestd.yaml", []byte("x")) },
			Event{EventConfig, []byte(`{"path":"/etc/attestd.yaml","sha256":"` + sumHex("x") + `"}`)}, nil},
		{"config from file", func() (Event, error) { return ConfigEvent(cfg, nil) },
			Event{EventConfig, []byte(`{"path":"` + cfg + `","sha256":"` + sumHex("a: 1\n") + `"}`)}, nil},
		{"image full", func() (Event, error) { return ImageEvent(meta, "ro roothash=aa usrhash=bb quiet") },
			Event{EventImage, []byte(`{"metadataPath":"` + meta + `","metadataSha256":"` + sumHex("{}") + `","roothash":"aa","usrhash":"bb"}`)}, nil},
		{"image no metadata path", func() (Event, error) { return ImageEvent("", "roothash=aa") },
			Event{EventImage, []byte(`{"roothash":"aa"}`)}, nil},
		{"image missing metadata", func() (Event, error) { return ImageEvent(missing, "") },
			Event{EventImage, []byte(`{"metadataPath":"` + missing + `"}`)}, nil},
		{"image quoted roothash", func() (Event, error) { return ImageEvent("", `roothash="aa"`) },
			Event{EventImage, []byte(`{"roothash":"aa"}`)}, nil},
		{"image unreadable metadata", func() (Event, error) { return ImageEvent(sub, "") }, Event{}, errAny},
		{"image duplicate roothash", func() (Event, error) { return ImageEvent("", "roothash=aa roothash=bb") }, Event{}, errAny},
		{"image duplicate after --", func() (Event, error) { return ImageEvent("", "usrhash=aa -- usrhash=bb") }, Event{}, errAny},
		{"binary missing", func() (Event, error) { return BinaryEvent(missing) }, Event{}, fs.ErrNotExist},
		{"executor directory", func() (Event, error) { return ExecutorEvent(sub) }, Event{}, errAny},
		{"config missing", func() (Event, error) { return ConfigEvent(missing, nil) }, Event{}, fs.ErrNotExist},
		{"separator", func() (Event, error) { return SeparatorEvent(), nil },
			Event{EventSeparator, []byte(`{"phase":"launch"}`)}, nil},
		{"restart", func() (Event, error) { return RestartEvent([32]byte{0xab}, [32]byte{0xcd}, Recovery{}), nil },
			Event{EventRestart, []byte(`{"binarySha256":"ab` + zeros(62) + `","configSha256":"cd` + zeros(62) + `"}`)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.collect()
			if tc.wantErr != nil {
				if err == nil || (tc.wantErr != errAny && !errors.Is(err, tc.wantErr)) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want.Type, got.Type); diff != "" {
				t.Errorf("type (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(string(tc.want.Data), string(got.Data)); diff != "" {
				t.Errorf("data (-want +got):\n%s", diff)
			}
		})
	}
}

var errAny = errors.New("any error")

func zeros(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = '0'
	}
	return string(b)
}

func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want map[string]string
	}{
		{"", map[string]string{}},
		{"   ", map[string]string{}},
		{"quiet", map[string]string{"quiet": ""}},
		{"root=/dev/vda1 ro  quiet\n", map[string]string{"root": "/dev/vda1", "ro": "", "quiet": ""}},
		{"a=b=c", map[string]string{"a": "b=c"}},
		{"a=1 a=2", map[string]string{"a": "2"}},
		{"a=", map[string]string{"a": ""}},
		{`a="x y" b=z`, map[string]string{"a": "x y", "b": "z"}},
		{`"a=x y" b`, map[string]string{"a": "x y", "b": ""}},
		{`"quoted param"`, map[string]string{"quoted param": ""}},
		{`a="unterminated value`, map[string]string{"a": "unterminated value"}},
		{"\troothash=ab\tusrhash=cd", map[string]string{"roothash": "ab", "usrhash": "cd"}},
		{"a=1 -- init=2 b", map[string]string{"a": "1"}},
		{"a=1 --=x b", map[string]string{"a": "1", "--": "x", "b": ""}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, ParseCmdline(tc.in)); diff != "" {
				t.Errorf("ParseCmdline(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestEventTypeString(t *testing.T) {
	for typ, want := range map[EventType]string{
		EventBinary: "binary", EventConfig: "config", EventImage: "image", EventExecutor: "executor",
		EventSeparator: "separator", EventRestart: "restart", EventBuildID: "build-id",
		EventRuntime: "runtime", EventComplete: "complete", 0: "unknown(0)", 200: "unknown(200)",
	} {
		if got := typ.String(); got != want {
			t.Errorf("EventType(%d).String() = %q, want %q", uint8(typ), got, want)
		}
	}
}
