package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every attestctl command line in README.md, docs/*.md and the scripts that
// call attestctl names a command that exists and only flags it has.
// (Running the command lines is a separate test; this one catches a renamed
// or dropped flag at once.)
func TestDocumentedFlagsExist(t *testing.T) {
	files, _ := filepath.Glob("../../docs/*.md")
	more, _ := filepath.Glob("../../scripts/*.sh")
	files = append(append(files, "../../README.md", "../../docs/examples/shell-executor.sh", "../../images/e2e.sh",
		"../../images/bake.sh", "../../images/rootfs/attestd-e2e"), more...)
	root := (&env{}).rootCmd()
	cmdRe := regexp.MustCompile(`attestctl"? ((?:[a-z-]+\|)*[a-z-]+)([^|` + "`" + `;)\n]*)`)
	flagRe := regexp.MustCompile(`(?:^|\s)(--[a-z][a-z0-9-]*)`)
	checked := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// Join continued lines, as a shell does.
		text := strings.ReplaceAll(string(b), "\\\n", " ")
		for _, m := range cmdRe.FindAllStringSubmatch(text, -1) {
			for _, name := range strings.Split(m[1], "|") {
				cmd, _, err := root.Find([]string{name})
				if err != nil || cmd == root {
					continue // prose: "attestctl talks to …"
				}
				for _, fm := range flagRe.FindAllStringSubmatch(m[2], -1) {
					checked++
					if cmd.Flags().Lookup(fm[1][2:]) == nil && cmd.InheritedFlags().Lookup(fm[1][2:]) == nil {
						t.Errorf("%s: attestctl %s has no flag %s: %q", f, name, fm[1], strings.TrimSpace(m[0]))
					}
				}
			}
		}
	}
	if checked < 50 {
		t.Errorf("only %d flags checked: the pattern no longer finds the command lines", checked)
	}
}
