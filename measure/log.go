package measure

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
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
	// ErrLogClosed: the Log was closed.
	ErrLogClosed = errors.New("measure: event log closed")
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
// safe for concurrent use.
//
// A Log keeps its file open for appending and the file's bytes in memory (to
// serve them); it does not keep decoded records. Recording an event costs
// the same whatever the log's length. Close releases the file; a Log that
// is dropped without Close holds the descriptor until it is collected.
type Log struct {
	mu  sync.Mutex
	cfg LogConfig
	// f is the log file, opened for appending; nil after Close or a Reset
	// that could not create the new file.
	f  *os.File
	id os.FileInfo // f's identity, for os.SameFile with the file at the path
	// buf is the file's contents. Records are only ever appended: bytes
	// below len(buf) never change, so View can hand out buf itself.
	buf     []byte
	sum     hash.Hash // SHA-256 of buf, kept up as records are appended; nil until Ref first asks
	n       int       // records in buf
	preboot int       // preboot records at the start of buf
	own     bool      // buf holds a record of attestd's own (not preboot): no preboot record may follow
	frozen  bool
	build   buildTracker
	broken  error // set when log and file or register may disagree
	closed  bool
	dropped int // bytes of a partial last record cut off by OpenLog
	// syncData makes an appended record durable; tests replace it.
	syncData func(*os.File) error
}

// OpenLog loads the log at cfg.Path, creating an empty one if there is none.
// An existing file must parse and every record must be for the configured
// register, in sequence, with digests that match its content. A file that
// ends inside a record (a crash mid-write) is an error wrapping a
// *ParseError (with the offset) and ErrTruncated.
//
// OpenLog does not look at the register: the caller compares it with the
// log (CheckReplay) and, on a new boot (register back at zero), calls Reset.
// The Log keeps the file open: Close it when done.
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
	l := &Log{cfg: cfg, syncData: syncData}
	f, err := os.OpenFile(cfg.Path, os.O_RDWR|os.O_APPEND, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if l.f, l.id, err = createLog(cfg.Path); err != nil {
			return nil, fmt.Errorf("open event log: %w", err)
		}
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open event log: %w", err)
	}
	if err := l.load(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("load event log %s: %w", cfg.Path, err)
	}
	l.f = f
	return l, nil
}

// load reads and checks the file f, cutting off a partial last record if
// cfg.RepairTail allows it.
func (l *Log) load(f *os.File) error {
	b, id, err := readLog(f)
	if err != nil {
		return err
	}
	l.id = id
	var pe *ParseError
	err = l.scan(b)
	if err != nil && l.cfg.RepairTail && errors.As(err, &pe) && errors.Is(err, ErrTruncated) {
		// scan stops at the first bad record, so everything before the
		// torn one was checked.
		if err = cutTail(f, pe.Offset); err == nil {
			l.dropped = len(b) - pe.Offset
			b = b[:pe.Offset]
		}
	}
	if err != nil {
		return err
	}
	l.buf = b
	return nil
}

// readLog reads the log file f and returns its contents and identity.
func readLog(f *os.File) ([]byte, os.FileInfo, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s is not a regular file", f.Name())
	}
	if fi.Size() > MaxLogSize {
		return nil, nil, fmt.Errorf("read %s: %d bytes: %w", f.Name(), fi.Size(), ErrLogTooLarge)
	}
	// Room for the file and some records after it: the first records
	// after a restart do not copy the whole log.
	size := int(fi.Size())
	b := make([]byte, 0, min(size+max(size/8, 64<<10), MaxLogSize+1))
	for {
		n, err := f.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read %s: %w", f.Name(), err)
		}
		if len(b) > MaxLogSize {
			return nil, nil, fmt.Errorf("read %s: %w", f.Name(), ErrLogTooLarge)
		}
		if len(b) == cap(b) {
			b = slices.Grow(b, 4<<10)
		}
	}
	return b, fi, nil
}

// scan checks that b is a log the Log could have written, one record at a
// time without keeping them: every record replays (register, sequence,
// content digest) in every bank the first record has, and all records have
// the same banks. It counts the records, and sets frozen and the build
// state, up to the first bad record; for a malformed one it returns the
// *ParseError.
func (l *Log) scan(b []byte) error {
	var (
		r     Record // reused: Data and Digests alias b
		banks []*Replayer
	)
	for off := 0; off < len(b); {
		size, err := decodeRecord(b[off:], &r)
		if err != nil {
			return &ParseError{Offset: off, Record: l.n, Err: err}
		}
		if l.n == 0 {
			for _, h := range slices.Sorted(maps.Keys(r.Digests)) {
				p, err := NewReplayer(h, l.cfg.Kind, l.cfg.Index)
				if err != nil {
					return err
				}
				banks = append(banks, p)
			}
		}
		for _, p := range banks {
			if err := p.Add(r); err != nil {
				return err
			}
		}
		if len(r.Digests) != len(banks) {
			return &ReplayError{Record: l.n, Seq: r.Seq, Reason: "record has other banks than record 0"}
		}
		l.frozen = l.frozen || r.Type == EventSeparator
		l.build.add(r.Seq, r.Type, r.Data)
		if r.Type == EventPreboot {
			l.preboot++ // Replayer.Add refused one after an own record
		} else {
			l.own = true
		}
		l.n++
		off += size
	}
	return nil
}

// cutTail truncates f to n bytes, durably.
func cutTail(f *os.File, n int) error {
	if err := f.Truncate(int64(n)); err != nil {
		return fmt.Errorf("cut partial record: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("cut partial record: %w", err)
	}
	return nil
}

// createLog makes an empty log file, durably, and returns it open for
// appending, with its identity.
func createLog(path string) (*os.File, os.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return nil, nil, err
	}
	id, err := f.Stat()
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, id, nil
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

// Dropped is the number of bytes of a partial last record that OpenLog cut
// off (LogConfig.RepairTail); 0 if there was none.
func (l *Log) Dropped() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}

// Bytes returns a copy of the CEL-TLV encoding of all records, as in the
// file: what the verifier gets. View returns the same without the copy.
func (l *Log) Bytes() []byte {
	return bytes.Clone(l.View())
}

// View returns the CEL-TLV encoding of all records without copying it. The
// caller must not modify the slice: it is the Log's own memory. It stays
// valid, and unchanged, after later records (they go after it) and after
// Reset.
func (l *Log) View() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf[:len(l.buf):len(l.buf)]
}

// Ref returns View and the SHA-256 of those bytes, which the Log keeps up as
// records are appended: an attestation names the log by both without
// hashing the whole log each time.
func (l *Log) Ref() ([]byte, [32]byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sum == nil {
		l.sum = sha256.New()
		l.sum.Write(l.buf)
	}
	var d [32]byte
	l.sum.Sum(d[:0])
	return l.buf[:len(l.buf):len(l.buf)], d
}

// Size is the length in bytes of the log's encoding, len(View()).
func (l *Log) Size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buf)
}

// Records returns the decoded records. It decodes the whole log on each
// call (the Log keeps only its encoding): callers that need the count, the
// frozen state or the build use Len, Frozen and Build.
func (l *Log) Records() []Record {
	recs, err := ParseCEL(l.View())
	if err != nil {
		// The Log holds only records it checked (OpenLog) or encoded.
		panic(fmt.Sprintf("measure: event log %s holds a record it cannot decode: %v", l.cfg.Path, err))
	}
	return recs
}

// Build returns what BuildFromLog(l.Records()) returns, without decoding
// the log: the Log keeps it up to date as build events are recorded.
func (l *Log) Build() (BuildLog, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.build.result()
}

// Len is the number of records.
func (l *Log) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// Frozen reports whether the separator has been recorded.
func (l *Log) Frozen() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.frozen
}
