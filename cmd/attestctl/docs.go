package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

func (e *env) genDocsCmd() *cobra.Command {
	var manDir, mdDir string
	cmd := &cobra.Command{
		Use:    "gen-docs [--man DIR] [--markdown DIR]",
		Short:  "Write attestctl's man pages and markdown reference",
		Long:   `Write a man page (section 1) per command to --man, and a markdown page per command to --markdown (docs/cli/ is made this way; a test checks it is current).`,
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if manDir == "" && mdDir == "" {
				return fmt.Errorf("%w: gen-docs needs --man or --markdown", errUsage)
			}
			root := cmd.Root()
			if manDir != "" {
				if err := os.MkdirAll(manDir, 0o755); err != nil {
					return err
				}
				hdr := &doc.GenManHeader{Title: "ATTESTCTL", Section: "1", Source: "attestd " + version, Manual: "attestd manual"}
				if err := doc.GenManTree(root, hdr, manDir); err != nil {
					return fmt.Errorf("man pages: %w", err)
				}
			}
			if mdDir != "" {
				if err := os.MkdirAll(mdDir, 0o755); err != nil {
					return err
				}
				if err := doc.GenMarkdownTree(root, mdDir); err != nil {
					return fmt.Errorf("markdown: %w", err)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&manDir, "man", "", "write man pages to `DIR`")
	cmd.Flags().StringVar(&mdDir, "markdown", "", "write markdown pages to `DIR`")
	cmd.MarkFlagDirname("man")
	cmd.MarkFlagDirname("markdown")
	return cmd
}
