package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/attestd/attestd/agent"
	"github.com/attestd/attestd/internal/cmdline"
)

// daemonFlags are the daemon's command-line settings; the empty or zero
// ones leave the config file's value.
type daemonFlags struct {
	config     string
	backend    string
	tpmDevice  string
	tpmTimeout time.Duration
	runtimeDir string
	logLevel   slog.Level
}

// cli is one invocation of the command line.
type cli struct {
	stdout, stderr io.Writer
	cmdline.Invocation
}

// command is attestd's command tree; its help, usage and completion are
// generated from these definitions.
func (c *cli) command() *cobra.Command {
	var f daemonFlags
	root := &cobra.Command{
		Use:   "attestd [flags]",
		Short: "Attestation daemon of a build environment",
		Long: `attestd measures the build environment at launch into a TPM register (or a
TEE's), then serves signed attestations of it, and of each build it is
told about, on a unix socket (docs/architecture.md, docs/operating.md).

Without a subcommand it runs the daemon until SIGTERM or SIGINT.`,
		Example: `  attestd --config /etc/attestd/config.yaml
  attestd --backend=simulator --runtime-dir /tmp/attestd-demo   # demos and tests only`,
		Version:           version,
		Args:              cmdline.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		SilenceErrors:     true,
		SilenceUsage:      true,
		RunE:              c.RunE(func(cmd *cobra.Command) error { return runDaemon(cmd.Context(), &f, c.stderr) }),
	}
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.SetVersionTemplate("attestd {{.Version}}\n")
	root.SetFlagErrorFunc(flagError)

	fl := root.Flags()
	fl.SortFlags = false
	fl.StringVar(&f.config, "config", agent.DefaultConfigPath, "config file (YAML)")
	fl.Var(&backendValue{&f.backend}, "backend", "evidence backend: "+strings.Join(agent.Backends, ", ")+" (overrides the config file)")
	fl.StringVar(&f.tpmDevice, "tpm-device", "", "TPM device path, unix:/path or tcp:host:port of a swtpm (overrides the config file)")
	fl.Var(&tpmTimeoutValue{&f.tpmTimeout}, "tpm-timeout", "deadline of each TPM command, e.g. 30s (overrides the config file's tpm.timeout; default 30s)")
	fl.StringVar(&f.runtimeDir, "runtime-dir", "", "directory for the socket, event log and launch attestation (default $RUNTIME_DIRECTORY, else /run/attestd)")
	f.logLevel = slog.LevelInfo
	cmdline.LogLevelFlag(fl, &f.logLevel)
	_ = root.RegisterFlagCompletionFunc("backend", cobra.FixedCompletions(agent.Backends, cobra.ShellCompDirectiveNoFileComp))
	_ = root.RegisterFlagCompletionFunc("log-level", cobra.FixedCompletions([]string{"debug", "info", "warn", "error"}, cobra.ShellCompDirectiveNoFileComp))
	_ = root.MarkFlagFilename("config", "yaml", "yml")
	_ = root.MarkFlagDirname("runtime-dir")

	root.AddCommand(c.probeStorageCommand(), c.VersionCommand("attestd", version))
	// cobra's completion command, made runnable so that an unknown shell
	// is a usage error rather than its help.
	root.InitDefaultCompletionCmd()
	if comp, _, err := root.Find([]string{"completion"}); err == nil && comp != root {
		comp.Args = cmdline.NoArgs
		comp.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	}
	return root
}

func (c *cli) probeStorageCommand() *cobra.Command {
	var config, out string
	cmd := &cobra.Command{
		Use:   "probe-storage [flags]",
		Short: "Measure the storage layout and write the snapshot the daemon measures",
		Long: `probe-storage measures the mounts and device-mapper tables, checks that the
config file's storage.encrypted paths are on ephemeral dm-crypt, and writes
the snapshot the daemon records at launch. Reading device-mapper tables needs
CAP_SYS_ADMIN, which the daemon never has: the unit runs this as root first
(ExecStartPre=+, docs/storage.md). It exits 1 if a check fails.`,
		Args:              cmdline.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: c.RunE(func(cmd *cobra.Command) error {
			return probeStorage(cmd.Context(), config, out, c.stdout)
		}),
	}
	cmd.Flags().StringVar(&config, "config", agent.DefaultConfigPath, "config file (YAML): its storage.encrypted paths are checked")
	cmd.Flags().StringVar(&out, "out", "", "write the snapshot to `FILE`, - for stdout (default $RUNTIME_DIRECTORY/"+agent.StorageSnapshotName+", else /run/attestd/"+agent.StorageSnapshotName+")")
	_ = cmd.MarkFlagFilename("config", "yaml", "yml")
	return cmd
}

// flagError rewrites pflag's errors about a flag's value in words, without
// the Go function names strconv puts in them.
func flagError(_ *cobra.Command, err error) error {
	var inv *pflag.InvalidValueError
	if !errors.As(err, &inv) {
		return err
	}
	cause := inv.Unwrap()
	var num *strconv.NumError
	if errors.As(cause, &num) {
		cause = num.Err
		if inv.GetFlag().Value.Type() == "bool" {
			cause = errors.New("want true or false")
		}
	}
	return fmt.Errorf("invalid value %q for --%s: %v", inv.GetValue(), inv.GetFlag().Name, cause)
}

// singleDash refuses "-config" and the like where "--config" is meant:
// pflag would read it as the shorthands -c -o -n …, and say so less
// helpfully.
func singleDash(root *cobra.Command, args []string) error {
	long := map[string]bool{}
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) { long[f.Name] = true })
		c.PersistentFlags().VisitAll(func(f *pflag.Flag) { long[f.Name] = true })
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	for _, a := range args {
		if a == "--" {
			return nil
		}
		if len(a) < 3 || a[0] != '-' || a[1] == '-' {
			continue
		}
		name, _, _ := strings.Cut(a[1:], "=")
		if long[name] {
			return fmt.Errorf("%s: long flags take two dashes: -%s", a, a)
		}
	}
	return nil
}

// backendValue is --backend: one of agent.Backends.
type backendValue struct{ p *string }

func (v *backendValue) String() string { return *v.p }
func (v *backendValue) Type() string   { return "name" }
func (v *backendValue) Set(s string) error {
	if err := agent.CheckBackend(s); err != nil {
		return err
	}
	*v.p = s
	return nil
}

// tpmTimeoutValue is --tpm-timeout: a duration of at least
// agent.MinTPMTimeout.
type tpmTimeoutValue struct{ p *time.Duration }

func (v *tpmTimeoutValue) String() string {
	if *v.p == 0 {
		return ""
	}
	return v.p.String()
}
func (v *tpmTimeoutValue) Type() string { return "duration" }
func (v *tpmTimeoutValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("not a duration (like 30s or 2m)")
	}
	if agent.CheckTPMTimeout(d) != nil {
		return fmt.Errorf("must be at least %v", agent.MinTPMTimeout)
	}
	*v.p = d
	return nil
}
