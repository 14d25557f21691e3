package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
)

// versionJSON is version's --json output.
type versionJSON struct {
	Version   string `json:"version"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

func (e *env) versionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print attestctl's version",
		Long: `Print attestctl's version (set at build time: make build uses git describe), the Go
version it was built with and its platform. The version also names attestctl in the VSAs
it signs (verifier.version).

--json prints {"version", "goVersion", "platform"}.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			v := versionJSON{Version: version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
			if asJSON {
				return e.printJSON(v)
			}
			fmt.Fprintf(e.stdout, "attestctl %s (%s %s)\n", v.Version, v.GoVersion, v.Platform)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the version as JSON")
	return cmd
}
