package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attestd/attestd/distribute"
)

// TestSigstoreForm: every signed thing the lifecycle commands write comes out
// as Sigstore bundles with --format sigstore, verify reads them (sigstore-go
// checks each), and a bundle whose hint names another key, or whose envelope
// was tampered with, fails a named check.
func TestSigstoreForm(t *testing.T) {
	sock := startAgent(t)
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	nonce := strings.Repeat("ef", 32)
	run := func(args ...string) string {
		t.Helper()
		code, out, errs := ctl(t, append([]string{"--socket", sock}, args...)...)
		if code != exitOK {
			t.Fatalf("attestctl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
		}
		return out
	}
	sigstore := []string{"--format", formatSigstore}
	run(append([]string{"identity", "--out", path("launch.jsonl")}, sigstore...)...)
	run(append([]string{"attest", "--nonce", nonce, "--out", path("att.jsonl")}, sigstore...)...)
	run(append([]string{"bind", "--build-id", "b-1", "--nonce", nonce, "--out", path("dispatch.jsonl")}, sigstore...)...)
	os.WriteFile(path("app.bin"), []byte("output"), 0o644)
	run(append([]string{"complete", "--build-id", "b-1", "--output", path("app.bin"), "--out", path("complete.jsonl")}, sigstore...)...)
	sum := sha256.Sum256([]byte("output"))
	os.WriteFile(path("st.json"), []byte(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"`+path("app.bin")+
		`","digest":{"sha256":"`+hex.EncodeToString(sum[:])+`"}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{"buildDefinition":{"buildType":"https://example.com/t"}}}`), 0o644)
	run(append([]string{"sign", "--build-id", "b-1", "--statement", path("st.json"), "--out", path("prov.json")}, sigstore...)...)
	run(append([]string{"bundle", "--out", path("build.jsonl")}, sigstore...)...)
	run("bundle", "--out", path("build.dsse.jsonl"))

	for file, want := range map[string]int{"launch.jsonl": 1, "att.jsonl": 1, "dispatch.jsonl": 1, "complete.jsonl": 1, "prov.json": 1, "build.jsonl": 5} {
		if n := bytes.Count(readTestFile(t, path(file)), []byte(distribute.MediaTypeBundle)); n != want {
			t.Errorf("%s holds %d Sigstore bundles, want %d", file, n, want)
		}
	}
	// The signed provenance is one bundle, named by the env key.
	if _, _, err := distribute.OpenBundle(bytes.TrimSpace(readTestFile(t, path("prov.json")))); err != nil {
		t.Errorf("sign --format sigstore: %v", err)
	}
	code, akPEM, errs := ctl(t, "export-ak", path("launch.jsonl"))
	if code != exitOK {
		t.Fatalf("export-ak of a Sigstore launch attestation: exit %d %s", code, errs)
	}
	os.WriteFile(path("ak.pem"), []byte(akPEM), 0o644)

	verifyArgs := []string{"verify", "--trust-ak", path("ak.pem"), "--nonce", "attest=" + nonce, "--build-id", "b-1"}
	code, out, errs := ctl(t, append(verifyArgs, path("build.jsonl"))...)
	if code != exitOK || strings.Count(out, distribute.CheckSigstore+"  ok") != 5 {
		t.Fatalf("verify of the Sigstore bundle: exit %d\n%s%s", code, out, errs)
	}
	// Both forms give the same verdict and, with results, the same digest.
	code, out, errs = ctl(t, append(verifyArgs, "--json", path("build.jsonl"), path("build.dsse.jsonl"))...)
	var ev struct {
		Bundles []struct {
			SHA256 string `json:"sha256"`
		} `json:"bundles"`
		Verified bool `json:"verified"`
	}
	if code != exitOK || json.Unmarshal([]byte(out), &ev) != nil || !ev.Verified || ev.Bundles[0].SHA256 != ev.Bundles[1].SHA256 {
		t.Errorf("verify --json of both forms: exit %d\n%s%s", code, out, errs)
	}

	refused := func(name string, line int, edit func(m map[string]any)) {
		t.Run(name, func(t *testing.T) {
			lines := bytes.Split(bytes.TrimSpace(readTestFile(t, path("build.jsonl"))), []byte("\n"))
			var m map[string]any
			if err := json.Unmarshal(lines[line], &m); err != nil {
				t.Fatal(err)
			}
			edit(m)
			lines[line], _ = json.Marshal(m)
			p := filepath.Join(t.TempDir(), "changed.jsonl")
			os.WriteFile(p, bytes.Join(lines, []byte("\n")), 0o644)
			code, out, errs := ctl(t, append(verifyArgs, p)...)
			if code != exitFailed || !checkLine(distribute.CheckSigstore, "FAILED").MatchString(out) || !strings.Contains(errs, distribute.CheckSigstore) {
				t.Fatalf("exit %d, want %d with %s FAILED\n%s%s", code, exitFailed, distribute.CheckSigstore, out, errs)
			}
		})
	}
	refused("hint names another key", 2, func(m map[string]any) {
		m["verificationMaterial"].(map[string]any)["publicKey"].(map[string]any)["hint"] = strings.Repeat("ab", 32)
	})
	refused("tampered payload", 3, func(m map[string]any) {
		env := m["dsseEnvelope"].(map[string]any)
		env["payload"] = "e30=" // {}
	})
	refused("v0.1 media type", 0, func(m map[string]any) {
		m["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.1"
	})
}

// TestSigstoreReference: the e2e's reference values as a Sigstore bundle
// appraise the e2e bundle as the DSSE envelope does; with another bake key
// they fail the reference-values check.
func TestSigstoreReference(t *testing.T) {
	dir := t.TempDir()
	bake := filepath.Join(e2eDir, "bake-key.pub.pem")
	pub, err := readPublicKey(bake)
	if err != nil {
		t.Fatal(err)
	}
	f := format(formatSigstore)
	ref, err := f.encode(readTestFile(t, filepath.Join(e2eDir, "reference.intoto.json")), pub)
	if err != nil {
		t.Fatal(err)
	}
	sigRef := filepath.Join(dir, "reference.sigstore.json")
	writeFile(t, sigRef, string(ref))
	bundle := filepath.Join(e2eDir, "bundle.intoto.jsonl")
	for _, r := range []string{sigRef, filepath.Join(e2eDir, "reference.intoto.json")} {
		if code, out := verifyExit(t, "--reference", r, "--reference-key", bake, bundle); code != exitOK {
			t.Fatalf("reference values %s: exit %d\n%s", r, code, out)
		}
	}
	other := filepath.Join(dir, "other.pub.pem")
	writeKey(t, other)
	code, out := verifyExit(t, "--reference", sigRef, "--reference-key", other, bundle)
	if code != exitFailed || !checkLine("reference-values", "FAILED").MatchString(out) || !strings.Contains(out, "key hint") {
		t.Errorf("reference values for another key: exit %d\n%s", code, out)
	}
}

// TestSigstoreImageProvenance: verify-image reads the image provenance as a
// Sigstore bundle (reference --format sigstore), and refuses it for another
// key.
func TestSigstoreImageProvenance(t *testing.T) {
	b := bakeImage(t)
	env, err := os.ReadFile(b.prov)
	if err != nil {
		t.Fatal(err)
	}
	f := format(formatSigstore)
	bundle, err := f.encode(bytes.TrimSpace(env), b.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	prov := filepath.Join(b.dir, "provenance.sigstore.json")
	writeFile(t, prov, string(bundle))
	if code, out, errs := ctl(t, "verify-image", "--key", b.pub, "--provenance", prov, b.disk, b.uki); code != exitOK {
		t.Fatalf("verify-image of a Sigstore bundle: exit %d\n%s%s", code, out, errs)
	}
	other := filepath.Join(b.dir, "other.pub.pem")
	writeKey(t, other)
	code, out, errs := ctl(t, "verify-image", "--key", other, "--provenance", prov, b.disk)
	if code != exitFailed || !checkLine(checkProvSignature, "FAILED").MatchString(out) || !strings.Contains(out, "key hint") {
		t.Errorf("verify-image with another key: exit %d\n%s%s", code, out, errs)
	}
}

func readTestFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
