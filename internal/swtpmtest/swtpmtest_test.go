package swtpmtest

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"testing"
)

func TestStart(t *testing.T) {
	tpm := StartTPM(t)
	for _, p := range []string{tpm.IssuerCert, tpm.RootCert} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("CA file: %v", err)
		}
	}
	c, err := net.Dial("unix", tpm.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// TPM2_GetRandom(8): tag NO_SESSIONS, size 12, command 0x17B.
	cmd := []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8}
	if _, err := c.Write(cmd); err != nil {
		t.Fatal(err)
	}
	var hdr [10]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatal(err)
	}
	if rc := binary.BigEndian.Uint32(hdr[6:]); rc != 0 {
		t.Errorf("TPM2_GetRandom response code %#x", rc)
	}
}
