package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attestd/attestd/measure"
)

// A real 64-byte key: it must never reach the measurement.
const testCryptKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

const testRootHash = "5a4e2b41f4c1ff5e2d4c6f0cc7f5f3b5a2c1e7e9c5c4e4f2b6a1d8e3f0a9b7c6"

// fakeSystem is a mount table, a sysfs /sys/dev/block, a crypttab and
// device-mapper tables for StorageProbe.
type fakeSystem struct {
	mounts   []string          // mountinfo lines
	crypttab string            // "" for none
	swaps    []string          // /proc/swaps lines after the header
	dm       map[string]dmFake // by "major:minor"
	blocks   map[string]string // non-dm block devices: "major:minor" -> kernel name
}

type dmFake struct {
	kname, name, uuid, table string
	slaves                   []string
	tableErr                 error
}

func (f fakeSystem) probe(t testing.TB) (*measure.StorageMeasurement, error) {
	p := f.stage(t)
	s, err := p.Probe(context.Background())
	if s != nil && s.Crypttab == p.Crypttab {
		// The measurement names the crypttab as the system knows it.
		s.Crypttab = "/etc/crypttab"
	}
	return s, err
}

// stage writes the fake system to a temp dir and returns a probe of it.
func (f fakeSystem) stage(t testing.TB) StorageProbe {
	t.Helper()
	dir := t.TempDir()
	mi := filepath.Join(dir, "mountinfo")
	write(t, mi, strings.Join(f.mounts, "\n")+"\n")
	sys := filepath.Join(dir, "sys/dev/block")
	devices := filepath.Join(dir, "sys/devices")
	mustMkdir(t, sys)
	for num, kname := range f.blocks {
		mustMkdir(t, filepath.Join(devices, kname))
		mustSymlink(t, filepath.Join(devices, kname), filepath.Join(sys, num))
	}
	for num, d := range f.dm {
		dev := filepath.Join(devices, "virtual/block", d.kname)
		mustMkdir(t, filepath.Join(dev, "dm"))
		mustMkdir(t, filepath.Join(dev, "slaves"))
		write(t, filepath.Join(dev, "dm/name"), d.name+"\n")
		write(t, filepath.Join(dev, "dm/uuid"), d.uuid+"\n")
		for _, s := range d.slaves {
			mustMkdir(t, filepath.Join(dev, "slaves", s))
		}
		mustSymlink(t, dev, filepath.Join(sys, num))
	}
	sw := filepath.Join(dir, "swaps")
	write(t, sw, strings.Join(append([]string{"Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority"}, f.swaps...), "\n")+"\n")
	ct := filepath.Join(dir, "crypttab")
	if f.crypttab != "" {
		write(t, ct, f.crypttab)
	}
	p := StorageProbe{
		MountInfo:   mi,
		SysDevBlock: sys,
		Crypttab:    ct,
		Swaps:       sw,
		DMTable: func(_ context.Context, major, minor uint32) (string, error) {
			d, ok := f.dm[fmt.Sprintf("%d:%d", major, minor)]
			if !ok {
				return "", fmt.Errorf("no device %d:%d", major, minor)
			}
			return d.table, d.tableErr
		},
	}
	return p
}

func write(t testing.TB, name, s string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustMkdir(t testing.TB, d string) {
	t.Helper()
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustSymlink(t testing.TB, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// runnerImage is the build-runner image's layout (images/bake.sh): a
// dm-verity squashfs root, tmpfs /var and /tmp, the work directory on plain
// dm-crypt from crypttab with a key from /dev/urandom.
func runnerImage() fakeSystem {
	return fakeSystem{
		mounts: []string{
			"22 1 253:0 / / ro,relatime shared:1 - squashfs /dev/mapper/root ro,errors=continue",
			"23 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw,size=4096k,mode=755",
			"24 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw",
			"28 22 0:26 / /var rw,nosuid,nodev,relatime shared:12 - tmpfs tmpfs rw,mode=755,inode64",
			"29 22 0:27 / /tmp rw,nosuid,nodev shared:13 - tmpfs tmpfs rw,inode64",
			"45 28 253:1 / /var/lib/build-runner rw,nosuid,nodev,relatime shared:25 - ext4 /dev/mapper/scratch rw",
		},
		crypttab: "scratch /dev/disk/by-id/virtio-attestd-scratch /dev/urandom plain,cipher=aes-xts-plain64,size=512,tmp=ext4\n",
		dm: map[string]dmFake{
			"253:0": {kname: "dm-0", name: "root", uuid: "CRYPT-VERITY-7a0b1c2d3e4f4a5b8c6d7e8f9a0b1c2d-root", slaves: []string{"vda2", "vda3"},
				table: "0 417792 verity 1 252:2 252:3 4096 4096 52224 1 sha256 " + testRootHash + " 5e1e8e3a4fb8d6a3e25a0e9fd8c08a56f2b4c8a1f3fd9b3d1e3b0e3a4c6d2f1a\n"},
			"253:1": {kname: "dm-1", name: "scratch", uuid: "CRYPT-PLAIN-scratch", slaves: []string{"vdc"},
				table: "0 131072 crypt aes-xts-plain64 " + testCryptKey + " 0 252:32 0\n"},
		},
	}
}

func TestStorageProbeRunnerImage(t *testing.T) {
	s, err := runnerImage().probe(t)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.RootVerity(); err != nil || got != testRootHash {
		t.Errorf("RootVerity = %q, %v; want %s", got, err, testRootHash)
	}
	if err := s.EncryptedWritable(); err != nil {
		t.Errorf("EncryptedWritable: %v", err)
	}
	if err := CheckEncryptedPaths(s, []string{"/var/lib/build-runner", "/var/lib/build-runner/sub/dir"}); err != nil {
		t.Errorf("CheckEncryptedPaths: %v", err)
	}
	m := s.MountOf("/var/lib/build-runner/x")
	if m == nil || m.Device == nil || m.Device.DM == nil {
		t.Fatalf("work dir mount: %+v", m)
	}
	want := measure.DMTargetMeasurement{Type: "crypt", Sectors: 131072, Cipher: "aes-xts-plain64", KeyBits: 512, KeyType: "hex"}
	if got := m.Device.DM.Targets; len(got) != 1 || got[0] != want {
		t.Errorf("crypt target %+v, want %+v", got, want)
	}
	if m.Device.Name != "dm-1" || m.Device.DM.Name != "scratch" || strings.Join(m.Device.DM.Backing, ",") != "vdc" {
		t.Errorf("device %+v, dm %+v", m.Device, m.Device.DM)
	}
	if m.Device.DM.Crypttab == nil || m.Device.DM.Crypttab.KeyFile != "/dev/urandom" {
		t.Errorf("crypttab %+v", m.Device.DM.Crypttab)
	}
	ev, err := measure.StorageEvent(*s)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(ev.Data), testCryptKey[:16]) {
		t.Fatalf("the storage event carries the crypt key: %s", ev.Data)
	}
	var back measure.StorageMeasurement
	if err := json.Unmarshal(ev.Data, &back); err != nil || len(back.Mounts) != 6 {
		t.Fatalf("event data does not decode to 6 mounts: %v", err)
	}
}

func TestStorageProbeRefusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*fakeSystem)
		want   string // in the CheckEncryptedPaths error
	}{
		{"plain ext4 work dir", func(f *fakeSystem) {
			f.mounts[5] = "45 28 252:32 / /var/lib/build-runner rw,relatime shared:25 - ext4 /dev/vdc rw"
			f.blocks = map[string]string{"252:32": "vdc"}
		}, "on vdc, not an encrypted device-mapper device"},
		{"setup failed: work dir on /var tmpfs", func(f *fakeSystem) {
			f.mounts = f.mounts[:5]
		}, "/var (tmpfs on tmpfs): not on a block device"},
		{"key from a file", func(f *fakeSystem) {
			f.crypttab = "scratch /dev/vdc /etc/scratch.key plain\n"
		}, `takes its key from "/etc/scratch.key"`},
		{"no crypttab line", func(f *fakeSystem) {
			f.crypttab = ""
		}, "has no crypttab line"},
		{"LUKS header", func(f *fakeSystem) {
			d := f.dm["253:1"]
			d.uuid = "CRYPT-LUKS2-3f1c0c9e0e5a4d6b9c1f2e3d4c5b6a79-scratch"
			f.dm["253:1"] = d
		}, "not a plain dm-crypt mapping"},
		{"null cipher", func(f *fakeSystem) {
			d := f.dm["253:1"]
			d.table = "0 131072 crypt cipher_null-ecb - 0 252:32 0\n"
			f.dm["253:1"] = d
		}, "does not encrypt"},
		{"linear, not crypt", func(f *fakeSystem) {
			d := f.dm["253:1"]
			d.table = "0 131072 linear 252:32 0\n"
			f.dm["253:1"] = d
		}, "is linear, not one crypt target"},
		{"table unreadable", func(f *fakeSystem) {
			d := f.dm["253:1"]
			d.tableErr = errors.New("dmsetup table 253:1: Permission denied")
			f.dm["253:1"] = d
		}, "Permission denied"},
		{"crypttab on a writable mount", func(f *fakeSystem) {
			f.mounts = append(f.mounts, "46 22 0:40 / /etc rw,relatime shared:26 - tmpfs tmpfs rw")
		}, "is not on the verified root"},
		{"swap file on the unencrypted disk", func(f *fakeSystem) {
			f.mounts[5] = "45 28 252:32 / /var/lib/build-runner rw,relatime shared:25 - ext4 /dev/vdc rw"
			f.blocks = map[string]string{"252:32": "vdc"}
			f.swaps = []string{"/var/lib/build-runner/swap file 1048572 0 -2"}
		}, "on vdc, not an encrypted device-mapper device"},
		{"root not verity", func(f *fakeSystem) {
			d := f.dm["253:0"]
			d.table = "0 417792 linear 252:2 0\n"
			f.dm["253:0"] = d
		}, "not on a verified root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := runnerImage()
			tc.change(&f)
			s, err := f.probe(t)
			if err != nil {
				t.Fatal(err)
			}
			err = CheckEncryptedPaths(s, []string{"/var/lib/build-runner"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckEncryptedPaths = %v, want an error with %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "storage: /var/lib/build-runner must be on an encrypted volume") || strings.Contains(err.Error(), "\n") {
				t.Errorf("not one clear line: %q", err)
			}
			if err := s.EncryptedWritable(); err == nil && tc.name != "setup failed: work dir on /var tmpfs" {
				t.Errorf("EncryptedWritable passed")
			}
		})
	}
}

func TestStorageProbeSwap(t *testing.T) {
	f := runnerImage()
	f.swaps = []string{"/var/lib/build-runner/swapfile file 1048572 0 -2"}
	s, err := f.probe(t)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Swaps) != 1 || s.Swaps[0].Type != "file" {
		t.Fatalf("swaps %+v", s.Swaps)
	}
	if err := s.EncryptedWritable(); err != nil {
		t.Errorf("swap file on the encrypted work directory: %v", err)
	}
	f.swaps = []string{"/dev/nonexistent-swap partition 2097148 0 -2"}
	if s, err = f.probe(t); err != nil {
		t.Fatal(err)
	}
	if err := s.EncryptedWritable(); err == nil || !strings.Contains(err.Error(), "swap /dev/nonexistent-swap (partition): its device is unknown") {
		t.Errorf("swap partition that cannot be identified: %v", err)
	}
	f.swaps = []string{"/dev/vda2 partition x 0 -2"}
	if _, err := f.probe(t); err == nil || !strings.Contains(err.Error(), "swaps line 2") {
		t.Errorf("bad swap table: %v", err)
	}
}

func TestStorageProbeBadInput(t *testing.T) {
	f := runnerImage()
	f.mounts = []string{"this is not a mount table"}
	if _, err := f.probe(t); err == nil || !strings.Contains(err.Error(), "mountinfo") {
		t.Errorf("bad mount table: %v", err)
	}
	f = runnerImage()
	f.crypttab = "scratch\n"
	if _, err := f.probe(t); err == nil || !strings.Contains(err.Error(), "crypttab") {
		t.Errorf("bad crypttab: %v", err)
	}
	// A bad table is recorded, not fatal: the rules then fail on it.
	f = runnerImage()
	d := f.dm["253:1"]
	d.table = "0 131072 crypt aes-xts-plain64 " + testCryptKey + " 0\n"
	f.dm["253:1"] = d
	s, err := f.probe(t)
	if err != nil {
		t.Fatal(err)
	}
	dm := s.MountOf("/var/lib/build-runner").Device.DM
	if dm.Error == "" || strings.Contains(dm.Error, testCryptKey[:16]) {
		t.Errorf("bad table error %q: want an error without the key", dm.Error)
	}
}

func TestStorageSnapshot(t *testing.T) {
	s, err := runnerImage().probe(t)
	if err != nil {
		t.Fatal(err)
	}
	b, err := EncodeStorageSnapshot("boot-1", s)
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(t.TempDir(), StorageSnapshotName)
	if err := WriteStorageSnapshot(name, b); err != nil {
		t.Fatal(err)
	}
	got, err := ReadStorageSnapshot(name, "boot-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Mounts) != len(s.Mounts) {
		t.Errorf("round trip: %d mounts, want %d", len(got.Mounts), len(s.Mounts))
	}
	if _, err := ReadStorageSnapshot(name, "boot-2"); err == nil || !strings.Contains(err.Error(), `taken in boot "boot-1"`) {
		t.Errorf("snapshot of another boot: %v", err)
	}
	for _, bad := range []string{`{"bootId":"boot-1","storage":{"mountTable":"x","mounts":[]}}`, `{"bootId":"boot-1","extra":1}`, `not json`} {
		write(t, name, bad)
		if _, err := ReadStorageSnapshot(name, "boot-1"); err == nil {
			t.Errorf("snapshot %s accepted", bad)
		}
	}
}

func FuzzParseStorageSnapshot(f *testing.F) {
	// What the daemon writes for the runner image's layout.
	s, err := runnerImage().probe(f)
	if err != nil {
		f.Fatal(err)
	}
	snap, err := EncodeStorageSnapshot("b", s)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(snap)
	f.Add([]byte(`{"bootId":"b","storage":{"mountTable":"/proc/1/mountinfo","mounts":[{"mountPoint":"/","fsType":"squashfs","source":"/dev/mapper/root","writable":false,"kind":"block","device":{"number":"253:0","name":"dm-0","dm":{"name":"root","targets":[{"type":"verity","sectors":8,"rootDigest":"00"}]}}}]}}`))
	f.Add([]byte(`{"bootId":"b","storage":{"mountTable":"x","mounts":[{"mountPoint":"/var/lib/x","kind":"block","writable":true}]}} {}`))
	f.Add([]byte(`{"bootId":"b","extra":1}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		s, err := ParseStorageSnapshot(raw, "b")
		if err != nil {
			return
		}
		if len(s.Mounts) == 0 {
			t.Fatal("accepted a snapshot without mounts")
		}
		// The rules must cope with whatever decodes.
		s.RootVerity()
		s.EncryptedWritable()
		CheckEncryptedPaths(s, []string{"/var/lib/build-runner", "/"})
		if _, err := measure.StorageEvent(*s); err != nil {
			t.Fatal(err)
		}
	})
}

// BenchmarkStorageProbe: the probe of the runner image's layout (6 mounts,
// 2 device-mapper devices) from a staged sysfs, with the tables given.
func BenchmarkStorageProbe(b *testing.B) {
	p := runnerImage().stage(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Probe(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
