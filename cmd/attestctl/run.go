package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
)

// Exit codes (main.go; docs/cli/attestctl.md).
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// errUsage marks bad usage or unreadable input (exit 2); errFailed a
// negative answer (exit 1).
var (
	errUsage  = errors.New("usage")
	errFailed = errors.New("NOT VERIFIED")
)

// Command groups in attestctl's help.
const (
	groupDaemon   = "daemon"
	groupOffline  = "offline"
	groupRegistry = "registry"
)

type env struct {
	socket string // --socket; empty means $ATTESTD_SOCKET, else apiv1.DefaultSocket
	stdout io.Writer
	stderr io.Writer
	now    func() time.Time // appraisal clock; nil means time.Now (tests set it)
	ran    bool             // a command's own code started: its errors are not parse errors
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr}
	root := e.rootCmd()
	if args == nil {
		args = []string{} // nil would make cobra read os.Args
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	switch {
	case err == nil:
		return exitOK
	case !e.ran:
		// cobra refused the command line: unknown command or flag, a
		// missing argument or flag, a value that does not parse.
		fmt.Fprintf(stderr, "attestctl: %v\nRun '%s --help' for usage.\n", err, cmd.CommandPath())
		return exitUsage
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "attestctl:", err)
		return exitUsage
	default:
		fmt.Fprintln(stderr, "attestctl:", err)
		return exitFailed
	}
}

// rootCmd builds attestctl's command tree. Help, usage, completion and the
// docs/cli reference are all generated from it.
func (e *env) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "attestctl",
		Short: "Talk to attestd and verify its attestations",
		Long: `attestctl talks to attestd over its unix socket (identity, attest, log, and the
build lifecycle: bind, extend, complete, sign, bundle, register) and verifies its
attestations offline (verify, verify-image, export-ak), computes the signed reference
values of a baked image (reference), and publishes a build's outputs and attestations to an
OCI registry (push), where verify finds them (oci://).

Exit codes:
  0  success; verified
  1  not verified (the failed checks are named on stderr), or the daemon refused or
     could not be reached
  2  bad usage (unknown command or flag, missing or bad value) or unreadable input

Commands that print data take --json: one JSON object on stdout (shapes in each
command's help). Commands whose output is a file (attest, bind, complete, sign,
bundle, reference) print a JSON summary of the file with --json, which then needs --out.`,
		Version:                    version,
		SilenceErrors:              true,
		SilenceUsage:               true,
		DisableAutoGenTag:          true,
		SuggestionsMinimumDistance: 2,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += "; did you mean " + strings.Join(s, " or ") + "?"
			}
			return errors.New(msg)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprint(e.stderr, cmd.UsageString())
			return fmt.Errorf("%w: a command is required", errUsage)
		},
	}
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.SetVersionTemplate("attestctl {{.Version}}\n")
	root.PersistentFlags().StringVar(&e.socket, "socket", "", "`PATH` of attestd's socket (default $ATTESTD_SOCKET, else "+apiv1.DefaultSocket+")")
	root.AddGroup(
		&cobra.Group{ID: groupDaemon, Title: "Commands talking to attestd (--socket):"},
		&cobra.Group{ID: groupOffline, Title: "Commands working offline:"},
		&cobra.Group{ID: groupRegistry, Title: "Commands talking to an OCI registry:"},
	)
	root.AddCommand(
		e.identityCmd(), e.attestCmd(), e.logCmd(), e.bindCmd(), e.extendCmd(), e.completeCmd(),
		e.signCmd(), e.bundleCmd(), e.registerCmd(),
		e.verifyCmd(), e.verifyImageCmd(), e.exportAKCmd(), e.referenceCmd(), e.nonceCmd(),
		e.pushCmd(), e.pullCmd(),
		e.versionCmd(), e.genDocsCmd(),
	)
	// help for a command that does not exist is bad usage.
	root.SetHelpCommand(&cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		Long:  "Help for any command: attestctl help COMMAND is attestctl COMMAND --help.",
		ValidArgsFunction: func(c *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
			cmd, _, err := c.Root().Find(args)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var names []cobra.Completion
			for _, sub := range cmd.Commands() {
				if sub.IsAvailableCommand() && strings.HasPrefix(sub.Name(), prefix) {
					names = append(names, cobra.CompletionWithDesc(sub.Name(), sub.Short))
				}
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			cmd, rest, err := c.Root().Find(args)
			if err != nil || len(rest) > 0 {
				return fmt.Errorf("%w: unknown help topic %q: attestctl --help lists the commands", errUsage, strings.Join(args, " "))
			}
			return cmd.Help()
		},
	})
	root.InitDefaultHelpCmd()
	// A shell that completion does not know is bad usage, not a request
	// for help.
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			c.RunE = func(cmd *cobra.Command, _ []string) error {
				fmt.Fprint(e.stderr, cmd.UsageString())
				return fmt.Errorf("%w: completion needs a shell: bash, zsh, fish or powershell", errUsage)
			}
		}
	}
	// Errors from a command's own code are classified by what they wrap;
	// errors before it (parsing) are usage errors.
	var mark func(*cobra.Command)
	mark = func(c *cobra.Command) {
		if f := c.RunE; f != nil {
			c.RunE = func(cmd *cobra.Command, args []string) error {
				e.ran = true
				return f(cmd, args)
			}
		}
		for _, sub := range c.Commands() {
			mark(sub)
		}
	}
	mark(root)
	return root
}

// Positional argument checks whose errors name the argument.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%s takes exactly %d %s, got %d", cmd.Name(), n, what, len(args))
		}
		return nil
	}
}

func minArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return fmt.Errorf("%s takes %d or more %s", cmd.Name(), n, what)
		}
		return nil
	}
}

// printJSON writes v as indented JSON to stdout.
func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// fileSummary is the --json output of a command that wrote a file.
type fileSummary struct {
	File   string `json:"file"`
	Bytes  int    `json:"bytes"`
	SHA256 string `json:"sha256"`
}

func summarize(file string, b []byte) fileSummary {
	sum := sha256.Sum256(b)
	return fileSummary{File: file, Bytes: len(b), SHA256: hex.EncodeToString(sum[:])}
}

// jsonNeedsOut is the usage error of a file-writing command given --json
// without --out.
func jsonNeedsOut(asJSON bool, out string) error {
	if asJSON && out == "" {
		return fmt.Errorf("%w: --json prints a summary of the file written: it needs --out", errUsage)
	}
	return nil
}

func (e *env) socketPath() string {
	if e.socket != "" {
		return e.socket
	}
	if d := os.Getenv("ATTESTD_SOCKET"); d != "" {
		return d
	}
	return apiv1.DefaultSocket
}

func (e *env) dial() (*apiv1.Client, error) {
	c, err := apiv1.Dial(e.socketPath())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	return c, nil
}

// rpcError turns a gRPC error into one line naming the socket.
func (e *env) rpcError(method string, err error) error {
	if status.Code(err) == codes.Unavailable && !e.reachable() {
		return fmt.Errorf("%s: attestd is not reachable at %s (is it running? --socket or $ATTESTD_SOCKET)", method, e.socketPath())
	}
	return fmt.Errorf("%s: %w", method, err)
}

// reachable tells whether anything accepts connections on the socket. A
// daemon that answers Unavailable itself (a failed TPM) is reachable, and its
// message is shown as it is.
func (e *env) reachable() bool {
	c, err := net.DialTimeout("unix", e.socketPath(), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
