package doccmd

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDocCommands runs every command README.md and docs/*.md show, as a
// reader would: each document's blocks in order in one bash session (set
// -euo pipefail, so shell variables flow from block to block), the freshly
// built attestd, attestctl and attestfleet first on PATH, in a working directory holding
// the files the commands name, with an attestd of the session's own on the
// simulator at $ATTESTD_SOCKET. Commands the docs show as syntax (README's
// tour, blocks marked synopsis) run as their entry in expansions.
func TestDocCommands(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	docs = append([]string{filepath.Join(root, "README.md")}, docs...)
	used := map[string]bool{}
	var sessions [][]block
	for _, path := range docs {
		name, _ := filepath.Rel(root, path)
		content, err := readFile(path)
		if err != nil {
			t.Fatal(err)
		}
		blocks, errs := extract(name, content)
		for _, err := range errs {
			t.Error(err)
		}
		if name == "README.md" {
			tr := tour(name, content)
			if len(tr) < 10 {
				t.Errorf("README.md: %d commands found in the \"A short tour\" table: has the section or the table changed?", len(tr))
			}
			blocks = append(blocks, tr...)
			slices.SortStableFunc(blocks, func(a, b block) int { return a.line - b.line })
		}
		var runnable []block
		for _, b := range blocks {
			if b.tour || b.synopsis {
				cmd := b.command()
				e, ok := expansions[cmd]
				if !ok {
					t.Errorf("%s:%d: %q is syntax, and expansions (internal/doccmd/expansions_test.go) has no entry for it: "+
						"add one, a concrete command line to run or why it cannot run in a test", b.file, b.line, cmd)
					continue
				}
				used[cmd] = true
				switch {
				case e.daemon:
					continue // startDaemon runs it
				case e.skip != "":
					b.skip = e.skip
				default:
					b.text, b.lines = e.run+"\n", []int{b.line}
				}
			}
			if b.skip != "" {
				first, _, more := strings.Cut(strings.TrimSpace(b.text), "\n")
				if more {
					first += " …"
				}
				t.Logf("%s:%d: skipped (%s): %s", b.file, b.line, b.skip, first)
				continue
			}
			runnable = append(runnable, b)
		}
		if len(runnable) > 0 {
			sessions = append(sessions, runnable)
		}
	}
	for cmd := range expansions {
		if !used[cmd] {
			t.Errorf("expansions has an entry for %q, which no doc shows any more: update or remove it", cmd)
		}
	}
	if t.Failed() {
		return
	}

	bin := buildBinaries(t, root)
	template := newTemplate(t, root, bin)
	for _, blocks := range sessions {
		t.Run(blocks[0].file, func(t *testing.T) {
			s := startSession(t, template, bin)
			ctx, cancel := context.WithTimeout(context.Background(), sessionTimeout(t))
			defer cancel()
			script, lines := sessionScript(blocks)
			start := time.Now()
			out, err := s.runScript(ctx, bin, script)
			if err == nil && strings.HasSuffix(string(out), doneMark+"\n") {
				t.Logf("%d blocks ran in %v", len(blocks), time.Since(start).Round(time.Millisecond))
				return
			}
			t.Error(explain(blocks, lines, string(out), err, ctx.Err()))
		})
	}
}

// sessionTimeout leaves the test's own deadline room to report.
func sessionTimeout(t *testing.T) time.Duration {
	d := 5 * time.Minute
	if dl, ok := t.Deadline(); ok && time.Until(dl)-30*time.Second < d {
		d = time.Until(dl) - 30*time.Second
	}
	return d
}

// maxShown is how many of a failed block's last output lines a failure shows.
const maxShown = 40

const (
	blockMark = "@@doccmd-block"
	failMark  = "@@doccmd-failed"
	exitMark  = "@@doccmd-exit"
	doneMark  = "@@doccmd-done"
)

// The ERR trap names the failing command and the script line it is on.
var errTrap = `trap '__doccmd_rc=$?; printf "\n` + failMark + ` %d %d %s\n" "$__doccmd_rc" "$LINENO" "${BASH_COMMAND//$'"'"'\n'"'"'/ }" >&2' ERR`

// sessionScript is one bash script running blocks in order; lines[i] is
// the doc line of script line i+1 (0 for the harness's own lines).
func sessionScript(blocks []block) (string, []int) {
	var sb strings.Builder
	var lines []int
	emit := func(s string, docLine int) {
		sb.WriteString(s + "\n")
		lines = append(lines, docLine)
	}
	emit("set -Eeuo pipefail", 0)
	emit(errTrap, 0)
	for i, b := range blocks {
		emit(fmt.Sprintf(`printf '\n%s %d\n'`, blockMark, i), 0)
		if b.exit != 0 {
			emit("set +eE; trap - ERR", 0)
			emit("( set -euo pipefail", 0)
		}
		for j, l := range strings.Split(strings.TrimSuffix(b.text, "\n"), "\n") {
			emit(l, b.lines[min(j, len(b.lines)-1)])
		}
		if b.exit != 0 {
			emit(")", 0)
			emit("__doccmd_rc=$?; set -eE; "+errTrap, 0)
			emit(fmt.Sprintf(`if [ "$__doccmd_rc" -ne %d ]; then printf '\n%s %%d\n' "$__doccmd_rc"; exit 1; fi`, b.exit, exitMark), 0)
		}
	}
	emit(fmt.Sprintf(`printf '\n%s\n'`, doneMark), 0)
	return sb.String(), lines
}

var (
	blockMarkRe = regexp.MustCompile(`(?m)^` + blockMark + ` ([0-9]+)\n`)
	failMarkRe  = regexp.MustCompile(`(?m)^` + failMark + ` ([0-9]+) ([0-9]+) (.*)\n`)
	exitMarkRe  = regexp.MustCompile(`(?m)^` + exitMark + ` ([0-9]+)\n`)
)

// explain says which block and command of a session failed, with what it
// printed.
func explain(blocks []block, lines []int, out string, err, ctxErr error) string {
	ms := blockMarkRe.FindAllStringSubmatchIndex(out, -1)
	if len(ms) == 0 {
		return fmt.Sprintf("the session did not start: %v\n%s", err, out)
	}
	last := ms[len(ms)-1]
	i, _ := strconv.Atoi(out[last[2]:last[3]])
	b := blocks[i]
	shown := out[last[1]:]
	where, what := b.line, fmt.Sprintf("%v", err)
	if m := failMarkRe.FindAllStringSubmatch(shown, -1); m != nil {
		f := m[len(m)-1]
		n, _ := strconv.Atoi(f[2])
		for n > 0 && n <= len(lines) && lines[n-1] == 0 {
			n--
		}
		if n > 0 && n <= len(lines) {
			where = lines[n-1]
		}
		what = fmt.Sprintf("exit status %s: %s", f[1], f[3])
	}
	if m := exitMarkRe.FindStringSubmatch(shown); m != nil {
		what = fmt.Sprintf("exit status %s, the doc's marker says exit %d", m[1], b.exit)
	}
	if ctxErr != nil {
		what = fmt.Sprintf("still running after the session's time (%v): %s", ctxErr, what)
	}
	shown = strings.TrimSpace(failMarkRe.ReplaceAllString(exitMarkRe.ReplaceAllString(shown, ""), ""))
	if l := strings.Split(shown, "\n"); len(l) > maxShown {
		shown = fmt.Sprintf("[%d lines before]\n%s", len(l)-maxShown, strings.Join(l[len(l)-maxShown:], "\n"))
	}
	return fmt.Sprintf("%s:%d: %s\nthe block (%s:%d):\n%s\nits output:\n%s", b.file, where, what, b.file, b.line,
		indent(b.text), indent(shown))
}

func indent(s string) string {
	return "\t" + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n\t")
}
