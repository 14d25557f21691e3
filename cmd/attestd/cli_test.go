package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// runOut runs the command line and returns stdout, stderr and the error.
func runOut(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

func TestHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string // in stdout
	}{
		{[]string{"--help"}, []string{"Usage:\n  attestd [flags]\n  attestd [command]", "probe-storage", "version", "completion", "--backend name", "--tpm-timeout duration", "--log-level level"}},
		{[]string{"-h"}, []string{"Usage:\n  attestd [flags]"}},
		{[]string{"help"}, []string{"Usage:\n  attestd [flags]"}},
		{[]string{"help", "probe-storage"}, []string{"Usage:\n  attestd probe-storage [flags]", "--out FILE"}},
		{[]string{"probe-storage", "--help"}, []string{"Usage:\n  attestd probe-storage [flags]", "--config string", "--out FILE"}},
		{[]string{"version", "--help"}, []string{"Usage:\n  attestd version [flags]", "--json"}},
		{[]string{"completion", "--help"}, []string{"bash", "zsh", "fish"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			stdout, stderr, err := runOut(t, tc.args...)
			if err != nil || exitCode(err) != 0 {
				t.Fatalf("error %v (exit %d)", err, exitCode(err))
			}
			if stderr != "" {
				t.Errorf("help wrote to stderr:\n%s", stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("help does not contain %q:\n%s", w, stdout)
				}
			}
		})
	}
}

// Every flag the daemon and its subcommands define is in their help:
// help is generated from the definitions, not kept by hand.
func TestHelpListsEveryFlag(t *testing.T) {
	root := (&cli{}).command()
	for _, cmd := range append(root.Commands(), root) {
		if cmd.Name() == "completion" || cmd.Name() == "help" {
			continue
		}
		var out bytes.Buffer
		cmd.SetOut(&out)
		if err := cmd.Help(); err != nil {
			t.Fatal(err)
		}
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			if !strings.Contains(out.String(), "--"+f.Name) {
				t.Errorf("%s --help does not list --%s", cmd.CommandPath(), f.Name)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"version"}, "attestd dev\n"},
		{[]string{"--version"}, "attestd dev\n"},
		{[]string{"version", "--json"}, `{"version":"dev"}` + "\n"},
	} {
		stdout, stderr, err := runOut(t, tc.args...)
		if err != nil || stdout != tc.want || stderr != "" {
			t.Errorf("attestd %s: stdout %q, stderr %q, error %v; want stdout %q", strings.Join(tc.args, " "), stdout, stderr, err, tc.want)
		}
	}
	stdout, _, _ := runOut(t, "version", "--json")
	var v struct{ Version string }
	if err := json.Unmarshal([]byte(stdout), &v); err != nil || v.Version != version {
		t.Errorf("version --json: %q does not decode to the version (%v)", stdout, err)
	}
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		stdout, _, err := runOut(t, "completion", shell)
		if err != nil || !strings.Contains(stdout, "attestd") {
			t.Errorf("completion %s: %v\n%.200s", shell, err, stdout)
		}
	}
	// The daemon's flag values complete.
	stdout, _, err := runOut(t, "__complete", "--backend", "")
	if err != nil || !strings.Contains(stdout, "simulator\n") {
		t.Errorf("--backend completion: %v\n%s", err, stdout)
	}
}

// TestUsageErrors: a command line that cannot run exits 2 with one line
// naming the problem and the help to read.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--frobnicate"}, `unknown flag: --frobnicate (see 'attestd --help')`},
		{[]string{"--backend=magic"}, `invalid value "magic" for --backend: unknown backend; want auto, tpm, snp, tdx or simulator (see 'attestd --help')`},
		{[]string{"--tpm-timeout", "soon"}, `invalid value "soon" for --tpm-timeout: not a duration (like 30s or 2m) (see 'attestd --help')`},
		{[]string{"--tpm-timeout=10ms"}, `invalid value "10ms" for --tpm-timeout: must be at least 100ms (see 'attestd --help')`},
		{[]string{"--log-level=loud"}, `invalid value "loud" for --log-level: want debug, info, warn or error (see 'attestd --help')`},
		{[]string{"--version=maybe"}, `invalid value "maybe" for --version: want true or false (see 'attestd --help')`},
		{[]string{"--config"}, `flag needs an argument: --config (see 'attestd --help')`},
		{[]string{"-config", "/etc/attestd/config.yaml"}, `-config: long flags take two dashes: --config (see 'attestd --help')`},
		{[]string{"-backend=tpm"}, `-backend=tpm: long flags take two dashes: --backend=tpm (see 'attestd --help')`},
		{[]string{"serve"}, `unknown command "serve" (see 'attestd --help')`},
		{[]string{"probe"}, `unknown command "probe"; did you mean "probe-storage"? (see 'attestd --help')`},
		{[]string{"probe-storage", "--bogus"}, `unknown flag: --bogus (see 'attestd probe-storage --help')`},
		{[]string{"probe-storage", "extra"}, `unexpected argument "extra" (see 'attestd probe-storage --help')`},
		{[]string{"probe-storage", "--backend=tpm"}, `unknown flag: --backend (see 'attestd probe-storage --help')`},
		{[]string{"version", "--json=yes"}, `invalid value "yes" for --json: want true or false (see 'attestd version --help')`},
		{[]string{"version", "now"}, `unexpected argument "now" (see 'attestd version --help')`},
		{[]string{"completion", "tcsh"}, `unknown command "tcsh" (see 'attestd completion --help')`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			stdout, stderr, err := runOut(t, tc.args...)
			if err == nil {
				t.Fatal("ran")
			}
			if got := exitCode(err); got != 2 {
				t.Errorf("exit code %d, want 2", got)
			}
			if err.Error() != tc.want {
				t.Errorf("error\n%s\nwant\n%s", err, tc.want)
			}
			if stdout != "" || stderr != "" {
				t.Errorf("printed more than the error: stdout %q, stderr %q", stdout, stderr)
			}
			var line bytes.Buffer
			exit(err, &line)
			if want := "attestd: " + tc.want + "\n"; line.String() != want {
				t.Errorf("exit printed %q, want %q", line.String(), want)
			}
		})
	}
}

// TestConfigErrorsReachTheUser: the daemon and probe-storage report a bad
// config file as one line with the file, line, key and what is allowed,
// and exit 1 (the command line was fine).
func TestConfigErrorsReachTheUser(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("backend: tpm\ntpm:\n  device: /dev/tpmrm0\n  registr: 14\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := "config " + cfg + ": line 4: tpm.registr: unknown key (known here: device, timeout)"
	for _, args := range [][]string{
		{"--config", cfg, "--runtime-dir", t.TempDir()},
		{"probe-storage", "--config", cfg, "--out", "-"},
	} {
		_, _, err := runOut(t, args...)
		if err == nil || err.Error() != want || exitCode(err) != 1 {
			t.Errorf("attestd %s: %v (exit %d), want exit 1 and\n%s", strings.Join(args, " "), err, exitCode(err), want)
		}
	}
}
