// Package cmdline is the command-line scaffolding the daemons attestd and
// attestfleet share: telling a command line that cannot run (exit 2, "see
// '… --help'") from a command that failed (exit 1), the version command,
// --log-level, and logging to the systemd journal when stderr goes there.
// Each function takes the program's name where it prints it.
package cmdline

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
	"github.com/spf13/pflag"
)

// Invocation is one run of a command tree. It tells usage errors from the
// commands' own: an error before a command's own work starts (see RunE) is
// a usage error.
type Invocation struct {
	ran bool
}

// RunE is a cobra RunE that marks the start of the command's own work,
// then runs f.
func (inv *Invocation) RunE(f func(*cobra.Command) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		inv.ran = true
		return f(cmd)
	}
}

// Start marks the start of the command's own work, for a RunE that checks
// its command line itself first.
func (inv *Invocation) Start() { inv.ran = true }

// Execute runs root on args (without the program name). An error before a
// command's own work started is a *UsageError naming the command whose
// help to read.
func (inv *Invocation) Execute(ctx context.Context, root *cobra.Command, args []string) error {
	if args == nil {
		args = []string{} // cobra reads os.Args for nil
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err != nil && !inv.ran {
		return &UsageError{Cmd: cmd.CommandPath(), Err: err}
	}
	return err
}

// UsageError is a command line that cannot be run: exit status 2.
type UsageError struct {
	Cmd string // the command whose --help to read, "attestd probe-storage"
	Err error
}

func (e *UsageError) Error() string {
	return fmt.Sprintf("%v (see '%s --help')", e.Err, e.Cmd)
}

func (e *UsageError) Unwrap() error { return e.Err }

// NoArgs is a cobra.PositionalArgs that refuses positional arguments,
// naming the first; for a command with subcommands it is an unknown
// command, with the nearest subcommand suggested unless
// cmd.DisableSuggestions.
func NoArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if cmd.HasAvailableSubCommands() {
		msg := fmt.Sprintf("unknown command %q", args[0])
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 && !cmd.DisableSuggestions {
			msg += fmt.Sprintf("; did you mean %q?", s[0])
		}
		return errors.New(msg)
	}
	return fmt.Errorf("unexpected argument %q", args[0])
}

// ExitCode is the process's exit status for an error of Execute: 2 for a
// command line that cannot be run, 1 for any other failure.
func ExitCode(err error) int {
	var u *UsageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &u):
		return 2
	}
	return 1
}

// Exit reports err on stderr as one line, "name: err" (an error line to
// journald when stderr goes there), and returns the exit status.
func Exit(name string, err error, stderr io.Writer) int {
	if err != nil {
		prefix := ""
		if stderr == os.Stderr && journalStream() {
			prefix = "<3>" // sd-daemon priority: err
		}
		fmt.Fprintf(stderr, "%s%s: %v\n", prefix, name, err)
	}
	return ExitCode(err)
}

// VersionCommand is "name version [--json]": it prints "name version", or
// {"version": "…"} as JSON, on the command's stdout.
func (inv *Invocation) VersionCommand(name, version string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:               "version",
		Short:             "Print " + name + "'s version",
		Args:              NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: inv.RunE(func(cmd *cobra.Command) error {
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(struct {
					Version string `json:"version"`
				}{version})
			}
			_, err := fmt.Fprintln(cmd.OutOrStdout(), name, version)
			return err
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"version": "…"} as JSON`)
	return cmd
}

// LogLevelFlag defines --log-level on fs: debug, info, warn or error, into
// *p (its default is *p).
func LogLevelFlag(fs *pflag.FlagSet, p *slog.Level) {
	fs.Var(&levelValue{p}, "log-level", "least severe level logged: debug, info, warn or error")
}

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
