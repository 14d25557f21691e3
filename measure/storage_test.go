package measure

import (
	"strings"
	"testing"
)

// runnerLayout is the build-runner image's storage (images/bake.sh).
func runnerLayout() StorageMeasurement {
	verity := &DeviceMeasurement{Number: "253:0", Name: "dm-0", DM: &DMMeasurement{
		Name: "root", UUID: "CRYPT-VERITY-7a0b1c2d3e4f4a5b8c6d7e8f9a0b1c2d-root",
		Targets: []DMTargetMeasurement{{Type: "verity", Sectors: 417792, HashAlgorithm: "sha256", RootDigest: "5a4e"}},
	}}
	return StorageMeasurement{
		MountTable: "/proc/1/mountinfo",
		Crypttab:   "/etc/crypttab",
		Mounts: []MountMeasurement{
			{MountPoint: "/", FSType: "squashfs", Source: "/dev/mapper/root", Kind: MountBlock, Device: verity},
			{MountPoint: "/var", FSType: "tmpfs", Source: "tmpfs", Writable: true, Kind: MountMemory},
			{MountPoint: "/var/lib/build-runner", FSType: "ext4", Source: "/dev/mapper/scratch", Writable: true, Kind: MountBlock,
				Device: plainCrypt("253:1", "dm-1", "scratch")},
		},
	}
}

func plainCrypt(num, kname, name string) *DeviceMeasurement {
	return &DeviceMeasurement{Number: num, Name: kname, DM: &DMMeasurement{
		Name: name, UUID: "CRYPT-PLAIN-" + name,
		Targets:  []DMTargetMeasurement{{Type: "crypt", Sectors: 131072, Cipher: "aes-xts-plain64", KeyBits: 512, KeyType: "hex"}},
		Crypttab: &CrypttabMeasurement{Device: "/dev/vdc", KeyFile: "/dev/urandom", Options: []string{"plain"}},
	}}
}

func TestStorageRules(t *testing.T) {
	for _, tc := range []struct {
		name       string
		change     func(*StorageMeasurement)
		verityErr  string // "" = RootVerity passes
		encryptErr string // "" = EncryptedWritable passes
	}{
		{"runner image", func(*StorageMeasurement) {}, "", ""},
		{"swap on plain dm-crypt with a random key", func(s *StorageMeasurement) {
			s.Swaps = []SwapMeasurement{{Filename: "/dev/mapper/swap", Type: "partition", Device: plainCrypt("253:2", "dm-2", "swap")}}
		}, "", ""},
		{"swap on zram", func(s *StorageMeasurement) {
			s.Swaps = []SwapMeasurement{{Filename: "/dev/zram0", Type: "partition", Device: &DeviceMeasurement{Number: "252:0", Name: "zram0"}}}
		}, "", ""},
		{"swap partition in the clear", func(s *StorageMeasurement) {
			s.Swaps = []SwapMeasurement{{Filename: "/dev/vdb2", Type: "partition", Device: &DeviceMeasurement{Number: "254:18", Name: "vdb2"}}}
		}, "", "swap /dev/vdb2 (partition): on vdb2, not an encrypted device-mapper device"},
		{"swap file on tmpfs", func(s *StorageMeasurement) {
			s.Swaps = []SwapMeasurement{{Filename: "/var/swap", Type: "file"}}
		}, "", "swap /var/swap (file): on /var (tmpfs on tmpfs): not on a block device"},
		{"writable root", func(s *StorageMeasurement) {
			s.Mounts[0].Writable = true
		}, "the root file system (squashfs on /dev/mapper/root) is writable", "/ (squashfs on /dev/mapper/root): root is verity, not one crypt target"},
		{"overlay work dir", func(s *StorageMeasurement) {
			s.Mounts[2] = MountMeasurement{MountPoint: "/var/lib/build-runner", FSType: "overlay", Source: "overlay", Writable: true, Kind: MountOther}
		}, "", "not on a block device, so not provably encrypted"},
		{"no root mount", func(s *StorageMeasurement) {
			s.Mounts = s.Mounts[1:]
		}, "the mount table has no root mount", "not on a verified root"},
		{"over-mounted root", func(s *StorageMeasurement) {
			s.Mounts = append(s.Mounts, MountMeasurement{MountPoint: "/", FSType: "ext4", Source: "/dev/vda1", Kind: MountBlock,
				Device: &DeviceMeasurement{Number: "254:1", Name: "vda1"}})
		}, "is not on a device-mapper device", "not on a verified root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := runnerLayout()
			tc.change(&s)
			_, err := s.RootVerity()
			checkErr(t, "RootVerity", err, tc.verityErr)
			checkErr(t, "EncryptedWritable", s.EncryptedWritable(), tc.encryptErr)
		})
	}
}

func checkErr(t *testing.T, what string, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("%s: %v", what, err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Errorf("%s = %v, want an error with %q", what, err, want)
	}
}

func TestMountOf(t *testing.T) {
	s := runnerLayout()
	for p, want := range map[string]string{
		"/":                             "/",
		"/etc/crypttab":                 "/",
		"/var":                          "/var",
		"/var/lib":                      "/var",
		"/var/lib/build-runner":         "/var/lib/build-runner",
		"/var/lib/build-runner/a/../b":  "/var/lib/build-runner",
		"/var/lib/build-runner-evil/x":  "/var",
		"var/lib/build-runner/relative": "/var/lib/build-runner",
	} {
		if m := s.MountOf(p); m == nil || m.MountPoint != want {
			t.Errorf("MountOf(%q) = %+v, want %s", p, m, want)
		}
	}
}

func TestUnreadableTables(t *testing.T) {
	s := runnerLayout()
	if got := s.UnreadableTables(); len(got) != 0 {
		t.Errorf("runner image: %v", got)
	}
	bad := &DeviceMeasurement{Number: "253:2", Name: "dm-2", DM: &DMMeasurement{Name: "swap", Error: "dmsetup: Permission denied"}}
	s.Swaps = []SwapMeasurement{{Filename: "/dev/dm-2", Type: "partition", Device: bad}, {Filename: "/dev/dm-2", Type: "partition", Device: bad}}
	s.Mounts[2].Device.DM.Error = "dmsetup: no such device"
	want := "scratch: dmsetup: no such device|swap: dmsetup: Permission denied"
	if got := strings.Join(s.UnreadableTables(), "|"); got != want {
		t.Errorf("UnreadableTables = %q, want %q", got, want)
	}
}
