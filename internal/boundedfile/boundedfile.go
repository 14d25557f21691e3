// Package boundedfile reads whole files that must not exceed a size: config
// files, logs and state an attacker or a fault could make arbitrarily large.
package boundedfile

import (
	"fmt"
	"io"
	"os"
)

// Read returns the file's content, or an error naming the file when it is
// larger than limit bytes (without reading more than limit+1).
func Read(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return b, nil
}
