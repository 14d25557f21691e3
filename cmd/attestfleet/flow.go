package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
	"github.com/attestd/attestd/internal/cmdline"
)

// The steps of the flow, one command each: challenge, admit, dispatch,
// confirm, complete.

// stepValue is challenge's --step.
type stepValue struct{ s fleetv1.Step }

func (v *stepValue) String() string {
	return strings.ToLower(strings.TrimPrefix(v.s.String(), "STEP_"))
}
func (v *stepValue) Type() string { return "STEP" }
func (v *stepValue) Set(s string) error {
	switch s {
	case "admit":
		v.s = fleetv1.Step_STEP_ADMIT
	case "complete":
		v.s = fleetv1.Step_STEP_COMPLETE
	default:
		return fmt.Errorf("want admit or complete")
	}
	return nil
}

// nonceJSON is the --json of challenge and dispatch.
type nonceJSON struct {
	Nonce   string `json:"nonce"`
	Expires string `json:"expires"`
	Step    string `json:"step"`
	BuildID string `json:"buildId,omitempty"`
	EnvKey  string `json:"envKey,omitempty"`
}

// printNonce prints a nonce alone on a line (for $(…)), or as JSON.
func (c *cli) printNonce(k *conn, n nonceJSON) error {
	if k.asJSON {
		return c.printJSON(n)
	}
	_, err := fmt.Fprintln(c.stdout, n.Nonce)
	return err
}

func (c *cli) challengeCommand() *cobra.Command {
	var k conn
	step := stepValue{fleetv1.Step_STEP_ADMIT}
	var build string
	cmd := &cobra.Command{
		Use:   "challenge [--step admit | --step complete --build-id ID]",
		Short: "Ask for a fresh nonce: for an admission, or for a build's completion",
		Long: `challenge prints a fresh 32-byte nonce (hex) the replica stored for one step: for
attestd's Attest before admit (--step admit, the default), or for attestd's Complete of a
dispatched build (--step complete --build-id ID). It is usable once, until it expires.

--json prints {"nonce", "expires", "step", "buildId"}.`,
		Example: `  nonce=$(attestfleet challenge --server unix:/run/attestfleet/attestfleet.sock)
  attestfleet challenge --step complete --build-id build-0001 --json`,
		Args:              cmdline.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: c.RunE(func(cmd *cobra.Command) error {
			return k.call(cmd, func(ctx context.Context, fc *fleetv1.Client) error {
				r, err := fc.Challenge(ctx, &fleetv1.ChallengeRequest{Step: step.s, BuildId: build})
				if err != nil {
					return err
				}
				return c.printNonce(&k, nonceJSON{Nonce: hex.EncodeToString(r.GetNonce()), Expires: when(r.GetExpires()), Step: step.String(), BuildID: build})
			})
		}),
	}
	k.flags(cmd)
	cmd.Flags().Var(&step, "step", "what the nonce is for: admit or complete")
	cmd.Flags().StringVar(&build, "build-id", "", "the dispatched build a completion nonce is for (`ID`)")
	return cmd
}

func (c *cli) admitCommand() *cobra.Command {
	var k conn
	var nonce nonceValue
	var bundle, out string
	cmd := &cobra.Command{
		Use:   "admit --nonce HEX --bundle FILE [--out FILE]",
		Short: "Admit an environment: verify its launch and admission attestations",
		Long: `admit sends the environment's bundle (attestctl bundle, attestd's GetBundle) and the
nonce its admission attestation answers; the replica verifies them against its policy and
records the environment. Prints the environment; --out writes the signed admission result
(a DSSE envelope over an in-toto SVR).

--json prints {"keyDigest", "bootId", "akDigest", "backends", "image", "level",
"admittedAt", "file"}.`,
		Example:           `  attestfleet admit --nonce "$nonce" --bundle admission.intoto.jsonl --out admission.svr.json`,
		Args:              cmdline.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: c.RunE(func(cmd *cobra.Command) error {
			b, err := readBundle(bundle)
			if err != nil {
				return err
			}
			return k.call(cmd, func(ctx context.Context, fc *fleetv1.Client) error {
				r, err := fc.Admit(ctx, &fleetv1.AdmitRequest{Nonce: nonce.b, Bundle: b})
				if err != nil {
					return err
				}
				if err := writeResult(out, "admission result", r.GetEnvironment().GetAdmission()); err != nil {
					return err
				}
				return c.printEnvironment(&k, r.GetEnvironment(), out)
			})
		}),
	}
	k.flags(cmd)
	fs := cmd.Flags()
	fs.Var(&nonce, "nonce", "the nonce from attestfleet challenge (required)")
	fs.StringVar(&bundle, "bundle", "", "the environment's bundle `FILE` (JSON Lines; - for stdin) (required)")
	fs.StringVar(&out, "out", "", "write the signed admission result to `FILE`")
	markRequired(cmd, "nonce", "bundle")
	return cmd
}

func (c *cli) dispatchCommand() *cobra.Command {
	var k conn
	var envKey, build string
	cmd := &cobra.Command{
		Use:   "dispatch --env-key HEX --build-id ID",
		Short: "Bind a build ID to an admitted environment; prints the nonce for attestd's BindBuild",
		Long: `dispatch binds the build ID to the admitted environment: each environment gets at most
one build, each build ID at most one environment, across every replica. It prints the nonce
(hex) to pass to attestd's BindBuild (attestctl bind --nonce) with this build ID.

--json prints {"nonce", "expires", "step", "buildId", "envKey"}.`,
		Example:           `  nonce=$(attestfleet dispatch --env-key "$env_key" --build-id build-0001)`,
		Args:              cmdline.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: c.RunE(func(cmd *cobra.Command) error {
			return k.call(cmd, func(ctx context.Context, fc *fleetv1.Client) error {
				r, err := fc.Dispatch(ctx, &fleetv1.DispatchRequest{EnvKey: envKey, BuildId: build})
				if err != nil {
					return err
				}
				return c.printNonce(&k, nonceJSON{Nonce: hex.EncodeToString(r.GetNonce()), Expires: when(r.GetExpires()), Step: "dispatch", BuildID: build, EnvKey: envKey})
			})
		}),
	}
	k.flags(cmd)
	cmd.Flags().StringVar(&envKey, "env-key", "", "the environment: `HEX` SHA-256 of its key (admit's env-key) (required)")
	cmd.Flags().StringVar(&build, "build-id", "", "the build `ID` (required)")
	markRequired(cmd, "env-key", "build-id")
	return cmd
}

// buildStepCommand is confirm or complete: a build ID and a bundle in, the
// build and its newest signed result out.
func (c *cli) buildStepCommand(use, short, long, example, what string,
	call func(context.Context, *fleetv1.Client, string, []byte) (*fleetv1.Build, error)) *cobra.Command {
	var k conn
	var build, bundle, out string
	cmd := &cobra.Command{
		Use:               use + " --build-id ID --bundle FILE [--out FILE]",
		Short:             short,
		Long:              long + "\n\n--json prints {\"buildId\", \"envKey\", \"state\", \"reservedAt\", \"dispatchedAt\",\n\"completedAt\", \"file\"}.",
		Example:           example,
		Args:              cmdline.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: c.RunE(func(cmd *cobra.Command) error {
			b, err := readBundle(bundle)
			if err != nil {
				return err
			}
			return k.call(cmd, func(ctx context.Context, fc *fleetv1.Client) error {
				r, err := call(ctx, fc, build, b)
				if err != nil {
					return err
				}
				if err := writeResult(out, what, newestResult(r)); err != nil {
					return err
				}
				return c.printBuild(&k, r, out)
			})
		}),
	}
	k.flags(cmd)
	fs := cmd.Flags()
	fs.StringVar(&build, "build-id", "", "the build `ID` (required)")
	fs.StringVar(&bundle, "bundle", "", "the environment's bundle `FILE` (JSON Lines; - for stdin) (required)")
	fs.StringVar(&out, "out", "", "write the signed "+what+" to `FILE`")
	markRequired(cmd, "build-id", "bundle")
	return cmd
}

func (c *cli) confirmCommand() *cobra.Command {
	return c.buildStepCommand("confirm", "Confirm a dispatch: verify the dispatch attestation against the record",
		`confirm sends the bundle after attestd's BindBuild (launch, admission, dispatch); the
replica checks it is by the build's environment, for this build ID and the nonce dispatch
gave, and verifies it. Prints the build; --out writes the signed dispatch result (a DSSE
envelope over an in-toto SVR).`,
		`  attestfleet confirm --build-id build-0001 --bundle dispatch.intoto.jsonl --out dispatch.svr.json`,
		"dispatch result",
		func(ctx context.Context, fc *fleetv1.Client, build string, b []byte) (*fleetv1.Build, error) {
			r, err := fc.ConfirmDispatch(ctx, &fleetv1.ConfirmDispatchRequest{BuildId: build, Bundle: b})
			return r.GetBuild(), err
		})
}

func (c *cli) completeCommand() *cobra.Command {
	return c.buildStepCommand("complete", "Complete a build: verify its completion and provenance; get a signed VSA",
		`complete sends the bundle after attestd's Complete and SignStatement (every attestation,
the signed provenance); the replica verifies it against the recorded dispatch and signs a
SLSA VSA for the build's outputs. Prints the build; --out writes the VSA (a DSSE envelope).`,
		`  attestfleet complete --build-id build-0001 --bundle build.intoto.jsonl --out build.vsa.json`,
		"VSA",
		func(ctx context.Context, fc *fleetv1.Client, build string, b []byte) (*fleetv1.Build, error) {
			r, err := fc.Complete(ctx, &fleetv1.CompleteRequest{BuildId: build, Bundle: b})
			return r.GetBuild(), err
		})
}

// markRequired marks flags required (a missing one is a usage error).
func markRequired(cmd *cobra.Command, names ...string) {
	for _, n := range names {
		_ = cmd.MarkFlagRequired(n)
	}
}

// newestResult is a build's latest signed result: the VSA once completed,
// else the dispatch SVR (none while only reserved).
func newestResult(b *fleetv1.Build) []byte {
	if len(b.GetCompletion()) > 0 {
		return b.GetCompletion()
	}
	return b.GetDispatch()
}

// environmentJSON is an environment's --json.
type environmentJSON struct {
	KeyDigest  string   `json:"keyDigest"`
	BootID     string   `json:"bootId,omitempty"`
	AKDigest   string   `json:"akDigest,omitempty"`
	Backends   []string `json:"backends"`
	Image      string   `json:"image,omitempty"`
	Level      int32    `json:"level"`
	AdmittedAt string   `json:"admittedAt"`
	File       string   `json:"file,omitempty"`
}

func (c *cli) printEnvironment(k *conn, e *fleetv1.Environment, file string) error {
	j := environmentJSON{KeyDigest: e.GetKeyDigest(), BootID: e.GetBootId(), AKDigest: e.GetAkDigest(), Backends: e.GetBackends(),
		Image: e.GetImage(), Level: e.GetLevel(), AdmittedAt: when(e.GetAdmittedAt()), File: file}
	if k.asJSON {
		return c.printJSON(j)
	}
	return c.printTable([][2]string{
		{"env-key", j.KeyDigest}, {"boot-id", j.BootID}, {"ak", j.AKDigest}, {"backends", strings.Join(j.Backends, ",")},
		{"image", j.Image}, {"level", strconv.Itoa(int(j.Level))}, {"admitted-at", j.AdmittedAt}, {"result-file", file},
	})
}

// buildJSON is a build's --json.
type buildJSON struct {
	BuildID      string `json:"buildId"`
	EnvKey       string `json:"envKey"`
	State        string `json:"state"`
	ReservedAt   string `json:"reservedAt,omitempty"`
	DispatchedAt string `json:"dispatchedAt,omitempty"`
	CompletedAt  string `json:"completedAt,omitempty"`
	File         string `json:"file,omitempty"`
}

func (c *cli) printBuild(k *conn, b *fleetv1.Build, file string) error {
	j := buildJSON{BuildID: b.GetBuildId(), EnvKey: b.GetEnvKey(), State: b.GetState(), ReservedAt: when(b.GetReservedAt()),
		DispatchedAt: when(b.GetDispatchedAt()), CompletedAt: when(b.GetCompletedAt()), File: file}
	if k.asJSON {
		return c.printJSON(j)
	}
	return c.printTable([][2]string{
		{"build-id", j.BuildID}, {"env-key", j.EnvKey}, {"state", j.State}, {"reserved-at", j.ReservedAt},
		{"dispatched-at", j.DispatchedAt}, {"completed-at", j.CompletedAt}, {"result-file", file},
	})
}
