package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/attestd/attestd/distribute"
	"github.com/attestd/attestd/distribute/oci"
	"github.com/attestd/attestd/internal/registrytest"
	"github.com/attestd/attestd/scai"
)

// e2eOutput is the one output file of the e2e build (verify/testdata/e2e).
const e2eOutput = "built by e2e-good-1796049675\n"

// registryBuild is the e2e build pushed to a test registry.
type registryBuild struct {
	reg     *registrytest.Registry
	dir     string
	ref     string // oci://HOST/NAME@DIGEST of the outputs
	ak      string
	buildID string
}

// pushE2E starts a registry of kind k and pushes the e2e build's output
// and attestations to it with attestctl push --json.
func pushE2E(t *testing.T, k registrytest.Kind) *registryBuild {
	t.Helper()
	r := &registryBuild{reg: registrytest.Start(t, k), dir: t.TempDir(), ak: filepath.Join(e2eDir, "ak.pem")}
	out := filepath.Join(r.dir, "output.txt")
	writeFile(t, out, e2eOutput)
	code, stdout, stderr := ctl(t, "push", "--plain-http", "--json", "--bundle", filepath.Join(e2eDir, "bundle.intoto.jsonl"),
		"--output", out, "--tag", "e2e", r.reg.Host+"/attestd/e2e")
	var res pushJSON
	if code != exitOK || json.Unmarshal([]byte(stdout), &res) != nil {
		t.Fatalf("push: exit %d\n%s%s", code, stdout, stderr)
	}
	if len(res.Referrers) != 5 || res.Subject.MediaType == "" || res.BuildID == "" {
		t.Fatalf("push --json: %+v", res)
	}
	r.ref, r.buildID = "oci://"+res.Repository+"@"+res.Subject.Digest, res.BuildID
	return r
}

func TestPushVerifyRoundTrip(t *testing.T) {
	for _, k := range registrytest.Kinds {
		t.Run(k.Name, func(t *testing.T) {
			r := pushE2E(t, k)
			key, pub := filepath.Join(r.dir, "result-key.pem"), filepath.Join(r.dir, "result-key.pub.pem")
			writeKeyPair(t, key, pub)
			results := filepath.Join(r.dir, "vsa.intoto.jsonl")
			// The results in either form, one per registry.
			format := map[string]string{registrytest.Distribution.Name: "sigstore", registrytest.DockerRegistry.Name: "dsse", registrytest.ReferrersAPI.Name: "sigstore"}[k.Name]
			mark := len(r.reg.Log(t))
			code, stdout, stderr := ctl(t, "verify", "--plain-http", "--json", "--trust-ak", r.ak, "--build-id", r.buildID,
				"--result-key", key, "--result-out", results, "--result-format", format, r.ref)
			var ev struct {
				Verified bool `json:"verified"`
			}
			if code != exitOK || json.Unmarshal([]byte(stdout), &ev) != nil || !ev.Verified || !strings.Contains(stdout, oci.CheckSubject) {
				t.Fatalf("verify %s: exit %d\n%s%s", r.ref, code, stdout, stderr)
			}
			if _, err := os.Stat(results); err != nil {
				t.Fatalf("verify --result-out: %v", err)
			}
			referrersAPITaken(t, r, mark)
			discover(t, r, 5)

			// The VSA goes next to the attestations; verify does not pull it.
			if code, stdout, stderr := ctl(t, "push", "--plain-http", "--bundle", filepath.Join(e2eDir, "bundle.intoto.jsonl"),
				"--output", filepath.Join(r.dir, "output.txt"), "--results", results, "--results-key", pub, r.reg.Host+"/attestd/e2e"); code != exitOK {
				t.Fatalf("push --results: exit %d\n%s%s", code, stdout, stderr)
			}
			discover(t, r, 6)
			mark = len(r.reg.Log(t))
			if code, stdout, stderr := ctl(t, "verify", "--plain-http", "--trust-ak", r.ak, r.ref); code != exitOK {
				t.Fatalf("verify with a VSA attached: exit %d\n%s%s", code, stdout, stderr)
			}
			referrersAPITaken(t, r, mark)
		})
	}
}

// referrersAPITaken checks, on a registry with the referrers API, that
// what ran since its log was mark bytes long listed the referrers of the
// outputs through it, and never read the referrers tag schema's index.
func referrersAPITaken(t *testing.T, r *registryBuild, mark int) {
	t.Helper()
	if !r.reg.Referrers {
		return
	}
	log := r.reg.Log(t)[mark:]
	if !strings.Contains(log, "GET /v2/"+repoPath(r.ref)+"/referrers/"+strings.SplitN(r.ref, "@", 2)[1]) || strings.Contains(log, "/manifests/sha256-") {
		t.Errorf("want the referrers API, not the tag schema, in the registry's log:\n%s", log)
	}
}

// repoPath is NAME of oci://HOST/NAME@DIGEST.
func repoPath(ref string) string {
	name := strings.SplitN(strings.TrimPrefix(ref, "oci://"), "@", 2)[0]
	return strings.SplitN(name, "/", 2)[1]
}

// discover checks with the oras CLI, an independent client, that the
// outputs have want Sigstore bundle referrers. On a registry with the
// referrers API that lists config media types and no annotations, oras
// discover cannot filter them by artifact type: it lists all, and each
// one's manifest (oras manifest fetch) gives its artifact type and
// annotations.
func discover(t *testing.T, r *registryBuild, want int) {
	t.Helper()
	ref := strings.TrimPrefix(r.ref, "oci://")
	args := []string{"discover", "--plain-http", "--format", "json", "--artifact-type", oci.ArtifactTypeAttestation, ref}
	if r.reg.Referrers {
		args = []string{"discover", "--plain-http", "--format", "json", ref}
	}
	out, err := exec.Command(registrytest.Tool(t, "oras"), args...).Output()
	if err != nil {
		t.Fatalf("oras discover %s: %v", ref, err)
	}
	var res struct {
		Referrers []struct {
			Reference    string            `json:"reference"`
			Digest       string            `json:"digest"`
			ArtifactType string            `json:"artifactType"`
			Annotations  map[string]string `json:"annotations"`
		} `json:"referrers"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("oras discover: %v\n%s", err, out)
	}
	if len(res.Referrers) != want {
		t.Fatalf("oras discover found %d referrers, want %d:\n%s", len(res.Referrers), want, out)
	}
	for i, ref := range res.Referrers {
		if r.reg.Referrers {
			if ref.ArtifactType != ocispec.MediaTypeEmptyJSON || len(ref.Annotations) > 0 {
				t.Errorf("oras discover on %s: %+v: the registry's listing changed; docs/distributing.md says what it lists", r.reg.Name, ref)
			}
			ref.ArtifactType, ref.Annotations = orasManifest(t, strings.Split(ref.Reference, "@")[0]+"@"+ref.Digest)
			res.Referrers[i] = ref
		}
		if ref.ArtifactType != oci.ArtifactTypeAttestation || ref.Annotations[oci.AnnotationBuildID] != r.buildID || ref.Annotations[oci.AnnotationPredicateType] == "" {
			t.Errorf("oras discover: referrer %+v", ref)
		}
		if ref.Annotations[oci.AnnotationPurpose] == "complete" {
			orasPullCompletion(t, strings.Split(ref.Reference, "@")[0]+"@"+ref.Digest)
		}
	}
}

// orasManifest fetches a manifest with oras manifest fetch and returns its
// artifact type and annotations.
func orasManifest(t *testing.T, ref string) (string, map[string]string) {
	t.Helper()
	out, err := exec.Command(registrytest.Tool(t, "oras"), "manifest", "fetch", "--plain-http", ref).Output()
	if err != nil {
		t.Fatalf("oras manifest fetch %s: %v", ref, err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("oras manifest fetch %s: %v\n%s", ref, err, out)
	}
	return m.ArtifactType, m.Annotations
}

// orasPullCompletion pulls the completion's referrer with oras pull: its
// Sigstore bundle and event log land as files named by their titles.
func orasPullCompletion(t *testing.T, ref string) {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command(registrytest.Tool(t, "oras"), "pull", "--plain-http", "-o", dir, ref).CombinedOutput(); err != nil {
		t.Fatalf("oras pull %s: %v\n%s", ref, err, out)
	}
	bundle, err := os.ReadFile(filepath.Join(dir, "complete.sigstore.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := distribute.OpenBundle(bundle); err != nil {
		t.Errorf("oras pull: complete.sigstore.json: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "complete.cel")); err != nil {
		t.Errorf("oras pull: %v", err)
	}
}

// TestVerifyOCIRefuses: each bad input is refused with its reason, and no
// result is written when nothing could be verified; on a registry without
// the referrers API and on one with it.
func TestVerifyOCIRefuses(t *testing.T) {
	for _, k := range []registrytest.Kind{registrytest.Distribution, registrytest.ReferrersAPI} {
		t.Run(k.Name, func(t *testing.T) { verifyOCIRefuses(t, k) })
	}
}

func verifyOCIRefuses(t *testing.T, k registrytest.Kind) {
	r := pushE2E(t, k)
	repo, err := oci.Open(r.reg.Host+"/attestd/e2e", oci.Options{PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	raw, err := os.ReadFile(filepath.Join(e2eDir, "bundle.intoto.jsonl"))
	if err != nil {
		t.Fatal(err)
	}

	// The build's attestations attached to files it did not produce.
	b, err := oci.FromBundle(raw)
	if err != nil {
		t.Fatal(err)
	}
	other, err := repo.PushFiles(ctx, []oci.File{{Name: "output.txt", Path: writeTemp(t, "built by someone else\n")}}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	otherOutputs := "oci://" + repo.Name() + "@" + other.Digest.String()
	attachAll(t, repo, other, b)

	// Another build's completion: re-signed by another key.
	forged, err := oci.FromBundle(raw)
	if err != nil {
		t.Fatal(err)
	}
	resignCompletion(t, forged)
	forgedFile, err := repo.PushFiles(ctx, []oci.File{{Name: "output.txt", Path: writeTemp(t, e2eOutput)}}, "", map[string]string{"forged": "yes"})
	if err != nil {
		t.Fatal(err)
	}
	forgedRef := "oci://" + repo.Name() + "@" + forgedFile.Digest.String()
	attachAll(t, repo, forgedFile, forged)

	down := closedPort(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"outputs of another build", []string{otherOutputs}, exitFailed, oci.CheckSubject},
		{"signed by another key", []string{forgedRef}, exitFailed, "dsse-signature"},
		{"another build ID", []string{"--build-id", "another-build", r.ref}, exitFailed, "no attestd attestation refers"},
		{"registry down", []string{"oci://" + down + "/attestd/e2e@" + strings.SplitN(r.ref, "@", 2)[1]}, exitUsage, "registry unreachable"},
		{"plain HTTP to a remote host", []string{"oci://registry.example/attestd/e2e@" + strings.SplitN(r.ref, "@", 2)[1]}, exitUsage, "plain HTTP refused"},
		{"a tag, not a digest", []string{"oci://" + r.reg.Host + "/attestd/e2e:e2e"}, exitUsage, "names no digest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			results := filepath.Join(t.TempDir(), "results.jsonl")
			key := filepath.Join(t.TempDir(), "key.pem")
			writeKeyPair(t, key, key+".pub")
			args := append([]string{"verify", "--plain-http", "--trust-ak", r.ak, "--result-key", key, "--result-out", results}, tc.args...)
			code, stdout, stderr := ctl(t, args...)
			if code != tc.code || !strings.Contains(stdout+stderr, tc.want) {
				t.Fatalf("exit %d, want %d naming %q:\n%s%s", code, tc.code, tc.want, stdout, stderr)
			}
			if _, err := os.Stat(results); tc.code == exitUsage && err == nil {
				t.Errorf("results written although nothing was verified")
			}
		})
	}
}

// TestVerifyOCITamperedLayer changes a bundle in the registry's storage.
func TestVerifyOCITamperedLayer(t *testing.T) {
	for _, k := range registrytest.Kinds {
		t.Run(k.Name, func(t *testing.T) {
			r := pushE2E(t, k)
			raw, _ := os.ReadFile(filepath.Join(e2eDir, "bundle.intoto.jsonl"))
			b, err := oci.FromBundle(raw)
			if err != nil {
				t.Fatal(err)
			}
			blob := r.reg.BlobPath(digest.FromBytes(b.Attestations[0].Bundle).Encoded())
			data, err := os.ReadFile(blob)
			if err != nil {
				t.Fatal(err)
			}
			data[10] ^= 1
			os.WriteFile(blob, data, 0o644)
			mark := len(r.reg.Log(t))
			code, stdout, stderr := ctl(t, "verify", "--plain-http", "--trust-ak", r.ak, r.ref)
			if code != exitFailed || !strings.Contains(stderr, "content does not match its digest") {
				t.Fatalf("verify with a tampered layer: exit %d\n%s%s", code, stdout, stderr)
			}
			referrersAPITaken(t, r, mark)
		})
	}
}

func attachAll(t *testing.T, repo *oci.Repository, subject ocispec.Descriptor, b *oci.Build) {
	t.Helper()
	for _, a := range b.Attestations {
		if _, err := repo.Attach(context.Background(), subject, a); err != nil {
			t.Fatal(err)
		}
	}
}

// resignCompletion replaces the build's completion bundle with its
// statement signed by a fresh key.
func resignCompletion(t *testing.T, b *oci.Build) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range b.Attestations {
		if a.Annotations[oci.AnnotationPurpose] != "complete" {
			continue
		}
		env, _, err := distribute.OpenBundle(a.Bundle)
		if err != nil {
			t.Fatal(err)
		}
		payload, err := env.DecodeB64Payload()
		if err != nil {
			t.Fatal(err)
		}
		signed, err := scai.SignPayload(context.Background(), key, payload)
		if err != nil {
			t.Fatal(err)
		}
		var forged dsse.Envelope
		if err := json.Unmarshal(signed, &forged); err != nil {
			t.Fatal(err)
		}
		if b.Attestations[i].Bundle, err = distribute.NewBundle(&forged, crypto.PublicKey(key.Public())); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatal("no completion among the build's attestations")
}

func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f")
	writeFile(t, path, content)
	return path
}

// writeKeyPair writes a fresh P-256 key (PEM) to priv and its public key
// to pub.
func writeKeyPair(t *testing.T, priv, pub string) {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(writeKey(t, pub))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, priv, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})))
}

// TestPushCredentials: a registry that wants a password gets it from the
// Docker config file ($DOCKER_CONFIG), and refuses without it.
func TestPushCredentials(t *testing.T) {
	reg := registrytest.StartWithPassword(t, registrytest.Distribution, "builder", "s3cret")
	out := writeTemp(t, e2eOutput)
	push := func() (int, string) {
		code, stdout, stderr := ctl(t, "push", "--plain-http", "--bundle", filepath.Join(e2eDir, "bundle.intoto.jsonl"),
			"--output", out, reg.Host+"/attestd/e2e")
		return code, stdout + stderr
	}
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	if code, out := push(); code != exitFailed || !strings.Contains(out, "registry refused the request") {
		t.Fatalf("push without credentials: exit %d\n%s", code, out)
	}
	auth := base64.StdEncoding.EncodeToString([]byte("builder:s3cret"))
	writeFile(t, filepath.Join(os.Getenv("DOCKER_CONFIG"), "config.json"), `{"auths": {"`+reg.Host+`": {"auth": "`+auth+`"}}}`)
	if code, out := push(); code != exitOK {
		t.Fatalf("push with the Docker config's credentials: exit %d\n%s", code, out)
	}
}

// TestPushSubjectNotOutput: --subject must name one of the build's outputs
// (an image the build pushed), checked before the registry is contacted.
func TestPushSubjectNotOutput(t *testing.T) {
	for _, subject := range []string{"sha256:" + strings.Repeat("ab", 32), "sha256:abc", "latest"} {
		code, _, stderr := ctl(t, "push", "--bundle", filepath.Join(e2eDir, "bundle.intoto.jsonl"), "--subject", subject, "registry.invalid/x")
		if code != exitUsage || !strings.Contains(stderr, "--subject") {
			t.Errorf("push --subject %s: exit %d: %s", subject, code, stderr)
		}
	}
}
