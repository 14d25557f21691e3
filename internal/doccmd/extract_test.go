package doccmd

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// A block is what one fenced code block (or one command of the README's
// tour table) asks a reader to run.
type block struct {
	file string
	line int    // where the block's commands start in file (1-based)
	text string // the commands, as bash reads them
	// lines[i] is the line in file of line i+1 of text.
	lines []int
	// From the marker before the block: <!-- doccmd: skip: REASON -->,
	// <!-- doccmd: exit N -->, <!-- doccmd: synopsis -->.
	skip     string
	exit     int
	synopsis bool // text is syntax, run as its entry in expansions
	tour     bool // a command of README's "A short tour" table: syntax too
}

// commandLangs are the info strings of fenced blocks that hold commands.
var commandLangs = map[string]bool{"sh": true, "bash": true, "shell": true, "console": true}

var (
	fenceRe  = regexp.MustCompile("^(```+|~~~+)\\s*([^\\s`]*)")
	markerRe = regexp.MustCompile(`^<!--\s*doccmd:\s*(.*?)\s*-->$`)
	exitRe   = regexp.MustCompile(`^exit ([0-9]+)$`)
)

// extract returns the command blocks of a Markdown file: fenced blocks whose
// info string is sh, bash, shell or console (for console only the lines
// after a "$ " or "# " prompt, with their continuation lines), each with the
// doccmd marker on the last non-blank line before it.
func extract(file, content string) ([]block, []error) {
	var (
		out    []block
		errs   []error
		lines  = strings.Split(content, "\n")
		marker string // the pending marker's text
		mline  int
	)
	fail := func(line int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s:%d: %s", file, line, fmt.Sprintf(format, args...)))
	}
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if m := markerRe.FindStringSubmatch(l); m != nil {
			if marker != "" {
				fail(mline, "doccmd marker %q is not right before a command block", marker)
			}
			marker, mline = m[1], i+1
			continue
		}
		m := fenceRe.FindStringSubmatch(l)
		if m == nil {
			if l != "" && marker != "" {
				fail(mline, "doccmd marker %q is not right before a command block", marker)
				marker = ""
			}
			continue
		}
		// A fenced block: find its end.
		start := i + 1
		end := start
		for end < len(lines) && !strings.HasPrefix(strings.TrimSpace(lines[end]), m[1]) {
			end++
		}
		body := lines[start:end]
		i = end
		lang := m[2]
		if !commandLangs[lang] {
			if marker != "" {
				fail(mline, "doccmd marker %q is before a %q block, not a command block", marker, lang)
			}
			if lang == "" && len(body) > 0 && strings.HasPrefix(body[0], "$ ") {
				fail(start, "a block of commands after a $ prompt: give it the info string console")
			}
			marker = ""
			continue
		}
		b := block{file: file, line: start + 1}
		if marker != "" {
			if err := b.mark(marker); err != nil {
				fail(mline, "%v", err)
			}
			marker = ""
		}
		if lang == "console" {
			cont := false
			for j, bl := range body {
				switch {
				case cont:
				case strings.HasPrefix(bl, "$ "), strings.HasPrefix(bl, "# "):
					bl = bl[2:]
				default:
					continue // output
				}
				b.add(bl, start+j+1)
				cont = strings.HasSuffix(bl, `\`)
			}
		} else {
			for j, bl := range body {
				b.add(bl, start+j+1)
			}
		}
		if len(b.lines) > 0 {
			b.line = b.lines[0]
		}
		out = append(out, b)
	}
	if marker != "" {
		fail(mline, "doccmd marker %q is not right before a command block", marker)
	}
	return out, errs
}

func (b *block) add(line string, n int) {
	b.text += line + "\n"
	b.lines = append(b.lines, n)
}

// mark applies a doccmd marker's text to b.
func (b *block) mark(m string) error {
	switch {
	case strings.HasPrefix(m, "skip:"):
		b.skip = strings.TrimSpace(strings.TrimPrefix(m, "skip:"))
		if b.skip == "" {
			return fmt.Errorf("doccmd skip marker without a reason: say why it cannot run in a test, and what runs it instead")
		}
	case exitRe.MatchString(m):
		b.exit, _ = strconv.Atoi(exitRe.FindStringSubmatch(m)[1])
	case m == "synopsis":
		b.synopsis = true
	default:
		return fmt.Errorf("unknown doccmd marker %q (known: skip: REASON, exit N, synopsis)", m)
	}
	return nil
}

// command is the block's text as one line: continuation lines joined and
// indentation collapsed, as the expansions table spells it.
func (b block) command() string {
	s := strings.ReplaceAll(strings.TrimSpace(b.text), "\\\n", " ")
	return strings.Join(strings.Fields(s), " ")
}

var codeSpanRe = regexp.MustCompile("`([^`]+)`")

// tour returns the commands of README's "A short tour" table: every code
// span in each row's first cell ("\|" in a cell is a literal |).
func tour(file, content string) []block {
	var out []block
	in := false
	for i, l := range strings.Split(content, "\n") {
		switch {
		case strings.HasPrefix(l, "## "):
			in = l == "## A short tour"
			continue
		case !in || !strings.HasPrefix(l, "|"):
			continue
		}
		cell := firstCell(l)
		for _, m := range codeSpanRe.FindAllStringSubmatch(cell, -1) {
			cmd := strings.ReplaceAll(m[1], `\|`, "|")
			out = append(out, block{file: file, line: i + 1, text: cmd + "\n", lines: []int{i + 1}, tour: true})
		}
	}
	return out
}

// firstCell is the first cell of a Markdown table row.
func firstCell(row string) string {
	row = strings.TrimPrefix(row, "|")
	for i := 0; i < len(row); i++ {
		switch row[i] {
		case '\\':
			i++
		case '|':
			return row[:i]
		}
	}
	return row
}

func readFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}
