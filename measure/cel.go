package measure

import (
	"bytes"
	"crypto"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"

	"github.com/google/go-eventlog/cel"
)

// MaxLogSize bounds the CEL encoding ParseCEL accepts and the Log writes.
const MaxLogSize = 4 << 20

// RegisterKind is the kind of register a Log extends.
type RegisterKind string

// Register kinds. An RTMR index is the RTMR's own number (RTMR3 is 3); in the
// CEL it is written as the CC measurement register index, 3+1, as the UEFI
// CC event log and go-eventlog's register.RTMR do.
const (
	PCR  RegisterKind = "PCR"
	RTMR RegisterKind = "RTMR"
)

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
	Kind        string // "PCR" or "RTMR"
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
// bytes, every length checked against what remains before the library
// allocates) and never panics. It checks structure only: use Replay to check
// digests against content and register.
func ParseCEL(b []byte) ([]Record, error) {
	if len(b) > MaxLogSize {
		return nil, fmt.Errorf("parse CEL: %d bytes: %w", len(b), ErrLogTooLarge)
	}
	var recs []Record
	for off := 0; off < len(b); {
		n, err := scanRecord(b[off:])
		if err != nil {
			return nil, &ParseError{Offset: off, Record: len(recs), Err: err}
		}
		r, err := decodeRecord(b[off : off+n])
		if err != nil {
			return nil, &ParseError{Offset: off, Record: len(recs), Err: err}
		}
		recs = append(recs, r)
		off += n
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
	return b[0], b[tlvHeader : tlvHeader+int(n)], nil
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

// decodeRecord decodes one framed record with the library and checks what
// it leaves unchecked (digest sizes, register index).
func decodeRecord(b []byte) (Record, error) {
	log, err := cel.DecodeToCEL(bytes.NewBuffer(b))
	if err != nil {
		return Record{}, err
	}
	cr := log.Records()
	if len(cr) != 1 {
		return Record{}, fmt.Errorf("decoded %d records, want 1", len(cr))
	}
	c := cr[0]
	r := Record{Seq: c.RecNum, Index: int(c.Index), ContentType: c.Content.Type}
	switch c.IndexType {
	case cel.PCRType:
		r.Kind = string(PCR)
	case cel.CCMRType:
		if c.Index < ccmrIndexShift {
			return Record{}, fmt.Errorf("CC measurement register index %d (MRTD) cannot be extended", c.Index)
		}
		r.Kind, r.Index = string(RTMR), int(c.Index)-ccmrIndexShift
	default:
		return Record{}, fmt.Errorf("unknown register type %d", c.IndexType)
	}
	if _, _, err := celIndex(RegisterKind(r.Kind), r.Index); err != nil {
		return Record{}, err
	}
	if len(c.Digests) == 0 {
		return Record{}, errors.New("record has no digests")
	}
	r.Digests = make(map[crypto.Hash][]byte, len(c.Digests))
	for h, d := range c.Digests {
		if len(d) != h.Size() {
			return Record{}, fmt.Errorf("%v digest is %d bytes, want %d", h, len(d), h.Size())
		}
		r.Digests[h] = bytes.Clone(d)
	}
	if c.Content.Type != ContentType {
		r.Data = bytes.Clone(c.Content.Value)
		return r, nil
	}
	typ, val, err := scanTLV(c.Content.Value)
	if err != nil || tlvHeader+len(val) != len(c.Content.Value) {
		return Record{}, errors.New("attestd content is not exactly one TLV")
	}
	if typ == 0 {
		return Record{}, errors.New("attestd event type 0 is invalid")
	}
	r.Type, r.Data = EventType(typ), bytes.Clone(val)
	return r, nil
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
	typ, idx, err := celIndex(RegisterKind(r.Kind), r.Index)
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

func cloneRecord(r Record) Record {
	r.Digests = maps.Clone(r.Digests)
	for h, d := range r.Digests {
		r.Digests[h] = bytes.Clone(d)
	}
	r.Data = bytes.Clone(r.Data)
	return r
}
