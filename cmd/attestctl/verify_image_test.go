package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/attestd/attestd/verify"
)

// bakedImage is what images/bake.sh leaves: artifacts, the bake key's
// public key and the signed provenance, made by reference's own code.
type bakedImage struct {
	dir, disk, uki, pub, prov string
	key                       *ecdsa.PrivateKey
}

func bakeImage(t *testing.T) bakedImage {
	t.Helper()
	dir := t.TempDir()
	b := bakedImage{dir: dir, disk: filepath.Join(dir, "disk.img"), uki: filepath.Join(dir, "uki.efi"),
		pub: filepath.Join(dir, "bake-key.pub.pem"), prov: filepath.Join(dir, "provenance.intoto.json")}
	writeFile(t, b.disk, "disk image")
	writeFile(t, b.uki, "unified kernel image")
	key := writeKey(t, b.pub)
	b.key = key
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	pf := newProvenanceFlags(fs)
	if err := fs.Parse([]string{"--subject", b.disk, "--subject", b.uki,
		"--param", "suite=bookworm", "--param", "cmdline=console=ttyS0 roothash=ab",
		"--dep", "git+https://github.com/attestd/attestd@3f2a9c1d5e8b7a6f4c3d2e1f0a9b8c7d6e5f4a3b=gitCommit:3f2a9c1d5e8b7a6f4c3d2e1f0a9b8c7d6e5f4a3b",
	}); err != nil {
		t.Fatal(err)
	}
	st, err := pf.statement(b.uki, "", time.Date(2026, 11, 24, 11, 5, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	env, err := verify.SignReference(context.Background(), key, st)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, b.prov, string(env)+"\n")
	return b
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeKey makes a P-256 key and writes its public key (PEM) to path.
func writeKey(t *testing.T, path string) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	return key
}

// checkLine matches a line of the check table.
func checkLine(name, result string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` +` + result + `\b`)
}

func TestVerifyImage(t *testing.T) {
	b := bakeImage(t)
	code, out, errs := ctl(t, "verify-image", "--key", b.pub, "--provenance", b.prov, b.disk, b.uki)
	if code != exitOK {
		t.Fatalf("good image: exit %d\n%s%s", code, out, errs)
	}
	for _, re := range []*regexp.Regexp{
		checkLine(checkProvSignature, "ok"),
		checkLine(checkProvStatement, "ok"),
		regexp.MustCompile(`(?m)^provenance-subject +ok +\S+/disk\.img: sha256 [0-9a-f]{64} is subject disk\.img$`),
		regexp.MustCompile(`(?m)^provenance-subject +ok +\S+/uki\.efi: sha256 [0-9a-f]{64} is subject uki\.efi$`),
		regexp.MustCompile(`(?m)^builder +https://github\.com/attestd/attestd/images/bake\.sh$`),
		regexp.MustCompile(`(?m)^build type +https://attestd\.dev/image-bake/v1$`),
		regexp.MustCompile(`(?m)^param cmdline +console=ttyS0 roothash=ab$`),
		regexp.MustCompile(`(?m)^dependency +git\+https://github\.com/attestd/attestd@3f2a9c1d\S+ gitCommit:3f2a9c1d`),
	} {
		if !re.MatchString(out) {
			t.Errorf("output does not match %s:\n%s", re, out)
		}
	}
	if !strings.HasSuffix(out, "\nVERIFIED\n") {
		t.Errorf("last line is not VERIFIED:\n%s", out)
	}
	t.Logf("output:\n%s", out)

	// --json: the same checks and the provenance, no VERIFIED line.
	code, out, errs = ctl(t, "verify-image", "--json", "--key", b.pub, "--provenance", b.prov, b.disk)
	if code != exitOK {
		t.Fatalf("--json: exit %d\n%s%s", code, out, errs)
	}
	var res imageVerification
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if !res.OK || len(res.Checks) != 3 || res.Provenance.ExternalParameters["suite"] != "bookworm" {
		t.Errorf("--json: %s", out)
	}
}

func TestVerifyImageNotVerified(t *testing.T) {
	b := bakeImage(t)
	other := filepath.Join(t.TempDir(), "other.pub.pem")
	writeKey(t, other)
	tamperedDir := t.TempDir()
	tampered := filepath.Join(tamperedDir, "disk.img")
	writeFile(t, tampered, "disk image, changed")
	unknown := filepath.Join(tamperedDir, "root.img")
	writeFile(t, unknown, "root")
	garbage := filepath.Join(tamperedDir, "garbage.json")
	writeFile(t, garbage, `{"payloadType": 1}`)
	// Reference values, signed by the bake key: not a provenance.
	refSt, err := verify.NewReferenceStatement([]verify.ReferenceSubject{{Name: "uki.efi", SHA256: strings.Repeat("ab", 32)}},
		&verify.ReferenceValues{Bank: "sha256", Agent: verify.AgentReference{Register: "PCR13", Launch: strings.Repeat("cd", 32)}})
	if err != nil {
		t.Fatal(err)
	}
	refEnv, err := verify.SignReference(context.Background(), b.key, refSt)
	if err != nil {
		t.Fatal(err)
	}
	ref := filepath.Join(tamperedDir, "reference.intoto.json")
	writeFile(t, ref, string(refEnv))

	for _, tc := range []struct {
		name   string
		args   []string
		failed []string // checks that must fail (FAILED in the table, named on stderr)
		ok     []string
		detail string // in the output
	}{
		{"tampered artifact", []string{"--key", b.pub, "--provenance", b.prov, b.uki, tampered},
			[]string{checkProvSubject}, []string{checkProvSignature, checkProvStatement, checkProvSubject},
			tampered + ": sha256 "},
		{"artifact not in the provenance", []string{"--key", b.pub, "--provenance", b.prov, unknown},
			[]string{checkProvSubject}, []string{checkProvSignature, checkProvStatement},
			unknown + `: no subject named "root.img" (subjects: disk.img, uki.efi)`},
		{"other key", []string{"--key", other, "--provenance", b.prov, b.disk},
			[]string{checkProvSignature, checkProvStatement, checkProvSubject}, nil, "not signed by the given key"},
		{"not an envelope", []string{"--key", b.pub, "--provenance", garbage, b.disk},
			[]string{checkProvSignature}, nil, "malformed DSSE envelope"},
		{"reference values, not provenance", []string{"--key", b.pub, "--provenance", ref, b.disk},
			[]string{checkProvStatement, checkProvSubject}, []string{checkProvSignature}, "wrong predicate type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := ctl(t, append([]string{"verify-image"}, tc.args...)...)
			if code != exitFailed {
				t.Fatalf("exit %d, want %d\n%s%s", code, exitFailed, out, errs)
			}
			for _, c := range tc.failed {
				if !checkLine(c, "FAILED").MatchString(out) || !strings.Contains(errs, c) {
					t.Errorf("%s did not fail:\n%s%s", c, out, errs)
				}
			}
			for _, c := range tc.ok {
				if !checkLine(c, "ok").MatchString(out) {
					t.Errorf("%s did not pass:\n%s", c, out)
				}
			}
			if !strings.Contains(out, tc.detail) {
				t.Errorf("output does not say %q:\n%s", tc.detail, out)
			}
			if strings.Contains(out, "VERIFIED") {
				t.Errorf("VERIFIED printed:\n%s", out)
			}
			t.Logf("output:\n%s%s", out, errs)
		})
	}
}

func TestVerifyImageUsage(t *testing.T) {
	b := bakeImage(t)
	missing := filepath.Join(b.dir, "nope")
	for name, args := range map[string][]string{
		"no key":                {"--provenance", b.prov, b.disk},
		"no provenance":         {"--key", b.pub, b.disk},
		"provenance twice":      {"--key", b.pub, "--provenance", b.prov, "--provenance", b.prov, b.disk},
		"no artifact":           {"--key", b.pub, "--provenance", b.prov},
		"unknown flag":          {"--key", b.pub, "--provenance", b.prov, "--nope", b.disk},
		"missing artifact":      {"--key", b.pub, "--provenance", b.prov, b.disk, missing},
		"artifact is a dir":     {"--key", b.pub, "--provenance", b.prov, b.dir},
		"missing provenance":    {"--key", b.pub, "--provenance", missing, b.disk},
		"missing key":           {"--key", missing, "--provenance", b.prov, b.disk},
		"key is not PEM":        {"--key", b.disk, "--provenance", b.prov, b.disk},
		"key is the provenance": {"--key", b.prov, "--provenance", b.prov, b.disk},
	} {
		t.Run(name, func(t *testing.T) {
			if code, out, errs := ctl(t, append([]string{"verify-image"}, args...)...); code != exitUsage {
				t.Errorf("exit %d, want %d\n%s%s", code, exitUsage, out, errs)
			}
		})
	}
}
