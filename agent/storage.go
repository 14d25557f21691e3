package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/attestd/attestd/internal/boundedfile"
	"github.com/attestd/attestd/measure"
)

// StorageProbe reads the system's storage layout from the kernel: the
// mount table, sysfs for the block device behind each mount, the
// device-mapper table of each device-mapper device (dmsetup, which needs
// CAP_SYS_ADMIN) and the crypttab line of each mapping. docs/storage.md.
type StorageProbe struct {
	// MountInfo is the mount table; default /proc/1/mountinfo, falling back
	// to /proc/self/mountinfo when init's is hidden (hidepid).
	MountInfo string
	// SysDevBlock is sysfs's /sys/dev/block.
	SysDevBlock string
	// Crypttab is the crypttab file; default /etc/crypttab.
	Crypttab string
	// Swaps is the swap table; default /proc/swaps (absent: no swap).
	Swaps string
	// DMTable returns the table of device major:minor; default runs
	// `dmsetup table`.
	DMTable func(ctx context.Context, major, minor uint32) (string, error)
}

// maxMountInfo bounds the mount table read (measure refuses more).
const maxMountInfo = 4 << 20

// Probe measures the storage layout.
func (p StorageProbe) Probe(ctx context.Context) (*measure.StorageMeasurement, error) {
	if p.SysDevBlock == "" {
		p.SysDevBlock = "/sys/dev/block"
	}
	if p.Crypttab == "" {
		p.Crypttab = "/etc/crypttab"
	}
	if p.Swaps == "" {
		p.Swaps = "/proc/swaps"
	}
	if p.DMTable == nil {
		p.DMTable = dmsetupTable
	}
	table, raw, err := readMountInfo(p.MountInfo)
	if err != nil {
		return nil, err
	}
	mounts, err := measure.ParseMountInfo(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", table, err)
	}
	s := &measure.StorageMeasurement{MountTable: table}
	crypttab := map[string]measure.CrypttabEntry{}
	switch raw, err := boundedfile.Read(p.Crypttab, maxConfigSize); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read crypttab: %w", err)
	default:
		entries, err := measure.ParseCrypttab(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.Crypttab, err)
		}
		for _, e := range entries {
			crypttab[e.Name] = e
		}
		s.Crypttab = p.Crypttab
	}
	devices := map[[2]uint32]*measure.DeviceMeasurement{}
	deviceOf := func(major, minor uint32) *measure.DeviceMeasurement {
		key := [2]uint32{major, minor}
		if devices[key] == nil {
			devices[key] = p.device(ctx, major, minor, crypttab)
		}
		return devices[key]
	}
	for _, mi := range mounts {
		m := measure.MountMeasurement{
			MountPoint: mi.MountPoint,
			FSType:     mi.FSType,
			Source:     mi.Source,
			Writable:   measure.HasOption(mi.Options, "rw") || measure.HasOption(mi.SuperOptions, "rw"),
			Kind:       measure.MountKind(mi.FSType),
		}
		major, minor, isBlock := mi.Major, mi.Minor, mi.Major != 0
		if !isBlock && strings.HasPrefix(mi.Source, "/dev/") {
			// btrfs and others report an anonymous device: the source names the real one.
			major, minor, isBlock = blockDevice(mi.Source)
		}
		if isBlock && m.Kind != measure.MountVirtual {
			m.Kind = measure.MountBlock
			m.Device = deviceOf(major, minor)
		}
		s.Mounts = append(s.Mounts, m)
	}
	swaps, err := readSwaps(p.Swaps)
	if err != nil {
		return nil, err
	}
	for _, sw := range swaps {
		m := measure.SwapMeasurement{Filename: sw.Filename, Type: sw.Type}
		if major, minor, ok := blockDevice(sw.Filename); ok && sw.Type == "partition" {
			m.Device = deviceOf(major, minor)
		}
		s.Swaps = append(s.Swaps, m)
	}
	return s, nil
}

func readSwaps(name string) ([]measure.Swap, error) {
	raw, err := boundedfile.Read(name, maxMountInfo)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // no swap support in the kernel
	}
	if err != nil {
		return nil, fmt.Errorf("read swap table: %w", err)
	}
	swaps, err := measure.ParseSwaps(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return swaps, nil
}

// device describes block device major:minor from sysfs and, for a
// device-mapper device, its table.
func (p StorageProbe) device(ctx context.Context, major, minor uint32, crypttab map[string]measure.CrypttabEntry) *measure.DeviceMeasurement {
	num := fmt.Sprintf("%d:%d", major, minor)
	d := &measure.DeviceMeasurement{Number: num}
	dir := filepath.Join(p.SysDevBlock, num)
	if target, err := os.Readlink(dir); err == nil {
		d.Name = path.Base(target)
	}
	name, err := os.ReadFile(filepath.Join(dir, "dm", "name"))
	if err != nil {
		return d // not a device-mapper device
	}
	dm := &measure.DMMeasurement{Name: strings.TrimSpace(string(name))}
	if uuid, err := os.ReadFile(filepath.Join(dir, "dm", "uuid")); err == nil {
		dm.UUID = strings.TrimSpace(string(uuid))
	}
	if es, err := os.ReadDir(filepath.Join(dir, "slaves")); err == nil {
		for _, e := range es {
			dm.Backing = append(dm.Backing, e.Name())
		}
	}
	if e, ok := crypttab[dm.Name]; ok {
		dm.Crypttab = &measure.CrypttabMeasurement{Device: e.Device, KeyFile: e.KeyFile, Options: e.Options}
	}
	if table, err := p.DMTable(ctx, major, minor); err != nil {
		dm.Error = err.Error()
	} else if ts, err := measure.ParseDMTable(table); err != nil {
		dm.Error = err.Error()
	} else {
		dm.Targets = measure.TargetMeasurements(ts)
	}
	d.DM = dm
	return d
}

func readMountInfo(name string) (string, []byte, error) {
	names := []string{name}
	if name == "" {
		names = []string{"/proc/1/mountinfo", "/proc/self/mountinfo"}
	}
	var err error
	for _, n := range names {
		var raw []byte
		if raw, err = boundedfile.Read(n, maxMountInfo); err == nil {
			return n, raw, nil
		}
	}
	return "", nil, fmt.Errorf("read mount table: %w", err)
}

// dmsetupTable runs `dmsetup table` for one device. dmsetup prints a
// crypt key as zeros unless asked with --showkeys; measure drops it anyway.
func dmsetupTable(ctx context.Context, major, minor uint32) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "dmsetup", "table", "--major", strconv.Itoa(int(major)), "--minor", strconv.Itoa(int(minor)))
	cmd.Env = []string{"LC_ALL=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		if msg == "" {
			msg = err.Error()
		}
		return "", fmt.Errorf("dmsetup table %d:%d: %s", major, minor, msg)
	}
	return out.String(), nil
}

// blockDevice returns the device number of the block device node at name.
func blockDevice(name string) (major, minor uint32, ok bool) {
	var st unix.Stat_t
	if unix.Stat(name, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, 0, false
	}
	return unix.Major(st.Rdev), unix.Minor(st.Rdev), true
}

// CheckEncryptedPaths checks that each path is on a dm-crypt mapping with
// an ephemeral key (measure.StorageMeasurement.EphemeralCrypt): the
// storage.encrypted paths of the config. The error is one line.
func CheckEncryptedPaths(s *measure.StorageMeasurement, paths []string) error {
	for _, p := range paths {
		m := s.MountOf(p)
		if m == nil {
			return fmt.Errorf("storage: %s is on no mount in %s", p, s.MountTable)
		}
		if err := s.EphemeralCrypt(m); err != nil {
			return fmt.Errorf("storage: %s must be on an encrypted volume with an ephemeral key, but %v", p, err)
		}
	}
	return nil
}

// StorageSnapshot is what `attestd probe-storage` (run as root by the unit
// before the daemon) leaves in the runtime directory for the daemon, which
// cannot read device-mapper tables itself.
type StorageSnapshot struct {
	BootID  string                     `json:"bootId"`
	Storage measure.StorageMeasurement `json:"storage"`
}

// StorageSnapshotName is the snapshot's file name in the runtime directory.
const StorageSnapshotName = "storage.json"

// ReadStorageSnapshot reads a snapshot and checks it was taken in this
// boot (bootID is /proc/sys/kernel/random/boot_id). A missing file is an
// error satisfying errors.Is(err, fs.ErrNotExist).
func ReadStorageSnapshot(name, bootID string) (*measure.StorageMeasurement, error) {
	raw, err := boundedfile.Read(name, maxSnapshot)
	if err != nil {
		return nil, err
	}
	s, err := ParseStorageSnapshot(raw, bootID)
	if err != nil {
		return nil, fmt.Errorf("storage snapshot %s: %w", name, err)
	}
	return s, nil
}

// maxSnapshot bounds a storage snapshot.
const maxSnapshot = 2 * maxMountInfo

// ParseStorageSnapshot decodes a snapshot strictly (one JSON object, no
// unknown fields) and checks it was taken in boot bootID.
func ParseStorageSnapshot(raw []byte, bootID string) (*measure.StorageMeasurement, error) {
	if len(raw) > maxSnapshot {
		return nil, fmt.Errorf("larger than %d bytes", maxSnapshot)
	}
	var snap struct {
		BootID  string          `json:"bootId"`
		Storage json.RawMessage `json:"storage"`
	}
	if err := measure.DecodeEventData(raw, &snap); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if snap.BootID != bootID {
		return nil, fmt.Errorf("taken in boot %q, this is boot %q", snap.BootID, bootID)
	}
	// What the daemon will record: the verifier's own decoding of it.
	return measure.ParseStorage(snap.Storage)
}

// BootID returns the kernel's boot ID.
func BootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("read boot ID: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// EncodeStorageSnapshot encodes a snapshot of s taken in boot bootID.
func EncodeStorageSnapshot(bootID string, s *measure.StorageMeasurement) ([]byte, error) {
	b, err := json.MarshalIndent(StorageSnapshot{BootID: bootID, Storage: *s}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode storage snapshot: %w", err)
	}
	return append(b, '\n'), nil
}

// WriteStorageSnapshot writes an encoded snapshot atomically, readable by
// the daemon's user (the probe runs as root).
func WriteStorageSnapshot(name string, b []byte) error {
	if err := writeFileAtomic(name, b, 0o644); err != nil {
		return fmt.Errorf("write storage snapshot: %w", err)
	}
	return nil
}
