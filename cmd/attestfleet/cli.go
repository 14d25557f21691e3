package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// cli is one invocation of the command line.
type cli struct {
	stdout, stderr io.Writer
	// ran is set once a command's own work starts: errors after that are
	// the command's, errors before it are usage errors.
	ran bool
	// ready, when set, is told the addresses of the API and of the metrics
	// ("" when off) once serving (tests).
	ready func(api, metrics string)
}

// run runs the command line args (without the program name). Help and
// versions go to stdout, logs to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return (&cli{stdout: stdout, stderr: stderr}).run(ctx, args)
}

func (c *cli) run(ctx context.Context, args []string) error {
	if args == nil {
		args = []string{} // cobra reads os.Args for nil
	}
	root := c.command()
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err != nil && !c.ran {
		return &usageError{cmd: cmd.CommandPath(), err: err}
	}
	return err
}

// command is attestfleet's command tree; its help is generated from it.
func (c *cli) command() *cobra.Command {
	root := &cobra.Command{
		Use:   "attestfleet",
		Short: "Fleet verifier service: admission, dispatch and completion of build environments",
		Long: `attestfleet is the control plane's verifier (docs/fleet.md): it challenges build
environments, verifies their attestd attestations against an appraisal policy,
dispatches each to exactly one build across every replica, and signs the
results (SVRs and SLSA VSAs). All state is in its store (SQLite, or PostgreSQL
for several replicas).`,
		Version:           version,
		Args:              noArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		SilenceErrors:     true,
		SilenceUsage:      true,
		RunE:              func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.SetVersionTemplate("attestfleet {{.Version}}\n")
	root.AddGroup(&cobra.Group{ID: "service", Title: "The service:"}, &cobra.Group{ID: "client", Title: "Client commands (call a running replica, --server):"})
	for _, cmd := range []*cobra.Command{c.serveCommand()} {
		cmd.GroupID = "service"
		root.AddCommand(cmd)
	}
	for _, cmd := range []*cobra.Command{c.challengeCommand(), c.admitCommand(), c.dispatchCommand(), c.confirmCommand(),
		c.completeCommand(), c.getEnvCommand(), c.getBuildCommand(), c.checkResultCommand()} {
		cmd.GroupID = "client"
		root.AddCommand(cmd)
	}
	root.AddCommand(c.versionCommand())
	root.CompletionOptions.DisableDefaultCmd = true
	return root
}

func (c *cli) serveCommand() *cobra.Command {
	var config string
	level := slog.LevelInfo
	cmd := &cobra.Command{
		Use:   "serve [flags]",
		Short: "Serve the fleet API until SIGTERM or SIGINT",
		Long: `serve reads the config file, opens the store (applying its schema migrations),
and serves the gRPC API, health and reflection on the configured address, and
Prometheus metrics on the metrics address if one is set. On SIGTERM it stops
taking calls and drains those in progress (drain, default 10s).`,
		Example:           `  attestfleet serve --config /etc/attestfleet/config.yaml`,
		Args:              noArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: c.runE(func(cmd *cobra.Command) error {
			return serve(cmd.Context(), config, newLogger(c.stderr, level), c.ready)
		}),
	}
	cmd.Flags().StringVar(&config, "config", DefaultConfigPath, "config file (YAML, docs/fleet.md)")
	cmd.Flags().Var(&levelValue{&level}, "log-level", "least severe level logged: debug, info, warn or error")
	_ = cmd.MarkFlagFilename("config", "yaml", "yml")
	return cmd
}

func (c *cli) versionCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:               "version",
		Short:             "Print attestfleet's version",
		Args:              noArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: c.runE(func(*cobra.Command) error {
			if asJSON {
				return json.NewEncoder(c.stdout).Encode(struct {
					Version string `json:"version"`
				}{version})
			}
			_, err := fmt.Fprintln(c.stdout, "attestfleet", version)
			return err
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"version": "…"} as JSON`)
	return cmd
}

// runE marks the start of a command's own work (see cli.ran).
func (c *cli) runE(f func(*cobra.Command) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		c.ran = true
		return f(cmd)
	}
}

// usageError is a command line that cannot be run: exit status 2.
type usageError struct {
	cmd string
	err error
}

func (e *usageError) Error() string { return fmt.Sprintf("%v (see '%s --help')", e.err, e.cmd) }
func (e *usageError) Unwrap() error { return e.err }

// noArgs refuses positional arguments, naming the first.
func noArgs(cmd *cobra.Command, args []string) error {
	switch {
	case len(args) == 0:
		return nil
	case cmd.HasAvailableSubCommands():
		return fmt.Errorf("unknown command %q", args[0])
	}
	return fmt.Errorf("unexpected argument %q", args[0])
}

// exitCode is 2 for a command line that cannot be run, 1 for any other
// failure.
func exitCode(err error) int {
	var u *usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &u):
		return 2
	}
	return 1
}

// exit reports run's error on stderr as one line (an error line to
// journald when stderr goes there) and returns the exit status.
func exit(err error, stderr io.Writer) int {
	if err != nil {
		prefix := ""
		if stderr == os.Stderr && journalStream() {
			prefix = "<3>" // sd-daemon priority: err
		}
		fmt.Fprintf(stderr, "%sattestfleet: %v\n", prefix, err)
	}
	return exitCode(err)
}

// levelValue is --log-level.
type levelValue struct{ p *slog.Level }

func (v *levelValue) String() string { return strings.ToLower(v.p.String()) }
func (v *levelValue) Type() string   { return "level" }
func (v *levelValue) Set(s string) error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return errors.New("want debug, info, warn or error")
	}
	*v.p = l
	return nil
}
