package measure

import (
	"strings"
	"testing"
)

func recs(evs ...Event) []Record {
	var out []Record
	for i, e := range evs {
		out = append(out, Record{Seq: uint64(i), Type: e.Type, Data: e.Data})
	}
	return out
}

func TestBuildFromLog(t *testing.T) {
	d1, d2 := [32]byte{1}, [32]byte{2}
	sep := SeparatorEvent()
	for _, tc := range []struct {
		name    string
		evs     []Event
		wantErr string
		phase   string
	}{
		{"launched", []Event{sep}, "", "launched"},
		{"dispatched", []Event{sep, BuildIDEvent("b", d1), RuntimeEvent("d", "o", nil)}, "", "dispatched"},
		{"completed", []Event{sep, BuildIDEvent("b", d1), CompleteEvent("b", d2)}, "", "completed"},
		{"two build IDs", []Event{BuildIDEvent("a", d1), BuildIDEvent("b", d1)}, "second build ID", ""},
		{"complete before dispatch", []Event{CompleteEvent("b", d2)}, "out of order", ""},
		{"two completions", []Event{BuildIDEvent("b", d1), CompleteEvent("b", d2), CompleteEvent("b", d2)}, "out of order", ""},
		{"other build completed", []Event{BuildIDEvent("a", d1), CompleteEvent("b", d2)}, "completes build", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := BuildFromLog(recs(tc.evs...))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			phase := "launched"
			if b.Dispatch != nil {
				phase = "dispatched"
			}
			if b.Complete != nil {
				phase = "completed"
			}
			if phase != tc.phase {
				t.Fatalf("phase %s, want %s", phase, tc.phase)
			}
		})
	}
}
