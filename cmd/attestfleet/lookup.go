package main

import (
	"context"

	"github.com/spf13/cobra"

	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
	"github.com/attestd/attestd/internal/cmdline"
)

// Look-ups for operators: an environment's and a build's record.

func (c *cli) getEnvCommand() *cobra.Command {
	var k conn
	var envKey, out string
	cmd := &cobra.Command{
		Use:   "get-env --env-key HEX [--out FILE]",
		Short: "Print an admitted environment's record",
		Long: `get-env prints an admitted environment's record; --out writes its signed admission
result (a DSSE envelope over an in-toto SVR).

--json prints {"keyDigest", "bootId", "akDigest", "backends", "image", "level",
"admittedAt", "file"}.`,
		Example:           `  attestfleet get-env --env-key "$env_key" --json`,
		Args:              cmdline.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: c.RunE(func(cmd *cobra.Command) error {
			return k.call(cmd, func(ctx context.Context, fc *fleetv1.Client) error {
				e, err := fc.GetEnvironment(ctx, &fleetv1.GetEnvironmentRequest{EnvKey: envKey})
				if err != nil {
					return err
				}
				if err := writeResult(out, "admission result", e.GetAdmission()); err != nil {
					return err
				}
				return c.printEnvironment(&k, e, out)
			})
		}),
	}
	k.flags(cmd)
	cmd.Flags().StringVar(&envKey, "env-key", "", "the environment: `HEX` SHA-256 of its key (required)")
	cmd.Flags().StringVar(&out, "out", "", "write the signed admission result to `FILE`")
	markRequired(cmd, "env-key")
	return cmd
}

func (c *cli) getBuildCommand() *cobra.Command {
	var k conn
	var build, out string
	cmd := &cobra.Command{
		Use:   "get-build --build-id ID [--out FILE]",
		Short: "Print a build's record",
		Long: `get-build prints a build's state and times; --out writes its newest signed result: the
VSA once completed, else the dispatch result (an error while the build is only reserved).

--json prints {"buildId", "envKey", "state", "reservedAt", "dispatchedAt", "completedAt",
"file"}.`,
		Example:           `  attestfleet get-build --build-id build-0001 --out build.vsa.json`,
		Args:              cmdline.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: c.RunE(func(cmd *cobra.Command) error {
			return k.call(cmd, func(ctx context.Context, fc *fleetv1.Client) error {
				b, err := fc.GetBuild(ctx, &fleetv1.GetBuildRequest{BuildId: build})
				if err != nil {
					return err
				}
				if err := writeResult(out, "signed result", newestResult(b)); err != nil {
					return err
				}
				return c.printBuild(&k, b, out)
			})
		}),
	}
	k.flags(cmd)
	cmd.Flags().StringVar(&build, "build-id", "", "the build `ID` (required)")
	cmd.Flags().StringVar(&out, "out", "", "write the newest signed result to `FILE`")
	markRequired(cmd, "build-id")
	return cmd
}
