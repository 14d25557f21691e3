package measure

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// BinaryEvent measures the attestd binary at path (the daemon passes
// os.Executable()).
func BinaryEvent(path string) (Event, error) {
	return fileEvent(EventBinary, path)
}

// ExecutorEvent measures an executor binary at path.
func ExecutorEvent(path string) (Event, error) {
	return fileEvent(EventExecutor, path)
}

// ConfigEvent measures the daemon config. content should be the exact bytes
// the daemon parsed, so that what is measured is what is used; if content is
// nil the file at path is read.
func ConfigEvent(path string, content []byte) (Event, error) {
	if content == nil {
		return fileEvent(EventConfig, path)
	}
	sum := sha256.Sum256(content)
	return jsonEvent(EventConfig, FileMeasurement{Path: path, SHA256: hex.EncodeToString(sum[:])})
}

// ImageEvent measures the image identity: the image metadata file (if
// metadataPath is set and the file exists) and the dm-verity root hashes
// (roothash=, usrhash=) on the kernel command line. A metadata file that
// exists but cannot be read is an error, and so is a root hash given more
// than once (which one the system used would be ambiguous).
func ImageEvent(metadataPath string, cmdline string) (Event, error) {
	var digest *[32]byte
	if metadataPath != "" {
		sum, err := FileSHA256(metadataPath)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return Event{}, fmt.Errorf("measure image metadata: %w", err)
		default:
			digest = &sum
		}
	}
	return ImageEventFromDigest(metadataPath, digest, cmdline)
}

// SeparatorEvent marks the end of launch measurements.
func SeparatorEvent() Event {
	return mustJSONEvent(EventSeparator, Separator{Phase: "launch"})
}

// RestartEvent records that the daemon restarted within the same boot, with
// the digests of the binary and config it restarted with and what the
// restart had to repair (rec, usually zero).
func RestartEvent(binarySHA256, configSHA256 [32]byte, rec Recovery) Event {
	return mustJSONEvent(EventRestart, Restart{
		BinarySHA256: hex.EncodeToString(binarySHA256[:]),
		ConfigSHA256: hex.EncodeToString(configSHA256[:]),
		Recovery:     rec,
	})
}

func fileEvent(t EventType, path string) (Event, error) {
	sum, err := FileSHA256(path)
	if err != nil {
		return Event{}, fmt.Errorf("measure %s: %w", t, err)
	}
	return jsonEvent(t, FileMeasurement{Path: path, SHA256: hex.EncodeToString(sum[:])})
}

// FileSHA256 hashes a regular file (not a device or FIFO, which could block
// or never end), streaming it.
func FileSHA256(path string) ([32]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return [32]byte{}, err
	}
	if !fi.Mode().IsRegular() {
		return [32]byte{}, fmt.Errorf("%s is not a regular file", path)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return [32]byte{}, fmt.Errorf("read %s: %w", path, err)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum, nil
}

func jsonEvent(t EventType, v any) (Event, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return Event{}, fmt.Errorf("encode %s event: %w", t, err)
	}
	return Event{Type: t, Data: b}, nil
}

func mustJSONEvent(t EventType, v any) Event {
	e, err := jsonEvent(t, v)
	if err != nil {
		panic(err) // only plain strings: cannot fail
	}
	return e
}

// ParseCmdline splits a kernel command line into parameters the way the
// kernel does (lib/cmdline.c next_arg): whitespace separates parameters,
// double quotes protect whitespace, quotes around a value are removed, and
// "--" ends the kernel's parameters (the rest belongs to init). A parameter
// without "=" maps to "". If a key repeats, the last value wins.
func ParseCmdline(s string) map[string]string {
	m := map[string]string{}
	for _, p := range splitCmdline(s) {
		if p.key == "--" && !p.hasVal {
			break
		}
		if p.key != "" {
			m[p.key] = p.val
		}
	}
	return m
}

type cmdlineParam struct {
	key, val string
	hasVal   bool
}

// splitCmdline returns every parameter of s, including those after "--".
func splitCmdline(s string) []cmdlineParam {
	var out []cmdlineParam
	s = strings.TrimLeft(s, cmdlineSpace)
	for s != "" {
		var p cmdlineParam
		p, s = nextArg(s)
		out = append(out, p)
		s = strings.TrimLeft(s, cmdlineSpace)
	}
	return out
}

const cmdlineSpace = " \t\n\v\f\r"

// nextArg is a port of the kernel's next_arg.
func nextArg(args string) (cmdlineParam, string) {
	quoted := false
	inQuote := false
	if strings.HasPrefix(args, `"`) {
		args = args[1:]
		quoted, inQuote = true, true
	}
	i, equals := 0, 0
	for ; i < len(args); i++ {
		if !inQuote && strings.IndexByte(cmdlineSpace, args[i]) >= 0 {
			break
		}
		if equals == 0 && args[i] == '=' {
			equals = i
		}
		if args[i] == '"' {
			inQuote = !inQuote
		}
	}
	tok, rest := args[:i], args[i:]
	if rest != "" {
		rest = rest[1:] // the kernel overwrites the separating space
	}
	stripTail := func(s string) string {
		if quoted && strings.HasSuffix(s, `"`) {
			return s[:len(s)-1]
		}
		return s
	}
	if equals == 0 {
		return cmdlineParam{key: stripTail(tok)}, rest
	}
	p := cmdlineParam{key: tok[:equals], val: tok[equals+1:], hasVal: true}
	if strings.HasPrefix(p.val, `"`) {
		p.val = p.val[1:]
		if strings.HasSuffix(p.val, `"`) {
			p.val = p.val[:len(p.val)-1]
		} else {
			p.val = stripTail(p.val)
		}
	} else {
		p.val = stripTail(p.val)
	}
	return p, rest
}
