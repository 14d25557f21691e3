package measure

import (
	"crypto"
	"fmt"
	"hash"
	"io"
	"slices"
	"strings"
)

// systemd-stub 252 and system extensions (src/boot/efi/stub.c, cpio.c;
// docs/TPM2_PCR_MEASUREMENTS.md "PCR 13, EV_IPL, sysext initrd"): the stub
// packs every <uki>.extra.d/*.raw file into one cpio archive, in the "newc"
// format the kernel unpacks, under .extra/sysext/, and measures that archive,
// once, into PCR 13 as an EV_IPL event whose data is the UTF-16 string
// "System extension initrd". The digest is over the archive, not over each
// image: the images' names, sizes and order are in it too.

// SysextDescription is the event data (as text) systemd-stub gives the
// measurement of its system extension archive.
const SysextDescription = "System extension initrd"

// SysextFile is a system extension image as systemd-stub finds it in the
// UKI's .extra.d directory on the ESP: its file name there, its size and
// its contents (Size bytes).
type SysextFile struct {
	Name    string
	Size    int64
	Content io.Reader
}

// SysextPreboot returns the preboot event attestd records for the system
// extension images files (the whole .extra.d set: the stub measures them as
// one archive), with its digest in each of banks: the hash of the cpio
// archive systemd-stub builds. Names must be ones the stub takes: ending in
// ".raw" (any case), ASCII, not starting with ".", at most 255 characters.
func SysextPreboot(files []SysextFile, banks []crypto.Hash) (PrebootMeasurement, error) {
	if len(banks) == 0 {
		return PrebootMeasurement{}, fmt.Errorf("sysext: no banks")
	}
	files, err := sortedSysexts(files)
	if err != nil {
		return PrebootMeasurement{}, err
	}
	hs := make([]hash.Hash, len(banks))
	ws := make([]io.Writer, len(banks))
	for i, h := range banks {
		if !h.Available() {
			return PrebootMeasurement{}, fmt.Errorf("sysext: hash %v not available", h)
		}
		hs[i] = h.New()
		ws[i] = hs[i]
	}
	if err := writeSysextCPIO(io.MultiWriter(ws...), files); err != nil {
		return PrebootMeasurement{}, err
	}
	ev, err := PrebootEvent(Preboot{Source: PrebootSourceTCG, EventType: "EV_IPL", EventTypeValue: 0x0D, Description: SysextDescription})
	if err != nil {
		return PrebootMeasurement{}, err
	}
	m := PrebootMeasurement{Event: ev, Digests: map[crypto.Hash][]byte{}}
	for i, h := range banks {
		m.Digests[h] = hs[i].Sum(nil)
	}
	return m, nil
}

// WriteSysextArchive writes the cpio archive systemd-stub builds of files
// (checked and sorted as SysextPreboot does): what it measures into PCR 13,
// and what it appends to the initrd the kernel measures into PCR 9.
func WriteSysextArchive(w io.Writer, files []SysextFile) error {
	files, err := sortedSysexts(files)
	if err != nil {
		return err
	}
	return writeSysextCPIO(w, files)
}

// sortedSysexts checks files' names and sizes and returns them in the
// order the stub packs them.
func sortedSysexts(files []SysextFile) ([]SysextFile, error) {
	if len(files) == 0 {
		return nil, fmt.Errorf("sysext: no images (the stub measures nothing then)")
	}
	files = slices.Clone(files)
	for i, f := range files {
		if err := checkSysextName(f.Name); err != nil {
			return nil, err
		}
		if f.Size < 0 || f.Size > 0xFFFFFFFF {
			return nil, fmt.Errorf("sysext %s: size %d does not fit a cpio header", f.Name, f.Size)
		}
		if slices.ContainsFunc(files[:i], func(g SysextFile) bool { return g.Name == f.Name }) {
			return nil, fmt.Errorf("sysext %s: given twice", f.Name)
		}
	}
	// The stub sorts with strcmp16: on ASCII names, byte order.
	slices.SortFunc(files, func(a, b SysextFile) int { return strings.Compare(a.Name, b.Name) })
	return files, nil
}

func checkSysextName(name string) error {
	switch {
	case name == "" || strings.ContainsAny(name, "/\\"):
		return fmt.Errorf("sysext %q: want a file name", name)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("sysext %q: the stub skips names starting with a dot", name)
	case !strings.HasSuffix(strings.ToLower(name), ".raw"):
		return fmt.Errorf("sysext %q: the stub takes only *.raw files", name)
	case len(name) > 255:
		return fmt.Errorf("sysext %q: the stub skips names over 255 characters", name)
	}
	for i := 0; i < len(name); i++ {
		if name[i] == 0 || name[i] > 0x7f {
			return fmt.Errorf("sysext %q: the stub skips names that are not ASCII", name)
		}
	}
	return nil
}

// sysextDir is where the stub puts the images in the archive.
const sysextDir = ".extra/sysext"

// writeSysextCPIO writes the archive systemd-stub's pack_cpio builds for
// files (sorted): the directories .extra and .extra/sysext (mode 0555),
// each file as .extra/sysext/NAME (mode 0444), inodes counted from 1,
// uid, gid and mtime 0, nlink 1, then the trailer; every header and every
// file's contents padded with NULs to a multiple of 4 bytes.
func writeSysextCPIO(w io.Writer, files []SysextFile) error {
	inode := uint32(1)
	off := 0
	write := func(b []byte) error {
		off += len(b)
		_, err := w.Write(b)
		return err
	}
	pad := func() error {
		if n := (4 - off%4) % 4; n > 0 {
			return write(make([]byte, n))
		}
		return nil
	}
	header := func(mode uint32, size uint32, name string) error {
		h := []byte("070701")
		for _, v := range []uint32{inode, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, uint32(len(name) + 1), 0} {
			h = fmt.Appendf(h, "%08x", v)
		}
		inode++
		h = append(append(h, name...), 0)
		if err := write(h); err != nil {
			return err
		}
		return pad()
	}
	for _, d := range []string{".extra", sysextDir} {
		if err := header(0o040555, 0, d); err != nil {
			return err
		}
	}
	for _, f := range files {
		if err := header(0o100444, uint32(f.Size), sysextDir+"/"+f.Name); err != nil {
			return err
		}
		n, err := io.Copy(w, io.LimitReader(f.Content, f.Size))
		off += int(n)
		if err != nil {
			return fmt.Errorf("sysext %s: %w", f.Name, err)
		}
		if n != f.Size {
			return fmt.Errorf("sysext %s: read %d bytes, want %d", f.Name, n, f.Size)
		}
		if err := pad(); err != nil {
			return err
		}
	}
	// The trailer, exactly as the stub writes it (an upper-case B).
	return write([]byte("070701" + strings.Repeat("00000000", 4) + "00000001" + strings.Repeat("00000000", 6) +
		"0000000B00000000TRAILER!!!\x00\x00\x00\x00"))
}
