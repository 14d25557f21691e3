package journallog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/google/go-cmp/cmp"
)

func TestFieldName(t *testing.T) {
	for _, tc := range []struct{ key, want string }{
		{"build_id", "BUILD_ID"},
		{"err", "ERR"},
		{"check-every", "CHECK_EVERY"},
		{"tpm.device", "TPM_DEVICE"},
		{"_private", "PRIVATE"},
		{"__x", "X"},
		{"_", "ATTR_"},
		{"", "ATTR_"},
		{"9lives", "ATTR_9LIVES"},
		{"message", "ATTR_MESSAGE"},
		{"Priority", "ATTR_PRIORITY"},
		{"syslog_identifier", "ATTR_SYSLOG_IDENTIFIER"},
		{"größe", ""}, // non-ASCII: checked by the rules below
		{"a b=c", "A_B_C"},
		{strings.Repeat("k", 70), strings.Repeat("K", 64)},
	} {
		got := FieldName(tc.key)
		if tc.key == "größe" {
			// Only check the rules: valid characters, no leading underscore.
			if strings.Trim(got, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != "" || got[0] == '_' {
				t.Errorf("FieldName(%q) = %q: not a valid journal field name", tc.key, got)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("FieldName(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
}

func TestPriority(t *testing.T) {
	for _, tc := range []struct {
		level slog.Level
		want  journal.Priority
	}{
		{slog.LevelDebug - 4, 7},
		{slog.LevelDebug, 7},
		{slog.LevelInfo, 6},
		{slog.LevelInfo + 2, 6},
		{slog.LevelWarn, 4},
		{slog.LevelError, 3},
		{slog.LevelError + 8, 3},
	} {
		if got := Priority(tc.level); got != tc.want {
			t.Errorf("Priority(%v) = %d, want %d", tc.level, got, tc.want)
		}
	}
}

type sent struct {
	msg    string
	pri    journal.Priority
	fields map[string]string
}

// recorder returns Options whose send records what the handler sends.
func recorder(out *[]sent, fail bool) Options {
	return Options{send: func(msg string, p journal.Priority, f map[string]string) error {
		*out = append(*out, sent{msg, p, f})
		if fail {
			return errors.New("no journal")
		}
		return nil
	}}
}

func TestHandlerFields(t *testing.T) {
	var got []sent
	opts := recorder(&got, false)
	opts.Level = slog.LevelDebug
	opts.Identifier = "attestd"
	log := slog.New(New(opts)).With("version", "v1").WithGroup("tpm").With("device", "/dev/tpmrm0")
	log.Debug("probe", "handles", 3, slog.Group("pcr", "index", 13, slog.Group("empty")))
	log.Error("TPM unavailable", "err", errors.New("EOF\nand more"), "timeout", 30*time.Second)
	slog.New(New(opts)).Warn("caller refused", "pid", 42, "_uid", 1000, "message", "x")

	want := []sent{
		{"probe version=v1 tpm.device=/dev/tpmrm0 tpm.handles=3 tpm.pcr.index=13", 7, map[string]string{"VERSION": "v1", "TPM_DEVICE": "/dev/tpmrm0", "TPM_HANDLES": "3", "TPM_PCR_INDEX": "13", "SYSLOG_IDENTIFIER": "attestd"}},
		{`TPM unavailable version=v1 tpm.device=/dev/tpmrm0 tpm.err="EOF\nand more" tpm.timeout=30s`, 3, map[string]string{"VERSION": "v1", "TPM_DEVICE": "/dev/tpmrm0", "TPM_ERR": "EOF\nand more", "TPM_TIMEOUT": "30s", "SYSLOG_IDENTIFIER": "attestd"}},
		{"caller refused pid=42 _uid=1000 message=x", 4, map[string]string{"PID": "42", "UID": "1000", "ATTR_MESSAGE": "x", "SYSLOG_IDENTIFIER": "attestd"}},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(sent{})); diff != "" {
		t.Errorf("sent (-want +got):\n%s", diff)
	}
}

func TestHandlerLevel(t *testing.T) {
	var got []sent
	log := slog.New(New(recorder(&got, false)))
	log.Debug("hidden")
	log.Info("shown")
	if len(got) != 1 || got[0].msg != "shown" {
		t.Errorf("sent %v; want only the info record (default level info)", got)
	}
}

// TestFallback: when the journal cannot be reached, each record is one
// line with its sd-daemon priority prefix.
func TestFallback(t *testing.T) {
	var got []sent
	var buf bytes.Buffer
	opts := recorder(&got, true)
	opts.Fallback = &buf
	opts.Identifier = "attestd"
	log := slog.New(New(opts))
	log.Warn("device check failed", "err", "read /dev/tpmrm0: timeout", "n", 2)
	log.Error("two\nlines", "empty", "")
	log.Info("serving", "socket", "/run/attestd/attestd.sock")
	want := "<4>device check failed err=\"read /dev/tpmrm0: timeout\" n=2\n" +
		"<3>two\\nlines empty=\"\"\n" +
		"<6>serving socket=/run/attestd/attestd.sock\n"
	if buf.String() != want {
		t.Errorf("fallback wrote\n%s\nwant\n%s", buf.String(), want)
	}
	if len(got) != 3 {
		t.Errorf("%d sends tried, want 3 (each record tries the journal first)", len(got))
	}
}

// TestSendToSocket sends through go-systemd's real journal.Send to a
// unixgram socket standing in for journald, and decodes the native
// protocol there. The journal package takes its socket path only at link
// time (-X .../journal.journalSocket), so the test builds and runs itself
// again with that flag; it needs the go command.
func TestSendToSocket(t *testing.T) {
	if os.Getenv("JOURNALLOG_CHILD") != "" {
		t.Skip("child")
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("needs the go command to relink the test: %v", err)
	}
	dir, err := os.MkdirTemp("", "jl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "socket")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cmd := exec.Command(goCmd, "test", "-count=1", "-run", "^TestSendChild$",
		"-ldflags", "-X github.com/coreos/go-systemd/v22/journal.journalSocket="+sock, ".")
	cmd.Env = append(os.Environ(), "JOURNALLOG_CHILD=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var got []map[string]string
	buf := make([]byte, 1<<16)
	for {
		conn.SetReadDeadline(time.Now().Add(time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			break
		}
		m, err := decodeNative(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
	}
	want := []map[string]string{
		{"MESSAGE": "device check failed err=timeout", "PRIORITY": "4", "ERR": "timeout", "SYSLOG_IDENTIFIER": "journallog-test"},
		{"MESSAGE": `dispatched build_id=b-1 note="two\nlines"`, "PRIORITY": "6", "BUILD_ID": "b-1", "NOTE": "two\nlines", "SYSLOG_IDENTIFIER": "journallog-test"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("journal entries (-want +got):\n%s", diff)
	}
}

// TestSendChild is TestSendToSocket's other half.
func TestSendChild(t *testing.T) {
	if os.Getenv("JOURNALLOG_CHILD") == "" {
		t.Skip("run by TestSendToSocket")
	}
	var fb bytes.Buffer
	log := slog.New(New(Options{Identifier: "journallog-test", Fallback: &fb}))
	log.Warn("device check failed", "err", "timeout")
	log.Info("dispatched", "build_id", "b-1", "note", "two\nlines")
	if fb.Len() > 0 {
		t.Fatalf("fell back to stderr:\n%s", fb.String())
	}
}

// decodeNative decodes one datagram of journald's native protocol.
func decodeNative(b []byte) (map[string]string, error) {
	m := map[string]string{}
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return nil, errors.New("field without newline")
		}
		line := b[:i]
		if k, v, ok := bytes.Cut(line, []byte("=")); ok {
			m[string(k)] = string(v)
			b = b[i+1:]
			continue
		}
		b = b[i+1:]
		if len(b) < 8 {
			return nil, errors.New("short binary field")
		}
		n := binary.LittleEndian.Uint64(b)
		if uint64(len(b)-8) < n+1 {
			return nil, errors.New("short binary field value")
		}
		m[string(line)] = string(b[8 : 8+n])
		b = b[8+n+1:]
	}
	return m, nil
}
