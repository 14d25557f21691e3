package tpm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
)

// The key file keeps the environment key's TPM-wrapped blobs (encrypted by
// this TPM's storage root key; useless on any other TPM) so that a daemon
// restart within the same boot keeps the same environment key. It records
// the TPM's reset count: after a reboot the blob is ignored and a new key is
// made. Layout: "attestd-envkey-v1\n" ‖ u32be(resetCount) ‖ TPM2B_PUBLIC ‖
// TPM2B_PRIVATE.
const keyFileMagic = "attestd-envkey-v1\n"

// maxKeyFile bounds the key file.
const maxKeyFile = 4 << 10

// resetCount reads TPMS_CLOCK_INFO.resetCount: it changes at every TPM
// reset (reboot), never within a boot.
func resetCount(rw io.ReadWriter) (uint32, error) {
	resp, _, err := tpmutil.RunCommand(rw, tpm2.TagNoSessions, tpm2.CmdReadClock)
	if err != nil {
		return 0, fmt.Errorf("read clock: %w", err)
	}
	var time, clock uint64
	var reset, restart uint32
	var safe byte
	if _, err := tpmutil.Unpack(resp, &time, &clock, &reset, &restart, &safe); err != nil {
		return 0, fmt.Errorf("read clock: %w", err)
	}
	return reset, nil
}

func encodeKeyFile(reset uint32, pub, priv []byte) []byte {
	var b bytes.Buffer
	b.WriteString(keyFileMagic)
	binary.Write(&b, binary.BigEndian, reset)
	binary.Write(&b, binary.BigEndian, uint16(len(pub)))
	b.Write(pub)
	binary.Write(&b, binary.BigEndian, uint16(len(priv)))
	b.Write(priv)
	return b.Bytes()
}

var errKeyFile = errors.New("malformed key file")

func decodeKeyFile(raw []byte) (reset uint32, pub, priv []byte, err error) {
	r := bytes.NewReader(raw)
	magic := make([]byte, len(keyFileMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != keyFileMagic {
		return 0, nil, nil, errKeyFile
	}
	if err := binary.Read(r, binary.BigEndian, &reset); err != nil {
		return 0, nil, nil, errKeyFile
	}
	read2B := func() ([]byte, error) {
		var n uint16
		if err := binary.Read(r, binary.BigEndian, &n); err != nil {
			return nil, errKeyFile
		}
		if int(n) > r.Len() {
			return nil, errKeyFile
		}
		b := make([]byte, n)
		io.ReadFull(r, b)
		return b, nil
	}
	if pub, err = read2B(); err != nil {
		return 0, nil, nil, err
	}
	if priv, err = read2B(); err != nil {
		return 0, nil, nil, err
	}
	if r.Len() != 0 {
		return 0, nil, nil, errKeyFile
	}
	return reset, pub, priv, nil
}

// loadKeyFile loads the env key from cfg.KeyFile if it was made in this
// boot of this TPM and is still the key attestd makes. It reports why not
// otherwise (the caller then makes a new key).
func (b *Backend) loadKeyFile(srk *client.Key, reset uint32) (tpmutil.Handle, []byte, error) {
	raw, err := os.ReadFile(b.cfg.KeyFile)
	if err != nil {
		return 0, nil, err
	}
	if len(raw) > maxKeyFile {
		return 0, nil, errKeyFile
	}
	saved, pub, priv, err := decodeKeyFile(raw)
	if err != nil {
		return 0, nil, err
	}
	if saved != reset {
		return 0, nil, fmt.Errorf("made in an earlier boot (TPM reset count %d, now %d)", saved, reset)
	}
	p, err := tpm2.DecodePublic(pub)
	if err != nil || !p.MatchesTemplate(envKeyTemplate()) {
		return 0, nil, fmt.Errorf("not an attestd environment key")
	}
	h, _, err := tpm2.Load(b.rw, srk.Handle(), "", pub, priv)
	if err != nil {
		return 0, nil, fmt.Errorf("does not load in this TPM: %w", err)
	}
	return h, pub, nil
}

// saveKeyFile writes the key file atomically, mode 0600.
func (b *Backend) saveKeyFile(reset uint32, pub, priv []byte) error {
	dir := filepath.Dir(b.cfg.KeyFile)
	f, err := os.CreateTemp(dir, ".envkey.*")
	if err != nil {
		return fmt.Errorf("save environment key blob: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(encodeKeyFile(reset, pub, priv)); err != nil {
		f.Close()
		return fmt.Errorf("save environment key blob: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save environment key blob: %w", err)
	}
	if err := os.Rename(f.Name(), b.cfg.KeyFile); err != nil {
		return fmt.Errorf("save environment key blob: %w", err)
	}
	return nil
}
