package cmdline

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/spf13/cobra"
)

// tree is a program "prog" with a subcommand "sub" that fails with errSub.
func tree(inv *Invocation, errSub error) *cobra.Command {
	var level slog.Level
	root := &cobra.Command{Use: "prog", Args: NoArgs, SilenceErrors: true, SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() }}
	sub := &cobra.Command{Use: "sub", Args: NoArgs, RunE: inv.RunE(func(*cobra.Command) error { return errSub })}
	LogLevelFlag(sub.Flags(), &level)
	root.AddCommand(sub, inv.VersionCommand("prog", "1.2"))
	return root
}

func TestExecute(t *testing.T) {
	errSub := errors.New("sub failed")
	for _, tc := range []struct {
		args      []string
		noSuggest bool
		want      string // error; "" for none
		code      int
	}{
		{[]string{"sub"}, false, "sub failed", 1},
		{[]string{"sub", "x"}, false, `unexpected argument "x" (see 'prog sub --help')`, 2},
		{[]string{"sub", "--log-level=loud"}, false, `invalid argument "loud" for "--log-level" flag: want debug, info, warn or error (see 'prog sub --help')`, 2},
		{[]string{"sub", "--log-level=warn"}, false, "sub failed", 1},
		{[]string{"su"}, false, `unknown command "su"; did you mean "sub"? (see 'prog --help')`, 2},
		{[]string{"su"}, true, `unknown command "su" (see 'prog --help')`, 2},
		{[]string{"version", "extra"}, false, `unexpected argument "extra" (see 'prog version --help')`, 2},
		{[]string{"version"}, false, "", 0},
	} {
		var inv Invocation
		root := tree(&inv, errSub)
		root.DisableSuggestions = tc.noSuggest
		root.SetOut(&bytes.Buffer{})
		err := inv.Execute(context.Background(), root, tc.args)
		if got := ""; err != nil {
			got = err.Error()
			if got != tc.want {
				t.Errorf("%v: error %q, want %q", tc.args, got, tc.want)
			}
		} else if tc.want != "" {
			t.Errorf("%v: no error, want %q", tc.args, tc.want)
		}
		if got := ExitCode(err); got != tc.code {
			t.Errorf("%v: exit code %d, want %d", tc.args, got, tc.code)
		}
	}
}

func TestVersionAndExit(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"version"}, "prog 1.2\n"},
		{[]string{"version", "--json"}, `{"version":"1.2"}` + "\n"},
	} {
		var inv Invocation
		root := tree(&inv, nil)
		var out bytes.Buffer
		root.SetOut(&out)
		if err := inv.Execute(context.Background(), root, tc.args); err != nil || out.String() != tc.want {
			t.Errorf("%v: %q, %v; want %q", tc.args, out.String(), err, tc.want)
		}
	}
	var line bytes.Buffer
	err := &UsageError{Cmd: "prog sub", Err: errors.New("bad")}
	if code := Exit("prog", err, &line); code != 2 || line.String() != "prog: bad (see 'prog sub --help')\n" {
		t.Errorf("Exit: %d %q", code, line.String())
	}
	line.Reset()
	if code := Exit("prog", nil, &line); code != 0 || line.Len() != 0 {
		t.Errorf("Exit(nil): %d %q", code, line.String())
	}
}
