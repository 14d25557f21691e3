package measure

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// Errors callers branch on.
var (
	// ErrFrozen: a launch event (or a second separator) after the separator.
	ErrFrozen = errors.New("measure: launch measurements are frozen")
	// ErrLogAhead: an event was written to the log but extending the register
	// failed, so the log holds an event the register lacks. Replay against
	// the register fails from then on; the Log refuses further events.
	ErrLogAhead = errors.New("measure: event log holds an event the register lacks")
	// ErrLogFull: the record would take the log past MaxLogSize.
	ErrLogFull = errors.New("measure: event log full")
	// ErrLogWrite: the record could not be written to the log file (a
	// full disk, an I/O error); nothing was extended.
	ErrLogWrite = errors.New("measure: event log not writable")
)

// Extender extends the agent's register, one digest per bank. It is
// implemented by the evidence backend.
type Extender interface {
	// Banks lists the hash algorithms Extend expects a digest for.
	Banks() []crypto.Hash
	// Extend extends the register with one digest per bank.
	Extend(ctx context.Context, digests map[crypto.Hash][]byte) error
}

// LogConfig configures a Log.
type LogConfig struct {
	Path  string       // the CEL file, e.g. /run/attestd/events.cel
	Kind  RegisterKind // PCR or RTMR
	Index int          // the register's number: PCR 13, RTMR 3; PCR 16 and 23 are refused (resettable)
	// RepairTail cuts off a partial record at the end of the file (a crash
	// while writing it) instead of refusing the file. That is safe because
	// Record extends the register only after the whole record is synced:
	// a partial record never reached the register. Log.Dropped reports it.
	RepairTail bool
}

// Log is the agent's event log, kept as a CEL file. Each event is written
// and synced to the file before the register is extended (see Record). It is
// safe for concurrent use. A Log holds no open file, so it needs no Close.
type Log struct {
	mu      sync.Mutex
	cfg     LogConfig
	buf     []byte // the file's contents
	recs    []Record
	frozen  bool
	broken  error // set when log and file or register may disagree
	dropped int   // bytes of a partial last record cut off by OpenLog
}

// OpenLog loads the log at cfg.Path, creating an empty one if there is none.
// An existing file must parse and every record must be for the configured
// register, in sequence, with digests that match its content. A file that
// ends inside a record (a crash mid-write) is an error wrapping a
// *ParseError (with the offset) and ErrTruncated.
//
// OpenLog does not look at the register: the caller compares it with the
// log (CheckReplay) and, on a new boot (register back at zero), calls Reset.
func OpenLog(cfg LogConfig) (*Log, error) {
	if cfg.Path == "" {
		return nil, errors.New("open event log: no path")
	}
	if _, _, err := celIndex(cfg.Kind, cfg.Index); err != nil {
		return nil, fmt.Errorf("open event log: %w", err)
	}
	if cfg.Kind == PCR && (cfg.Index == 16 || cfg.Index == 23) {
		return nil, fmt.Errorf("open event log: PCR%d is resettable and cannot hold evidence", cfg.Index)
	}
	l := &Log{cfg: cfg}
	b, err := readLog(cfg.Path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := l.create(); err != nil {
			return nil, fmt.Errorf("open event log: %w", err)
		}
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open event log: %w", err)
	}
	recs, err := ParseCEL(b)
	var pe *ParseError
	if err != nil && cfg.RepairTail && errors.As(err, &pe) && errors.Is(err, ErrTruncated) {
		if recs, err = ParseCEL(b[:pe.Offset]); err == nil {
			if err = cutTail(cfg.Path, pe.Offset); err == nil {
				l.dropped = len(b) - pe.Offset
				b = b[:pe.Offset]
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("load event log %s: %w", cfg.Path, err)
	}
	if err := checkLoaded(recs, cfg); err != nil {
		return nil, fmt.Errorf("load event log %s: %w", cfg.Path, err)
	}
	l.buf, l.recs = b, recs
	for _, r := range recs {
		if r.Type == EventSeparator {
			l.frozen = true
		}
	}
	return l, nil
}

func readLog(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxLogSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > MaxLogSize {
		return nil, fmt.Errorf("read %s: %w", path, ErrLogTooLarge)
	}
	return b, nil
}

// checkLoaded checks a loaded log is one the Log could have written: every
// record replays (register, sequence, content digest) in every bank the
// first record has, and all records have the same banks.
func checkLoaded(recs []Record, cfg LogConfig) error {
	if len(recs) == 0 {
		return nil
	}
	for h := range recs[0].Digests {
		if _, err := Replay(recs, h, string(cfg.Kind), cfg.Index); err != nil {
			return err
		}
	}
	for i, r := range recs {
		if len(r.Digests) != len(recs[0].Digests) {
			return &ReplayError{Record: i, Seq: r.Seq, Reason: "record has other banks than record 0"}
		}
	}
	return nil
}

// cutTail truncates the file at path to n bytes, durably.
func cutTail(path string, n int) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if err := f.Truncate(int64(n)); err != nil {
		f.Close()
		return fmt.Errorf("cut partial record: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("cut partial record: %w", err)
	}
	return f.Close()
}

// Dropped is the number of bytes of a partial last record that OpenLog cut
// off (LogConfig.RepairTail); 0 if there was none.
func (l *Log) Dropped() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}

// create makes an empty log file, durably.
func (l *Log) create() error {
	f, err := os.OpenFile(l.cfg.Path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return syncDir(filepath.Dir(l.cfg.Path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// Record measures e: it computes a digest for each of ext.Banks(), appends
// the CEL record to the file and syncs it, and only then extends the
// register. If the write fails nothing is extended and the file is cut back.
// If Extend fails the log holds an event the register lacks: the error wraps
// ErrLogAhead and the Log refuses further events.
//
// After a separator, launch events (binary, config, image, executor) and
// further separators are refused with ErrFrozen; restart and build
// lifecycle events are allowed.
func (l *Log) Record(ctx context.Context, ext Extender, e Event) error {
	_, err := l.RecordWithin(ctx, ext, e, MaxLogSize)
	return err
}

// RecordWithin is Record with a caller's bound on the log: a record that
// would take the file past limit bytes (or MaxLogSize) is refused with
// ErrLogFull before anything is written. It returns the record made.
func (l *Log) RecordWithin(ctx context.Context, ext Extender, e Event, limit int) (Record, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken != nil {
		return Record{}, fmt.Errorf("record %s event: %w", e.Type, l.broken)
	}
	if e.Type == 0 {
		return Record{}, errors.New("record event: event type 0 is invalid")
	}
	if l.frozen && (e.Type.launch() || e.Type == EventSeparator) {
		return Record{}, fmt.Errorf("record %s event: %w", e.Type, ErrFrozen)
	}
	if err := ctx.Err(); err != nil {
		return Record{}, fmt.Errorf("record %s event: %w", e.Type, err)
	}
	banks := ext.Banks()
	if len(banks) == 0 {
		return Record{}, fmt.Errorf("record %s event: extender has no banks", e.Type)
	}
	digests := make(map[crypto.Hash][]byte, len(banks))
	for _, h := range banks {
		d, err := e.GenerateDigest(h)
		if err != nil {
			return Record{}, fmt.Errorf("record %s event: %w", e.Type, err)
		}
		digests[h] = d
	}
	r := Record{
		Seq: uint64(len(l.recs)), Index: l.cfg.Index, Kind: string(l.cfg.Kind),
		Digests: digests, ContentType: ContentType, Type: e.Type, Data: bytes.Clone(e.Data),
	}
	b, err := encodeRecord(r)
	if err != nil {
		return Record{}, fmt.Errorf("record %s event: %w", e.Type, err)
	}
	if size := len(l.buf) + len(b); size > min(limit, MaxLogSize) {
		return Record{}, fmt.Errorf("record %s event: %w: the log would reach %d bytes, %d allowed", e.Type, ErrLogFull, size, min(limit, MaxLogSize))
	}
	if err := l.append(b); err != nil {
		return Record{}, fmt.Errorf("record %s event: %w: write %s (nothing recorded, register not extended): %w", e.Type, ErrLogWrite, l.cfg.Path, err)
	}
	l.buf = append(l.buf, b...)
	l.recs = append(l.recs, r)
	if e.Type == EventSeparator {
		l.frozen = true
	}
	if err := ext.Extend(ctx, cloneRecord(r).Digests); err != nil {
		reg := fmt.Sprintf("%s%d", l.cfg.Kind, l.cfg.Index)
		l.broken = fmt.Errorf("%w: record %d (%s) is in %s but extending %s failed", ErrLogAhead, r.Seq, e.Type, l.cfg.Path, reg)
		return Record{}, fmt.Errorf("record %s event: extend %s: %w: %w", e.Type, reg, ErrLogAhead, err)
	}
	return cloneRecord(r), nil
}

// append writes b at the end of the file and syncs it. On failure it cuts
// the file back to its previous length; if that fails too the Log is broken.
func (l *Log) append(b []byte) error {
	f, err := os.OpenFile(l.cfg.Path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err // not created here: a missing file must not restart the log
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	if fi.Size() != int64(len(l.buf)) {
		f.Close()
		l.broken = fmt.Errorf("event log %s changed underneath: %d bytes, want %d", l.cfg.Path, fi.Size(), len(l.buf))
		return l.broken
	}
	_, werr := f.Write(b)
	if werr == nil {
		werr = f.Sync()
	}
	if werr != nil {
		if terr := f.Truncate(int64(len(l.buf))); terr != nil {
			l.broken = fmt.Errorf("event log %s may end in a partial record: %w", l.cfg.Path, terr)
		}
		f.Close()
		return werr
	}
	return f.Close()
}

// Reset sets the current file aside as Path+".stale" (replacing an older
// one) and starts an empty log. Use it when the register was reset (a new
// boot: the register reads all zeros) so the old log describes nothing. It
// does not touch the register.
func (l *Log) Reset() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := os.Rename(l.cfg.Path, l.cfg.Path+".stale"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("set aside event log: %w", err)
	}
	if err := l.create(); err != nil {
		return fmt.Errorf("reset event log: %w", err)
	}
	l.buf, l.recs, l.frozen, l.broken = nil, nil, false, nil
	return nil
}

// Bytes returns the CEL-TLV encoding of all records, as in the file: what
// the verifier gets.
func (l *Log) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.buf)
}

// Records returns the decoded records.
func (l *Log) Records() []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Record, len(l.recs))
	for i, r := range l.recs {
		out[i] = cloneRecord(r)
	}
	return out
}

// Len is the number of records.
func (l *Log) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recs)
}

// Frozen reports whether the separator has been recorded.
func (l *Log) Frozen() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.frozen
}
