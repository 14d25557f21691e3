package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/attest"
)

// deviceHealth is the daemon's view of its evidence device: serving until
// the device fails once, then NOT_SERVING for good. A failed device is
// never used again (its state is unknown); the daemon stops serving and
// exits so that systemd restarts it on a fresh connection.
type deviceHealth struct {
	log     *slog.Logger
	backend string

	once sync.Once
	down chan struct{} // closed when the device failed
	err  error         // the failure; set before down is closed

	mu sync.Mutex
	hs *health.Server
}

func newDeviceHealth(log *slog.Logger, backend string) *deviceHealth {
	return &deviceHealth{log: log, backend: backend, down: make(chan struct{})}
}

// setServer attaches the gRPC health service and sets its status.
func (h *deviceHealth) setServer(hs *health.Server) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hs = hs
	h.setStatusLocked()
}

func (h *deviceHealth) setStatusLocked() {
	if h.hs == nil {
		return
	}
	st := healthpb.HealthCheckResponse_SERVING
	if h.failure() != nil {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	h.hs.SetServingStatus("", st)
	h.hs.SetServingStatus(apiv1.Attestd_ServiceDesc.ServiceName, st)
}

// deviceFailed records the device's first failure: it is logged once,
// health turns NOT_SERVING and the daemon begins to stop. It returns the
// error callers get (codes.Unavailable).
func (h *deviceHealth) deviceFailed(err error) error {
	h.once.Do(func() {
		h.err = fmt.Errorf("%w; attestd stops so that it is restarted: retry once it serves again", err)
		h.log.Error("TPM unavailable", "backend", h.backend, "err", err)
		close(h.down)
		h.mu.Lock()
		h.setStatusLocked()
		h.mu.Unlock()
	})
	return h.err
}

// failure returns the device failure, or nil while the device is healthy.
func (h *deviceHealth) failure() error {
	select {
	case <-h.down:
		return h.err
	default:
		return nil
	}
}

// pinger is implemented by backends that can tell whether their device
// still answers (the TPM).
type pinger interface {
	Ping(ctx context.Context) error
}

// CheckDevice reports whether the evidence device still answers, asking it
// where the backend can (one cheap TPM command). A device failure turns the
// daemon NOT_SERVING (reported once) and makes Serve return. The daemon's
// watchdog calls it and feeds systemd only while it returns nil.
func (a *Agent) CheckDevice(ctx context.Context) error {
	if err := a.health.failure(); err != nil {
		return err
	}
	p, ok := a.backend.(pinger)
	if !ok {
		return nil
	}
	if err := p.Ping(ctx); err != nil {
		if errors.Is(err, attest.ErrDeviceFailed) {
			return a.health.deviceFailed(err)
		}
		return err
	}
	return nil
}

// Failed is closed when the evidence device has failed.
func (a *Agent) Failed() <-chan struct{} { return a.health.down }
