package measure

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"testing"
)

func bytesBuffer(b []byte) *bytes.Buffer { return bytes.NewBuffer(append([]byte(nil), b...)) }

func TestReplayDetectsTampering(t *testing.T) {
	reg := newFakeRegister(crypto.SHA256, crypto.SHA1)
	l, _ := newTestLog(t, reg, launchEvents(t))
	want := reg.value(crypto.SHA256)

	var (
		replayErr   *ReplayError
		digestErr   *DigestError
		mismatchErr *ReplayMismatchError
	)
	renumber := func(recs []Record) []Record {
		for i := range recs {
			recs[i].Seq = uint64(i)
		}
		return recs
	}
	for _, tc := range []struct {
		name   string
		change func([]Record) []Record
		target any
	}{
		{"unchanged", func(r []Record) []Record { return r }, nil},
		{"reorder", func(r []Record) []Record { r[1], r[2] = r[2], r[1]; return r }, &replayErr},
		{"reorder and renumber", func(r []Record) []Record { r[1], r[2] = r[2], r[1]; return renumber(r) }, &mismatchErr},
		{"drop middle", func(r []Record) []Record { return append(r[:1], r[2:]...) }, &replayErr},
		{"drop middle and renumber", func(r []Record) []Record { return renumber(append(r[:1], r[2:]...)) }, &mismatchErr},
		{"drop last", func(r []Record) []Record { return r[:len(r)-1] }, &mismatchErr},
		{"change body", func(r []Record) []Record {
			r[2].Data = bytes.Replace(r[2].Data, []byte("abcd"), []byte("abce"), 1)
			return r
		}, &digestErr},
		{"change type", func(r []Record) []Record { r[0].Type = EventExecutor; return r }, &digestErr},
		{"change body and its digest", func(r []Record) []Record {
			r[3].Data = []byte(`{"path":"/x","sha256":"00"}`)
			r[3].Digests[crypto.SHA256], _ = Event{Type: r[3].Type, Data: r[3].Data}.GenerateDigest(crypto.SHA256)
			return r
		}, &mismatchErr},
		{"append", func(r []Record) []Record {
			e := RestartEvent([32]byte{}, [32]byte{}, Recovery{})
			d, _ := e.GenerateDigest(crypto.SHA256)
			return append(r, Record{Seq: uint64(len(r)), Index: 13, Kind: "PCR", Digests: map[crypto.Hash][]byte{crypto.SHA256: d},
				ContentType: ContentType, Type: e.Type, Data: e.Data})
		}, &mismatchErr},
		{"other register", func(r []Record) []Record { r[1].Index = 14; return r }, &replayErr},
		{"missing bank", func(r []Record) []Record { delete(r[1].Digests, crypto.SHA256); return r }, &replayErr},
		{"foreign content", func(r []Record) []Record { r[1].Type, r[1].ContentType = 0, 0x50; return r }, &replayErr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs := tc.change(l.Records())
			parsed, err := ParseCEL(encodeAll(t, recs))
			if err != nil {
				t.Fatalf("ParseCEL: %v", err)
			}
			err = CheckReplay(parsed, crypto.SHA256, "PCR", 13, want)
			if tc.target == nil {
				if err != nil {
					t.Fatalf("CheckReplay: %v", err)
				}
				return
			}
			if !errors.As(err, tc.target) {
				t.Fatalf("CheckReplay = %v (%T), want %T", err, err, tc.target)
			}
		})
	}
}

func TestReplayErrorValues(t *testing.T) {
	reg := newFakeRegister(crypto.SHA256)
	l, _ := newTestLog(t, reg, launchEvents(t))
	recs := l.Records()
	logged := recs[4].Digests[crypto.SHA256]
	recs[4].Data = []byte(`{"phase":"later"}`)
	_, err := Replay(recs, crypto.SHA256, "PCR", 13)
	var de *DigestError
	if !errors.As(err, &de) {
		t.Fatalf("Replay = %v, want *DigestError", err)
	}
	computed, _ := Event{Type: EventSeparator, Data: recs[4].Data}.GenerateDigest(crypto.SHA256)
	if de.Record != 4 || de.Seq != 4 || de.Type != EventSeparator || de.Bank != crypto.SHA256 ||
		!bytes.Equal(de.Logged, logged) || !bytes.Equal(de.Computed, computed) {
		t.Errorf("DigestError = %+v", de)
	}

	if _, err := Replay(nil, crypto.SHA256, "TPM", 13); err == nil {
		t.Error("Replay accepted an unknown register kind")
	}
	got, err := Replay(nil, crypto.SHA384, "RTMR", 3)
	if err != nil || !bytes.Equal(got, make([]byte, 48)) {
		t.Errorf("Replay(empty) = %x, %v; want 48 zero bytes", got, err)
	}
}

// TestReplayPrefixes checks the value after each prefix equals Replay of
// that prefix, whatever the order of the counts, for every bank.
func TestReplayPrefixes(t *testing.T) {
	reg := newFakeRegister(crypto.SHA256, crypto.SHA1, crypto.SHA384)
	evs := append(launchEvents(t), BuildIDEvent("b", [32]byte{1}))
	for i := range 20 {
		evs = append(evs, RuntimeEvent("d", "o", []byte{byte(i)}))
	}
	l, _ := newTestLog(t, reg, evs)
	recs := l.Records()
	n := len(recs)
	for _, tc := range []struct {
		name   string
		counts []int
	}{
		{"none", nil},
		{"empty prefix", []int{0}},
		{"whole log", []int{n}},
		{"every prefix", func() []int {
			c := make([]int, n+1)
			for i := range c {
				c[i] = i
			}
			return c
		}()},
		{"unsorted with repeats", []int{n, 3, 0, 3, 7, n - 1}},
	} {
		for _, bank := range reg.Banks() {
			t.Run(fmt.Sprintf("%s/%v", tc.name, bank), func(t *testing.T) {
				got, err := ReplayPrefixes(recs, bank, "PCR", 13, tc.counts)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(tc.counts) {
					t.Fatalf("%d values for %d counts", len(got), len(tc.counts))
				}
				for i, c := range tc.counts {
					want, err := Replay(recs[:c], bank, "PCR", 13)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got[i], want) {
						t.Errorf("prefix of %d records: %x, Replay %x", c, got[i], want)
					}
					if err := CheckReplay(recs[:c], bank, "PCR", 13, got[i]); err != nil {
						t.Errorf("CheckReplay of prefix %d: %v", c, err)
					}
				}
			})
		}
	}
	if got, _ := ReplayPrefixes(recs, crypto.SHA256, "PCR", 13, []int{n}); !bytes.Equal(got[0], reg.value(crypto.SHA256)) {
		t.Error("whole log does not replay to the register")
	}
}

func TestReplayPrefixesErrors(t *testing.T) {
	reg := newFakeRegister(crypto.SHA256)
	l, _ := newTestLog(t, reg, launchEvents(t))
	recs := l.Records()
	recs[3].Data = []byte(`{"path":"/x","sha256":"00"}`)
	var de *DigestError
	if _, err := ReplayPrefixes(recs, crypto.SHA256, "PCR", 13, []int{2, 5}); !errors.As(err, &de) || de.Record != 3 {
		t.Errorf("changed record 3 in a prefix: %v, want *DigestError for record 3", err)
	}
	if _, err := ReplayPrefixes(recs, crypto.SHA256, "PCR", 13, []int{3, 1}); err != nil {
		t.Errorf("records after the largest count are not checked: %v", err)
	}
	for _, c := range []int{-1, len(recs) + 1} {
		if _, err := ReplayPrefixes(recs, crypto.SHA256, "PCR", 13, []int{c}); err == nil {
			t.Errorf("count %d accepted", c)
		}
	}
	if _, err := ReplayPrefixes(recs, crypto.SHA256, "PCR", 24, nil); err == nil {
		t.Error("PCR24 accepted")
	}
}

func TestReplayer(t *testing.T) {
	reg := newFakeRegister(crypto.SHA256)
	l, _ := newTestLog(t, reg, launchEvents(t))
	recs := l.Records()
	p, err := NewReplayer(crypto.SHA256, "PCR", 13)
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() != 0 || !bytes.Equal(p.Value(), make([]byte, 32)) {
		t.Fatal("a new Replayer is not at zero")
	}
	for i, r := range recs[:3] {
		if err := p.Add(r); err != nil {
			t.Fatal(err)
		}
		if want, _ := Replay(recs[:i+1], crypto.SHA256, "PCR", 13); !bytes.Equal(p.Value(), want) || p.Len() != i+1 {
			t.Fatalf("after %d records: %x, want %x", i+1, p.Value(), want)
		}
	}
	// Value is a copy.
	v := p.Value()
	v[0] ^= 1
	if bytes.Equal(p.Value(), v) {
		t.Error("Value returns the Replayer's own memory")
	}
	// Skipping a record fails, and the Replayer stays spent.
	before := p.Value()
	var re *ReplayError
	if err := p.Add(recs[4]); !errors.As(err, &re) || re.Record != 3 {
		t.Fatalf("Add out of sequence = %v, want *ReplayError for record 3", err)
	}
	if err := p.Add(recs[3]); !errors.As(err, &re) {
		t.Errorf("Add after an error = %v, want the same error", err)
	}
	if !bytes.Equal(p.Value(), before) || p.Len() != 3 {
		t.Error("a failed Add changed the value")
	}
	if _, err := NewReplayer(crypto.SHA256, "TPM", 13); err == nil {
		t.Error("unknown register kind accepted")
	}
}
