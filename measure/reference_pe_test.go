package measure

import (
	"bytes"
	"crypto"
	"encoding/binary"
	"errors"
	"os"
	"slices"
	"testing"
)

// tinyPE is a PE32+ image with one section and an attribute certificate
// table at its end.
func tinyPE() (img []byte, checksumOff, certOff int) {
	img = make([]byte, 0x410)
	copy(img, "MZ")
	binary.LittleEndian.PutUint32(img[0x3c:], 0x40)
	copy(img[0x40:], "PE\x00\x00")
	binary.LittleEndian.PutUint16(img[0x44:], 0x8664)
	binary.LittleEndian.PutUint16(img[0x46:], 1)   // sections
	binary.LittleEndian.PutUint16(img[0x54:], 240) // optional header size
	opt := 0x58
	binary.LittleEndian.PutUint16(img[opt:], 0x20b)
	binary.LittleEndian.PutUint32(img[opt+60:], 0x200) // SizeOfHeaders
	binary.LittleEndian.PutUint32(img[opt+108:], 16)   // NumberOfRvaAndSizes
	certDir := opt + 112 + 4*8
	binary.LittleEndian.PutUint32(img[certDir:], 0x400)
	binary.LittleEndian.PutUint32(img[certDir+4:], 0x10)
	sec := opt + 240
	copy(img[sec:], ".text")
	binary.LittleEndian.PutUint32(img[sec+8:], 0x200)
	binary.LittleEndian.PutUint32(img[sec+12:], 0x1000)
	binary.LittleEndian.PutUint32(img[sec+16:], 0x200)
	binary.LittleEndian.PutUint32(img[sec+20:], 0x200)
	for i := 0x200; i < 0x400; i++ {
		img[i] = byte(i)
	}
	copy(img[0x400:], "certificate data")
	return img, opt + 64, certDir
}

func TestAuthenticodeDigest(t *testing.T) {
	img, cks, certDir := tinyPE()
	base, err := AuthenticodeDigest(img, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	// The expected value, spelled out.
	w := crypto.SHA256.New()
	w.Write(img[:cks])
	w.Write(img[cks+4 : certDir])
	w.Write(img[certDir+8 : 0x200])
	w.Write(img[0x200:0x400])
	if want := w.Sum(nil); !bytes.Equal(base, want) {
		t.Fatalf("digest %x, want %x", base, want)
	}
	for _, tc := range []struct {
		name   string
		change func([]byte) []byte
		same   bool
	}{
		{"checksum", func(b []byte) []byte { b[cks] ^= 1; return b }, true},
		{"certificate entry", func(b []byte) []byte { b[certDir] ^= 1; return b }, true},
		{"certificate data", func(b []byte) []byte { b[0x400] ^= 1; return b }, true},
		{"section", func(b []byte) []byte { b[0x300] ^= 1; return b }, false},
		{"header", func(b []byte) []byte { b[0x100] ^= 1; return b }, false},
	} {
		img, _, _ := tinyPE()
		got, err := AuthenticodeDigest(tc.change(img), crypto.SHA256)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if bytes.Equal(got, base) != tc.same {
			t.Errorf("%s: digest changed = %v, want %v", tc.name, !bytes.Equal(got, base), !tc.same)
		}
	}
	for _, bad := range [][]byte{nil, []byte("MZ"), img[:0x100]} {
		if _, err := AuthenticodeDigest(bad, crypto.SHA256); !errors.Is(err, ErrPE) {
			t.Errorf("truncated image (%d bytes): err = %v, want ErrPE", len(bad), err)
		}
	}
}

// With the systemd-boot stub installed (CI installs it), a UKI-less stub has
// no UKI sections, and hashing it must work.
func TestAuthenticodeDigestStub(t *testing.T) {
	b, err := os.ReadFile("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
	if err != nil {
		t.Skip("systemd-boot-efi not installed")
	}
	if _, err := AuthenticodeDigest(b, crypto.SHA256); err != nil {
		t.Fatal(err)
	}
	if _, err := UKIStubEvents(b, crypto.SHA256); !errors.Is(err, ErrPE) {
		t.Errorf("stub without sections: err = %v, want ErrPE", err)
	}
}

// FuzzAuthenticodeDigest: any bytes hash as a PE image to a SHA-256 digest
// or fail with ErrPE; the stub events of a UKI come in name, contents pairs
// in UKISections order.
func FuzzAuthenticodeDigest(f *testing.F) {
	img, _, _ := tinyPE()
	f.Add(img)
	// A real EFI application where systemd-boot-efi is installed (CI).
	if stub, err := os.ReadFile("/usr/lib/systemd/boot/efi/linuxx64.efi.stub"); err == nil {
		f.Add(stub)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := AuthenticodeDigest(b, crypto.SHA256)
		switch {
		case err != nil && !errors.Is(err, ErrPE):
			t.Fatalf("AuthenticodeDigest: error without ErrPE: %v", err)
		case err == nil && len(d) != crypto.SHA256.Size():
			t.Fatalf("AuthenticodeDigest: %d-byte digest", len(d))
		}
		evs, err := UKIStubEvents(b, crypto.SHA256)
		if err != nil {
			if !errors.Is(err, ErrPE) {
				t.Fatalf("UKIStubEvents: error without ErrPE: %v", err)
			}
			return
		}
		if len(evs) == 0 || len(evs)%2 != 0 {
			t.Fatalf("UKIStubEvents: %d events, want name/contents pairs", len(evs))
		}
		last := -1
		for i := 0; i < len(evs); i += 2 {
			n := slices.Index(UKISections, evs[i].Description)
			if n <= last || evs[i+1].Description != evs[i].Description {
				t.Fatalf("UKIStubEvents: events %d and %d are %q, %q after section %d", i, i+1, evs[i].Description, evs[i+1].Description, last)
			}
			last = n
		}
	})
}

// TestUKISectionClaimsTooMuch: a section whose VirtualSize is far beyond
// the image is refused, not allocated.
func TestUKISectionClaimsTooMuch(t *testing.T) {
	img, _, _ := tinyPE()
	sec := 0x58 + 240
	binary.LittleEndian.PutUint32(img[sec+8:], 0xffffffff) // VirtualSize
	if _, _, err := UKISection(img, ".text"); !errors.Is(err, ErrPE) {
		t.Fatalf("UKISection with a 4 GiB section: %v, want ErrPE", err)
	}
	binary.LittleEndian.PutUint32(img[sec+8:], 0x300) // padded a little: fine
	data, ok, err := UKISection(img, ".text")
	if err != nil || !ok || len(data) != 0x300 {
		t.Fatalf("UKISection padded to 0x300: %d bytes, %v, %v", len(data), ok, err)
	}
}
