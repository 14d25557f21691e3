package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/attestd/attestd/internal/cmdline"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// cli is one invocation of the command line.
type cli struct {
	stdout, stderr io.Writer
	cmdline.Invocation
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
	return c.Execute(ctx, c.command(), args)
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
		Args:              cmdline.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		SilenceErrors:     true,
		SilenceUsage:      true,
		// No "did you mean" after an unknown command (cmdline.NoArgs).
		DisableSuggestions: true,
		RunE:               func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
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
	root.AddCommand(c.VersionCommand("attestfleet", version))
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
		Args:              cmdline.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: c.RunE(func(cmd *cobra.Command) error {
			return serve(cmd.Context(), config, cmdline.NewLogger("attestfleet", c.stderr, level), c.ready)
		}),
	}
	cmd.Flags().StringVar(&config, "config", DefaultConfigPath, "config file (YAML, docs/fleet.md)")
	cmdline.LogLevelFlag(cmd.Flags(), &level)
	_ = cmd.MarkFlagFilename("config", "yaml", "yml")
	return cmd
}

// exitCode is the process's exit status for run's error (cmdline.ExitCode).
func exitCode(err error) int { return cmdline.ExitCode(err) }

// exit reports run's error on stderr as one line and returns the exit
// status (cmdline.Exit).
func exit(err error, stderr io.Writer) int { return cmdline.Exit("attestfleet", err, stderr) }
