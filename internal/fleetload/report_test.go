package fleetload

import (
	"strings"
	"testing"
	"time"
)

func TestReplaceSection(t *testing.T) {
	doc := "# T\n\nintro\n\n" + MarkerBegin + "\nold\n" + MarkerEnd + "\n\nafter\n"
	got, err := replaceSection([]byte(doc), "new\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := "# T\n\nintro\n\n" + MarkerBegin + "\nnew\n" + MarkerEnd + "\n\nafter\n"; string(got) != want {
		t.Errorf("got %q, want %q", got, want)
	}
	for _, bad := range []string{"no markers", MarkerEnd + MarkerBegin, MarkerBegin} {
		if _, err := replaceSection([]byte(bad), "x"); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestSummarize: per-build figures add up the four phases of a backend.
func TestSummarize(t *testing.T) {
	phase := func(backend, call string, cpu time.Duration, trips int64) Phase {
		return Phase{Backend: backend, Call: call, Calls: 10, CPU: cpu, Trips: trips, Bytes: 1000}
	}
	res := &Result{Phases: []Phase{
		phase("snp", CallAdmit, 100*time.Millisecond, 10),
		phase("snp", CallDispatch, 10*time.Millisecond, 10),
		phase("snp", CallConfirm, 100*time.Millisecond, 20),
		phase("snp", CallComplete, 100*time.Millisecond, 20),
	}}
	res.Phases[0].ChallengeTrips = 10
	res.Phases[3].RowsAfter, res.Phases[3].DBGrowth = Rows{Challenges: 20, Environments: 10, Builds: 10}, 50_000
	sums := summarize(res)
	if len(sums) != 1 {
		t.Fatalf("%d summaries, want 1", len(sums))
	}
	s := sums[0]
	if s.cpu != 31*time.Millisecond || s.trips != 7 || s.bundleBytes != 400 || s.dispatchCPU != time.Millisecond {
		t.Errorf("summary %+v: want 31 ms CPU, 7 trips, 400 bytes per build, 1 ms per dispatch", s)
	}
	if got := s.perCore(); got < 96.7 || got > 96.8 {
		t.Errorf("verifications per core-second %v, want 3/0.031", got)
	}
	if got := growth(sums); got != 5000 {
		t.Errorf("growth per build %v, want 5000", got)
	}
	if r := report(res, nil); !strings.Contains(r, "| snp | 10 | **97** |") {
		t.Errorf("report lacks the snp row:\n%s", r)
	}
}
