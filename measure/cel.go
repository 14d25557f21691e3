package measure

import (
	"bytes"
	"crypto"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/go-eventlog/cel"
)

// MaxLogSize bounds the CEL encoding ParseCEL accepts and the Log writes.
// It leaves room for a build of 100,000 typical runtime events in up to four
// banks (about 310 bytes each; docs/measure-events.md, "Log size and cost").
const MaxLogSize = 64 << 20

// RegisterKind is the kind of register a Log extends.
type RegisterKind string

// Register kinds. An RTMR index is the RTMR's own number (RTMR3 is 3); in the
// CEL it is written as the CC measurement register index, 3+1, as the UEFI
// CC event log and go-eventlog's register.RTMR do.
const (
	PCR  RegisterKind = "PCR"
	RTMR RegisterKind = "RTMR"
)

// Register names a measurement register: a TPM PCR or a TDX RTMR.
type Register struct {
	Kind  RegisterKind
	Index int
}

func (r Register) String() string { return fmt.Sprintf("%s%d", r.Kind, r.Index) }

// MarshalText writes the register's name ("PCR13").
func (r Register) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText parses a register's name (ParseRegister).
func (r *Register) UnmarshalText(b []byte) error {
	reg, err := ParseRegister(string(b))
	if err != nil {
		return err
	}
	*r = reg
	return nil
}

// ParseRegister parses a register name such as "PCR13" or "RTMR3" (the
// index in decimal, without leading zeros).
func ParseRegister(s string) (Register, error) {
	for _, k := range []RegisterKind{PCR, RTMR} {
		digits, ok := strings.CutPrefix(s, string(k))
		if !ok {
			continue
		}
		if i, err := strconv.Atoi(digits); err == nil && i >= 0 && strconv.Itoa(i) == digits {
			return Register{Kind: k, Index: i}, nil
		}
	}
	return Register{}, fmt.Errorf("register %q: want e.g. PCR13 or RTMR3", s)
}

// Errors callers branch on.
var (
	// ErrTruncated: the log ends inside a record (e.g. a crash mid-write).
	ErrTruncated = errors.New("measure: log ends inside a record")
	// ErrLogTooLarge: the log exceeds MaxLogSize.
	ErrLogTooLarge = errors.New("measure: event log too large")
)

// Record is the decoded view of one CEL record, for verifiers and printing.
//
// Records whose content is not attestd's (ContentType) are kept with Type 0,
// their content type in ContentType and the raw content value in Data;
// Replay refuses them because their digests cannot be checked.
type Record struct {
	Seq         uint64 // CEL recnum
	Index       int    // register number (PCR 13, RTMR 3)
	Kind        RegisterKind
	Digests     map[crypto.Hash][]byte
	ContentType uint8
	Type        EventType
	Data        []byte
}

// ParseError says where a CEL encoding is malformed.
type ParseError struct {
	Offset int // byte offset of the record
	Record int // position of the record in the log, from 0
	Err    error
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("parse CEL record %d at offset %d: %v", e.Record, e.Offset, e.Err)
}

func (e *ParseError) Unwrap() error { return e.Err }

const (
	tlvHeader      = 5 // type byte + big-endian uint32 length
	celFieldsCount = 4 // recnum, register index, digests, content
	celDigestsType = 3
	ccmrIndexShift = 1 // CC MR index = RTMR index + 1 (0 is MRTD)
)

// ParseCEL decodes a CEL-TLV encoding. It is bounded (at most MaxLogSize
// bytes, every length checked against what remains) and never panics. It
// checks structure only: use Replay to check digests against content and
// register. It is linear in len(b) and makes about two allocations per
// record: the records' Data and Digests share one copy of b.
func ParseCEL(b []byte) ([]Record, error) {
	if len(b) > MaxLogSize {
		return nil, fmt.Errorf("parse CEL: %d bytes: %w", len(b), ErrLogTooLarge)
	}
	// Frame first, so that the records are allocated once; an error in a
	// record's fields before a framing error still comes first.
	n, frameErr := 0, error(nil)
	for off := 0; off < len(b); n++ {
		size, err := scanRecord(b[off:])
		if err != nil {
			frameErr = &ParseError{Offset: off, Record: n, Err: err}
			break
		}
		off += size
	}
	if n == 0 && frameErr == nil {
		return nil, nil
	}
	own := bytes.Clone(b)
	recs := make([]Record, n)
	for i, off := 0, 0; i < n; i++ {
		size, err := decodeRecord(own[off:], &recs[i])
		if err != nil {
			return nil, &ParseError{Offset: off, Record: i, Err: err}
		}
		off += size
	}
	if frameErr != nil {
		return nil, frameErr
	}
	return recs, nil
}

// scanRecord checks the TLV framing of the record at the start of b (each
// length fits in what remains, digest entries included, no bank twice) and
// returns its length.
func scanRecord(b []byte) (int, error) {
	off := 0
	for i := range celFieldsCount {
		typ, val, err := scanTLV(b[off:])
		if err != nil {
			return 0, err
		}
		if i == 2 {
			if typ != celDigestsType {
				return 0, fmt.Errorf("field 3 has type %d, want digests (%d)", typ, celDigestsType)
			}
			if err := scanDigests(val); err != nil {
				return 0, err
			}
		}
		off += tlvHeader + len(val)
	}
	return off, nil
}

func scanTLV(b []byte) (typ uint8, val []byte, err error) {
	if len(b) < tlvHeader {
		return 0, nil, ErrTruncated
	}
	n := binary.BigEndian.Uint32(b[1:tlvHeader])
	if uint64(n) > uint64(len(b)-tlvHeader) {
		return 0, nil, fmt.Errorf("TLV length %d exceeds the %d bytes left: %w", n, len(b)-tlvHeader, ErrTruncated)
	}
	end := tlvHeader + int(n)
	return b[0], b[tlvHeader:end:end], nil
}

func scanDigests(b []byte) error {
	var seen [256]bool
	for len(b) > 0 {
		typ, val, err := scanTLV(b)
		if err != nil {
			return errors.New("digests: entry length exceeds the digests field")
		}
		if seen[typ] {
			return fmt.Errorf("digests: algorithm 0x%x given twice", typ)
		}
		seen[typ] = true
		b = b[tlvHeader+len(val):]
	}
	return nil
}

// CEL field types (TCG_IWG_CEL_v1_r0p37) and the TPM_ALG_IDs of the digest
// entries, as go-eventlog reads them.
const (
	celRecnumType = 0
	celPCRType    = uint8(cel.PCRType)
	celCCMRType   = uint8(cel.CCMRType)
)

// celBanks maps a digest entry's TPM_ALG_ID to its hash, as go-eventlog does
// (go-tpm's tpm2.Algorithm.Hash). A hash not linked into the program is
// refused, as there.
var celBanks = map[uint8]crypto.Hash{
	0x04: crypto.SHA1, 0x0B: crypto.SHA256, 0x0C: crypto.SHA384, 0x0D: crypto.SHA512,
	0x27: crypto.SHA3_256, 0x28: crypto.SHA3_384, 0x29: crypto.SHA3_512,
}

// decodeRecord decodes the record at the start of b into r and returns its
// length. It accepts exactly what go-eventlog's decoder accepts, and checks
// what that leaves unchecked (no bank twice, digest sizes, register index,
// attestd content). r.Data and r.Digests alias b; r.Digests is reused if
// r already has a map.
func decodeRecord(b []byte, r *Record) (int, error) {
	size, err := scanRecord(b)
	if err != nil {
		return 0, err
	}
	var f [celFieldsCount]cel.TLV
	for i, off := 0, 0; i < celFieldsCount; i++ {
		f[i].Type, f[i].Value, _ = scanTLV(b[off:])
		off += tlvHeader + len(f[i].Value)
	}
	digests := r.Digests
	*r = Record{ContentType: f[3].Type}
	if f[0].Type != celRecnumType || len(f[0].Value) != 8 {
		return 0, fmt.Errorf("field 1 (type %d, %d bytes) is not a recnum", f[0].Type, len(f[0].Value))
	}
	r.Seq = binary.BigEndian.Uint64(f[0].Value)
	if len(f[1].Value) != 1 {
		return 0, fmt.Errorf("register index field is %d bytes, want 1", len(f[1].Value))
	}
	idx := int(f[1].Value[0])
	switch f[1].Type {
	case celPCRType:
		r.Kind, r.Index = PCR, idx
	case celCCMRType:
		if idx < ccmrIndexShift {
			return 0, fmt.Errorf("CC measurement register index %d (MRTD) cannot be extended", idx)
		}
		r.Kind, r.Index = RTMR, idx-ccmrIndexShift
	default:
		return 0, fmt.Errorf("unknown register type %d", f[1].Type)
	}
	if _, _, err := celIndex(r.Kind, r.Index); err != nil {
		return 0, err
	}
	if err := decodeDigests(f[2].Value, r, digests); err != nil {
		return 0, err
	}
	if f[3].Type != ContentType {
		r.Data = f[3].Value
		return size, nil
	}
	typ, val, err := scanTLV(f[3].Value)
	if err != nil || tlvHeader+len(val) != len(f[3].Value) {
		return 0, errors.New("attestd content is not exactly one TLV")
	}
	if typ == 0 {
		return 0, errors.New("attestd event type 0 is invalid")
	}
	r.Type, r.Data = EventType(typ), val
	return size, nil
}

// decodeDigests reads the digest entries b (framing checked by scanDigests)
// into r.Digests, reusing m if it is not nil.
func decodeDigests(b []byte, r *Record, m map[crypto.Hash][]byte) error {
	if len(b) == 0 {
		return errors.New("record has no digests")
	}
	if m == nil {
		n := 0
		for rest := b; len(rest) > 0; n++ {
			_, val, _ := scanTLV(rest)
			rest = rest[tlvHeader+len(val):]
		}
		m = make(map[crypto.Hash][]byte, n)
	} else {
		clear(m)
	}
	for len(b) > 0 {
		typ, d, _ := scanTLV(b)
		b = b[tlvHeader+len(d):]
		h, ok := celBanks[typ]
		if !ok || !h.Available() {
			return fmt.Errorf("digests: hash algorithm 0x%x not supported", typ)
		}
		if len(d) != h.Size() {
			return fmt.Errorf("%v digest is %d bytes, want %d", h, len(d), h.Size())
		}
		m[h] = d
	}
	r.Digests = m
	return nil
}

// celIndex returns the register type and index byte written in the CEL.
func celIndex(kind RegisterKind, index int) (cel.MRType, uint8, error) {
	switch kind {
	case PCR:
		if index < 0 || index > 23 {
			return 0, 0, fmt.Errorf("PCR index %d out of range 0-23", index)
		}
		return cel.PCRType, uint8(index), nil
	case RTMR:
		if index < 0 || index > 3 {
			return 0, 0, fmt.Errorf("RTMR index %d out of range 0-3", index)
		}
		return cel.CCMRType, uint8(index + ccmrIndexShift), nil
	}
	return 0, 0, fmt.Errorf("unknown register kind %q", kind)
}

// encodeRecord returns the CEL-TLV encoding of r.
func encodeRecord(r Record) ([]byte, error) {
	typ, idx, err := celIndex(r.Kind, r.Index)
	if err != nil {
		return nil, err
	}
	content := cel.TLV{Type: r.ContentType, Value: r.Data}
	if r.Type != 0 {
		if content, err = (Event{Type: r.Type, Data: r.Data}).TLV(); err != nil {
			return nil, err
		}
	}
	c := cel.Record{RecNum: r.Seq, Index: idx, IndexType: typ, Digests: r.Digests, Content: content}
	var buf bytes.Buffer
	if err := c.EncodeCELR(&buf); err != nil {
		return nil, fmt.Errorf("encode CEL record: %w", err)
	}
	return buf.Bytes(), nil
}
