package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/attestd/attestd/agent"
	"github.com/attestd/attestd/attest"
)

// deviceCheckInterval is how often the daemon asks the TPM whether it still
// answers when systemd's watchdog does not ask for more often.
const deviceCheckInterval = 10 * time.Second

// watchDevice checks the evidence device every interval (one cheap TPM
// command) and feeds systemd's watchdog (WatchdogSec=) only while it
// answers, so a hung TPM, or a daemon stuck elsewhere, gets the service
// restarted. It returns nil when ctx ends and the failure when the device
// fails; the daemon then exits.
func watchDevice(ctx context.Context, a *agent.Agent, log *slog.Logger) error {
	interval := deviceCheckInterval
	wd, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog settings unreadable; not fed", "err", err)
	}
	if wd > 0 {
		interval = min(interval, wd/3)
		log.Info("feeding the systemd watchdog while the TPM answers", "watchdog", wd, "check_every", interval)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := a.CheckDevice(ctx); err != nil {
			if errors.Is(err, attest.ErrDeviceFailed) {
				return err
			}
			if ctx.Err() != nil {
				return nil
			}
			log.Warn("device check failed", "err", err)
		} else if wd > 0 {
			if _, err := daemon.SdNotify(false, daemon.SdNotifyWatchdog); err != nil {
				log.Warn("systemd watchdog notify failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-a.Failed():
			return nil // Serve reports it
		case <-t.C:
		}
	}
}
