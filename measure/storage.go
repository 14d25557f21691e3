package measure

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
)

// The storage event (EventStorage) records the system's mounts as the
// kernel reports them at launch: for each mount its file system, whether it
// is writable, and what backs it, down to the device-mapper table of a
// dm-crypt or dm-verity device. It is data, not a verdict: RootVerity and
// EncryptedWritable below are the rules the daemon (for its own config) and
// the verifier (for its policy) both apply to it. docs/storage.md.

// Mount kinds.
const (
	MountBlock   = "block"   // backed by a block device: persistent unless proven otherwise
	MountMemory  = "memory"  // tmpfs, ramfs: gone at power-off
	MountVirtual = "virtual" // kernel interfaces (proc, sysfs, cgroup2, …): not storage
	MountOther   = "other"   // anything else (overlay, network, FUSE, …): nothing is proven about it
)

// StorageMeasurement is the data of EventStorage.
type StorageMeasurement struct {
	// MountTable is the file the mounts were read from, normally
	// /proc/1/mountinfo (the init process's mount namespace).
	MountTable string `json:"mountTable"`
	// Crypttab is the crypttab consulted for dm-crypt mappings; "" when the
	// system has none.
	Crypttab string `json:"crypttab,omitempty"`
	// Mounts is the whole mount table, in its order (a later mount on the
	// same mount point hides an earlier one).
	Mounts []MountMeasurement `json:"mounts"`
	// Swaps are the swap areas (/proc/swaps): the kernel may write any page
	// of memory there, tmpfs pages included.
	Swaps []SwapMeasurement `json:"swaps,omitempty"`
}

// SwapMeasurement is one swap area.
type SwapMeasurement struct {
	Filename string             `json:"filename"`
	Type     string             `json:"type"`             // "partition" or "file"
	Device   *DeviceMeasurement `json:"device,omitempty"` // of a partition
}

// MountMeasurement is one mount.
type MountMeasurement struct {
	MountPoint string             `json:"mountPoint"`
	FSType     string             `json:"fsType"`
	Source     string             `json:"source"`
	Writable   bool               `json:"writable"` // "rw" per mount or per superblock
	Kind       string             `json:"kind"`     // MountBlock, MountMemory, MountVirtual or MountOther
	Device     *DeviceMeasurement `json:"device,omitempty"`
}

// DeviceMeasurement is the block device behind a MountBlock mount.
type DeviceMeasurement struct {
	Number string         `json:"number"` // "253:1"
	Name   string         `json:"name"`   // kernel name: "dm-1", "vdb1"
	DM     *DMMeasurement `json:"dm,omitempty"`
}

// DMMeasurement is a device-mapper device: its name and UUID (from sysfs),
// the devices under it, and its table as the kernel returns it, without
// any key.
type DMMeasurement struct {
	Name    string                `json:"name"`
	UUID    string                `json:"uuid,omitempty"`
	Backing []string              `json:"backing,omitempty"` // kernel names of the devices under it
	Targets []DMTargetMeasurement `json:"targets,omitempty"`
	// Error says why the table could not be read (then Targets is empty).
	Error string `json:"error,omitempty"`
	// Crypttab is the crypttab line of this mapping's name, if any.
	Crypttab *CrypttabMeasurement `json:"crypttab,omitempty"`
}

// DMTargetMeasurement is one line of a device-mapper table.
type DMTargetMeasurement struct {
	Type    string `json:"type"`    // "crypt", "verity", "linear", …
	Sectors uint64 `json:"sectors"` // length in 512-byte sectors
	// crypt
	Cipher  string `json:"cipher,omitempty"`
	KeyBits int    `json:"keyBits,omitempty"`
	KeyType string `json:"keyType,omitempty"` // DMCrypt.KeyType
	// verity
	HashAlgorithm string `json:"hashAlgorithm,omitempty"`
	RootDigest    string `json:"rootDigest,omitempty"`
}

// CrypttabMeasurement is a crypttab line (without its volume name).
type CrypttabMeasurement struct {
	Device  string   `json:"device"`
	KeyFile string   `json:"keyFile,omitempty"`
	Options []string `json:"options,omitempty"`
}

// ParseStorage decodes the data of a storage event (or a probe's snapshot
// of one) strictly (DecodeEventData): known mount kinds and swap types, and
// a root mount.
func ParseStorage(data []byte) (*StorageMeasurement, error) {
	var s StorageMeasurement
	if err := DecodeEventData(data, &s); err != nil {
		return nil, fmt.Errorf("storage event: %w", err)
	}
	for _, m := range s.Mounts {
		switch m.Kind {
		case MountBlock, MountMemory, MountVirtual, MountOther:
		default:
			return nil, fmt.Errorf("storage event: mount %s has unknown kind %q", m.MountPoint, m.Kind)
		}
	}
	for _, sw := range s.Swaps {
		if sw.Type != "partition" && sw.Type != "file" {
			return nil, fmt.Errorf("storage event: swap %s has unknown type %q", sw.Filename, sw.Type)
		}
	}
	if root := s.MountOf("/"); root == nil || path.Clean(root.MountPoint) != "/" {
		return nil, errors.New("storage event: the mount table has no root mount")
	}
	return &s, nil
}

// UnreadableTables returns "NAME: ERROR" for each device-mapper device
// (of a mount or a swap area) whose table could not be read, once each.
func (s *StorageMeasurement) UnreadableTables() []string {
	var out []string
	seen := map[*DMMeasurement]bool{}
	check := func(d *DeviceMeasurement) {
		if d == nil || d.DM == nil || d.DM.Error == "" || seen[d.DM] {
			return
		}
		seen[d.DM] = true
		out = append(out, d.DM.Name+": "+d.DM.Error)
	}
	for _, m := range s.Mounts {
		check(m.Device)
	}
	for _, sw := range s.Swaps {
		check(sw.Device)
	}
	return out
}

// StorageEvent is the launch event recording s.
func StorageEvent(s StorageMeasurement) (Event, error) {
	return jsonEvent(EventStorage, s)
}

// TargetMeasurements turns a parsed table into its measurement: the key
// of a crypt target is reduced to its size and kind.
func TargetMeasurements(ts []DMTarget) []DMTargetMeasurement {
	out := make([]DMTargetMeasurement, 0, len(ts))
	for _, t := range ts {
		m := DMTargetMeasurement{Type: t.Type, Sectors: t.Length}
		if t.Crypt != nil {
			m.Cipher, m.KeyBits, m.KeyType = t.Crypt.Cipher, 8*t.Crypt.KeyBytes, t.Crypt.KeyType
		}
		if t.Verity != nil {
			m.HashAlgorithm, m.RootDigest = t.Verity.Algorithm, t.Verity.RootDigest
		}
		out = append(out, m)
	}
	return out
}

// MountKind classifies a file system type that is not backed by a block
// device.
func MountKind(fsType string) string {
	switch fsType {
	case "tmpfs", "ramfs":
		return MountMemory
	case "proc", "sysfs", "devtmpfs", "devpts", "securityfs", "cgroup", "cgroup2", "pstore", "efivarfs",
		"bpf", "debugfs", "tracefs", "configfs", "fusectl", "hugetlbfs", "mqueue", "binfmt_misc",
		"autofs", "rpc_pipefs", "nsfs", "selinuxfs":
		return MountVirtual
	}
	return MountOther
}

// ephemeralKeyFiles are the crypttab key files that make a fresh random
// key at every open: the key exists only in the kernel.
var ephemeralKeyFiles = []string{"/dev/urandom", "/dev/random"}

// MountOf returns the mount that holds path: the one with the longest
// mount point that is path or a parent of it; of two on the same mount
// point, the later (it hides the earlier). nil if none (no "/" mount).
func (s *StorageMeasurement) MountOf(p string) *MountMeasurement {
	p = path.Clean("/" + p)
	var best *MountMeasurement
	for i := range s.Mounts {
		m := &s.Mounts[i]
		mp := path.Clean(m.MountPoint)
		if mp != "/" && p != mp && !strings.HasPrefix(p, mp+"/") {
			continue
		}
		if best == nil || len(mp) >= len(path.Clean(best.MountPoint)) {
			best = m
		}
	}
	return best
}

// RootVerity checks that the root file system is read-only and served by a
// single dm-verity target, and returns that target's root digest.
func (s *StorageMeasurement) RootVerity() (string, error) {
	root := s.MountOf("/")
	switch {
	case root == nil || path.Clean(root.MountPoint) != "/":
		return "", errors.New("the mount table has no root mount")
	case root.Writable:
		return "", fmt.Errorf("the root file system (%s on %s) is writable", root.FSType, root.Source)
	case root.Device == nil || root.Device.DM == nil:
		return "", fmt.Errorf("the root file system (%s on %s) is not on a device-mapper device", root.FSType, root.Source)
	}
	dm := root.Device.DM
	switch {
	case dm.Error != "":
		return "", fmt.Errorf("the root device %s: table unreadable: %s", dm.Name, dm.Error)
	case len(dm.Targets) != 1 || dm.Targets[0].Type != "verity":
		return "", fmt.Errorf("the root device %s is %s, not one verity target", dm.Name, targetTypes(dm.Targets))
	case dm.Targets[0].RootDigest == "":
		return "", fmt.Errorf("the root device %s: verity target without a root digest", dm.Name)
	}
	return dm.Targets[0].RootDigest, nil
}

// EncryptedWritable checks that every writable persistent mount (kind
// block or other) and every swap area is on a dm-crypt mapping with an
// ephemeral key (see EphemeralCrypt): memory is only ephemeral if it is not
// swapped to a disk in the clear. Writable memory and virtual file systems
// and swap in compressed memory (zram) pass. The error names every mount
// and swap area that fails.
func (s *StorageMeasurement) EncryptedWritable() error {
	var errs []error
	for i := range s.Mounts {
		m := &s.Mounts[i]
		if !m.Writable || m.Kind == MountMemory || m.Kind == MountVirtual {
			continue
		}
		if err := s.EphemeralCrypt(m); err != nil {
			errs = append(errs, err)
		}
	}
	for _, sw := range s.Swaps {
		if err := s.ephemeralSwap(sw); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ephemeralSwap checks a swap area: a partition must be an ephemeral
// dm-crypt mapping (or zram, which is memory), a file must be on a mount
// that is.
func (s *StorageMeasurement) ephemeralSwap(sw SwapMeasurement) error {
	where := fmt.Sprintf("swap %s (%s)", sw.Filename, sw.Type)
	if sw.Type == "file" {
		m := s.MountOf(sw.Filename)
		if m == nil {
			return fmt.Errorf("%s: on no mount", where)
		}
		if err := s.EphemeralCrypt(m); err != nil {
			return fmt.Errorf("%s: on %v", where, err)
		}
		return nil
	}
	if sw.Device == nil {
		return fmt.Errorf("%s: its device is unknown, so not provably encrypted", where)
	}
	if strings.HasPrefix(sw.Device.Name, "zram") {
		return nil
	}
	return s.ephemeralDevice(where, sw.Device)
}

// EphemeralCrypt checks that m is on a dm-crypt mapping whose key cannot
// exist outside this boot of this environment:
//   - the device is one crypt target with a real cipher (not cipher_null);
//   - cryptsetup opened it in plain mode (DM UUID "CRYPT-PLAIN-…"): there is
//     no on-disk header or key slot the key could be recovered from;
//   - its crypttab line takes the key from the kernel's random source
//     (ephemeralKeyFiles), so it is new at every open;
//   - that crypttab is on the dm-verity root, so the image baker, not the
//     running system, wrote that line.
func (s *StorageMeasurement) EphemeralCrypt(m *MountMeasurement) error {
	where := fmt.Sprintf("%s (%s on %s)", m.MountPoint, m.FSType, m.Source)
	if m.Kind != MountBlock || m.Device == nil {
		return fmt.Errorf("%s: not on a block device, so not provably encrypted", where)
	}
	return s.ephemeralDevice(where, m.Device)
}

// ephemeralDevice is EphemeralCrypt for a block device; where names it in
// errors.
func (s *StorageMeasurement) ephemeralDevice(where string, d *DeviceMeasurement) error {
	dm := d.DM
	switch {
	case dm == nil:
		return fmt.Errorf("%s: on %s, not an encrypted device-mapper device", where, d.Name)
	case dm.Error != "":
		return fmt.Errorf("%s: table of %s unreadable: %s", where, dm.Name, dm.Error)
	case len(dm.Targets) != 1 || dm.Targets[0].Type != "crypt":
		return fmt.Errorf("%s: %s is %s, not one crypt target", where, dm.Name, targetTypes(dm.Targets))
	}
	t := dm.Targets[0]
	switch {
	case strings.Contains(t.Cipher, "null"):
		return fmt.Errorf("%s: %s uses cipher %s, which does not encrypt", where, dm.Name, t.Cipher)
	case t.KeyBits <= 0:
		return fmt.Errorf("%s: %s has no key", where, dm.Name)
	case !strings.HasPrefix(dm.UUID, "CRYPT-PLAIN-"):
		return fmt.Errorf("%s: %s (UUID %q) is not a plain dm-crypt mapping: a header could hold its key", where, dm.Name, dm.UUID)
	case dm.Crypttab == nil:
		return fmt.Errorf("%s: %s has no crypttab line, so its key source is unknown", where, dm.Name)
	case !slices.Contains(ephemeralKeyFiles, dm.Crypttab.KeyFile):
		return fmt.Errorf("%s: %s takes its key from %q, not from %s", where, dm.Name, dm.Crypttab.KeyFile, strings.Join(ephemeralKeyFiles, " or "))
	}
	if s.Crypttab == "" {
		return fmt.Errorf("%s: the measurement names no crypttab", where)
	}
	if _, err := s.RootVerity(); err != nil {
		return fmt.Errorf("%s: its crypttab %s is not on a verified root: %v", where, s.Crypttab, err)
	}
	if h := s.MountOf(s.Crypttab); h == nil || path.Clean(h.MountPoint) != "/" {
		return fmt.Errorf("%s: its crypttab %s is not on the verified root", where, s.Crypttab)
	}
	return nil
}

func targetTypes(ts []DMTargetMeasurement) string {
	if len(ts) == 0 {
		return "an empty table"
	}
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.Type
	}
	return strings.Join(names, "+")
}
