package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
)

// concurrency measures Attest throughput and each caller's wait at every
// level of h.p.Callers, on a TPM that takes h.p.TPMDelay per command. Each
// caller has its own connection and calls Attest in a loop for
// CallerDuration; the calls in flight then finish and count.
func (h *harness) concurrency(ctx context.Context) (*ConcurrencyResult, error) {
	e, err := h.startTPMEnv(ctx, h.cfg.TmpfsDir)
	if err != nil {
		return nil, err
	}
	defer e.close()
	res := &ConcurrencyResult{Delay: h.p.TPMDelay}
	e.proxy.SetDelay(h.p.TPMDelay)
	if _, err := e.c.Attest(ctx, &apiv1.AttestRequest{Nonce: nonce()}); err != nil {
		return nil, fmt.Errorf("Attest: %w", err)
	}
	for _, n := range h.p.Callers {
		lvl := h.callers(ctx, e, n)
		res.Levels = append(res.Levels, lvl)
		h.logf("%d callers: %d attestations in %v, %.2f/s, wait p50 %v p99 %v %s",
			n, lvl.Done, lvl.Elapsed.Round(time.Millisecond), lvl.PerSec, lvl.Wait.P50, lvl.Wait.P99, lvl.Err)
	}
	if res.Memory, err = e.daemon.memory(); err != nil {
		res.Err = err.Error()
	}
	return res, nil
}

// callers runs one level.
func (h *harness) callers(ctx context.Context, e *tpmEnv, n int) CallerLevel {
	lvl := CallerLevel{Callers: n}
	clients := make([]*apiv1.Client, n)
	for i := range clients {
		c, err := e.daemon.client()
		if err != nil {
			lvl.Err = err.Error()
			return lvl
		}
		defer c.Close()
		clients[i] = c
	}

	stopSampling := make(chan struct{})
	peak := make(chan int64)
	go func() {
		var p int64
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if m, err := e.daemon.memory(); err == nil {
				p = max(p, m.RSS)
			}
			select {
			case <-stopSampling:
				peak <- p
				return
			case <-t.C:
			}
		}
	}()

	var (
		mu    sync.Mutex
		waits []time.Duration
		last  time.Time
		first error
		wg    sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(h.p.CallerDuration)
	for _, c := range clients {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				t := time.Now()
				_, err := c.Attest(ctx, &apiv1.AttestRequest{Nonce: nonce()})
				end := time.Now()
				mu.Lock()
				if err != nil {
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
				waits = append(waits, end.Sub(t))
				last = end
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(stopSampling)
	lvl.Done = len(waits)
	lvl.Wait = distOf(waits)
	if lvl.Done > 0 {
		lvl.Elapsed = last.Sub(start)
		lvl.PerSec = float64(lvl.Done) / lvl.Elapsed.Seconds()
	}
	if first != nil {
		lvl.Err = first.Error()
	}
	lvl.PeakRSS = <-peak
	return lvl
}
