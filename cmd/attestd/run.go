package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sync/errgroup"

	"github.com/attestd/attestd/agent"
	"github.com/attestd/attestd/attest/tpm"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// errUsage marks bad flags (exit 2).
var errUsage = errors.New("usage")

func exitCode(err error) int {
	if errors.Is(err, errUsage) {
		return 2
	}
	return 1
}

type flags struct {
	config     string
	backend    string
	tpmDevice  string
	tpmTimeout time.Duration
	runtimeDir string
	logLevel   string
	version    bool
}

func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet("attestd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.config, "config", agent.DefaultConfigPath, "config file (YAML)")
	fs.StringVar(&f.backend, "backend", "", "evidence backend: auto, tpm, snp, tdx or simulator (overrides the config file)")
	fs.StringVar(&f.tpmDevice, "tpm-device", "", "TPM device path, unix:/path or tcp:host:port of a swtpm (overrides the config file)")
	fs.DurationVar(&f.tpmTimeout, "tpm-timeout", 0, "deadline of each TPM command, e.g. 30s (overrides the config file's tpm.timeout; default 30s)")
	fs.StringVar(&f.runtimeDir, "runtime-dir", "", "directory for the socket, event log and launch attestation (default $RUNTIME_DIRECTORY, else /run/attestd)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	return f, nil
}

// run is the whole daemon: it returns when ctx is cancelled (nil) or on the
// first error.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "probe-storage" {
		return probeStorage(ctx, args[1:], os.Stdout, stderr)
	}
	f, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if f.version {
		fmt.Fprintln(stderr, "attestd", version)
		return nil
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("%w: --log-level: %v", errUsage, err)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	cfg, err := agent.LoadConfig(f.config)
	if err != nil {
		return err
	}
	if f.backend != "" {
		cfg.Backend = f.backend
	}
	if f.tpmDevice != "" {
		cfg.TPMDevice = f.tpmDevice
	}
	if f.tpmTimeout != 0 {
		if err := agent.CheckTPMTimeout(f.tpmTimeout); err != nil {
			return fmt.Errorf("%w: --tpm-timeout %v", errUsage, err)
		}
		cfg.TPMTimeout = f.tpmTimeout
	}
	runtimeDir := f.runtimeDir
	if runtimeDir == "" {
		runtimeDir = runtimeDirFromEnv()
	}
	if err := os.MkdirAll(runtimeDir, 0o750); err != nil {
		return fmt.Errorf("create runtime dir: %w", err)
	}
	// One daemon per runtime dir, decided before anything opens the TPM: a
	// second daemon stops here instead of waiting on a TPM the first holds.
	lock, err := agent.Lock(runtimeDir)
	if err != nil {
		return err
	}
	defer lock.Close()
	cfg.TPMKeyFile = filepath.Join(runtimeDir, agent.KeyFileName)
	// Storage first: a build environment whose writable storage is not as
	// configured must not get as far as the register.
	storage, err := launchStorage(ctx, cfg, runtimeDir, logger)
	if err != nil {
		return err
	}

	backend, extra, err := openEvidence(cfg, logger)
	if err != nil {
		return err
	}
	defer backend.Close()
	// A TPM command that hangs must not hold up shutdown: once the calls in
	// progress had their time, closing the backend ends the command.
	stopBackend := context.AfterFunc(ctx, func() {
		time.AfterFunc(shutdownGrace, func() { backend.Close() })
	})
	defer stopBackend()
	if tb, ok := backend.(*tpm.Backend); ok {
		if tb.Flushed > 0 {
			logger.Warn("flushed objects an earlier attestd left in the TPM (no resource manager)", "handles", tb.Flushed)
		}
		if tb.KeyReused {
			logger.Info("restart within the boot: environment key reloaded", "key_file", cfg.TPMKeyFile)
		}
		if tb.KeyNotReused != "" {
			logger.Warn("new environment key", "reason", tb.KeyNotReused)
		}
	}

	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		logger.Warn("kernel command line unreadable; image roothash not measured", "err", err)
	}
	a, err := agent.New(agent.Options{
		Config:     cfg,
		Backend:    backend,
		Extra:      extra,
		RuntimeDir: runtimeDir,
		BinaryPath: exe,
		Cmdline:    strings.TrimSpace(string(cmdline)),
		Storage:    storage,
		Version:    version,
		Logger:     logger,
	})
	if err != nil {
		return err
	}
	defer a.Close() // after Serve: calls in progress are done
	// Take the socket first: a second daemon must fail here, before it
	// extends anything into the register.
	ln, err := agent.Listen(runtimeDir)
	if err != nil {
		return err
	}
	defer ln.Close()
	// The device watch (and systemd's watchdog) runs from before the
	// launch: a launch stuck on a TPM is caught like a call would be.
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return watchDevice(gctx, a, logger) })
	g.Go(func() error {
		if err := a.Launch(gctx); err != nil {
			return err
		}
		if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
			logger.Warn("systemd notify failed", "err", err)
		}
		logger.Info("serving", "socket", filepath.Join(runtimeDir, agent.SocketName), "backend", backend.Name(), "version", version)
		return a.Serve(gctx, ln)
	})
	return g.Wait()
}

// shutdownGrace is how long after SIGTERM calls in progress may use the
// TPM before the backend is closed under them.
const shutdownGrace = 5 * time.Second

// runtimeDirFromEnv follows systemd's RuntimeDirectory= (first entry).
func runtimeDirFromEnv() string {
	if d := os.Getenv("RUNTIME_DIRECTORY"); d != "" {
		return strings.Split(d, ":")[0]
	}
	return "/run/attestd"
}
