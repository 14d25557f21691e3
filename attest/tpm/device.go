package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/attestd/attestd/attest"
)

// defaultDevices are tried in order when Config.Device is empty: the kernel
// resource manager first, then the raw device.
var defaultDevices = []string{"/dev/tpmrm0", "/dev/tpm0"}

// openDevice opens the TPM transport named by device (see Config.Device).
// auto lists the paths tried when device is empty. managed reports that
// the transport is the kernel's resource manager (/dev/tpmrm*).
func openDevice(device string, auto []string) (rw io.ReadWriteCloser, managed bool, err error) {
	switch {
	case device == "":
		for _, p := range auto {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err == nil {
				return f, isResourceManager(p), nil
			}
			if !errors.Is(err, fs.ErrNotExist) {
				return nil, false, fmt.Errorf("open TPM %s: %w", p, err)
			}
		}
		return nil, false, fmt.Errorf("%w: no TPM device (tried %s); enable a (v)TPM for this machine or choose another backend",
			attest.ErrNoDevice, strings.Join(auto, ", "))
	case strings.HasPrefix(device, "unix:"), strings.HasPrefix(device, "tcp:"):
		network, addr, _ := strings.Cut(device, ":")
		if addr == "" {
			return nil, false, fmt.Errorf("open TPM %q: empty address", device)
		}
		c, err := net.DialTimeout(network, addr, dialTimeout)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
				return nil, false, fmt.Errorf("%w: TPM socket %s: %v", attest.ErrNoDevice, device, err)
			}
			return nil, false, fmt.Errorf("connect to TPM %s: %w", device, err)
		}
		return &framedConn{Conn: c}, false, nil
	default:
		f, err := os.OpenFile(device, os.O_RDWR, 0)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, false, fmt.Errorf("%w: TPM device %s does not exist", attest.ErrNoDevice, device)
			}
			return nil, false, fmt.Errorf("open TPM %s: %w", device, err)
		}
		return f, isResourceManager(device), nil
	}
}

// dialTimeout bounds connecting to a swtpm socket.
const dialTimeout = 30 * time.Second

// isResourceManager: the kernel's resource manager devices are /dev/tpmrmN.
func isResourceManager(path string) bool {
	return strings.HasPrefix(filepath.Base(path), "tpmrm")
}

// framedConn turns a stream socket into the "one Read returns one whole
// response" transport go-tpm's legacy API expects: Read collects a complete
// TPM response (header + size) before returning it.
type framedConn struct {
	net.Conn
	pending []byte
}

const tpmHeaderSize = 10

func (c *framedConn) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		var hdr [tpmHeaderSize]byte
		if _, err := io.ReadFull(c.Conn, hdr[:]); err != nil {
			return 0, fmt.Errorf("read TPM response header: %w", err)
		}
		size := binary.BigEndian.Uint32(hdr[2:6])
		if size < tpmHeaderSize || size > 1<<20 {
			return 0, fmt.Errorf("read TPM response: bad size %d", size)
		}
		buf := make([]byte, size)
		copy(buf, hdr[:])
		if _, err := io.ReadFull(c.Conn, buf[tpmHeaderSize:]); err != nil {
			return 0, fmt.Errorf("read TPM response body: %w", err)
		}
		c.pending = buf
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}
