package measure

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Lines from a Debian guest's /proc/self/mountinfo; the last one has an
// escaped space in its mount point and an escaped backslash in its source.
var mountInfoSamples = []string{
	`22 1 253:0 / / ro,relatime shared:1 - squashfs /dev/mapper/root ro,errors=continue`,
	`28 22 0:26 / /var rw,nosuid,nodev,relatime shared:12 - tmpfs tmpfs rw,mode=755,inode64`,
	`45 28 253:1 / /var/lib/build-runner rw,relatime shared:25 - ext4 /dev/mapper/scratch rw`,
	`30 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw,size=4096k,nr_inodes=1048576,mode=755,inode64`,
	`47 45 253:1 /cache /var/lib/build\040runner/cache rw,relatime shared:25 - ext4 /dev/mapper/a\134b rw`,
}

func TestParseMountInfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want []MountInfo
	}{
		{"debian guest", strings.Join(mountInfoSamples, "\n") + "\n", []MountInfo{
			{ID: 22, ParentID: 1, Major: 253, Minor: 0, Root: "/", MountPoint: "/", Options: []string{"ro", "relatime"},
				Optional: []string{"shared:1"}, FSType: "squashfs", Source: "/dev/mapper/root", SuperOptions: []string{"ro", "errors=continue"}},
			{ID: 28, ParentID: 22, Major: 0, Minor: 26, Root: "/", MountPoint: "/var", Options: []string{"rw", "nosuid", "nodev", "relatime"},
				Optional: []string{"shared:12"}, FSType: "tmpfs", Source: "tmpfs", SuperOptions: []string{"rw", "mode=755", "inode64"}},
			{ID: 45, ParentID: 28, Major: 253, Minor: 1, Root: "/", MountPoint: "/var/lib/build-runner", Options: []string{"rw", "relatime"},
				Optional: []string{"shared:25"}, FSType: "ext4", Source: "/dev/mapper/scratch", SuperOptions: []string{"rw"}},
			{ID: 30, ParentID: 22, Major: 0, Minor: 5, Root: "/", MountPoint: "/dev", Options: []string{"rw", "nosuid"},
				Optional: []string{"shared:2"}, FSType: "devtmpfs", Source: "devtmpfs", SuperOptions: []string{"rw", "size=4096k", "nr_inodes=1048576", "mode=755", "inode64"}},
			{ID: 47, ParentID: 45, Major: 253, Minor: 1, Root: "/cache", MountPoint: "/var/lib/build runner/cache", Options: []string{"rw", "relatime"},
				Optional: []string{"shared:25"}, FSType: "ext4", Source: `/dev/mapper/a\b`, SuperOptions: []string{"rw"}},
		}},
		{"no optional fields, no final newline", `60 22 0:40 / /tmp rw - tmpfs none rw`, []MountInfo{
			{ID: 60, ParentID: 22, Major: 0, Minor: 40, Root: "/", MountPoint: "/tmp", Options: []string{"rw"},
				FSType: "tmpfs", Source: "none", SuperOptions: []string{"rw"}},
		}},
		{"several optional fields, fuse, tab and newline escapes", `61 22 0:41 /a\011b /mnt/x\012y rw shared:3 master:1 - fuse.sshfs u@h:/ rw,user_id=0`, []MountInfo{
			{ID: 61, ParentID: 22, Major: 0, Minor: 41, Root: "/a\tb", MountPoint: "/mnt/x\ny", Options: []string{"rw"},
				Optional: []string{"shared:3", "master:1"}, FSType: "fuse.sshfs", Source: "u@h:/", SuperOptions: []string{"rw", "user_id=0"}},
		}},
		{"empty source", `62 22 0:42 / /mnt rw - tmpfs  rw`, []MountInfo{
			{ID: 62, ParentID: 22, Major: 0, Minor: 42, Root: "/", MountPoint: "/mnt", Options: []string{"rw"},
				FSType: "tmpfs", Source: "", SuperOptions: []string{"rw"}},
		}},
		{`source "-"`, `63 22 0:43 / /mnt rw - tmpfs - rw`, []MountInfo{
			{ID: 63, ParentID: 22, Major: 0, Minor: 43, Root: "/", MountPoint: "/mnt", Options: []string{"rw"},
				FSType: "tmpfs", Source: "-", SuperOptions: []string{"rw"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMountInfo([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseMountInfo (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseMountInfoRejects(t *testing.T) {
	good := mountInfoSamples[0]
	for _, tc := range []struct {
		name, in, wantErr string
	}{
		{"empty", "", "empty input"},
		{"nine fields", `22 1 253:0 / / ro - squashfs /dev/mapper/root`, "line 1: 9 fields"},
		{"no separator", `22 1 253:0 / / ro shared:1 x squashfs /dev/mapper/root ro`, `no "-" separator`},
		{"two separators", `22 1 253:0 / / ro shared:1 - - squashfs /dev/mapper/root ro`, `more than one "-"`},
		{"extra field after super options", `22 1 253:0 / / ro - squashfs /dev/mapper/root ro extra`, `no "-" separator`},
		{"bad ID", `x 1 253:0 / / ro - squashfs r ro`, `mount ID "x": invalid syntax`},
		{"negative parent", `22 -1 253:0 / / ro - squashfs r ro`, `parent ID "-1"`},
		{"device without minor", `22 1 253 / / ro - squashfs r ro`, "want major:minor"},
		{"bad minor", `22 1 253:x / / ro - squashfs r ro`, "minor: invalid syntax"},
		{"major out of range", `22 1 4294967296:0 / / ro - squashfs r ro`, "major: value out of range"},
		{"short escape", `22 1 253:0 / /a\04 ro - squashfs r ro`, "mount point"},
		{"non-octal escape", `22 1 253:0 / /a\09x ro - squashfs r ro`, "invalid escape at byte 3"},
		{"escape out of range", `22 1 253:0 / /a\400 ro - squashfs r ro`, "out of range"},
		{"bad escape in root", `22 1 253:0 /\ / ro - squashfs r ro`, "root"},
		{"bad escape in source", `22 1 253:0 / / ro - squashfs r\x ro`, "source"},
		{"double space", `22 1 253:0 / /  ro - squashfs r ro`, "field 6 is empty"},
		{"empty option", `22 1 253:0 / / ro,,relatime - squashfs r ro`, "empty option"},
		{"empty super option", `22 1 253:0 / / ro - squashfs r ro,`, "super options"},
		{"bad second line", good + "\n22 1 x / / ro - squashfs r ro\n", "line 2:"},
		{"blank line", good + "\n\n" + good, "line 2:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMountInfo([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, %v; want an error with %q", got, err, tc.wantErr)
			}
		})
	}
}

func TestParseMountInfoBounds(t *testing.T) {
	line := "60 22 0:40 / /tmp rw - tmpfs none rw\n"
	if _, err := ParseMountInfo([]byte(strings.Repeat(line, maxTextLines))); err != nil {
		t.Errorf("%d lines: %v", maxTextLines, err)
	}
	if _, err := ParseMountInfo([]byte(strings.Repeat(line, maxTextLines+1))); !errors.Is(err, errInputTooLarge) {
		t.Errorf("%d lines: got %v, want errInputTooLarge", maxTextLines+1, err)
	}
	big := "60 22 0:40 / /" + strings.Repeat("a", maxTextInput) + " rw - tmpfs none rw"
	if _, err := ParseMountInfo([]byte(big)); !errors.Is(err, errInputTooLarge) {
		t.Errorf("%d bytes: got %v, want errInputTooLarge", len(big), err)
	}
}

func TestHasOption(t *testing.T) {
	opts := []string{"rw", "nosuid", "relatime"}
	for o, want := range map[string]bool{"rw": true, "relatime": true, "ro": false, "r": false, "rw,nosuid": false, "": false} {
		if got := HasOption(opts, o); got != want {
			t.Errorf("HasOption(%q, %q) = %v, want %v", opts, o, got, want)
		}
	}
	if HasOption(nil, "rw") {
		t.Error("HasOption(nil, rw) = true")
	}
}

// escapeMountField writes s the way the kernel does in mountinfo.
func escapeMountField(s string) string {
	return strings.NewReplacer(`\`, `\134`, " ", `\040`, "\t", `\011`, "\n", `\012`).Replace(s)
}

func formatMountInfo(ms []MountInfo) string {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "%d %d %d:%d %s %s %s", m.ID, m.ParentID, m.Major, m.Minor,
			escapeMountField(m.Root), escapeMountField(m.MountPoint), strings.Join(m.Options, ","))
		for _, o := range m.Optional {
			b.WriteString(" " + o)
		}
		fmt.Fprintf(&b, " - %s %s %s\n", m.FSType, escapeMountField(m.Source), strings.Join(m.SuperOptions, ","))
	}
	return b.String()
}

func FuzzParseMountInfo(f *testing.F) {
	for _, s := range mountInfoSamples {
		f.Add([]byte(s))
	}
	f.Add([]byte(strings.Join(mountInfoSamples, "\n") + "\n"))
	f.Add([]byte(`61 22 0:41 /a\011b /mnt/x\012y rw shared:3 master:1 - fuse.sshfs u@h:/ rw,user_id=0`))
	f.Add([]byte(`62 22 0:42 / /mnt rw - tmpfs  rw`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ms, err := ParseMountInfo(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "parse mountinfo") {
				t.Fatalf("error without context: %v", err)
			}
			return
		}
		if want := strings.Count(strings.TrimSuffix(string(data), "\n"), "\n") + 1; len(ms) != want {
			t.Fatalf("%d mounts from %d lines", len(ms), want)
		}
		for _, m := range ms {
			if m.ID < 0 || m.ParentID < 0 || m.Root == "" || m.MountPoint == "" || m.FSType == "" {
				t.Fatalf("implausible mount %+v", m)
			}
			if len(m.Options) == 0 || len(m.SuperOptions) == 0 || !HasOption(m.Options, m.Options[0]) {
				t.Fatalf("options of %+v", m)
			}
		}
		// Written back the way the kernel writes it, it parses the same.
		again, err := ParseMountInfo([]byte(formatMountInfo(ms)))
		if err != nil {
			t.Fatalf("re-formatted mountinfo does not parse: %v", err)
		}
		if !reflect.DeepEqual(ms, again) { // cmp.Diff only to explain a failure
			t.Fatalf("round trip (-first +second):\n%s", cmp.Diff(ms, again))
		}
	})
}

var (
	zeroKey64    = zeros(128)
	dmCryptHex   = "0 2097152 crypt aes-xts-plain64 " + zeroKey64 + " 0 252:32 0"
	dmCryptLogon = "0 409600 crypt aes-xts-plain64 :64:logon:cryptsetup:3f1c-d0 0 8:16 4096 1 allow_discards"
	dmVerity     = "0 417792 verity 1 252:2 252:3 4096 4096 52224 1 sha256 5a4e2b41f4c1ff5e2d4c6f0cc7f5f3b5a2c1e7e9c5c4e4f2b6a1d8e3f0a9b7c6 5e1e8e3a4fb8d6a3e25a0e9fd8c08a56f2b4c8a1f3fd9b3d1e3b0e3a4c6d2f1a"
	dmLinear2    = "0 1024 linear 8:1 2048\n1024 1024 linear 8:2 0\n"
)

func TestParseDMTable(t *testing.T) {
	const digest = "5a4e2b41f4c1ff5e2d4c6f0cc7f5f3b5a2c1e7e9c5c4e4f2b6a1d8e3f0a9b7c6"
	const salt = "5e1e8e3a4fb8d6a3e25a0e9fd8c08a56f2b4c8a1f3fd9b3d1e3b0e3a4c6d2f1a"
	verityArgs := strings.Fields(dmVerity)[3:]
	for _, tc := range []struct {
		name string
		in   string
		want []DMTarget
	}{
		{"crypt, hex key as dmsetup prints it", dmCryptHex, []DMTarget{{Start: 0, Length: 2097152, Type: "crypt", Crypt: &DMCrypt{
			Cipher: "aes-xts-plain64", KeyBytes: 64, KeyType: "hex", Device: "252:32"}}}},
		{"crypt, logon key with an option", dmCryptLogon, []DMTarget{{Start: 0, Length: 409600, Type: "crypt", Crypt: &DMCrypt{
			Cipher: "aes-xts-plain64", KeyBytes: 64, KeyType: "keyring:logon", Device: "8:16", Offset: 4096, Options: []string{"allow_discards"}}}}},
		{"crypt, capi cipher, no key, path, tabs", "0\t8\tcrypt capi:xts(aes)-plain64 - 7 /dev/vdc 1 2 sector_size:4096 no_read_workqueue\n", []DMTarget{{
			Length: 8, Type: "crypt", Crypt: &DMCrypt{Cipher: "capi:xts(aes)-plain64", KeyType: "none", IVOffset: 7, Device: "/dev/vdc", Offset: 1,
				Options: []string{"sector_size:4096", "no_read_workqueue"}}}}},
		{"crypt, trusted key, zero options", "0 8 crypt aes-cbc-essiv:sha256 :32:trusted:k 0 8:1 0 0", []DMTarget{{Length: 8, Type: "crypt", Crypt: &DMCrypt{
			Cipher: "aes-cbc-essiv:sha256", KeyBytes: 32, KeyType: "keyring:trusted", Device: "8:1"}}}},
		{"verity", dmVerity, []DMTarget{{Start: 0, Length: 417792, Type: "verity", Args: verityArgs, Verity: &DMVerity{
			Version: 1, DataDevice: "252:2", HashDevice: "252:3", DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: 52224, HashStart: 1,
			Algorithm: "sha256", RootDigest: digest, Salt: salt}}}},
		{"verity, upper-case digest, no salt, options", "0 8 verity 0 /dev/a /dev/b 512 4096 8 0 sha1 " + strings.ToUpper(zeros(38)+"ab") + " - 2 ignore_zero_blocks check_at_most_once",
			[]DMTarget{{Length: 8, Type: "verity", Args: strings.Fields("0 /dev/a /dev/b 512 4096 8 0 sha1 " + strings.ToUpper(zeros(38)+"ab") + " - 2 ignore_zero_blocks check_at_most_once"),
				Verity: &DMVerity{DataDevice: "/dev/a", HashDevice: "/dev/b", DataBlockSize: 512, HashBlockSize: 4096, DataBlocks: 8,
					Algorithm: "sha1", RootDigest: zeros(38) + "ab", Salt: "-", Options: []string{"ignore_zero_blocks", "check_at_most_once"}}}}},
		{"two linear targets", dmLinear2, []DMTarget{
			{Start: 0, Length: 1024, Type: "linear", Args: []string{"8:1", "2048"}},
			{Start: 1024, Length: 1024, Type: "linear", Args: []string{"8:2", "0"}},
		}},
		{"target without arguments", "0 8 zero", []DMTarget{{Length: 8, Type: "zero"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseDMTable(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseDMTable (-want +got):\n%s", diff)
			}
		})
	}
}

// The sample line in the design note has 130 hex digits: that is a 65-byte
// key (aes-xts takes 32 or 64), which the parser reports as it is.
func TestParseDMTableOddSizedKey(t *testing.T) {
	got, err := ParseDMTable("0 2097152 crypt aes-xts-plain64 " + zeros(130) + " 0 252:32 0")
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Crypt.KeyBytes != 65 {
		t.Errorf("KeyBytes = %d, want 65", got[0].Crypt.KeyBytes)
	}
}

func TestParseDMTableRejects(t *testing.T) {
	const key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" // must never be echoed
	crypt := func(cipher, key, rest string) string { return "0 8 crypt " + cipher + " " + key + " " + rest }
	verity := func(args string) string { return "0 8 verity " + args }
	const digest = "0000000000000000000000000000000000000000000000000000000000000000"
	for _, tc := range []struct {
		name, in, wantErr string
	}{
		{"empty", "", "empty table"},
		{"too few fields", "0 8", "line 1: want <start> <length> <type>"},
		{"bad start", "x 8 zero", `start "x": invalid syntax`},
		{"bad length", "0 -8 zero", `length "-8"`},
		{"zero length", "0 0 zero", "length 0"},
		{"not at sector 0", "8 8 zero", "starts at sector 8, want 0"},
		{"gap", "0 8 zero\n16 8 zero", "line 2: target starts at sector 16, want 8"},
		{"overlap", "0 8 zero\n4 8 zero", "line 2: target starts at sector 4, want 8"},
		{"overflow", "0 18446744073709551615 zero\n18446744073709551615 1 zero", "line 2: target end overflows"},
		{"blank line", "0 8 zero\n\n8 8 zero", "line 2:"},

		{"crypt, too few arguments", crypt("aes-xts-plain64", key, "0 8:1"), "crypt: 4 arguments, want at least 5"},
		{"crypt, key odd length", crypt("aes-xts-plain64", key+"a", "0 8:1 0"), "crypt key: odd number of hex digits"},
		{"crypt, key not hex", crypt("aes-xts-plain64", key[:62]+"zz", "0 8:1 0"), "crypt key: not hex"},
		{"crypt, missing cipher", "0 8 crypt " + key + " 0 8:1 0", "crypt: 4 arguments"},
		{"crypt, shifted fields", "0 8 crypt " + key + " 00 0 8:1 0", "crypt cipher: all hex digits"},
		{"crypt, keyring size", crypt("aes-xts-plain64", ":x:logon:"+key, "0 8:1 0"), "crypt key: keyring key size: invalid syntax"},
		{"crypt, keyring size 0", crypt("aes-xts-plain64", ":0:logon:"+key, "0 8:1 0"), "keyring key size is 0"},
		{"crypt, keyring type", crypt("aes-xts-plain64", ":64:"+key+":d", "0 8:1 0"), "keyring key type is not"},
		{"crypt, keyring description", crypt("aes-xts-plain64", ":64:logon:", "0 8:1 0"), "want :<key_size>:<key_type>:<key_description>"},
		{"crypt, keyring no type", crypt("aes-xts-plain64", ":64", "0 8:1 0"), "want :<key_size>:<key_type>:<key_description>"},
		{"crypt, iv_offset", crypt("aes-xts-plain64", key, key+" 8:1 0"), "crypt iv_offset: invalid syntax"},
		{"crypt, device", crypt("aes-xts-plain64", key, "0 "+key+" 0"), "crypt device: want major:minor"},
		{"crypt, offset", crypt("aes-xts-plain64", key, "0 8:1 "+key), "crypt offset: invalid syntax"},
		{"crypt, option count", crypt("aes-xts-plain64", key, "0 8:1 0 2 allow_discards"), "optional parameter count is 2, but 1 parameters follow"},
		{"crypt, option count not a number", crypt("aes-xts-plain64", key, "0 8:1 0 "+key), "optional parameter count: invalid syntax"},
		{"crypt, key on second line", "0 8 zero\n" + strings.Replace(crypt("aes-xts-plain64", key+"0", "0 8:1 0"), "0 8", "8 8", 1), "line 2: crypt key"},

		{"verity, too few arguments", verity("1 252:2 252:3 4096 4096 8 1 sha256 " + digest), "verity: 9 arguments"},
		{"verity, version", verity("2 252:2 252:3 4096 4096 8 1 sha256 " + digest + " -"), `verity version "2"`},
		{"verity, device", verity("1 vda 252:3 4096 4096 8 1 sha256 " + digest + " -"), `verity device "vda"`},
		{"verity, block size not a power of two", verity("1 252:2 252:3 1000 4096 8 1 sha256 " + digest + " -"), "data block size: 1000 is not a power of two"},
		{"verity, block size below a sector", verity("1 252:2 252:3 4096 256 8 1 sha256 " + digest + " -"), "hash block size: 256"},
		{"verity, block size 0", verity("1 252:2 252:3 0 4096 8 1 sha256 " + digest + " -"), "data block size: 0"},
		{"verity, data blocks", verity("1 252:2 252:3 4096 4096 x 1 sha256 " + digest + " -"), `data blocks "x"`},
		{"verity, data too small", verity("1 252:2 252:3 512 4096 7 1 sha256 " + digest + " -"), "target is 8 sectors, but the data device has only 7"},
		{"verity, hash start", verity("1 252:2 252:3 4096 4096 8 -1 sha256 " + digest + " -"), `hash start "-1"`},
		{"verity, digest not hex", verity("1 252:2 252:3 4096 4096 8 1 sha256 " + digest[:62] + "xy -"), "root digest"},
		{"verity, digest odd", verity("1 252:2 252:3 4096 4096 8 1 sha256 " + digest + "0 -"), "root digest"},
		{"verity, digest size", verity("1 252:2 252:3 4096 4096 8 1 sha256 " + digest[:40] + " -"), "40 hex digits, want 64 for sha256"},
		{"verity, salt", verity("1 252:2 252:3 4096 4096 8 1 sha256 " + digest + " abc"), "verity salt"},
		{"verity, option count", verity("1 252:2 252:3 4096 4096 8 1 sha256 " + digest + " - 1"), "optional parameter count is 1, but 0 parameters follow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseDMTable(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, %v; want an error with %q", got, err, tc.wantErr)
			}
			if strings.Contains(err.Error(), key) {
				t.Errorf("error quotes the key: %v", err)
			}
		})
	}
}

func TestParseDMTableBounds(t *testing.T) {
	var b strings.Builder
	for i := range maxTextLines + 1 {
		fmt.Fprintf(&b, "%d 1 zero\n", i)
	}
	all := b.String()
	cut := strings.Index(all, fmt.Sprintf("\n%d 1 zero\n", maxTextLines)) + 1
	if _, err := ParseDMTable(all[:cut]); err != nil {
		t.Errorf("%d lines: %v", maxTextLines, err)
	}
	if _, err := ParseDMTable(all); !errors.Is(err, errInputTooLarge) {
		t.Errorf("%d lines: got %v, want errInputTooLarge", maxTextLines+1, err)
	}
	if _, err := ParseDMTable("0 8 linear 8:1 " + strings.Repeat("0", maxTextInput)); !errors.Is(err, errInputTooLarge) {
		t.Errorf("more than %d bytes: got %v, want errInputTooLarge", maxTextInput, err)
	}
}

// dmStrings lists every string a parsed table holds.
func dmStrings(ts []DMTarget) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Type)
		out = append(out, t.Args...)
		if c := t.Crypt; c != nil {
			out = append(out, c.Cipher, c.KeyType, c.Device)
			out = append(out, c.Options...)
		}
		if v := t.Verity; v != nil {
			out = append(out, v.DataDevice, v.HashDevice, v.Algorithm, v.RootDigest, v.Salt)
			out = append(out, v.Options...)
		}
	}
	return out
}

// formatDMTable writes ts back as a table, with a zero key of the same size
// for a hex crypt key and a made-up description for a keyring reference.
func formatDMTable(ts []DMTarget) string {
	var b strings.Builder
	optParams := func(opts []string) string {
		if len(opts) == 0 {
			return ""
		}
		return fmt.Sprintf(" %d %s", len(opts), strings.Join(opts, " "))
	}
	for _, t := range ts {
		fmt.Fprintf(&b, "%d %d %s", t.Start, t.Length, t.Type)
		switch {
		case t.Crypt != nil:
			c := t.Crypt
			key := "-"
			switch {
			case c.KeyType == "hex":
				key = zeros(2 * c.KeyBytes)
			case strings.HasPrefix(c.KeyType, "keyring:"):
				key = fmt.Sprintf(":%d:%s:desc", c.KeyBytes, strings.TrimPrefix(c.KeyType, "keyring:"))
			}
			fmt.Fprintf(&b, " %s %s %d %s %d%s", c.Cipher, key, c.IVOffset, c.Device, c.Offset, optParams(c.Options))
		case t.Verity != nil:
			v := t.Verity
			fmt.Fprintf(&b, " %d %s %s %d %d %d %d %s %s %s%s", v.Version, v.DataDevice, v.HashDevice, v.DataBlockSize, v.HashBlockSize,
				v.DataBlocks, v.HashStart, v.Algorithm, v.RootDigest, v.Salt, optParams(v.Options))
		default:
			for _, a := range t.Args {
				b.WriteString(" " + a)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// cryptKeys returns the key token of each crypt line of a table that is
// distinctive enough to look for in the output: at least 8 bytes, found
// nowhere else in the table, and not a number an error message could have
// computed (a uint64 has at most 20 digits).
func cryptKeys(s string) []string {
	var keys []string
	for line := range strings.SplitSeq(s, "\n") {
		f := blankFields(line)
		if len(f) < 5 || f[2] != "crypt" {
			continue
		}
		k := f[4]
		decimal := strings.Trim(k, "0123456789") == ""
		if len(k) >= 8 && strings.Count(s, k) == 1 && (!decimal || len(k) > 20) {
			keys = append(keys, k)
		}
	}
	return keys
}

func FuzzParseDMTable(f *testing.F) {
	for _, s := range []string{
		dmCryptHex, dmCryptLogon, dmVerity, dmLinear2,
		"0 8\tcrypt capi:xts(aes)-plain64 - 7 /dev/vdc 1 2 sector_size:4096 no_read_workqueue\n",
		"0 8 crypt aes-cbc-essiv:sha256 :32:trusted:k 0 8:1 0 0",
		"0 1024 linear 8:1 2048\n1024 " + dmCryptHex[2:],
		"0 8 crypt aes-xts-plain64 " + zeros(63) + " 0 8:1 0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ts, err := ParseDMTable(s)
		keys := cryptKeys(s)
		if err != nil {
			for _, k := range keys {
				if strings.Contains(err.Error(), k) {
					t.Fatalf("error quotes crypt key %q: %v", k, err)
				}
			}
			return
		}
		for _, k := range keys {
			for _, got := range dmStrings(ts) {
				if strings.Contains(got, k) {
					t.Fatalf("result holds crypt key %q in %q", k, got)
				}
			}
		}
		var next uint64
		for i, tg := range ts {
			if tg.Start != next || tg.Length == 0 {
				t.Fatalf("target %d at %d+%d, want start %d and non-zero length", i, tg.Start, tg.Length, next)
			}
			next = tg.Start + tg.Length
			if (tg.Type == "crypt") != (tg.Crypt != nil) || (tg.Type == "verity") != (tg.Verity != nil) {
				t.Fatalf("target %d: type %q with crypt %v, verity %v", i, tg.Type, tg.Crypt, tg.Verity)
			}
			if tg.Crypt != nil && tg.Args != nil {
				t.Fatalf("crypt target %d keeps its arguments", i)
			}
		}
		// Written back (crypt keys replaced by zeros), it parses the same:
		// the result depends on a key's size only.
		again, err := ParseDMTable(formatDMTable(ts))
		if err != nil {
			t.Fatalf("re-formatted table does not parse: %v", err)
		}
		for _, tt := range [][]DMTarget{ts, again} {
			for i := range tt {
				if tt[i].Verity != nil {
					tt[i].Args = nil // raw, so the digest's case may differ
				}
			}
		}
		if !reflect.DeepEqual(ts, again) { // cmp.Diff only to explain a failure
			t.Fatalf("round trip (-first +second):\n%s", cmp.Diff(ts, again))
		}
	})
}

const crypttabSample = `scratch /dev/disk/by-id/virtio-attestd-scratch /dev/urandom plain,cipher=aes-xts-plain64,size=512,tmp=ext4,nofail
`

func TestParseCrypttab(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want []CrypttabEntry
	}{
		{"attestd scratch", crypttabSample, []CrypttabEntry{{Name: "scratch", Device: "/dev/disk/by-id/virtio-attestd-scratch", KeyFile: "/dev/urandom",
			Options: []string{"plain", "cipher=aes-xts-plain64", "size=512", "tmp=ext4", "nofail"}}}},
		{"empty", "", nil},
		{"comments only", "# <name> <device> <key> <options>\n\n   # indented\n\t\n", nil},
		{"optional fields and blanks", "# header\n" +
			"data\tUUID=0b5e4a7e-4f8a-4f7e-9d1b-6c2e1f0a9b8c\n" +
			"  home  PARTLABEL=home\tnone  luks,discard\n" +
			"swap /dev/vdb - -\n" +
			"log /dev/vdc /etc/keys/log#1\n", []CrypttabEntry{
			{Name: "data", Device: "UUID=0b5e4a7e-4f8a-4f7e-9d1b-6c2e1f0a9b8c"},
			{Name: "home", Device: "PARTLABEL=home", Options: []string{"luks", "discard"}},
			{Name: "swap", Device: "/dev/vdb"},
			{Name: "log", Device: "/dev/vdc", KeyFile: "/etc/keys/log#1"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCrypttab([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseCrypttab (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseCrypttabRejects(t *testing.T) {
	for _, tc := range []struct {
		name, in, wantErr string
	}{
		{"one field", "# x\nscratch\n", "line 2: 1 fields"},
		{"five fields", "a /dev/a - luks extra", "line 1: 5 fields"},
		{"duplicate", crypttabSample + "\n" + "scratch /dev/vdd\n", `line 3: volume "scratch" is already defined on line 1`},
		{"slash in name", "a/b /dev/a", `volume name "a/b" contains '/'`},
		{"empty option", "a /dev/a - luks,,discard", `options "luks,,discard": empty option`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCrypttab([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, %v; want an error with %q", got, err, tc.wantErr)
			}
		})
	}
}

func TestParseCrypttabBounds(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		tooLong bool
	}{
		{"max lines", strings.Repeat("\n", maxTextLines), false},
		{"one line too many", strings.Repeat("\n", maxTextLines+1), true},
		{"max bytes", "#" + strings.Repeat("x", maxTextInput-1), false},
		{"one byte too many", "#" + strings.Repeat("x", maxTextInput), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCrypttab([]byte(tc.in))
			if tc.tooLong != errors.Is(err, errInputTooLarge) || !tc.tooLong && err != nil {
				t.Errorf("got %v, want too large: %v", err, tc.tooLong)
			}
		})
	}
}

func formatCrypttab(es []CrypttabEntry) string {
	var b strings.Builder
	for _, e := range es {
		key, opts := "-", "-"
		if e.KeyFile != "" {
			key = e.KeyFile
		}
		if len(e.Options) > 0 {
			opts = strings.Join(e.Options, ",")
		}
		fmt.Fprintf(&b, "%s\t%s %s %s\n", e.Name, e.Device, key, opts)
	}
	return b.String()
}

func FuzzParseCrypttab(f *testing.F) {
	f.Add([]byte(crypttabSample))
	f.Add([]byte("# header\ndata\tUUID=0b5e4a7e\n  home  PARTLABEL=home\tnone  luks,discard\nswap /dev/vdb - -\n"))
	f.Add([]byte("a /dev/a\na /dev/b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		es, err := ParseCrypttab(data)
		if err != nil {
			return
		}
		names := map[string]bool{}
		for _, e := range es {
			if names[e.Name] {
				t.Fatalf("duplicate volume %q", e.Name)
			}
			names[e.Name] = true
			for _, s := range append([]string{e.Name, e.Device, e.KeyFile}, e.Options...) {
				if strings.ContainsAny(s, " \t\n") {
					t.Fatalf("field %q of %+v holds a blank", s, e)
				}
			}
			if e.Name == "" || e.Device == "" || e.KeyFile == "-" || e.KeyFile == "none" {
				t.Fatalf("entry %+v", e)
			}
			if len(e.Options) == 1 && e.Options[0] == "-" {
				t.Fatalf("options %q kept", e.Options)
			}
		}
		again, err := ParseCrypttab([]byte(formatCrypttab(es)))
		if err != nil {
			t.Fatalf("re-formatted crypttab does not parse: %v", err)
		}
		if !reflect.DeepEqual(es, again) { // cmp.Diff only to explain a failure
			t.Fatalf("round trip (-first +second):\n%s", cmp.Diff(es, again))
		}
	})
}

const swapsSample = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n" +
	"/dev/dm-2                               partition\t2097148\t\t0\t\t-2\n" +
	"/var/lib/swap\\040file                   file\t\t1048572\t\t512\t\t-3\n"

func TestParseSwaps(t *testing.T) {
	got, err := ParseSwaps([]byte(swapsSample))
	if err != nil {
		t.Fatal(err)
	}
	want := []Swap{
		{Filename: "/dev/dm-2", Type: "partition", SizeKiB: 2097148, Priority: -2},
		{Filename: "/var/lib/swap file", Type: "file", SizeKiB: 1048572, UsedKiB: 512, Priority: -3},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseSwaps (-want +got):\n%s", diff)
	}
	if got, err := ParseSwaps([]byte("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n")); err != nil || len(got) != 0 {
		t.Errorf("header only: %v, %v; want no swap", got, err)
	}
	for _, bad := range []string{
		"",
		"/dev/vda2 partition 1 0 -2\n",
		"Filename Type Size Used Priority\n/dev/vda2 partition 1 0\n",
		"Filename Type Size Used Priority\n/dev/vda2 zram 1 0 -2\n",
		"Filename Type Size Used Priority\nvda2 partition 1 0 -2\n",
		"Filename Type Size Used Priority\n/dev/vda2 partition x 0 -2\n",
		"Filename Type Size Used Priority\n/dev/vda2 partition 1 -1 -2\n",
		"Filename Type Size Used Priority\n/dev/vda2 partition 1 0 p\n",
		"Filename Type Size Used Priority\n/dev/v\\9da2 partition 1 0 -2\n",
	} {
		if _, err := ParseSwaps([]byte(bad)); err == nil {
			t.Errorf("ParseSwaps(%q) accepted", bad)
		}
	}
}

func FuzzParseSwaps(f *testing.F) {
	f.Add([]byte(swapsSample))
	f.Add([]byte("Filename Type Size Used Priority\n"))
	f.Add([]byte("Filename Type Size Used Priority\n/dev/zram0 partition 1 0 100\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ss, err := ParseSwaps(b)
		if err != nil {
			return
		}
		for _, s := range ss {
			if s.Filename == "" || s.Filename[0] != '/' || (s.Type != "partition" && s.Type != "file") {
				t.Fatalf("accepted %+v", s)
			}
		}
	})
}
