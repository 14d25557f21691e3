//go:build cosign

package distribute_test

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attestd/attestd/distribute"
)

// cosignPath is where make cosign-check installs cosign.
var cosignPath = filepath.Join("..", "bin", "tools", "cosign")

// TestCosignVerifies: cosign (v2.6.5, an independent verifier) verifies every
// kind NewBundle writes, offline: the public key alone, an empty trusted root,
// no transparency log; the statement's first subject as the artifact digest,
// its predicate type as --type. With another key, or a payload changed, it
// refuses. It runs with `make cosign-check` (build tag cosign), which
// installs cosign first: a cold go install of cosign takes up to an hour on
// 2 busy cores, too long for every CI run; make test runs the sigstore-go
// check (TestSigstoreGoAccepts), the library cosign verifies bundles with.
func TestCosignVerifies(t *testing.T) {
	if _, err := os.Stat(cosignPath); err != nil {
		t.Fatalf("cosign is not installed at %s: run make cosign-check (%v)", cosignPath, err)
	}
	dir := t.TempDir()
	trustedRoot := filepath.Join(dir, "trusted_root.json")
	writeTestFile(t, trustedRoot, []byte(`{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`))
	otherKey := filepath.Join(dir, "other.pub.pem")
	writeTestFile(t, otherKey, pemPublicKey(t, newKey(t).Public()))
	for _, th := range realThings(t) {
		t.Run(th.name, func(t *testing.T) {
			raw, err := distribute.NewBundle(th.env, th.key)
			if err != nil {
				t.Fatal(err)
			}
			bundle, key := filepath.Join(dir, th.name+".sigstore.json"), filepath.Join(dir, th.name+".pub.pem")
			writeTestFile(t, bundle, raw)
			writeTestFile(t, key, pemPublicKey(t, th.key))
			predicateType, digest := statementOf(t, th.env.Payload)
			args := func(key string) []string {
				return []string{"verify-blob-attestation", "--bundle", bundle, "--new-bundle-format", "--key", key,
					"--trusted-root", trustedRoot, "--insecure-ignore-tlog", "--type", predicateType,
					"--digest", digest, "--digestAlg", "sha256"}
			}
			out, err := exec.Command(cosignPath, args(key)...).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "Verified OK") {
				t.Fatalf("cosign %s: %v\n%s", strings.Join(args(key), " "), err, out)
			}
			if out, err := exec.Command(cosignPath, args(otherKey)...).CombinedOutput(); err == nil {
				t.Fatalf("cosign verifies the bundle with another key:\n%s", out)
			}
			// A payload changed in the bundle: same statement fields, other bytes.
			writeTestFile(t, bundle, edit(t, raw, func(m map[string]any) {
				p, _ := base64.StdEncoding.DecodeString(dsseOf(m)["payload"].(string))
				dsseOf(m)["payload"] = base64.StdEncoding.EncodeToString(append(p, ' '))
			}))
			if out, err := exec.Command(cosignPath, args(key)...).CombinedOutput(); err == nil {
				t.Fatalf("cosign verifies a tampered bundle:\n%s", out)
			}
		})
	}
}

// statementOf returns the predicate type and first subject's sha256 of a
// base64 in-toto statement.
func statementOf(t *testing.T, payload string) (string, string) {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(payload)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		PredicateType string `json:"predicateType"`
		Subject       []struct {
			Digest map[string]string `json:"digest"`
		} `json:"subject"`
	}
	if err := json.Unmarshal(b, &st); err != nil || len(st.Subject) == 0 {
		t.Fatalf("statement: %v", err)
	}
	return st.PredicateType, st.Subject[0].Digest["sha256"]
}

func pemPublicKey(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func writeTestFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
