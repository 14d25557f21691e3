package doccmd

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestExtract(t *testing.T) {
	doc := strings.Join([]string{
		"# t",     // 1
		"```sh",   // 2
		"a=1",     // 3
		"echo $a", // 4
		"```",     // 5
		"<!-- doccmd: skip: needs X; run by Y -->", // 6
		"```bash",                 // 7
		"tpm thing",               // 8
		"```",                     // 9
		"```yaml",                 // 10
		"key: value",              // 11
		"```",                     // 12
		"<!-- doccmd: exit 1 -->", // 13
		"```console",              // 14
		"$ attestctl verify \\",   // 15
		"    x.jsonl",             // 16
		"FAILED",                  // 17
		"# id -u",                 // 18
		"0",                       // 19
		"```",                     // 20
	}, "\n")
	got, errs := extract("d.md", doc)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	want := []block{
		{file: "d.md", line: 3, text: "a=1\necho $a\n", lines: []int{3, 4}},
		{file: "d.md", line: 8, text: "tpm thing\n", lines: []int{8}, skip: "needs X; run by Y"},
		{file: "d.md", line: 15, text: "attestctl verify \\\n    x.jsonl\nid -u\n", lines: []int{15, 16, 18}, exit: 1},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(block{})); diff != "" {
		t.Errorf("extract (-want +got):\n%s", diff)
	}
	if c := got[2].command(); c != "attestctl verify x.jsonl id -u" {
		t.Errorf("command() = %q", c)
	}
}

func TestExtractRefusesBadMarkers(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"skip without reason", "<!-- doccmd: skip: -->\n```sh\nx\n```\n", "d.md:1: doccmd skip marker without a reason"},
		{"unknown", "<!-- doccmd: maybe -->\n```sh\nx\n```\n", `d.md:1: unknown doccmd marker "maybe"`},
		{"before yaml", "<!-- doccmd: synopsis -->\n```yaml\nx\n```\n", `d.md:1: doccmd marker "synopsis" is before a "yaml" block`},
		{"before prose", "<!-- doccmd: synopsis -->\ntext\n```sh\nx\n```\n", `d.md:1: doccmd marker "synopsis" is not right before a command block`},
		{"prompt without console", "```\n$ attestctl log\n```\n", "d.md:1: a block of commands after a $ prompt: give it the info string console"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errs := extract("d.md", tc.doc)
			if len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), tc.want) {
				t.Errorf("errors %v, want one starting %q", errs, tc.want)
			}
		})
	}
}

func TestTour(t *testing.T) {
	doc := "## A short tour\n\n| command | what |\n|---|---|\n" +
		"| `attestd --backend=snp\\|tdx` (root) | x `not this` |\n" +
		"| `attestctl --help`, `attestd --help` | help |\n\n## Next\n| `no` | x |\n"
	var got []string
	for _, b := range tour("README.md", doc) {
		got = append(got, b.command())
	}
	want := []string{"attestd --backend=snp|tdx", "attestctl --help", "attestd --help"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tour (-want +got):\n%s", diff)
	}
}

// A failing command is reported with its file, line, exit status and
// output; a block marked exit N must exit N; variables flow between blocks.
func TestSessionReportsTheFailingCommand(t *testing.T) {
	for _, tc := range []struct {
		name   string
		blocks []block
		want   string // "" = the session passes
	}{
		{"variables flow", []block{
			{file: "d.md", line: 3, text: "x=1\n", lines: []int{3}},
			{file: "d.md", line: 9, text: "test \"$x\" = 1\n", lines: []int{9}},
		}, ""},
		{"second command fails", []block{
			{file: "d.md", line: 3, text: "true\n", lines: []int{3}},
			{file: "d.md", line: 7, text: "echo before\nsh -c 'echo oops; exit 3'\necho after\n", lines: []int{7, 8, 9}},
		}, "d.md:8: exit status 3: sh -c 'echo oops; exit 3'\n"},
		{"expected refusal", []block{
			{file: "d.md", line: 5, text: "false\n", lines: []int{5}, exit: 1},
		}, ""},
		{"refusal that passes", []block{
			{file: "d.md", line: 5, text: "true\n", lines: []int{5}, exit: 1},
		}, "d.md:5: exit status 0, the doc's marker says exit 1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			script, lines := sessionScript(tc.blocks)
			s := &session{work: t.TempDir()}
			out, err := s.runScript(context.Background(), os.TempDir(), script)
			passed := err == nil && strings.HasSuffix(string(out), doneMark+"\n")
			switch {
			case tc.want == "" && !passed:
				t.Fatalf("session failed: %s", explain(tc.blocks, lines, string(out), err, nil))
			case tc.want != "" && passed:
				t.Fatalf("session passed, want %q", tc.want)
			case tc.want != "":
				if got := explain(tc.blocks, lines, string(out), err, nil); !strings.HasPrefix(got, tc.want) {
					t.Errorf("report:\n%s\nwant it to start %q", got, tc.want)
				}
			}
		})
	}
}
