package measure

import (
	"io/fs"
	"os"
	"syscall"
)

// syncData makes the data written to f durable with fdatasync(2). For an
// append that is as strong as fsync: the file's size changed, and fdatasync
// flushes the metadata needed to read the data back, the size included; it
// skips only the timestamps, which nothing here reads.
func syncData(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if serr = syscall.Fdatasync(int(fd)); serr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &fs.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}
