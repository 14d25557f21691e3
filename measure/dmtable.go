package measure

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// DMTarget is one line of a device-mapper table, as `dmsetup table` prints it
// or the kernel returns it for DM_TABLE_STATUS: "<start> <length> <type> <args...>".
// A crypt target's key never appears in a DMTarget (or in an error): only its size.
type DMTarget struct {
	Start, Length uint64    // in 512-byte sectors
	Type          string    // "crypt", "verity", "linear", ...
	Crypt         *DMCrypt  // set when Type == "crypt"
	Verity        *DMVerity // set when Type == "verity"
	Args          []string  // the raw arguments, only for types other than crypt (never for crypt: they carry the key)
}

// DMCrypt is the table of a dm-crypt target (Documentation/admin-guide/device-mapper/dm-crypt.rst):
// <cipher> <key> <iv_offset> <device path> <offset> [<#opt_params> <opt_params>]
type DMCrypt struct {
	Cipher   string // "aes-xts-plain64", or kernel crypto API form "capi:xts(aes)-plain64"
	KeyBytes int    // size of the key: hex digits / 2, or <key_size> of a keyring reference
	KeyType  string // "hex" (the key is in the table; dmsetup prints it as zeros unless --showkeys), "keyring:logon" / "keyring:user" / "keyring:encrypted" / "keyring:trusted" for ":<key_size>:<key_type>:<key_description>", "none" for "-"
	IVOffset uint64
	Device   string // "253:2" or "/dev/vdc"
	Offset   uint64
	Options  []string // optional parameters, without their count
}

// DMVerity is the table of a dm-verity target (Documentation/admin-guide/device-mapper/verity.rst):
// <version> <dev> <hash_dev> <data_block_size> <hash_block_size> <num_data_blocks> <hash_start_block> <algorithm> <digest> <salt> [<#opt_params> <opt_params>]
type DMVerity struct {
	Version                      int
	DataDevice, HashDevice       string
	DataBlockSize, HashBlockSize uint32
	DataBlocks, HashStart        uint64
	Algorithm                    string // "sha256"
	RootDigest                   string // lower-case hex
	Salt                         string // lower-case hex, or "-"
	Options                      []string
}

// ParseDMTable parses a whole table (one target per line). Targets must start at
// sector 0, be contiguous, not overlap and have non-zero length. An empty table is an error.
//
// Crypt and verity arguments are validated. Error messages about a crypt
// target never quote its arguments, and every string in the result is a copy,
// so the result does not keep the input (and any key in it) reachable.
func ParseDMTable(s string) ([]DMTarget, error) {
	lines, err := splitTextLines(s, "dm table")
	if err != nil {
		return nil, err
	}
	if len(lines) == 0 {
		return nil, errors.New("parse dm table: empty table")
	}
	targets := make([]DMTarget, 0, len(lines))
	var next uint64 // the sector the next target must start at
	for i, line := range lines {
		t, err := parseDMTarget(line)
		if err != nil {
			return nil, fmt.Errorf("parse dm table line %d: %w", i+1, err)
		}
		if t.Start != next {
			return nil, fmt.Errorf("parse dm table line %d: target starts at sector %d, want %d (targets must start at 0 and be contiguous)", i+1, t.Start, next)
		}
		if t.Length > math.MaxUint64-t.Start {
			return nil, fmt.Errorf("parse dm table line %d: target end overflows", i+1)
		}
		next = t.Start + t.Length
		targets = append(targets, t)
	}
	return targets, nil
}

func parseDMTarget(line string) (DMTarget, error) {
	f := blankFields(line)
	if len(f) < 3 {
		return DMTarget{}, errors.New("want <start> <length> <type> [<args>...]")
	}
	var t DMTarget
	var err error
	if t.Start, err = strconv.ParseUint(f[0], 10, 64); err != nil {
		return DMTarget{}, fmt.Errorf("start %q: %w", f[0], numErr(err))
	}
	if t.Length, err = strconv.ParseUint(f[1], 10, 64); err != nil {
		return DMTarget{}, fmt.Errorf("length %q: %w", f[1], numErr(err))
	}
	if t.Length == 0 {
		return DMTarget{}, errors.New("target has length 0")
	}
	t.Type = strings.Clone(f[2])
	args := f[3:]
	switch t.Type {
	case "crypt":
		if t.Crypt, err = parseDMCrypt(args); err != nil {
			return DMTarget{}, err
		}
		return t, nil
	case "verity":
		if t.Verity, err = parseDMVerity(args, t.Length); err != nil {
			return DMTarget{}, err
		}
	}
	t.Args = cloneStrings(args)
	return t, nil
}

// parseDMCrypt parses the arguments of a crypt target. Its errors never
// quote an argument: a malformed line may have the key anywhere.
func parseDMCrypt(a []string) (*DMCrypt, error) {
	if len(a) < 5 {
		return nil, fmt.Errorf("crypt: %d arguments, want at least 5 (<cipher> <key> <iv_offset> <device> <offset>)", len(a))
	}
	// No cipher name is all hex digits ("aes", "des3_ede", "capi:…"): such a
	// cipher is a key that a missing field shifted into its place.
	if isHexString(a[0]) {
		return nil, errors.New("crypt cipher: all hex digits, like a key (is a field missing?)")
	}
	c := &DMCrypt{Cipher: strings.Clone(a[0])}
	var err error
	if c.KeyBytes, c.KeyType, err = parseCryptKey(a[1]); err != nil {
		return nil, err
	}
	if c.IVOffset, err = strconv.ParseUint(a[2], 10, 64); err != nil {
		return nil, fmt.Errorf("crypt iv_offset: %w", numErr(err))
	}
	if !dmDeviceOK(a[3]) {
		return nil, errors.New("crypt device: want major:minor or an absolute path")
	}
	c.Device = strings.Clone(a[3])
	if c.Offset, err = strconv.ParseUint(a[4], 10, 64); err != nil {
		return nil, fmt.Errorf("crypt offset: %w", numErr(err))
	}
	if c.Options, err = parseDMOptParams(a[5:]); err != nil {
		return nil, fmt.Errorf("crypt %w", err)
	}
	return c, nil
}

// parseCryptKey returns the size and kind of a crypt key without copying it.
func parseCryptKey(k string) (size int, kind string, err error) {
	switch {
	case k == "-":
		return 0, "none", nil
	case strings.HasPrefix(k, ":"):
		// :<key_size>:<key_type>:<key_description>
		sizeStr, rest, _ := strings.Cut(k[1:], ":")
		n, err := strconv.ParseUint(sizeStr, 10, 31)
		if err != nil {
			return 0, "", fmt.Errorf("crypt key: keyring key size: %w", numErr(err))
		}
		if n == 0 {
			return 0, "", errors.New("crypt key: keyring key size is 0")
		}
		typ, desc, ok := strings.Cut(rest, ":")
		if !ok || desc == "" {
			return 0, "", errors.New("crypt key: want :<key_size>:<key_type>:<key_description>")
		}
		switch typ {
		case "logon", "user", "encrypted", "trusted":
		default:
			return 0, "", errors.New("crypt key: keyring key type is not logon, user, encrypted or trusted")
		}
		return int(n), "keyring:" + typ, nil
	case len(k)%2 != 0:
		return 0, "", errors.New("crypt key: odd number of hex digits")
	case !isHexString(k):
		return 0, "", errors.New("crypt key: not hex")
	}
	return len(k) / 2, "hex", nil
}

// verityDigestSizes are the digest sizes of common dm-verity algorithms;
// digests of other algorithms are checked only for being hex.
var verityDigestSizes = map[string]int{"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}

func parseDMVerity(a []string, length uint64) (*DMVerity, error) {
	if len(a) < 10 {
		return nil, fmt.Errorf("verity: %d arguments, want at least 10", len(a))
	}
	v := &DMVerity{}
	switch a[0] {
	case "0", "1":
		v.Version = int(a[0][0] - '0')
	default:
		return nil, fmt.Errorf("verity version %q: want 0 or 1", a[0])
	}
	for i, d := range []*string{&v.DataDevice, &v.HashDevice} {
		if !dmDeviceOK(a[1+i]) {
			return nil, fmt.Errorf("verity device %q: want major:minor or an absolute path", a[1+i])
		}
		*d = strings.Clone(a[1+i])
	}
	var err error
	if v.DataBlockSize, err = parseVerityBlockSize(a[3]); err != nil {
		return nil, fmt.Errorf("verity data block size: %w", err)
	}
	if v.HashBlockSize, err = parseVerityBlockSize(a[4]); err != nil {
		return nil, fmt.Errorf("verity hash block size: %w", err)
	}
	if v.DataBlocks, err = strconv.ParseUint(a[5], 10, 64); err != nil {
		return nil, fmt.Errorf("verity data blocks %q: %w", a[5], numErr(err))
	}
	if hi, sectors := bits.Mul64(v.DataBlocks, uint64(v.DataBlockSize/512)); hi == 0 && length > sectors {
		return nil, fmt.Errorf("verity: target is %d sectors, but the data device has only %d", length, sectors)
	}
	if v.HashStart, err = strconv.ParseUint(a[6], 10, 64); err != nil {
		return nil, fmt.Errorf("verity hash start %q: %w", a[6], numErr(err))
	}
	v.Algorithm = strings.Clone(a[7])
	if !isHexString(a[8]) || len(a[8])%2 != 0 {
		return nil, fmt.Errorf("verity root digest %q: not an even number of hex digits", a[8])
	}
	if n, ok := verityDigestSizes[v.Algorithm]; ok && len(a[8]) != 2*n {
		return nil, fmt.Errorf("verity root digest: %d hex digits, want %d for %s", len(a[8]), 2*n, v.Algorithm)
	}
	v.RootDigest = strings.ToLower(strings.Clone(a[8]))
	if a[9] != "-" && (!isHexString(a[9]) || len(a[9])%2 != 0) {
		return nil, fmt.Errorf(`verity salt %q: want "-" or an even number of hex digits`, a[9])
	}
	v.Salt = strings.ToLower(strings.Clone(a[9]))
	if v.Options, err = parseDMOptParams(a[10:]); err != nil {
		return nil, fmt.Errorf("verity %w", err)
	}
	return v, nil
}

// parseVerityBlockSize parses a block size: a power of two of at least one sector.
func parseVerityBlockSize(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, numErr(err))
	}
	if n < 512 || n&(n-1) != 0 {
		return 0, fmt.Errorf("%d is not a power of two of at least 512", n)
	}
	return uint32(n), nil
}

// parseDMOptParams parses "[<#opt_params> <opt_params>]": the count must
// match the number of parameters that follow. Its errors quote nothing.
func parseDMOptParams(a []string) ([]string, error) {
	if len(a) == 0 {
		return nil, nil
	}
	n, err := strconv.ParseUint(a[0], 10, 31)
	if err != nil {
		return nil, fmt.Errorf("optional parameter count: %w", numErr(err))
	}
	if int(n) != len(a)-1 {
		return nil, fmt.Errorf("optional parameter count is %d, but %d parameters follow", n, len(a)-1)
	}
	return cloneStrings(a[1:]), nil
}

// dmDeviceOK reports whether s names a block device the way a table does:
// "major:minor" or an absolute path.
func dmDeviceOK(s string) bool {
	if strings.HasPrefix(s, "/") {
		return true
	}
	_, _, err := parseMajorMinor(s)
	return err == nil
}

// isHexString reports whether s is non-empty and all hex digits.
func isHexString(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// cloneStrings copies ss and each string in it; nil when ss is empty.
func cloneStrings(ss []string) []string {
	if len(ss) == 0 {
		return nil
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.Clone(s)
	}
	return out
}
