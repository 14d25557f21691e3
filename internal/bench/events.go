package bench

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"google.golang.org/grpc/status"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
)

// memoryAt is the event count at which the daemon's memory is read.
const memoryAt = 10000

// events runs, for each count in h.p.Events, a fresh environment through
// BindBuild, that many Extends, Complete and GetBundle: the bundle size by
// event count, and from the largest run the latency of the n-th Extend.
func (h *harness) events(ctx context.Context) (*EventsResult, error) {
	counts := slices.Sorted(slices.Values(h.p.Events))
	res := &EventsResult{}
	deadline := time.Now().Add(h.p.EventBudget)
	var latencies []time.Duration // of the largest run
	for i, n := range counts {
		largest := i == len(counts)-1
		pt, lats, err := h.eventRun(ctx, n, largest, deadline, res)
		if err != nil {
			return nil, err
		}
		if largest {
			latencies = lats
		}
		res.Points = append(res.Points, pt)
		h.logf("%d events: reached %d, bundle %d bytes %s %s", n, pt.Reached, pt.BundleBytes, pt.BundleErr, pt.Err)
	}
	for i := range res.Points {
		res.Points[i].Latency = latencyAt(latencies, res.Points[i].Events)
	}
	for _, n := range logSpaced(len(latencies)) {
		res.Curve = append(res.Curve, CurvePoint{Events: n, Latency: latencyAt(latencies, n)})
	}
	return res, nil
}

// eventRun is one environment with n events. The largest run keeps every
// Extend's latency, reports where Extend failed, and stops at the deadline.
func (h *harness) eventRun(ctx context.Context, n int, largest bool, deadline time.Time, res *EventsResult) (EventPoint, []time.Duration, error) {
	pt := EventPoint{Events: n}
	e, err := h.startTPMEnv(ctx, h.cfg.TmpfsDir)
	if err != nil {
		return pt, nil, err
	}
	defer e.close()
	if _, err := e.c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: buildID, Request: buildRequest}); err != nil {
		return pt, nil, fmt.Errorf("BindBuild: %w", err)
	}
	var lats []time.Duration
	if largest {
		lats = make([]time.Duration, 0, n)
	}
	for i := 1; i <= n; i++ {
		if largest && i%1000 == 0 && time.Now().After(deadline) {
			res.Stopped = fmt.Sprintf("stopped after %d events: the series' time budget (%v) was spent", pt.Reached, h.p.EventBudget)
			pt.Err = res.Stopped
			break
		}
		req := &apiv1.ExtendRequest{Domain: "bench", Operation: "step", Content: fmt.Appendf(nil, "event %d of the benchmark build", i)}
		t := time.Now()
		_, err := e.c.Extend(ctx, req)
		d := time.Since(t)
		if err != nil {
			pt.Err = fmt.Sprintf("Extend fails at event %d: %s", i, statusText(err))
			if largest {
				res.FailedAt, res.FailErr = i, statusText(err)
			}
			break
		}
		pt.Reached = i
		if largest {
			lats = append(lats, d)
		}
		if i == memoryAt {
			if res.At10k, err = e.daemon.memory(); err != nil {
				return pt, nil, err
			}
		}
		if largest && i%10000 == 0 {
			h.logf("  %d events, last Extend %v", i, d)
		}
	}
	outputs := descriptors("out", 1)
	if _, err := e.c.Complete(ctx, &apiv1.CompleteRequest{BuildId: buildID, Inputs: descriptors("in", 1), Outputs: outputs}); err != nil {
		pt.BundleErr = "Complete fails: " + statusText(err)
		return pt, lats, nil
	}
	resp, err := e.c.GetBundle(ctx, &apiv1.GetBundleRequest{})
	if err != nil {
		pt.BundleErr = "GetBundle fails: " + statusText(err)
		return pt, lats, nil
	}
	pt.BundleBytes, pt.BundleEnvelopes = len(bundleBytes(resp)), len(resp.GetEnvelopes())
	if pt.Reached >= memoryAt && n == memoryAt {
		if res.AfterBundle10k, err = e.daemon.memory(); err != nil {
			return pt, nil, err
		}
	}
	return pt, lats, nil
}

// statusText is a gRPC error's code and message, cut to a table cell.
func statusText(err error) string {
	s := err.Error()
	if st, ok := status.FromError(err); ok {
		s = st.Code().String() + ": " + st.Message()
	}
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// latencyAt is the median latency of the n-th event and up to 99 before it
// (half the events before it for small n); 0 if the run did not get there.
func latencyAt(lats []time.Duration, n int) time.Duration {
	if n < 1 || n > len(lats) {
		return 0
	}
	w := max(1, min(100, n/2))
	return median(lats[n-w : n])
}

// logSpaced are event numbers from 10 to n, four per decade, and n.
func logSpaced(n int) []int {
	var out []int
	for e := 1.0; ; e += 0.25 {
		v := int(math.Round(math.Pow(10, e)))
		if v >= n {
			break
		}
		out = append(out, v)
	}
	if n >= 1 {
		out = append(out, n)
	}
	return out
}

// descriptors runs, for each count, a fresh environment through BindBuild
// and Complete with that many inputs and as many outputs, and reports the
// bundle's size.
func (h *harness) descriptors(ctx context.Context) ([]SizePoint, error) {
	var out []SizePoint
	for _, n := range h.p.Descriptors {
		pt := SizePoint{N: n}
		e, err := h.startTPMEnv(ctx, h.cfg.TmpfsDir)
		if err != nil {
			return out, err
		}
		if _, err := e.c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: buildID, Request: buildRequest}); err != nil {
			e.close()
			return out, fmt.Errorf("BindBuild: %w", err)
		}
		if _, err := e.c.Complete(ctx, &apiv1.CompleteRequest{BuildId: buildID, Inputs: descriptors("in", n), Outputs: descriptors("out", n)}); err != nil {
			pt.Err = "Complete fails: " + statusText(err)
		} else if resp, err := e.c.GetBundle(ctx, &apiv1.GetBundleRequest{}); err != nil {
			pt.Err = "GetBundle fails: " + statusText(err)
		} else {
			pt.Bytes = len(bundleBytes(resp))
		}
		e.close()
		h.logf("%d descriptors: bundle %d bytes %s", n, pt.Bytes, pt.Err)
		out = append(out, pt)
	}
	return out, nil
}
