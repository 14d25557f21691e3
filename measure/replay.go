package measure

import (
	"bytes"
	"cmp"
	"crypto"
	"fmt"
	"hash"
	"slices"
)

// ReplayError says why a record cannot be replayed (wrong register, out of
// sequence, no digest for the bank, content that is not attestd's).
type ReplayError struct {
	Record int    // position in the log, from 0
	Seq    uint64 // the record's CEL recnum
	Reason string
	Err    error // a sentinel the reason stands for (ErrPrebootPosition), or nil
}

func (e *ReplayError) Error() string {
	return fmt.Sprintf("replay record %d (seq %d): %s", e.Record, e.Seq, e.Reason)
}

func (e *ReplayError) Unwrap() error { return e.Err }

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
// content. The one exception are preboot records (EventPreboot), whose
// digest is the firmware log's: they are accepted only before every other
// record (ErrPrebootPosition otherwise), and only their digests, not their
// content, are proven by the register. Only then are the records' Type and Data worth trusting, and only
// if the result is compared with an authenticated register value (CheckReplay).
func Replay(recs []Record, bank crypto.Hash, kind RegisterKind, index int) ([]byte, error) {
	p, err := NewReplayer(bank, kind, index)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if err := p.Add(r); err != nil {
			return nil, err
		}
	}
	return p.mr, nil
}

// Replayer replays a log one record at a time with the checks of Replay, so
// that the register's value after every prefix of a log costs one pass over
// it. Use it (or ReplayPrefixes) to check several attestations that quote
// prefixes of one log. Not safe for concurrent use.
type Replayer struct {
	bank  crypto.Hash
	kind  RegisterKind
	index int
	n     int    // records added
	mr    []byte // the register after them
	h     hash.Hash
	sum   []byte // scratch for the computed digest
	own   bool   // a record other than a preboot one was added
	err   error  // the first Add error; the Replayer is spent after it
}

// NewReplayer starts a replay of register (kind, index) in bank at zero.
func NewReplayer(bank crypto.Hash, kind RegisterKind, index int) (*Replayer, error) {
	if !bank.Available() {
		return nil, fmt.Errorf("replay: hash %v not available", bank)
	}
	if _, _, err := celIndex(kind, index); err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	return &Replayer{bank: bank, kind: kind, index: index, mr: make([]byte, bank.Size()),
		h: bank.New(), sum: make([]byte, 0, bank.Size())}, nil
}

// Add checks that r is the next record of the log (register, sequence,
// attestd content, bank digest equal to its content's digest; errors as for
// Replay) and extends the value with its digest. After an error the value
// is that of the records before r and every further Add returns the error.
func (p *Replayer) Add(r Record) error {
	if p.err != nil {
		return p.err
	}
	p.err = p.add(r)
	return p.err
}

func (p *Replayer) add(r Record) error {
	i := p.n
	fail := func(format string, a ...any) error {
		return &ReplayError{Record: i, Seq: r.Seq, Reason: fmt.Sprintf(format, a...)}
	}
	switch {
	case r.Kind != p.kind || r.Index != p.index:
		return fail("record is for %s%d, not %s%d", r.Kind, r.Index, p.kind, p.index)
	case r.Seq != uint64(i):
		return fail("out of sequence: want seq %d", i)
	case r.Type == 0:
		return fail("content type 0x%x is not attestd's (0x%x): digest cannot be checked", r.ContentType, ContentType)
	}
	logged, ok := r.Digests[p.bank]
	if !ok {
		return fail("no %v digest", p.bank)
	}
	if r.Type == EventPreboot {
		// Its digest is the firmware log's, which nothing here can check
		// against its content: only what the register held before attestd
		// started may be such a record.
		if p.own {
			return &ReplayError{Record: i, Seq: r.Seq, Reason: ErrPrebootPosition.Error(), Err: ErrPrebootPosition}
		}
		p.extend(logged)
		return nil
	}
	computed, err := Event{Type: r.Type, Data: r.Data}.appendDigest(p.sum[:0], p.h)
	if err != nil {
		return fail("%v", err)
	}
	if !bytes.Equal(logged, computed) {
		return &DigestError{Record: i, Seq: r.Seq, Type: r.Type, Bank: p.bank,
			Logged: bytes.Clone(logged), Computed: bytes.Clone(computed)}
	}
	p.own = true
	p.extend(logged)
	return nil
}

// extend extends the value with the digest d of the next record.
func (p *Replayer) extend(d []byte) {
	p.h.Reset()
	p.h.Write(p.mr)
	p.h.Write(d)
	p.mr = p.h.Sum(p.mr[:0])
	p.n++
}

// Value returns the register's value after the records added so far.
func (p *Replayer) Value() []byte { return bytes.Clone(p.mr) }

// Len returns the number of records added so far.
func (p *Replayer) Len() int { return p.n }

// ReplayPrefixes returns, for each count in counts, the value Replay gives
// for recs[:count], in one pass over recs[:max(counts)]: a verifier checking
// k attestations that quote prefixes of one log does O(n) work, not O(n·k).
// Counts may come in any order and repeat; each must be in [0, len(recs)].
// Records after the largest count are not checked.
func ReplayPrefixes(recs []Record, bank crypto.Hash, kind RegisterKind, index int, counts []int) ([][]byte, error) {
	p, err := NewReplayer(bank, kind, index)
	if err != nil {
		return nil, err
	}
	order := make([]int, len(counts))
	for i, c := range counts {
		if c < 0 || c > len(recs) {
			return nil, fmt.Errorf("replay prefixes: count %d out of range 0-%d", c, len(recs))
		}
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(counts[a], counts[b]) })
	out := make([][]byte, len(counts))
	for _, i := range order {
		for p.Len() < counts[i] {
			if err := p.Add(recs[p.Len()]); err != nil {
				return nil, err
			}
		}
		out[i] = p.Value()
	}
	return out, nil
}

// CheckReplay replays recs (see Replay) and compares the result with want,
// the register's value, which the caller must have authenticated (a quote).
// A difference is a *ReplayMismatchError.
func CheckReplay(recs []Record, bank crypto.Hash, kind RegisterKind, index int, want []byte) error {
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
