package measure

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// MountInfo is one line of /proc/<pid>/mountinfo (proc(5)).
type MountInfo struct {
	ID, ParentID int
	Major, Minor uint32   // st_dev of the file system ("253:1")
	Root         string   // root of the mount within the file system, unescaped
	MountPoint   string   // unescaped: the kernel writes space, tab, newline and backslash as \040 \011 \012 \134
	Options      []string // per-mount options, e.g. ["rw", "nosuid", "relatime"]
	Optional     []string // optional fields before "-", e.g. ["shared:1"]
	FSType       string   // e.g. "ext4", "fuse.sshfs"
	Source       string   // unescaped; "none" etc. kept verbatim
	SuperOptions []string // per-superblock options, e.g. ["rw", "errors=remount-ro"]
}

// mountInfoMinFields is the number of fields of a line without optional
// fields: ID, parent, major:minor, root, mount point, options, "-", type,
// source, super options.
const mountInfoMinFields = 10

// ParseMountInfo parses the whole of a mountinfo file. Empty input is an error.
//
// Fields are separated by single spaces, as the kernel writes them. Options
// and SuperOptions are split on commas and kept as written (any octal
// escapes in them are not decoded). An empty Source is accepted: the kernel
// writes one when a file system was mounted with an empty source string.
func ParseMountInfo(data []byte) ([]MountInfo, error) {
	lines, err := splitTextLines(data, "mountinfo")
	if err != nil {
		return nil, err
	}
	if len(lines) == 0 {
		return nil, errors.New("parse mountinfo: empty input")
	}
	mounts := make([]MountInfo, 0, len(lines))
	for i, line := range lines {
		m, err := parseMountInfoLine(line)
		if err != nil {
			return nil, fmt.Errorf("parse mountinfo line %d: %w", i+1, err)
		}
		mounts = append(mounts, m)
	}
	return mounts, nil
}

// HasOption reports whether opts holds o exactly (for "rw"/"ro").
func HasOption(opts []string, o string) bool {
	return slices.Contains(opts, o)
}

func parseMountInfoLine(line string) (MountInfo, error) {
	f := strings.Split(line, " ")
	if len(f) < mountInfoMinFields {
		return MountInfo{}, fmt.Errorf("%d fields, want at least %d", len(f), mountInfoMinFields)
	}
	// The separator is the fourth field from the end: type, source and
	// super options follow it, and none of the optional fields may be "-".
	sep := len(f) - 4
	if f[sep] != "-" {
		return MountInfo{}, errors.New(`no "-" separator before the last three fields`)
	}
	for i, s := range f {
		if s == "" && i != sep+2 {
			return MountInfo{}, fmt.Errorf("field %d is empty", i+1)
		}
	}
	if slices.Contains(f[6:sep], "-") {
		return MountInfo{}, errors.New(`more than one "-" separator`)
	}

	var m MountInfo
	id, err := strconv.ParseUint(f[0], 10, 31)
	if err != nil {
		return MountInfo{}, fmt.Errorf("mount ID %q: %w", f[0], numErr(err))
	}
	parent, err := strconv.ParseUint(f[1], 10, 31)
	if err != nil {
		return MountInfo{}, fmt.Errorf("parent ID %q: %w", f[1], numErr(err))
	}
	m.ID, m.ParentID = int(id), int(parent)
	if m.Major, m.Minor, err = parseMajorMinor(f[2]); err != nil {
		return MountInfo{}, err
	}
	if m.Root, err = unescapeMountField(f[3]); err != nil {
		return MountInfo{}, fmt.Errorf("root: %w", err)
	}
	if m.MountPoint, err = unescapeMountField(f[4]); err != nil {
		return MountInfo{}, fmt.Errorf("mount point: %w", err)
	}
	if m.Options, err = splitMountOptions(f[5]); err != nil {
		return MountInfo{}, fmt.Errorf("mount options: %w", err)
	}
	if sep > 6 {
		m.Optional = slices.Clone(f[6:sep])
	}
	m.FSType = f[sep+1]
	if m.Source, err = unescapeMountField(f[sep+2]); err != nil {
		return MountInfo{}, fmt.Errorf("source: %w", err)
	}
	if m.SuperOptions, err = splitMountOptions(f[sep+3]); err != nil {
		return MountInfo{}, fmt.Errorf("super options: %w", err)
	}
	return m, nil
}

// parseMajorMinor parses the "major:minor" field.
func parseMajorMinor(s string) (major, minor uint32, err error) {
	maj, min, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, fmt.Errorf("device %q: want major:minor", s)
	}
	a, err := strconv.ParseUint(maj, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("device %q: major: %w", s, numErr(err))
	}
	b, err := strconv.ParseUint(min, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("device %q: minor: %w", s, numErr(err))
	}
	return uint32(a), uint32(b), nil
}

// splitMountOptions splits a comma-separated option list; no option may be empty.
func splitMountOptions(s string) ([]string, error) {
	opts := strings.Split(s, ",")
	if slices.Contains(opts, "") {
		return nil, fmt.Errorf("%q has an empty option", s)
	}
	return opts, nil
}

// unescapeMountField decodes the octal escapes the kernel writes for space,
// tab, newline and backslash (\040 \011 \012 \134). Any three-digit octal
// escape of a byte is accepted; a backslash not followed by one is an error.
func unescapeMountField(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+4 > len(s) {
			return "", fmt.Errorf("%q: truncated escape at byte %d", s, i+1)
		}
		v := 0
		for _, c := range []byte(s[i+1 : i+4]) {
			if c < '0' || c > '7' {
				return "", fmt.Errorf("%q: invalid escape at byte %d", s, i+1)
			}
			v = v*8 + int(c-'0')
		}
		if v > 0xff {
			return "", fmt.Errorf("%q: escape at byte %d is out of range", s, i+1)
		}
		b.WriteByte(byte(v))
		i += 3
	}
	return b.String(), nil
}

// The storage parsers (mountinfo, device-mapper tables, crypttab) read small
// text files; these bound what they accept.
const (
	maxTextInput = 4 << 20
	maxTextLines = 65536
)

// errInputTooLarge: a text input exceeds maxTextInput bytes or maxTextLines lines.
var errInputTooLarge = errors.New("input too large")

// splitTextLines splits data into lines after checking its size. A final
// newline does not start another line.
func splitTextLines[T string | []byte](data T, what string) ([]string, error) {
	if len(data) > maxTextInput {
		return nil, fmt.Errorf("parse %s: %d bytes, more than %d: %w", what, len(data), maxTextInput, errInputTooLarge)
	}
	s := string(data)
	if s == "" {
		return nil, nil
	}
	s = strings.TrimSuffix(s, "\n")
	if n := strings.Count(s, "\n") + 1; n > maxTextLines {
		return nil, fmt.Errorf("parse %s: %d lines, more than %d: %w", what, n, maxTextLines, errInputTooLarge)
	}
	return strings.Split(s, "\n"), nil
}

// blankFields splits s on runs of spaces and tabs.
func blankFields(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '\t' })
}

// numErr drops the input a strconv error quotes, keeping only why it failed
// ("invalid syntax", "value out of range"), so that callers choose what to show.
func numErr(err error) error {
	if ne, ok := errors.AsType[*strconv.NumError](err); ok {
		return ne.Err
	}
	return err
}
