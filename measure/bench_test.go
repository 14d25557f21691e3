package measure

import (
	"context"
	"crypto"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// nopExtender is an Extender without a register: benchmarks time the log,
// not a TPM.
type nopExtender []crypto.Hash

func (n nopExtender) Banks() []crypto.Hash                               { return n }
func (nopExtender) Extend(context.Context, map[crypto.Hash][]byte) error { return nil }

// benchBanks are the banks of a TPM with SHA-1, SHA-256 and SHA-384
// allocated (attest/tpm extends every allocated bank).
var benchBanks = []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384}

// benchEvent is a typical Extend: realistic labels, 32 bytes of content.
func benchEvent(i int) Event {
	content := make([]byte, 32)
	rand.Read(content)
	return RuntimeEvent("ci.example.com/runner", fmt.Sprintf("step-%d/exec", i), content)
}

var benchLogs struct {
	sync.Mutex
	m map[int][]byte
}

// benchCEL returns the encoding of a launch, a build-id event and n-6
// runtime events (n records in all) for PCR13 in benchBanks, computed once.
func benchCEL(tb testing.TB, n int) []byte {
	tb.Helper()
	benchLogs.Lock()
	defer benchLogs.Unlock()
	if b, ok := benchLogs.m[n]; ok {
		return b
	}
	evs := append(launchEvents(tb), BuildIDEvent("b-1", [32]byte{1}))
	for i := len(evs); i < n; i++ {
		evs = append(evs, benchEvent(i))
	}
	out := make([]byte, 0, n*300)
	for i, e := range evs[:n] {
		d := map[crypto.Hash][]byte{}
		for _, h := range benchBanks {
			d[h], _ = e.GenerateDigest(h)
		}
		b, err := encodeRecord(Record{Seq: uint64(i), Index: 13, Kind: "PCR", Digests: d, ContentType: ContentType, Type: e.Type, Data: e.Data})
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b...)
	}
	if benchLogs.m == nil {
		benchLogs.m = map[int][]byte{}
	}
	benchLogs.m[n] = out
	return out
}

// BenchmarkRecordWithin times one runtime event appended to a log that
// already holds n records (written to the file directly, then opened).
// Each iteration appends one more record; run with -benchtime=Nx for a fixed
// count. The file is in $TMPDIR: attestd's runtime directory is a tmpfs
// (TMPDIR=/dev/shm), where the sync costs little; on a disk it dominates.
func BenchmarkRecordWithin(b *testing.B) {
	for _, n := range []int{10, 1000, 10000, 100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "events.cel")
			writeSynced(b, path, benchCEL(b, n))
			l, err := OpenLog(LogConfig{Path: path, Kind: PCR, Index: 13})
			if err != nil {
				b.Fatal(err)
			}
			ext := nopExtender(benchBanks)
			ev := benchEvent(0)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := l.RecordWithin(ctx, ext, ev, MaxLogSize); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// writeSynced writes a log file and syncs it, so that the first timed
// record does not pay for flushing the prepopulated file.
func writeSynced(b *testing.B, path string, data []byte) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		b.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkParseCEL parses a log of 100,000 records (typical runtime events).
func BenchmarkParseCEL(b *testing.B) {
	for _, n := range []int{100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			cel := benchCEL(b, n)
			b.SetBytes(int64(len(cel)))
			b.ReportAllocs()
			for b.Loop() {
				recs, err := ParseCEL(cel)
				if err != nil || len(recs) != n {
					b.Fatal(len(recs), err)
				}
			}
		})
	}
}

// BenchmarkReplayPrefixes replays 100,000 records to 10 prefixes (the
// attestations of one build quoting its growing log): in one pass, and the
// way a verifier did it before, one Replay per prefix.
func BenchmarkReplayPrefixes(b *testing.B) {
	const n, k = 100000, 10
	recs, err := ParseCEL(benchCEL(b, n))
	if err != nil {
		b.Fatal(err)
	}
	counts := make([]int, k)
	for i := range counts {
		counts[i] = (i + 1) * n / k
	}
	b.Run("one-pass", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ReplayPrefixes(recs, crypto.SHA256, "PCR", 13, counts); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("replay-each", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, c := range counts {
				if _, err := Replay(recs[:c], crypto.SHA256, "PCR", 13); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}

// BenchmarkOpenLog loads and checks a log of 100,000 records in three banks
// (a daemon restart).
func BenchmarkOpenLog(b *testing.B) {
	path := filepath.Join(b.TempDir(), "events.cel")
	if err := os.WriteFile(path, benchCEL(b, 100000), 0o640); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		l, err := OpenLog(LogConfig{Path: path, Kind: PCR, Index: 13})
		if err != nil {
			b.Fatal(err)
		}
		l.Close()
	}
}

// BenchmarkLogHeap reports the heap a Log of 10,000 typical records keeps
// live after one more is recorded (heap-B), and the log's size (log-B).
func BenchmarkLogHeap(b *testing.B) {
	const n = 10000
	path := filepath.Join(b.TempDir(), "events.cel")
	cel := benchCEL(b, n)
	var live uint64
	for b.Loop() {
		writeSynced(b, path, cel)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		l, err := OpenLog(LogConfig{Path: path, Kind: PCR, Index: 13})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := l.RecordWithin(context.Background(), nopExtender(benchBanks), benchEvent(n), MaxLogSize); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		live = after.HeapAlloc - before.HeapAlloc
		runtime.KeepAlive(l)
	}
	b.ReportMetric(float64(live), "heap-B")
	b.ReportMetric(float64(len(cel)), "log-B")
}
