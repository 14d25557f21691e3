package measure

import (
	"bytes"
	"crypto"
	"fmt"
)

// ReplayError says why a record cannot be replayed (wrong register, out of
// sequence, no digest for the bank, content that is not attestd's).
type ReplayError struct {
	Record int    // position in the log, from 0
	Seq    uint64 // the record's CEL recnum
	Reason string
}

func (e *ReplayError) Error() string {
	return fmt.Sprintf("replay record %d (seq %d): %s", e.Record, e.Seq, e.Reason)
}

// DigestError says a record's logged digest is not the digest of its content:
// the event body was changed after it was measured.
type DigestError struct {
	Record   int
	Seq      uint64
	Type     EventType
	Bank     crypto.Hash
	Logged   []byte
	Computed []byte
}

func (e *DigestError) Error() string {
	return fmt.Sprintf("replay record %d (seq %d, %s): logged %v digest %x is not the content's digest %x",
		e.Record, e.Seq, e.Type, e.Bank, e.Logged, e.Computed)
}

// ReplayMismatchError says the log replays to a value other than the
// register's.
type ReplayMismatchError struct {
	Register string // e.g. "PCR13"
	Bank     crypto.Hash
	Want     []byte // the register
	Got      []byte // the replayed log
}

func (e *ReplayMismatchError) Error() string {
	return fmt.Sprintf("%s %v: register is %x but the event log replays to %x", e.Register, e.Bank, e.Want, e.Got)
}

// Replay returns the value the register (kind, index) in bank holds if it
// started at zero and was extended with exactly recs, in order.
//
// It is strict, because an attestd log belongs to one register: every record
// must be for (kind, index), carry Seq equal to its position, be attestd
// content, and have a bank digest equal to the digest recomputed from its
// content. Only then are the records' Type and Data worth trusting, and only
// if the result is compared with an authenticated register value (CheckReplay).
func Replay(recs []Record, bank crypto.Hash, kind string, index int) ([]byte, error) {
	if !bank.Available() {
		return nil, fmt.Errorf("replay: hash %v not available", bank)
	}
	if _, _, err := celIndex(RegisterKind(kind), index); err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	mr := make([]byte, bank.Size())
	for i, r := range recs {
		fail := func(format string, a ...any) error {
			return &ReplayError{Record: i, Seq: r.Seq, Reason: fmt.Sprintf(format, a...)}
		}
		switch {
		case r.Kind != kind || r.Index != index:
			return nil, fail("record is for %s%d, not %s%d", r.Kind, r.Index, kind, index)
		case r.Seq != uint64(i):
			return nil, fail("out of sequence: want seq %d", i)
		case r.Type == 0:
			return nil, fail("content type 0x%x is not attestd's (0x%x): digest cannot be checked", r.ContentType, ContentType)
		}
		logged, ok := r.Digests[bank]
		if !ok {
			return nil, fail("no %v digest", bank)
		}
		computed, err := Event{Type: r.Type, Data: r.Data}.GenerateDigest(bank)
		if err != nil {
			return nil, fail("%v", err)
		}
		if !bytes.Equal(logged, computed) {
			return nil, &DigestError{Record: i, Seq: r.Seq, Type: r.Type, Bank: bank,
				Logged: bytes.Clone(logged), Computed: computed}
		}
		h := bank.New()
		h.Write(mr)
		h.Write(logged)
		mr = h.Sum(mr[:0])
	}
	return mr, nil
}

// CheckReplay replays recs (see Replay) and compares the result with want,
// the register's value, which the caller must have authenticated (a quote).
// A difference is a *ReplayMismatchError.
func CheckReplay(recs []Record, bank crypto.Hash, kind string, index int, want []byte) error {
	got, err := Replay(recs, bank, kind, index)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return &ReplayMismatchError{Register: fmt.Sprintf("%s%d", kind, index), Bank: bank,
			Want: bytes.Clone(want), Got: got}
	}
	return nil
}
