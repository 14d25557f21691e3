package bench

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs the harness in its tiny mode: two scenarios against the
// real attestd on swtpm, output into a temp dir, no docs rewritten. It
// needs swtpm (scripts/install-deps.sh); CI installs it, so there it fails
// rather than skips.
func TestSmoke(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	docs := filepath.Join(out, "performance.md")
	if err := os.WriteFile(docs, []byte("# Performance\n\nIntro.\n\n## Other\n\nKept.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var log strings.Builder
	res, err := Run(ctx, Config{
		Root: root, Params: TinyParams(), OutDir: out, Docs: docs,
		Scenarios: []string{ScenarioAttest, ScenarioEvents},
		TmpfsDir:  t.TempDir(), DiskDir: t.TempDir(), Log: &log,
	})
	if errors.Is(err, ErrNoSwtpm) && os.Getenv("CI") == "" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	if len(res.Errors) > 0 {
		t.Errorf("scenarios failed: %v\n%s", res.Errors, log.String())
	}
	if len(res.Attest) != 2 {
		t.Fatalf("attest results for %d file systems, want 2", len(res.Attest))
	}
	for _, a := range res.Attest {
		if a.Err != "" || a.N == 0 || a.Attest.P50 <= 0 || a.Raw.P50 <= 0 || a.TPMPerAttest <= 0 {
			t.Errorf("attest on %s: %+v", a.FS, a)
		}
		if !strings.Contains(a.Commands, "Quote") || !strings.Contains(a.Commands, "Sign") {
			t.Errorf("attest on %s: TPM commands %q, want a Quote and a Sign", a.FS, a.Commands)
		}
	}
	e := res.Events
	if e == nil || len(e.Points) != len(TinyParams().Events) {
		t.Fatalf("events: %+v", e)
	}
	for _, p := range e.Points {
		if p.Reached != p.Events || p.Latency <= 0 || p.BundleBytes == 0 || p.BundleErr != "" {
			t.Errorf("events point %+v", p)
		}
	}
	if a, b := e.Points[0].BundleBytes, e.Points[1].BundleBytes; b <= a {
		t.Errorf("bundle of %d events %d bytes, of %d events %d bytes: want it to grow", e.Points[0].Events, a, e.Points[1].Events, b)
	}

	for _, f := range []string{"results.json", "extend-latency.png", "bundle-size.png"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("output %s: %v", f, err)
		}
	}
	doc, err := os.ReadFile(docs)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{sectionHeading, MarkerBegin, MarkerEnd, "Intro.", "## Other\n\nKept.", "vs raw TPM2_Quote + TPM2_Sign", "Extend latency", "extend-latency.png"} {
		if !strings.Contains(string(doc), want) {
			t.Errorf("docs lack %q:\n%s", want, doc)
		}
	}
}

func TestReplaceSection(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
		err             bool
	}{
		{
			name: "replaced between the markers",
			doc:  "# P\n\nintro\n\n## H\n\n" + MarkerBegin + "\nold\n" + MarkerEnd + "\n\nafter\n",
			want: "# P\n\nintro\n\n## H\n\n" + MarkerBegin + "\nnew\n" + MarkerEnd + "\n\nafter\n",
		},
		{
			name: "added after the first paragraph",
			doc:  "# P\n\nintro\n\n## Other\n",
			want: "# P\n\nintro\n\n" + sectionHeading + "\n\n" + MarkerBegin + "\nnew\n" + MarkerEnd + "\n\n## Other\n",
		},
		{name: "one marker only", doc: "# P\n\n" + MarkerEnd + "\n", err: true},
		{name: "markers reversed", doc: MarkerEnd + "\n" + MarkerBegin + "\n", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := replaceSection([]byte(tc.doc), "new\n")
			if tc.err {
				if err == nil {
					t.Fatalf("no error; got %q", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestLatencyAt(t *testing.T) {
	lats := make([]time.Duration, 300)
	for i := range lats {
		lats[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{1, 1 * time.Millisecond},     // window 1
		{10, 8 * time.Millisecond},    // events 6-10
		{300, 250 * time.Millisecond}, // events 201-300
		{301, 0},                      // not reached
	} {
		if got := latencyAt(lats, tc.n); got != tc.want {
			t.Errorf("latencyAt(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 100000: "100,000", 1234567: "1,234,567", -2000: "-2,000"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}
