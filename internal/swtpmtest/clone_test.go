package swtpmtest

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

func TestClone(t *testing.T) {
	tpm := StartTPM(t)
	clone := tpm.Clone(t)
	if clone.Socket == tpm.Socket || clone.CADir != tpm.CADir {
		t.Fatalf("clone %+v of %+v", clone, tpm)
	}
	for _, sock := range []string{tpm.Socket, clone.Socket} {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		// TPM2_GetRandom(8).
		if _, err := c.Write([]byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8}); err != nil {
			t.Fatal(err)
		}
		var hdr [10]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			t.Fatal(err)
		}
		if rc := binary.BigEndian.Uint32(hdr[6:]); rc != 0 {
			t.Errorf("%s: TPM2_GetRandom response code %#x", sock, rc)
		}
		c.Close()
	}
}
