package fleetload_test

import (
	"context"
	"testing"
	"time"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/internal/fleetload"
	"github.com/attestd/attestd/internal/pgtest"
	"github.com/attestd/attestd/internal/swtpmtest"
	"github.com/attestd/attestd/verify"
)

// swtpmSource makes each environment on its own swtpm, manufactured afresh
// (its own EK and AK: a boot no other environment shares). Its AKs are
// registered in the store by the load, not trusted by the policy.
type swtpmSource struct{ t testing.TB }

func (swtpmSource) Name() string { return "tpm" }

func (s swtpmSource) Backend(context.Context) (attest.Backend, error) {
	return tpm.Open(tpm.Config{Device: "unix:" + swtpmtest.Start(s.t), FirmwareLogPath: "/nonexistent"})
}

func (swtpmSource) Trust(*verify.Policy, map[string][]byte) {}

// sources are the three backends: SEV-SNP and TDX fakes that sign with
// test-only vendor chains, and swtpm.
func sources(t testing.TB, snp, tdx, tpm int) []fleetload.Load {
	t.Helper()
	created := time.Now().Add(-time.Hour)
	s, err := fleetload.SNP(created)
	if err != nil {
		t.Fatal(err)
	}
	x, err := fleetload.TDX(created)
	if err != nil {
		t.Fatal(err)
	}
	return []fleetload.Load{{Source: s, Builds: snp}, {Source: x, Builds: tdx}, {Source: swtpmSource{t}, Builds: tpm}}
}

// TestLoad runs a tiny load on 2 replicas on a private PostgreSQL and
// checks its counts (never its speed): every call of every phase succeeded,
// each build left one environment, one build and two challenge rows, and
// the round trips and CPU times were counted.
func TestLoad(t *testing.T) {
	srv := pgtest.Start(t)
	loads := sources(t, 3, 3, 1)
	res, err := fleetload.Run(t.Context(), fleetload.Config{
		DSN: srv.CreateDB(t, "load"), Replicas: 2, Workers: 4, Loads: loads, Dir: t.TempDir(), Logf: t.Logf,
	})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	calls := []string{fleetload.CallAdmit, fleetload.CallDispatch, fleetload.CallConfirm, fleetload.CallComplete}
	if len(res.Phases) != len(loads)*len(calls) {
		t.Fatalf("%d phases, want %d", len(res.Phases), len(loads)*len(calls))
	}
	var builds int64
	for i, l := range loads {
		builds += int64(l.Builds)
		for j, call := range calls {
			p := res.Phases[i*len(calls)+j]
			if p.Backend != l.Source.Name() || p.Call != call || p.Calls != l.Builds || p.Failed != 0 {
				t.Errorf("phase %d: %s %s, %d calls, %d failed; want %s %s, %d calls, none failed", i*len(calls)+j,
					p.Backend, p.Call, p.Calls, p.Failed, l.Source.Name(), call, l.Builds)
			}
			if p.Trips < int64(p.Calls) || p.CPU <= 0 || p.P99 < p.P50 {
				t.Errorf("%s %s: %d round trips for %d calls, CPU %v, p50 %v p99 %v", p.Backend, p.Call, p.Trips, p.Calls, p.CPU, p.P50, p.P99)
			}
		}
		first, last := res.Phases[i*len(calls)], res.Phases[(i+1)*len(calls)-1]
		if first.ChallengeTrips < int64(l.Builds) {
			t.Errorf("%s: %d round trips for %d admission challenges", l.Source.Name(), first.ChallengeTrips, l.Builds)
		}
		if rows := last.RowsAfter; rows.Environments != builds || rows.Builds != builds || rows.Challenges != 2*builds+int64(res.WarmUp) {
			t.Errorf("%s: rows after %+v; want %d environments and builds, %d challenges (%d of the warm-up)", l.Source.Name(), rows, builds, 2*builds+int64(res.WarmUp), res.WarmUp)
		}
	}
}
