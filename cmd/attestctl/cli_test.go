package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

var update = flag.Bool("update", false, "rewrite docs/cli from the command definitions")

// commandPaths lists every command of attestctl (as argument lists), the
// generated ones (help, completion) included, hidden ones excluded.
func commandPaths(t *testing.T) [][]string {
	t.Helper()
	root := (&env{}).rootCmd()
	var out [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		if c.Hidden {
			return
		}
		out = append(out, path)
		for _, sub := range c.Commands() {
			walk(sub, append(slices.Clone(path), sub.Name()))
		}
	}
	walk(root, nil)
	if len(out) < 20 {
		t.Fatalf("only %d commands found", len(out))
	}
	return out
}

// Help is asked for, so it goes to stdout with exit 0, for every command and
// in every form.
func TestHelpExitsZeroOnStdout(t *testing.T) {
	for _, path := range commandPaths(t) {
		forms := [][]string{append(slices.Clone(path), "--help"), append(slices.Clone(path), "-h")}
		if len(path) > 0 {
			forms = append(forms, append([]string{"help"}, path...))
		} else {
			forms = append(forms, []string{"help"})
		}
		for _, args := range forms {
			code, out, errs := ctl(t, args...)
			if code != exitOK || errs != "" || !strings.Contains(out, "Usage:") {
				t.Errorf("attestctl %s: exit %d, stdout %d bytes, stderr %q", strings.Join(args, " "), code, len(out), errs)
			}
		}
	}
}

// Every command refuses an unknown flag with exit 2, a message and a hint,
// and no usage dump.
func TestUnknownFlagExits2(t *testing.T) {
	for _, path := range commandPaths(t) {
		args := append(slices.Clone(path), "--no-such-flag")
		code, out, errs := ctl(t, args...)
		if code != exitUsage || out != "" || !strings.Contains(errs, "unknown flag: --no-such-flag") ||
			!strings.Contains(errs, "--help' for usage") || strings.Contains(errs, "Flags:") {
			t.Errorf("attestctl %s: exit %d, stdout %q, stderr %q", strings.Join(args, " "), code, out, errs)
		}
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string // on stderr
	}{
		{nil, "a command is required"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"verfy"}, "did you mean verify"},
		{[]string{"-json", "verify"}, "unknown shorthand flag"},
		{[]string{"verify"}, "verify takes 1 or more FILEs"},
		{[]string{"export-ak"}, "export-ak takes exactly 1 FILE"},
		{[]string{"export-ak", "a", "b"}, "export-ak takes exactly 1 FILE, got 2"},
		{[]string{"nonce", "extra"}, `unknown command "extra"`},
		{[]string{"verify", "--json=maybe", "f"}, "invalid argument"},
		{[]string{"attest"}, `required flag(s) "nonce" not set`},
		{[]string{"attest", "--nonce", "ab", "--json"}, "--json prints a summary of the file written: it needs --out"},
		{[]string{"bundle", "--json"}, "needs --out"},
		{[]string{"bind", "--build-id", "b", "--json"}, "needs --out"},
		{[]string{"identity", "--pem", "--json"}, "[json pem] were all set"},
		{[]string{"extend", "--domain", "d"}, `required flag(s) "operation" not set`},
		{[]string{"extend", "--domain", "d", "--operation", "o", "--content", "c", "--content-file", "f"}, "content content-file"},
		{[]string{"register"}, `required flag(s) "ek-roots" not set`},
		{[]string{"reference", "--root", dir, "--uki", "u"}, `required flag(s) "key" not set`},
		{[]string{"reference", "--root", dir, "--uki", "u", "--key", "k", "--json"}, "needs --out"},
		{[]string{"verify-image", "--key", "k", "--provenance", "p"}, "verify-image takes 1 or more ARTIFACT files"},
		{[]string{"completion", "tcsh"}, `unknown command "tcsh" for "attestctl completion"`},
		{[]string{"completion"}, "completion needs a shell"},
		{[]string{"gen-docs"}, "gen-docs needs --man or --markdown"},
		{[]string{"version", "1"}, `unknown command "1"`},
		{[]string{"help", "frobnicate"}, `unknown help topic "frobnicate"`},
		{[]string{"help", "verify", "x"}, `unknown help topic "verify x"`},
	} {
		code, out, errs := ctl(t, tc.args...)
		if code != exitUsage || !strings.Contains(errs, tc.want) {
			t.Errorf("attestctl %s: exit %d, stderr %q; want exit 2 and %q (stdout %q)", strings.Join(tc.args, " "), code, errs, tc.want, out)
		}
	}
}

func TestVersion(t *testing.T) {
	code, out, errs := ctl(t, "version")
	if code != exitOK || !strings.HasPrefix(out, "attestctl "+version+" (go") || errs != "" {
		t.Errorf("version: exit %d, %q %q", code, out, errs)
	}
	if code, out, _ := ctl(t, "--version"); code != exitOK || out != "attestctl "+version+"\n" {
		t.Errorf("--version: exit %d, %q", code, out)
	}
	var v versionJSON
	code, out, _ = ctl(t, "version", "--json")
	if code != exitOK || json.Unmarshal([]byte(out), &v) != nil || v.Version != version || v.GoVersion == "" || v.Platform == "" {
		t.Errorf("version --json: exit %d, %q", code, out)
	}
}

func TestCompletion(t *testing.T) {
	for shell, want := range map[string]string{
		"bash": "complete -o default -F __start_attestctl attestctl", "zsh": "#compdef attestctl",
		"fish": "complete -c attestctl", "powershell": "Register-ArgumentCompleter",
	} {
		code, out, errs := ctl(t, "completion", shell)
		if code != exitOK || !strings.Contains(out, want) || errs != "" {
			t.Errorf("completion %s: exit %d, %d bytes without %q; stderr %q", shell, code, len(out), want, errs)
		}
	}
	// The completion itself: subcommands, and flags of a subcommand.
	code, out, _ := ctl(t, "__complete", "ver")
	if code != exitOK || !strings.Contains(out, "verify\t") || !strings.Contains(out, "verify-image\t") || !strings.Contains(out, "version\t") {
		t.Errorf("__complete ver: exit %d\n%s", code, out)
	}
	code, out, _ = ctl(t, "__complete", "verify", "--trust")
	if code != exitOK || !strings.Contains(out, "--trust-ak\t") {
		t.Errorf("__complete verify --trust: exit %d\n%s", code, out)
	}
}

func TestNonceJSON(t *testing.T) {
	var n struct{ Nonce string }
	code, out, _ := ctl(t, "nonce", "--json")
	if code != exitOK || json.Unmarshal([]byte(out), &n) != nil {
		t.Fatalf("nonce --json: exit %d, %q", code, out)
	}
	if b, err := hex.DecodeString(n.Nonce); err != nil || len(b) != 32 {
		t.Errorf("nonce --json: exit %d, %q", code, out)
	}
}

// docs/cli is generated from the command definitions; regenerate with
// go test ./cmd/attestctl -run TestCLIDocs -update.
func TestCLIDocs(t *testing.T) {
	want := filepath.Join("..", "..", "docs", "cli")
	got := t.TempDir()
	if code, _, errs := ctl(t, "gen-docs", "--markdown", got, "--man", filepath.Join(got, "man")); code != exitOK {
		t.Fatalf("gen-docs: exit %d: %s", code, errs)
	}
	man, err := os.ReadFile(filepath.Join(got, "man", "attestctl-verify.1"))
	if err != nil || !bytes.Contains(man, []byte("--trust-ak")) {
		t.Errorf("man page of verify: %v\n%.300s", err, man)
	}
	os.RemoveAll(filepath.Join(got, "man"))
	gen := readDir(t, got)
	if *update {
		os.RemoveAll(want)
		if err := os.MkdirAll(want, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range gen {
			if err := os.WriteFile(filepath.Join(want, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	have := readDir(t, want)
	for name, b := range gen {
		if !bytes.Equal(have[name], b) {
			t.Errorf("docs/cli/%s is stale: run go test ./cmd/attestctl -run TestCLIDocs -update and commit", name)
		}
	}
	for name := range have {
		if _, ok := gen[name]; !ok {
			t.Errorf("docs/cli/%s is not generated any more: run go test ./cmd/attestctl -run TestCLIDocs -update", name)
		}
	}
	if _, ok := gen["attestctl_gen-docs.md"]; ok {
		t.Error("the hidden gen-docs command is documented")
	}
}

func readDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = b
	}
	return m
}

// TestLifecycleJSON runs a whole build against a daemon on the simulator
// with --json on every command: each prints one valid JSON object.
func TestLifecycleJSON(t *testing.T) {
	sock := startAgent(t)
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	nonce := strings.Repeat("cd", 32)
	jsonOf := func(v any, args ...string) {
		t.Helper()
		code, out, errs := ctl(t, append([]string{"--socket", sock}, args...)...)
		if code != exitOK {
			t.Fatalf("attestctl %s: exit %d: %s", strings.Join(args, " "), code, errs)
		}
		dec := json.NewDecoder(strings.NewReader(out))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil || dec.More() {
			t.Fatalf("attestctl %s: not one JSON object of %T (%v):\n%s", strings.Join(args, " "), v, err, out)
		}
	}
	checkFile := func(s fileSummary, file string) {
		t.Helper()
		b, err := os.ReadFile(file)
		sum := sha256.Sum256(b)
		if err != nil || s.File != file || s.Bytes != len(b) || s.SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("summary %+v does not describe %s (%v)", s, file, err)
		}
	}

	var id identityJSON
	jsonOf(&id, "identity", "--json", "--out", path("launch.intoto.jsonl"))
	if len(id.KeyDigest) != 64 || !strings.HasPrefix(id.PublicKey, "-----BEGIN PUBLIC KEY-----") || id.Register != "PCR13" ||
		id.Phase != "launched" || id.LaunchAttestationBytes == 0 || id.LaunchAttestationFile != path("launch.intoto.jsonl") {
		t.Errorf("identity --json: %+v", id)
	}
	var lg struct {
		Events []logEventJSON `json:"events"`
		CEL    string         `json:"cel"`
	}
	jsonOf(&lg, "log", "--json", "--out", path("agent.cel"))
	if len(lg.Events) < 3 || lg.Events[len(lg.Events)-1].Type != "separator" || lg.CEL != path("agent.cel") {
		t.Errorf("log --json: %+v", lg)
	}
	for _, ev := range lg.Events {
		if len(ev.Digests["sha256"]) != 64 || ev.Data == nil {
			t.Errorf("log --json: event %+v", ev)
		}
	}
	var att outputJSON
	jsonOf(&att, "attest", "--nonce", nonce, "--out", path("att.intoto.jsonl"), "--json")
	checkFile(att.fileSummary, path("att.intoto.jsonl"))

	var ak akKeyJSON
	jsonOf(&ak, "export-ak", "--json", path("launch.intoto.jsonl"))
	if !strings.HasPrefix(ak.AKPublicKey, "-----BEGIN PUBLIC KEY-----") || len(ak.SHA256) != 64 {
		t.Errorf("export-ak --json: %+v", ak)
	}
	os.WriteFile(path("ak.pem"), []byte(ak.AKPublicKey), 0o644)

	var bind outputJSON
	jsonOf(&bind, "bind", "--build-id", "build-json", "--nonce", nonce, "--out", path("dispatch.intoto.jsonl"), "--json")
	checkFile(bind.fileSummary, path("dispatch.intoto.jsonl"))
	if bind.BuildID != "build-json" || bind.Repeated {
		t.Errorf("bind --json: %+v", bind)
	}
	jsonOf(&bind, "bind", "--build-id", "build-json", "--nonce", nonce, "--out", path("dispatch2.intoto.jsonl"), "--json")
	if !bind.Repeated {
		t.Errorf("bind --json again: %+v, want repeated", bind)
	}
	var ext struct {
		Seq     uint64            `json:"seq"`
		Digests map[string]string `json:"digests"`
	}
	jsonOf(&ext, "extend", "--domain", "deps", "--operation", "fetch", "--content", "x@sha256:00", "--json")
	if ext.Seq == 0 || len(ext.Digests["sha256"]) != 64 {
		t.Errorf("extend --json: %+v", ext)
	}
	outFile := path("app.bin")
	os.WriteFile(outFile, []byte("the build's output"), 0o644)
	var comp outputJSON
	jsonOf(&comp, "complete", "--build-id", "build-json", "--output", outFile, "--out", path("complete.intoto.jsonl"), "--json")
	checkFile(comp.fileSummary, path("complete.intoto.jsonl"))
	sum := sha256.Sum256([]byte("the build's output"))
	st := `{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"` + outFile + `","digest":{"sha256":"` + hex.EncodeToString(sum[:]) +
		`"}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{"buildDefinition":{"buildType":"https://example.com/t"}}}`
	os.WriteFile(path("provenance.json"), []byte(st), 0o644)
	var sig outputJSON
	jsonOf(&sig, "sign", "--build-id", "build-json", "--statement", path("provenance.json"), "--out", path("provenance.intoto.json"), "--json")
	checkFile(sig.fileSummary, path("provenance.intoto.json"))
	var bun outputJSON
	jsonOf(&bun, "bundle", "--out", path("bundle.intoto.jsonl"), "--json")
	checkFile(bun.fileSummary, path("bundle.intoto.jsonl"))
	if bun.BuildID != "build-json" || bun.Attestations < 5 {
		t.Errorf("bundle --json: %+v", bun)
	}

	// The bundle verifies, and verify --json says so.
	code, out, errs := ctl(t, "verify", "--json", "--trust-ak", path("ak.pem"), "--nonce", "attest="+nonce, "--nonce", "dispatch="+nonce,
		"--build-id", "build-json", path("bundle.intoto.jsonl"))
	var res struct {
		Verified bool `json:"verified"`
	}
	if code != exitOK || json.Unmarshal([]byte(out), &res) != nil || !res.Verified {
		t.Errorf("verify --json of the bundle: exit %d\n%s%s", code, out, errs)
	}
}
