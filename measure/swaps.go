package measure

import (
	"errors"
	"fmt"
	"strconv"
)

// Swap is one line of /proc/swaps: a swap area the kernel may write
// memory pages to (tmpfs pages included).
type Swap struct {
	Filename string // unescaped: the kernel escapes space, tab, newline and backslash as in mountinfo
	Type     string // "partition" or "file"
	SizeKiB  uint64
	UsedKiB  uint64
	Priority int
}

// swapsHeader is the first field of /proc/swaps's header line.
const swapsHeader = "Filename"

// ParseSwaps parses /proc/swaps: a header line, then one line per swap
// area ("Filename Type Size Used Priority", separated by blanks). A file
// with only the header means no swap.
func ParseSwaps(data []byte) ([]Swap, error) {
	lines, err := splitTextLines(data, "swaps")
	if err != nil {
		return nil, err
	}
	if len(lines) == 0 {
		return nil, errors.New("parse swaps: empty input (want at least the header line)")
	}
	if f := blankFields(lines[0]); len(f) != 5 || f[0] != swapsHeader {
		return nil, errors.New("parse swaps line 1: not the /proc/swaps header")
	}
	var out []Swap
	for i, line := range lines[1:] {
		s, err := parseSwapLine(line)
		if err != nil {
			return nil, fmt.Errorf("parse swaps line %d: %w", i+2, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func parseSwapLine(line string) (Swap, error) {
	f := blankFields(line)
	if len(f) != 5 {
		return Swap{}, fmt.Errorf("%d fields, want 5", len(f))
	}
	name, err := unescapeMountField(f[0])
	if err != nil {
		return Swap{}, fmt.Errorf("filename: %w", err)
	}
	if name == "" || name[0] != '/' {
		return Swap{}, errors.New("filename is not an absolute path")
	}
	s := Swap{Filename: name, Type: f[1]}
	switch s.Type {
	case "partition", "file":
	default:
		return Swap{}, fmt.Errorf("type %q: want partition or file", s.Type)
	}
	if s.SizeKiB, err = strconv.ParseUint(f[2], 10, 64); err != nil {
		return Swap{}, fmt.Errorf("size: %w", numErr(err))
	}
	if s.UsedKiB, err = strconv.ParseUint(f[3], 10, 64); err != nil {
		return Swap{}, fmt.Errorf("used: %w", numErr(err))
	}
	if s.Priority, err = strconv.Atoi(f[4]); err != nil {
		return Swap{}, fmt.Errorf("priority: %w", numErr(err))
	}
	return s, nil
}
