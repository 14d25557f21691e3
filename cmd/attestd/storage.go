package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/attestd/attestd/agent"
	"github.com/attestd/attestd/measure"
)

// launchStorage is the storage layout the daemon measures at launch: the
// snapshot `attestd probe-storage` left in the runtime directory (the unit
// runs it as root: reading device-mapper tables needs CAP_SYS_ADMIN, which
// the daemon never has), or else its own probe. Either way the config's
// storage.encrypted paths must be on ephemeral dm-crypt.
func launchStorage(ctx context.Context, cfg *agent.Config, runtimeDir string, logger *slog.Logger) (*measure.StorageMeasurement, error) {
	bootID, err := agent.BootID()
	if err != nil {
		return nil, err
	}
	snap := filepath.Join(runtimeDir, agent.StorageSnapshotName)
	s, err := agent.ReadStorageSnapshot(snap, bootID)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if s, err = (agent.StorageProbe{}).Probe(ctx); err != nil {
			return nil, err
		}
		if bad := s.UnreadableTables(); len(bad) > 0 {
			logger.Warn("device-mapper tables unreadable (run `attestd probe-storage` as root first, as the unit does)",
				"devices", strings.Join(bad, "; "))
		}
	case err != nil:
		return nil, err
	default:
		logger.Info("storage layout from the probe's snapshot", "path", snap, "mounts", len(s.Mounts))
	}
	if err := agent.CheckEncryptedPaths(s, cfg.EncryptedPaths); err != nil {
		return nil, err
	}
	return s, nil
}

// probeStorage is `attestd probe-storage`: measure the storage layout,
// check the config's storage.encrypted paths, and write the snapshot the
// daemon measures to out ("" for the runtime dir, "-" for stdout). It runs
// as root before the daemon (ExecStartPre=+).
func probeStorage(ctx context.Context, config, out string, stdout io.Writer) error {
	cfg, err := agent.LoadConfig(config)
	if err != nil {
		return err
	}
	s, err := (agent.StorageProbe{}).Probe(ctx)
	if err != nil {
		return err
	}
	if bad := s.UnreadableTables(); len(bad) > 0 {
		return fmt.Errorf("storage: device-mapper table unreadable: %s", strings.Join(bad, "; "))
	}
	if err := agent.CheckEncryptedPaths(s, cfg.EncryptedPaths); err != nil {
		return err
	}
	bootID, err := agent.BootID()
	if err != nil {
		return err
	}
	b, err := agent.EncodeStorageSnapshot(bootID, s)
	if err != nil {
		return err
	}
	if out == "-" {
		_, err := stdout.Write(b)
		return err
	}
	if out == "" {
		out = filepath.Join(runtimeDirFromEnv(), agent.StorageSnapshotName)
	}
	return agent.WriteStorageSnapshot(out, b)
}
