package fleet

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the service's Prometheus metrics (docs/fleet.md, "Metrics").
type metrics struct {
	admissions, dispatches, confirmations, completions, registrations prometheus.Counter
	refusals                                                          *prometheus.CounterVec
	verify, store                                                     *prometheus.HistogramVec
	storeUp                                                           prometheus.Gauge
}

// latencyBuckets span a cached verification (~1 ms) to a database stalling
// (10 s).
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "attestfleet", Name: name, Help: help})
	}
	m := &metrics{
		admissions:    counter("admissions_total", "Environments admitted."),
		dispatches:    counter("dispatches_total", "Builds bound to an environment (Dispatch)."),
		confirmations: counter("dispatch_confirmations_total", "Dispatch attestations verified (ConfirmDispatch)."),
		completions:   counter("completions_total", "Builds completed with a signed VSA."),
		registrations: counter("registrations_total", "AKs registered by credential activation."),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "attestfleet", Name: "refusals_total",
			Help: "Calls refused, by method and reason (docs/fleet.md, \"Refusals\")."}, []string{"method", "reason"}),
		verify: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "attestfleet", Name: "verify_seconds",
			Help: "Time to verify a bundle against the policy, by step.", Buckets: latencyBuckets}, []string{"step"}),
		store: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "attestfleet", Name: "store_seconds",
			Help: "Time of each store operation (one transaction), by operation.", Buckets: latencyBuckets}, []string{"op"}),
		storeUp: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "attestfleet", Name: "store_up",
			Help: "1 while the store answers its health ping, else 0."}),
	}
	for _, c := range []prometheus.Collector{m.admissions, m.dispatches, m.confirmations, m.completions, m.registrations, m.refusals, m.verify, m.store, m.storeUp} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
