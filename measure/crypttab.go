package measure

import (
	"fmt"
	"slices"
	"strings"
)

// CrypttabEntry is one line of /etc/crypttab (crypttab(5)):
// <volume name> <encrypted device> [<key file> [<options>]]
type CrypttabEntry struct {
	Name    string
	Device  string   // "/dev/disk/by-id/virtio-scratch", "UUID=…", "PARTLABEL=…"
	KeyFile string   // "" when the field is absent, "-" or "none"
	Options []string // split on commas; empty when absent or "-"
}

// ParseCrypttab parses a crypttab file: blank lines and lines starting with '#'
// are skipped; fields are separated by spaces or tabs. A duplicate volume name is an error.
//
// Leading blanks before '#' still make a comment. Quoting is not supported, a
// volume name may not contain '/', and an empty option (as in "a,,b") is an error.
func ParseCrypttab(data []byte) ([]CrypttabEntry, error) {
	lines, err := splitTextLines(data, "crypttab")
	if err != nil {
		return nil, err
	}
	var entries []CrypttabEntry
	seen := map[string]int{} // volume name → line number
	for i, line := range lines {
		f := blankFields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		e, err := parseCrypttabFields(f)
		if err != nil {
			return nil, fmt.Errorf("parse crypttab line %d: %w", i+1, err)
		}
		if first, ok := seen[e.Name]; ok {
			return nil, fmt.Errorf("parse crypttab line %d: volume %q is already defined on line %d", i+1, e.Name, first)
		}
		seen[e.Name] = i + 1
		entries = append(entries, e)
	}
	return entries, nil
}

func parseCrypttabFields(f []string) (CrypttabEntry, error) {
	if len(f) < 2 || len(f) > 4 {
		return CrypttabEntry{}, fmt.Errorf("%d fields, want <volume name> <encrypted device> [<key file> [<options>]]", len(f))
	}
	e := CrypttabEntry{Name: f[0], Device: f[1]}
	if strings.Contains(e.Name, "/") {
		return CrypttabEntry{}, fmt.Errorf("volume name %q contains '/'", e.Name)
	}
	if len(f) > 2 && f[2] != "-" && f[2] != "none" {
		e.KeyFile = f[2]
	}
	if len(f) > 3 && f[3] != "-" {
		e.Options = strings.Split(f[3], ",")
		if slices.Contains(e.Options, "") {
			return CrypttabEntry{}, fmt.Errorf("options %q: empty option", f[3])
		}
	}
	return e, nil
}
