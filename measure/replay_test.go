package measure

import (
	"bytes"
	"crypto"
	"errors"
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
