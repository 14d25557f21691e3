//go:build !linux

package measure

import "os"

// syncData makes the data written to f durable (fsync; fdatasync is used on
// Linux).
func syncData(f *os.File) error { return f.Sync() }
