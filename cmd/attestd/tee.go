package main

import (
	"errors"
	"fmt"
	"log/slog"

	"golang.org/x/sys/unix"

	"github.com/attestd/attestd/agent"
	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/snp"
	"github.com/attestd/attestd/attest/tdx"
	"github.com/attestd/attestd/attest/tpm"
)

// teeDevices finds the confidential-computing guest interfaces. Tests
// replace it to inject fake devices; fake is then true and memory locking is
// left alone. Production never changes it.
var teeDevices = struct {
	snp  func() (snp.QuoteProvider, error)
	tdx  func() (tdx.Config, error)
	fake bool
}{snp: snp.Open, tdx: tdx.Open}

// openEvidence opens the backend cfg names and any TEE evidence sources
// beside it. "auto" picks TDX, then SEV-SNP, then a TPM; a TEE with a vTPM
// beside it becomes a TPM backend plus a TEE source bound to the same key.
func openEvidence(cfg *agent.Config, log *slog.Logger) (attest.Backend, []attest.EvidenceSource, error) {
	switch cfg.Backend {
	case "snp", "tdx":
		return openTEE(cfg, cfg.Backend, log)
	case "auto":
		b, extra, err := openTEE(cfg, "", log)
		if !errors.Is(err, attest.ErrNoDevice) {
			return b, extra, err
		}
		b, err = openBackend(cfg, log)
		if errors.Is(err, attest.ErrNoDevice) {
			return nil, nil, fmt.Errorf("backend auto: %w (looked for TDX: configfs-tsm tdx_guest or /dev/tdx_guest; SEV-SNP: configfs-tsm sev_guest or /dev/sev-guest; TPM: /dev/tpmrm0, /dev/tpm0; --backend=simulator runs a demo)", attest.ErrNoDevice)
		}
		return b, nil, err
	default:
		b, err := openBackend(cfg, log)
		return b, nil, err
	}
}

// openTEE opens the TEE kind names ("" tries TDX, then SNP) and combines it
// with a TPM when one is present.
func openTEE(cfg *agent.Config, kind string, log *slog.Logger) (attest.Backend, []attest.EvidenceSource, error) {
	var (
		tdxCfg tdx.Config
		snpQP  snp.QuoteProvider
		err    error
	)
	if kind == "" || kind == "tdx" {
		if tdxCfg, err = teeDevices.tdx(); err == nil {
			kind = "tdx"
		} else if kind == "tdx" {
			return nil, nil, fmt.Errorf("backend tdx: %w", err)
		}
	}
	if kind == "" || kind == "snp" {
		if snpQP, err = teeDevices.snp(); err != nil {
			if kind == "snp" {
				return nil, nil, fmt.Errorf("backend snp: %w", err)
			}
			return nil, nil, err // wraps attest.ErrNoDevice: no TEE here
		}
		kind = "snp"
	}
	if teeDevices.fake {
		log.Warn("USING A FAKE " + kind + " DEVICE: attestations prove nothing about this machine; for tests only")
	}
	// A vTPM beside the TEE: it holds the key and PCR; the TEE vouches too.
	if v, err := tpm.Open(tpmConfig(cfg)); err == nil {
		src, err := newTEESource(kind, tdxCfg, snpQP, v.Signer().Public())
		if err != nil {
			v.Close()
			return nil, nil, err
		}
		log.Info("confidential VM with a vTPM: TPM backend with TEE evidence beside it", "tee", kind)
		return v, []attest.EvidenceSource{src}, nil
	} else if !errors.Is(err, attest.ErrNoDevice) {
		return nil, nil, fmt.Errorf("backend %s: vTPM present but unusable: %w", kind, err)
	}
	if !teeDevices.fake {
		lockMemory(log)
	}
	log.Info("confidential VM without a vTPM: environment key held in process memory only", "tee", kind)
	switch kind {
	case "tdx":
		b, err := tdx.New(tdxCfg)
		if err != nil {
			return nil, nil, fmt.Errorf("backend tdx: %w", err)
		}
		return b, nil, nil
	default:
		b, err := snp.New(snp.Config{Provider: snpQP})
		if err != nil {
			return nil, nil, fmt.Errorf("backend snp: %w", err)
		}
		return b, nil, nil
	}
}

func newTEESource(kind string, tdxCfg tdx.Config, snpQP snp.QuoteProvider, envKey any) (attest.EvidenceSource, error) {
	if kind == "tdx" {
		return tdx.NewSource(tdxCfg, envKey)
	}
	return snp.NewSource(snp.Config{Provider: snpQP}, envKey)
}

// lockMemory keeps the in-memory environment key out of swap and core
// dumps: mlockall (pages as they are touched) and not dumpable. Failure
// (no CAP_IPC_LOCK, small RLIMIT_MEMLOCK) is logged, not fatal.
func lockMemory(log *slog.Logger) {
	if err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE | unix.MCL_ONFAULT); err != nil {
		log.Warn("could not lock memory; the environment key may be swapped out", "err", err)
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		log.Warn("could not disable core dumps", "err", err)
	}
}
