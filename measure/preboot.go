package measure

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
)

// Preboot events: what another component extended into the agent's
// register before attestd started, recorded so that the register stays
// explained. systemd-stub measures the system extension images of a UKI
// (<uki>.extra.d/*.raw) into PCR 13, attestd's default register, before the
// kernel starts; see docs/measure-events.md.

// PrebootSourceTCG is Preboot.Source for an event copied from the TCG PC
// Client firmware event log (/sys/kernel/security/tpm0/binary_bios_measurements).
const PrebootSourceTCG = "tcg-pc-client-log"

// MaxPrebootEvents bounds the preboot events attestd records: a firmware log
// with more events on the agent's register is refused.
const MaxPrebootEvents = 64

// maxPrebootText is the longest event data shown as text in a Preboot; longer
// data is recorded by its digest only.
const maxPrebootText = 1024

// Errors callers branch on.
var (
	// ErrPrebootPosition: a preboot record after a record of attestd's own.
	// Its digest cannot be checked against its content, so it is accepted
	// only where it can only be what the register held before attestd ran.
	ErrPrebootPosition = errors.New("measure: preboot event after attestd's own events (its digest cannot be checked against its content)")
	// ErrPrebootUnexplained: the firmware event log does not explain the
	// register's value (no events on it, a replay to another value, or a
	// bank it lacks).
	ErrPrebootUnexplained = errors.New("measure: the firmware event log does not explain the register")
)

// Preboot is the data of EventPreboot: one event of the firmware's event
// log, as far as it is text. The register proves only the record's digests
// (the firmware log's), not this description.
type Preboot struct {
	Source         string  `json:"source"`                // PrebootSourceTCG
	EventType      string  `json:"eventType"`             // the TCG event type, e.g. "EV_IPL"
	EventTypeValue uint32  `json:"eventTypeValue"`        // its number, e.g. 13
	Tag            *uint32 `json:"tag,omitempty"`         // EV_EVENT_TAG: the tagged event's ID
	Description    string  `json:"description,omitempty"` // the event data (the tagged event's data) when it is text: UTF-8, or UTF-16LE as EFI components write it, without trailing NULs
	DataSHA256     string  `json:"dataSha256,omitempty"`  // otherwise: SHA-256 of the event data
}

// PrebootEvent returns the preboot event with data p.
func PrebootEvent(p Preboot) (Event, error) { return jsonEvent(EventPreboot, p) }

// PrebootMeasurement is a preboot event with the digests the register was
// extended with, one per bank.
type PrebootMeasurement struct {
	Event   Event
	Digests map[crypto.Hash][]byte
}

// PrebootFromTCGLog returns the events of the firmware event log raw (TCG PC
// Client format, crypto-agile or SHA-1) that were extended into reg, in
// order, if replaying them from zero gives exactly current in every one of
// its banks. Otherwise the error wraps ErrPrebootUnexplained (or is a parse
// error) and says what was found. reg must be a PCR.
func PrebootFromTCGLog(raw []byte, reg Register, current map[crypto.Hash][]byte) ([]PrebootMeasurement, error) {
	if reg.Kind != PCR {
		return nil, fmt.Errorf("%w: %s is not a PCR, and the TCG firmware log records PCRs only", ErrPrebootUnexplained, reg)
	}
	if len(current) == 0 {
		return nil, errors.New("firmware event log: no register banks given")
	}
	if len(raw) > MaxLogSize {
		return nil, fmt.Errorf("firmware event log: %d bytes: %w", len(raw), ErrLogTooLarge)
	}
	el, err := tcg.ParseEventLog(raw, tcg.ParseOpts{AllowPadding: true})
	if err != nil {
		return nil, fmt.Errorf("parse firmware event log: %w", err)
	}
	var out []PrebootMeasurement
	for bi, h := range slices.Sorted(maps.Keys(current)) {
		alg, ok := tcgHash(h)
		if !ok || !slices.Contains(el.Algs, alg) {
			return nil, fmt.Errorf("%w: it has no %v digests, and %s has a %v bank", ErrPrebootUnexplained, h, reg, h)
		}
		mr := make([]byte, h.Size())
		j := 0
		for _, e := range el.Events(alg) {
			if e.Index != reg.Index || e.Type == tcg.NoAction {
				continue
			}
			if len(e.Digest) != h.Size() {
				return nil, fmt.Errorf("%w: its event %d (%s) on %s has no %v digest", ErrPrebootUnexplained, j, e.Type.TCGString(), reg, h)
			}
			if j >= MaxPrebootEvents {
				return nil, fmt.Errorf("%w: more than %d events on %s", ErrPrebootUnexplained, MaxPrebootEvents, reg)
			}
			if bi == 0 {
				ev, err := PrebootEvent(prebootOf(e.Type, e.Data))
				if err != nil {
					return nil, err
				}
				out = append(out, PrebootMeasurement{Event: ev, Digests: map[crypto.Hash][]byte{}})
			}
			out[j].Digests[h] = bytes.Clone(e.Digest)
			mr = ExtendAll(h, mr, [][]byte{e.Digest})
			j++
		}
		if j == 0 {
			return nil, fmt.Errorf("%w: it has no events on %s", ErrPrebootUnexplained, reg)
		}
		if want := current[h]; !bytes.Equal(mr, want) {
			return nil, fmt.Errorf("%w: its %d event(s) on %s (%s) replay to %x in %v, the register is %x",
				ErrPrebootUnexplained, j, reg, describePreboot(out), mr, h, want)
		}
	}
	return out, nil
}

// describePreboot names events for an error: "EV_IPL \"System extension initrd\", …".
func describePreboot(ms []PrebootMeasurement) string {
	var b []byte
	for i, m := range ms {
		if i > 0 {
			b = append(b, ", "...)
		}
		var p Preboot
		if DecodeEventData(m.Event.Data, &p) != nil {
			b = append(b, "?"...)
			continue
		}
		b = append(b, p.EventType...)
		if p.Description != "" {
			b = fmt.Appendf(b, " %q", p.Description)
		}
	}
	return string(b)
}

// tcgHash maps a bank to go-eventlog's name for it.
func tcgHash(h crypto.Hash) (register.HashAlg, bool) {
	for _, a := range []register.HashAlg{register.HashSHA1, register.HashSHA256, register.HashSHA384} {
		if a.CryptoHash() == h {
			return a, true
		}
	}
	return 0, false
}

// prebootOf describes a firmware log event of type typ with data d.
func prebootOf(typ tcg.EventType, d []byte) Preboot {
	p := Preboot{Source: PrebootSourceTCG, EventType: typ.TCGString(), EventTypeValue: uint32(typ)}
	if typ == tcg.EventTag {
		if t, err := tcg.ParseTaggedEventData(d); err == nil {
			id := t.ID
			p.Tag = &id
			d = t.Data
		}
	}
	if s, ok := prebootText(d); ok {
		p.Description = s
	} else {
		sum := sha256.Sum256(d)
		p.DataSHA256 = hex.EncodeToString(sum[:])
	}
	return p
}

// prebootText returns d as text if it is printable UTF-8 or UTF-16LE (EFI's
// CHAR16 strings, as systemd-stub writes its descriptions), without its
// trailing NULs. UTF-8 is tried first: UTF-16LE text of ASCII characters
// holds NUL bytes, which are not printable, so it is never taken for UTF-8.
func prebootText(d []byte) (string, bool) {
	if len(d) == 0 || len(d) > maxPrebootText {
		return "", false
	}
	if t := bytes.TrimRight(d, "\x00"); utf8.Valid(t) && prebootPrintable(string(t)) {
		return string(t), true
	}
	if len(d)%2 != 0 {
		return "", false
	}
	u := make([]uint16, len(d)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(d[2*i:])
	}
	for len(u) > 0 && u[len(u)-1] == 0 {
		u = u[:len(u)-1]
	}
	s := string(utf16.Decode(u))
	if !prebootPrintable(s) {
		return "", false
	}
	return s, true
}

func prebootPrintable(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// RecordPreboot appends m to the log without extending the register: the
// register already holds it (the firmware log says so, and the caller
// checked the firmware log replays to the register: PrebootFromTCGLog). It
// is refused once the log holds a record of attestd's own (ErrPrebootPosition),
// and m must carry a digest of the right size for every bank, which become
// the record's digests.
func (l *Log) RecordPreboot(m PrebootMeasurement) (Record, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return Record{}, fmt.Errorf("record preboot event: %w", ErrLogClosed)
	case l.broken != nil:
		return Record{}, fmt.Errorf("record preboot event: %w", l.broken)
	case m.Event.Type != EventPreboot:
		return Record{}, fmt.Errorf("record preboot event: a %s event is not one", m.Event.Type)
	case l.own:
		return Record{}, fmt.Errorf("record preboot event: %w", ErrPrebootPosition)
	case len(m.Digests) == 0:
		return Record{}, errors.New("record preboot event: no digests")
	}
	digests := make(map[crypto.Hash][]byte, len(m.Digests))
	for h, d := range m.Digests {
		if !h.Available() || len(d) != h.Size() {
			return Record{}, fmt.Errorf("record preboot event: %v digest of %d bytes", h, len(d))
		}
		digests[h] = bytes.Clone(d)
	}
	r := Record{
		Seq: uint64(l.n), Index: l.cfg.Index, Kind: l.cfg.Kind,
		Digests: digests, ContentType: ContentType, Type: EventPreboot, Data: bytes.Clone(m.Event.Data),
	}
	b, err := encodeRecord(r)
	if err != nil {
		return Record{}, fmt.Errorf("record preboot event: %w", err)
	}
	if size := len(l.buf) + len(b); size > MaxLogSize {
		return Record{}, fmt.Errorf("record preboot event: %w", ErrLogFull)
	}
	if err := l.append(b); err != nil {
		return Record{}, fmt.Errorf("record preboot event: %w: write %s: %w", ErrLogWrite, l.cfg.Path, err)
	}
	l.keep(b)
	l.n++
	l.preboot++
	return r, nil
}

// Preboot is the number of preboot records, which are the first records of
// the log.
func (l *Log) Preboot() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.preboot
}

// PredictWithPreboot is PredictRegister for a log that starts with the
// preboot events pre: their digests in bank h (the firmware log's, as
// SysextPreboot predicts them), then the digests of events.
func PredictWithPreboot(h crypto.Hash, pre []PrebootMeasurement, events []Event) ([]byte, error) {
	if !h.Available() {
		return nil, fmt.Errorf("predict register: hash %v not available", h)
	}
	digests := make([][]byte, 0, len(pre)+len(events))
	for i, m := range pre {
		d, ok := m.Digests[h]
		if !ok || len(d) != h.Size() {
			return nil, fmt.Errorf("predict register: preboot event %d has no %v digest", i, h)
		}
		digests = append(digests, d)
	}
	for _, e := range events {
		d, err := e.GenerateDigest(h)
		if err != nil {
			return nil, fmt.Errorf("predict register: %w", err)
		}
		digests = append(digests, d)
	}
	return ExtendAll(h, make([]byte, h.Size()), digests), nil
}
