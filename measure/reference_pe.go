package measure

import (
	"bytes"
	"crypto"
	"debug/pe"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// Predicting what UEFI firmware and systemd-stub measure when they boot a
// unified kernel image (UKI). See docs/reference-values.md.

// ErrPE marks a PE/COFF image that cannot be hashed.
var ErrPE = errors.New("malformed PE image")

// AuthenticodeDigest returns the Authenticode hash of a PE/COFF image, the
// digest UEFI firmware extends into PCR 4 for an EFI application it loads
// (EV_EFI_BOOT_SERVICES_APPLICATION; EDK2 Tcg2MeasurePeImage): the headers
// without the checksum and the certificate-table entry, the sections in file
// order, then any trailing data except the attribute certificates.
func AuthenticodeDigest(img []byte, h crypto.Hash) ([]byte, error) {
	if !h.Available() {
		return nil, fmt.Errorf("authenticode: hash %v not available", h)
	}
	u16 := func(off int) (int, error) {
		if off < 0 || off+2 > len(img) {
			return 0, fmt.Errorf("%w: truncated at %d", ErrPE, off)
		}
		return int(binary.LittleEndian.Uint16(img[off:])), nil
	}
	u32 := func(off int) (int, error) {
		if off < 0 || off+4 > len(img) {
			return 0, fmt.Errorf("%w: truncated at %d", ErrPE, off)
		}
		return int(binary.LittleEndian.Uint32(img[off:])), nil
	}
	if len(img) < 0x40 || img[0] != 'M' || img[1] != 'Z' {
		return nil, fmt.Errorf("%w: no MZ header", ErrPE)
	}
	peOff, err := u32(0x3c)
	if err != nil {
		return nil, err
	}
	if peOff+24 > len(img) || !bytes.Equal(img[peOff:peOff+4], []byte("PE\x00\x00")) {
		return nil, fmt.Errorf("%w: no PE signature", ErrPE)
	}
	nsec, err := u16(peOff + 6)
	if err != nil {
		return nil, err
	}
	optSize, err := u16(peOff + 20)
	if err != nil {
		return nil, err
	}
	opt := peOff + 24
	magic, err := u16(opt)
	if err != nil {
		return nil, err
	}
	var numDirsOff, dirsOff int
	switch magic {
	case 0x10b: // PE32
		numDirsOff, dirsOff = opt+92, opt+96
	case 0x20b: // PE32+
		numDirsOff, dirsOff = opt+108, opt+112
	default:
		return nil, fmt.Errorf("%w: optional header magic %#x", ErrPE, magic)
	}
	checksumOff := opt + 64
	sizeOfHeaders, err := u32(opt + 60)
	if err != nil {
		return nil, err
	}
	numDirs, err := u32(numDirsOff)
	if err != nil {
		return nil, err
	}
	if sizeOfHeaders > len(img) || sizeOfHeaders < dirsOff {
		return nil, fmt.Errorf("%w: SizeOfHeaders %d out of range", ErrPE, sizeOfHeaders)
	}
	w := h.New()
	w.Write(img[:checksumOff])
	certSize := 0
	if numDirs > 4 { // IMAGE_DIRECTORY_ENTRY_SECURITY
		certDir := dirsOff + 4*8
		if certDir+8 > sizeOfHeaders {
			return nil, fmt.Errorf("%w: certificate directory outside the headers", ErrPE)
		}
		w.Write(img[checksumOff+4 : certDir])
		w.Write(img[certDir+8 : sizeOfHeaders])
		if certSize, err = u32(certDir + 4); err != nil {
			return nil, err
		}
	} else {
		w.Write(img[checksumOff+4 : sizeOfHeaders])
	}
	type section struct{ ptr, size int }
	secTable := opt + optSize
	var secs []section
	for i := 0; i < nsec; i++ {
		s := secTable + i*40
		size, err := u32(s + 16)
		if err != nil {
			return nil, err
		}
		ptr, err := u32(s + 20)
		if err != nil {
			return nil, err
		}
		if size == 0 {
			continue
		}
		if ptr+size > len(img) || ptr+size < ptr {
			return nil, fmt.Errorf("%w: section %d outside the file", ErrPE, i)
		}
		secs = append(secs, section{ptr, size})
	}
	sort.SliceStable(secs, func(i, j int) bool { return secs[i].ptr < secs[j].ptr })
	hashed := sizeOfHeaders
	for _, s := range secs {
		w.Write(img[s.ptr : s.ptr+s.size])
		hashed += s.size
	}
	switch {
	case len(img) > hashed+certSize:
		w.Write(img[hashed : len(img)-certSize])
	case len(img) < hashed+certSize:
		return nil, fmt.Errorf("%w: sections and certificates exceed the file", ErrPE)
	}
	return w.Sum(nil), nil
}

// UKISections are the sections systemd-stub measures into PCR 11, in the
// order it measures them (systemd 252 unified_sections[]; .pcrsig is not
// measured).
var UKISections = []string{".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey"}

// StubEvent is one measurement systemd-stub makes into PCR 11.
type StubEvent struct {
	Description string // the section name
	Digest      []byte
}

// UKISection returns a section of a UKI as it is in memory once loaded: its
// raw data cut or zero-padded to VirtualSize. ok is false if the image has no
// such section.
func UKISection(img []byte, name string) (data []byte, ok bool, err error) {
	f, err := pe.NewFile(bytes.NewReader(img))
	if err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrPE, err)
	}
	defer f.Close()
	s := f.Section(name)
	if s == nil {
		return nil, false, nil
	}
	raw, err := s.Data()
	if err != nil {
		return nil, false, fmt.Errorf("%w: section %s: %v", ErrPE, name, err)
	}
	n := int(s.VirtualSize)
	if n <= len(raw) {
		return raw[:n], true, nil
	}
	if n > len(img)+maxSectionPad {
		return nil, false, fmt.Errorf("%w: section %s claims %d bytes in memory, far more than the %d-byte image holds", ErrPE, name, n, len(img))
	}
	return append(raw, make([]byte, n-len(raw))...), true, nil
}

// maxSectionPad bounds how far a section may be zero-padded beyond the
// image's size: a UKI's sections are the files it was built from, so a
// section claiming more memory than that is malformed, and the padding
// would be allocated.
const maxSectionPad = 1 << 20

// UKIStubEvents returns what systemd-stub (252) extends into PCR 11 for img:
// for each present, non-empty section in UKISections order, the digest of
// its name with a trailing NUL, then the digest of its contents.
func UKIStubEvents(img []byte, h crypto.Hash) ([]StubEvent, error) {
	if !h.Available() {
		return nil, fmt.Errorf("UKI: hash %v not available", h)
	}
	var out []StubEvent
	for _, name := range UKISections {
		data, ok, err := UKISection(img, name)
		if err != nil {
			return nil, err
		}
		if !ok || len(data) == 0 {
			continue
		}
		nw := h.New()
		nw.Write(append([]byte(name), 0))
		dw := h.New()
		dw.Write(data)
		out = append(out, StubEvent{name, nw.Sum(nil)}, StubEvent{name, dw.Sum(nil)})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no UKI sections (is this a UKI?)", ErrPE)
	}
	return out, nil
}

// EFICallingBootOption is the EV_EFI_ACTION string UEFI firmware measures into
// PCR 4 before it starts a boot option.
const EFICallingBootOption = "Calling EFI Application from Boot Option"

// PCR4Events are what UEFI firmware (EDK2/OVMF) measures into PCR 4 when it
// boots the EFI applications with the given Authenticode digests from a
// boot option, in that order: the "Calling EFI Application from Boot
// Option" action, the separator, then one EV_EFI_BOOT_SERVICES_APPLICATION
// per application.
func PCR4Events(h crypto.Hash, appDigests [][]byte) []FirmwareEvent {
	out := []FirmwareEvent{
		{PCR: 4, Type: "EV_EFI_ACTION", What: EFICallingBootOption, Digest: digestOf(h, []byte(EFICallingBootOption))},
		{PCR: 4, Type: "EV_SEPARATOR", Digest: digestOf(h, make([]byte, 4))},
	}
	for _, d := range appDigests {
		out = append(out, FirmwareEvent{PCR: 4, Type: "EV_EFI_BOOT_SERVICES_APPLICATION", Digest: d})
	}
	return out
}

// PredictPCR4 returns PCR 4 after PCR4Events.
func PredictPCR4(h crypto.Hash, appDigests [][]byte) []byte {
	return PCRValue(h, PCR4Events(h, appDigests))
}

// PCR11Events are what systemd-stub (252) measures into PCR 11 for img
// (UKIStubEvents, as EV_IPL events named by their section), followed by
// the systemd-pcrphase phase strings in phases (none if the image does not
// run systemd-pcrphase).
func PCR11Events(h crypto.Hash, img []byte, phases []string) ([]FirmwareEvent, error) {
	evs, err := UKIStubEvents(img, h)
	if err != nil {
		return nil, err
	}
	out := make([]FirmwareEvent, 0, len(evs)+len(phases))
	for _, e := range evs {
		out = append(out, FirmwareEvent{PCR: 11, Type: "EV_IPL", What: e.Description, Digest: e.Digest})
	}
	for _, p := range phases {
		out = append(out, FirmwareEvent{PCR: 11, Type: "EV_IPL", What: p, Digest: digestOf(h, []byte(p))})
	}
	return out, nil
}

func digestOf(h crypto.Hash, b []byte) []byte {
	w := h.New()
	w.Write(b)
	return w.Sum(nil)
}
