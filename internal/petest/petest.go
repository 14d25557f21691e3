// Package petest builds minimal PE32+ images and UKIs for tests (test-only:
// no binary links it).
package petest

import (
	"bytes"
	"encoding/binary"
)

// UKI is a PE32+ image with the sections attestctl reference reads: a
// .linux section that is itself a PE image, .osrel, .cmdline and, when
// given, .initrd.
func UKI(cmdline string, initrd []byte) []byte {
	kernel := PE([]Section{{".text", bytes.Repeat([]byte("kernel"), 100)}})
	secs := []Section{{".osrel", []byte("ID=debian\n")}, {".cmdline", []byte(cmdline)}, {".linux", kernel}}
	if initrd != nil {
		secs = append(secs, Section{".initrd", initrd})
	}
	return PE(secs)
}

// Section is one named section of a PE image.
type Section struct {
	Name string
	Data []byte
}

// PE lays out a minimal PE32+ image (x86-64) holding sections.
func PE(sections []Section) []byte {
	const (
		fileAlign = 0x200
		memAlign  = 0x1000
		opt       = 0x58      // optional header, after "PE\0\0" at 0x40 and the COFF header
		secTable  = opt + 240 // section headers
	)
	up := func(n, a int) int { return (n + a - 1) / a * a }
	headers := up(secTable+40*len(sections), fileAlign)
	size := headers
	for _, s := range sections {
		size += up(len(s.Data), fileAlign)
	}
	img := make([]byte, size)
	le16 := func(off, v int) { binary.LittleEndian.PutUint16(img[off:], uint16(v)) }
	le32 := func(off, v int) { binary.LittleEndian.PutUint32(img[off:], uint32(v)) }
	copy(img, "MZ")
	le32(0x3c, 0x40)
	copy(img[0x40:], "PE\x00\x00")
	le16(0x44, 0x8664)
	le16(0x46, len(sections))
	le16(0x54, 240)
	le16(0x56, 0x22)
	le16(opt, 0x20b)
	le32(opt+32, memAlign)
	le32(opt+36, fileAlign)
	le32(opt+60, headers)
	le32(opt+108, 16)
	off, va := headers, memAlign
	for i, s := range sections {
		h := secTable + 40*i
		copy(img[h:h+8], s.Name)
		le32(h+8, len(s.Data))
		le32(h+12, va)
		le32(h+16, up(len(s.Data), fileAlign))
		le32(h+20, off)
		le32(h+36, 0x40000040) // initialized data, readable
		copy(img[off:], s.Data)
		off += up(len(s.Data), fileAlign)
		va += up(len(s.Data), memAlign)
	}
	le32(opt+56, va) // SizeOfImage
	return img
}
