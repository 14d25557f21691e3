package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/google/go-tpm-tools/simulator"

	"github.com/attestd/attestd/agent"
	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/tpm"
)

// openBackend opens the evidence backend cfg names. "auto" picks a real
// device and never a simulator or fake.
func openBackend(cfg *agent.Config, log *slog.Logger) (attest.Backend, error) {
	tcfg := tpmConfig(cfg)
	switch cfg.Backend {
	case "simulator":
		if !cgoEnabled {
			return nil, errors.New("backend simulator: this attestd was built without cgo, which the in-process TPM simulator needs; use a cgo build or --backend=tpm")
		}
		log.Warn("USING THE IN-PROCESS TPM SIMULATOR: attestations prove nothing about this machine; for demos and tests only")
		sim, err := simulator.Get()
		if err != nil {
			return nil, fmt.Errorf("start TPM simulator: %w", err)
		}
		b, err := tpm.New(sim, tcfg)
		if err != nil {
			sim.Close()
			return nil, fmt.Errorf("TPM simulator: %w", err)
		}
		return b, nil
	case "tpm", "auto":
		b, err := tpm.Open(tcfg)
		if errors.Is(err, attest.ErrNoDevice) && cfg.Backend == "auto" {
			return nil, err // openEvidence names everything auto looked for
		}
		if err != nil {
			return nil, fmt.Errorf("backend tpm: %w", err)
		}
		return b, nil
	default:
		return nil, fmt.Errorf("unknown backend %q", cfg.Backend) // agent.ParseConfig and --backend refuse it first
	}
}

// tpmConfig is the TPM backend's config, for a TPM alone or beside a TEE.
func tpmConfig(cfg *agent.Config) tpm.Config {
	return tpm.Config{Device: cfg.TPMDevice, PCR: cfg.Register, KeyFile: cfg.TPMKeyFile, Timeout: cfg.TPMTimeout}
}
