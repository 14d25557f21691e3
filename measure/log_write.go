package measure

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

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
// ErrLogFull before anything is written. It returns the record made. Its
// cost does not depend on the number of records in the log.
func (l *Log) RecordWithin(ctx context.Context, ext Extender, e Event, limit int) (Record, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return Record{}, fmt.Errorf("record %s event: %w", e.Type, ErrLogClosed)
	case l.broken != nil:
		return Record{}, fmt.Errorf("record %s event: %w", e.Type, l.broken)
	case e.Type == 0:
		return Record{}, errors.New("record event: event type 0 is invalid")
	case e.Type == EventPreboot:
		return Record{}, errors.New("record preboot event: the register already holds it: use RecordPreboot, which does not extend")
	case l.frozen && (e.Type.launch() || e.Type == EventSeparator):
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
		Seq: uint64(l.n), Index: l.cfg.Index, Kind: l.cfg.Kind,
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
	l.keep(b)
	l.n++
	l.own = true
	l.frozen = l.frozen || e.Type == EventSeparator
	l.build.add(r.Seq, r.Type, r.Data)
	// The Extender gets its own copy of the digests: r is returned.
	ext2 := make(map[crypto.Hash][]byte, len(digests))
	for h, d := range digests {
		ext2[h] = bytes.Clone(d)
	}
	if err := ext.Extend(ctx, ext2); err != nil {
		reg := fmt.Sprintf("%s%d", l.cfg.Kind, l.cfg.Index)
		l.broken = fmt.Errorf("%w: record %d (%s) is in %s but extending %s failed", ErrLogAhead, r.Seq, e.Type, l.cfg.Path, reg)
		return Record{}, fmt.Errorf("record %s event: extend %s: %w: %w", e.Type, reg, ErrLogAhead, err)
	}
	return r, nil
}

// append writes b at the end of the file and syncs it. The file must still
// be the one the Log wrote, at its path and of the size the Log holds (one
// stat: a file removed, replaced or written by someone else breaks the Log).
// On failure it cuts the file back to its previous length; if that fails too
// the Log is broken.
func (l *Log) append(b []byte) error {
	if l.f == nil {
		return fmt.Errorf("%w: no log file open (Reset could not create it)", fs.ErrNotExist)
	}
	fi, err := os.Stat(l.cfg.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		l.broken = fmt.Errorf("event log %s changed underneath: removed", l.cfg.Path)
		return l.broken
	case err != nil:
		return err
	case !os.SameFile(fi, l.id):
		l.broken = fmt.Errorf("event log %s changed underneath: another file is at its path", l.cfg.Path)
		return l.broken
	case fi.Size() != int64(len(l.buf)):
		l.broken = fmt.Errorf("event log %s changed underneath: %d bytes, want %d", l.cfg.Path, fi.Size(), len(l.buf))
		return l.broken
	}
	_, werr := l.f.Write(b)
	if werr == nil {
		werr = l.syncData(l.f)
	}
	if werr != nil {
		if terr := l.f.Truncate(int64(len(l.buf))); terr != nil {
			l.broken = fmt.Errorf("event log %s may end in a partial record: %w", l.cfg.Path, terr)
		}
		return werr
	}
	return nil
}

// keep appends b to buf. It never writes below len(buf), which View handed
// out; it grows buf by doubling (up to MaxLogSize), so the copies cost O(1)
// per byte recorded.
func (l *Log) keep(b []byte) {
	need := len(l.buf) + len(b)
	if need > cap(l.buf) {
		nb := make([]byte, len(l.buf), max(need, min(2*cap(l.buf), MaxLogSize), 4<<10))
		copy(nb, l.buf)
		l.buf = nb
	}
	l.buf = append(l.buf, b...)
	if l.sum != nil {
		l.sum.Write(b)
	}
}

// Reset sets the current file aside as Path+".stale" (replacing an older
// one) and starts an empty log. Use it when the register was reset (a new
// boot: the register reads all zeros) so the old log describes nothing. It
// does not touch the register. Slices View returned before keep the old log.
func (l *Log) Reset() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("reset event log: %w", ErrLogClosed)
	}
	if err := os.Rename(l.cfg.Path, l.cfg.Path+".stale"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("set aside event log: %w", err)
	}
	// The open file is the stale one now: never append to it again.
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	f, id, err := createLog(l.cfg.Path)
	if err != nil {
		return fmt.Errorf("reset event log: %w", err)
	}
	l.f, l.id, l.buf, l.n, l.frozen, l.build, l.broken, l.sum = f, id, nil, 0, false, buildTracker{}, nil, nil
	l.preboot, l.own = 0, false
	return nil
}

// Close closes the log file. Afterwards Record and Reset fail with
// ErrLogClosed; the accessors (View, Records, Build, …) keep answering from
// memory. Closing twice is harmless.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	if err != nil {
		return fmt.Errorf("close event log: %w", err)
	}
	return nil
}
