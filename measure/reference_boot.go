package measure

import (
	"bytes"
	"crypto"
	"encoding/binary"
	"fmt"
	"unicode/utf16"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
)

// FirmwareEvent is one event of the firmware's TCG event log, read from a
// log or predicted: the PCR, the TCG event type's name, what it measures
// (a variable's name, a tagged event's description, an action's text) and
// its digest in one bank.
type FirmwareEvent struct {
	PCR    int    `json:"pcr"`
	Type   string `json:"type"`
	What   string `json:"what,omitempty"`
	Digest []byte `json:"digest"`
}

// UEFI variable GUIDs EDK2 measures into PCR 7.
var (
	efiGlobalVariable   = [16]byte{0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c} // 8be4df61-93ca-11d2-aa0d-00e098032b8c
	efiImageSecurityDB  = [16]byte{0xcb, 0xb2, 0x19, 0xd7, 0x3a, 0x3d, 0x96, 0x45, 0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f} // d719b2cb-3d3a-4596-a3bc-dad00e67656f
	secureBootVariables = []struct {
		guid [16]byte
		name string
	}{{efiGlobalVariable, "SecureBoot"}, {efiGlobalVariable, "PK"}, {efiGlobalVariable, "KEK"}, {efiImageSecurityDB, "db"}, {efiImageSecurityDB, "dbx"}}
)

// UEFIVariableDigest is the digest EDK2 extends for a UEFI variable
// (UEFI_VARIABLE_DATA: the vendor GUID, the name's length in characters,
// the data's length, the name in UTF-16, the data).
func UEFIVariableDigest(h crypto.Hash, guid [16]byte, name string, data []byte) []byte {
	n := utf16.Encode([]rune(name))
	var b bytes.Buffer
	b.Write(guid[:])
	binary.Write(&b, binary.LittleEndian, uint64(len(n)))
	binary.Write(&b, binary.LittleEndian, uint64(len(data)))
	binary.Write(&b, binary.LittleEndian, n)
	b.Write(data)
	return digestOf(h, b.Bytes())
}

// SecureBootOffEvents are what EDK2/OVMF measures into PCR 7 when Secure
// Boot is off and no keys are enrolled (the firmware's default variables):
// SecureBoot = 0, empty PK, KEK, db and dbx, then the separator; no image
// is verified, so no authority events follow. Another Secure Boot state
// depends on the platform's keys: pin PCR 7 in the policy instead
// (docs/reference-values.md).
func SecureBootOffEvents(h crypto.Hash) []FirmwareEvent {
	var out []FirmwareEvent
	for _, v := range secureBootVariables {
		var data []byte
		if v.name == "SecureBoot" {
			data = []byte{0}
		}
		out = append(out, FirmwareEvent{PCR: 7, Type: "EV_EFI_VARIABLE_DRIVER_CONFIG", What: v.name, Digest: UEFIVariableDigest(h, v.guid, v.name, data)})
	}
	return append(out, FirmwareEvent{PCR: 7, Type: "EV_SEPARATOR", Digest: digestOf(h, make([]byte, 4))})
}

// SecureBootState reads whether Secure Boot was on from PCR 7's events: the
// measurement of the SecureBoot variable, whose digest covers its value.
// Only events of a log that replayed to the quoted PCR 7 say anything.
func SecureBootState(h crypto.Hash, evs []FirmwareEvent) (on bool, err error) {
	for _, e := range evs {
		if e.PCR != 7 || e.Type != "EV_EFI_VARIABLE_DRIVER_CONFIG" || e.What != "SecureBoot" {
			continue
		}
		switch {
		case bytes.Equal(e.Digest, UEFIVariableDigest(h, efiGlobalVariable, "SecureBoot", []byte{1})):
			return true, nil
		case bytes.Equal(e.Digest, UEFIVariableDigest(h, efiGlobalVariable, "SecureBoot", []byte{0})):
			return false, nil
		}
		return false, fmt.Errorf("the SecureBoot variable was measured with a value other than 0 or 1")
	}
	return false, fmt.Errorf("PCR 7 has no measurement of the SecureBoot variable")
}

// Linux EFI stub event descriptions (its EV_EVENT_TAG events into PCR 9).
const (
	LinuxLoadOptions = "LOADED_IMAGE::LoadOptions"
	LinuxInitrd      = "Linux initrd"
)

// UKIKernelEvents are what the Linux kernel's EFI stub measures into PCR 9
// when systemd-stub (252) starts the UKI's kernel: the load options
// systemd-stub passes it (the UKI's .cmdline as UTF-16 with its NUL), then
// the initrd it serves (the .initrd section, with nothing appended: no
// credentials or system extensions on the ESP). Checked against the OVMF
// event log of the e2e boot (measure/testdata/ovmf-e2e-firmware.log).
func UKIKernelEvents(h crypto.Hash, img []byte) ([]FirmwareEvent, error) {
	cmdline, ok, err := UKISection(img, ".cmdline")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: the UKI has no .cmdline section", ErrPE)
	}
	if i := bytes.IndexByte(cmdline, 0); i >= 0 {
		cmdline = cmdline[:i]
	}
	initrd, _, err := UKISection(img, ".initrd")
	if err != nil {
		return nil, err
	}
	return KernelEvents(h, string(cmdline), initrd), nil
}

// UKIKernelEventsWithSysexts is UKIKernelEvents when systemd-stub also
// serves the system extension images files: it appends their archive
// (WriteSysextArchive) to the .initrd section, the section padded to 4
// bytes first as the stub's combine_initrd does, and the kernel measures
// the whole as its initrd. Checked in a real boot of the e2e image with one
// sysext (its .initrd was already 4-byte aligned: the padding is from the
// stub's source, not seen).
func UKIKernelEventsWithSysexts(h crypto.Hash, img []byte, files []SysextFile) ([]FirmwareEvent, error) {
	evs, err := UKIKernelEvents(h, img)
	if err != nil || len(files) == 0 {
		return evs, err
	}
	initrd, _, err := UKISection(img, ".initrd")
	if err != nil {
		return nil, err
	}
	w := h.New()
	w.Write(initrd)
	w.Write(make([]byte, (4-len(initrd)%4)%4))
	if err := WriteSysextArchive(w, files); err != nil {
		return nil, err
	}
	d := FirmwareEvent{PCR: 9, Type: "EV_EVENT_TAG", What: LinuxInitrd, Digest: w.Sum(nil)}
	if len(evs) == 2 {
		evs[1] = d
	} else {
		evs = append(evs, d)
	}
	return evs, nil
}

// KernelEvents are the Linux EFI stub's PCR 9 events for a kernel started
// with load options cmdline (passed as UTF-16 with a NUL) and the initrd
// (none when empty).
func KernelEvents(h crypto.Hash, cmdline string, initrd []byte) []FirmwareEvent {
	u := utf16.Encode([]rune(cmdline + "\x00"))
	opts := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(opts[2*i:], c)
	}
	out := []FirmwareEvent{{PCR: 9, Type: "EV_EVENT_TAG", What: LinuxLoadOptions, Digest: digestOf(h, opts)}}
	if len(initrd) > 0 {
		out = append(out, FirmwareEvent{PCR: 9, Type: "EV_EVENT_TAG", What: LinuxInitrd, Digest: digestOf(h, initrd)})
	}
	return out
}

// PCRValue is the value of a PCR extended from zero with the digests of
// evs, in order.
func PCRValue(h crypto.Hash, evs []FirmwareEvent) []byte {
	ds := make([][]byte, len(evs))
	for i, e := range evs {
		ds[i] = e.Digest
	}
	return ExtendAll(h, make([]byte, h.Size()), ds)
}

// ParseFirmwareLog reads a TCG PC Client (crypto-agile) event log and
// returns its events with their SHA-256 digests, in order. It does not
// replay them: callers compare a PCR's events with its quoted value.
func ParseFirmwareLog(raw []byte) ([]FirmwareEvent, error) {
	el, err := tcg.ParseEventLog(raw, tcg.ParseOpts{})
	if err != nil {
		return nil, fmt.Errorf("firmware event log: %w", err)
	}
	var out []FirmwareEvent
	for _, e := range el.Events(register.HashSHA256) {
		name := e.Type.TCGString()
		out = append(out, FirmwareEvent{PCR: e.Index, Type: name, What: eventWhat(name, e.Data), Digest: e.Digest})
	}
	return out, nil
}

// eventWhat names what a firmware event measures, as far as its data says
// (the data of most events is not covered by the digest: a description).
func eventWhat(typ string, data []byte) string {
	switch typ {
	case "EV_EFI_VARIABLE_DRIVER_CONFIG", "EV_EFI_VARIABLE_BOOT", "EV_EFI_VARIABLE_BOOT2", "EV_EFI_VARIABLE_AUTHORITY":
		// UEFI_VARIABLE_DATA: GUID, name length, data length, name.
		if len(data) < 32 {
			return ""
		}
		n := binary.LittleEndian.Uint64(data[16:24])
		if n > 64 || uint64(len(data)) < 32+2*n {
			return ""
		}
		return utf16String(data[32 : 32+2*n])
	case "EV_EVENT_TAG":
		// TCG_PCClientTaggedEvent: tag ID, size, data (the Linux stub's is
		// an ASCII description with its NUL).
		if len(data) < 8 {
			return ""
		}
		n := binary.LittleEndian.Uint32(data[4:8])
		if uint64(len(data)) < 8+uint64(n) {
			return ""
		}
		return printable(bytes.TrimRight(data[8:8+n], "\x00"))
	case "EV_EFI_ACTION", "EV_IPL", "EV_ACTION", "EV_POST_CODE", "EV_S_CRTM_VERSION":
		if s := utf16String(data); s != "" && len(data) > 1 && data[1] == 0 {
			return s
		}
		return printable(bytes.TrimRight(data, "\x00"))
	}
	return ""
}

func utf16String(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return printable([]byte(string(utf16.Decode(u))))
}

// printable keeps a description short and free of control characters.
func printable(b []byte) string {
	const max = 80
	out := make([]rune, 0, len(b))
	for _, r := range string(b) {
		if r < 0x20 || r == 0x7f {
			r = '.'
		}
		out = append(out, r)
		if len(out) == max {
			return string(out) + "…"
		}
	}
	return string(out)
}
