package oci_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/attestd/attestd/distribute"
	"github.com/attestd/attestd/distribute/oci"
	"github.com/attestd/attestd/internal/registrytest"
	"github.com/attestd/attestd/scai"
)

// The e2e bundle (a real build under QEMU + OVMF + swtpm) and the one
// output file it completed with.
var (
	e2eBundle = filepath.Join("..", "..", "verify", "testdata", "e2e", "bundle.intoto.jsonl")
	e2eOutput = []byte("built by e2e-good-1796049675\n")
)

// noCredentials keeps the tests off the machine's Docker config file.
func noCredentials(context.Context, string) (auth.Credential, error) {
	return auth.EmptyCredential, nil
}

func open(t *testing.T, host, name string, limits oci.Limits) *oci.Repository {
	t.Helper()
	repo, err := oci.Open(host+"/"+name, oci.Options{PlainHTTP: true, Credential: noCredentials, Limits: limits})
	if err != nil {
		t.Fatal(err)
	}
	return repo
}

func readBuild(t *testing.T) *oci.Build {
	t.Helper()
	raw, err := os.ReadFile(e2eBundle)
	if err != nil {
		t.Fatal(err)
	}
	b, err := oci.FromBundle(raw)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pushBuild pushes the e2e build's output file and attaches its
// attestations; it returns the output manifest and the referrers.
func pushBuild(t *testing.T, repo *oci.Repository, b *oci.Build) (ocispec.Descriptor, []ocispec.Descriptor) {
	t.Helper()
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "output.txt")
	if err := os.WriteFile(file, e2eOutput, 0o644); err != nil {
		t.Fatal(err)
	}
	subject, err := repo.PushFiles(ctx, []oci.File{{Name: "output.txt", Path: file}}, "build", nil)
	if err != nil {
		t.Fatal(err)
	}
	var refs []ocispec.Descriptor
	for _, a := range b.Attestations {
		d, err := repo.Attach(ctx, subject, a)
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, d)
	}
	return subject, refs
}

func TestRoundTrip(t *testing.T) {
	for _, k := range registrytest.Kinds {
		t.Run(k.Name, func(t *testing.T) {
			reg := registrytest.Start(t, k)
			repo := open(t, reg.Host, "attestd/e2e", oci.Limits{})
			b := readBuild(t)
			subject, refs := pushBuild(t, repo, b)
			mark := len(reg.Log(t))
			p, err := open(t, reg.Host, "attestd/e2e", oci.Limits{}).Pull(context.Background(), subject.Digest, oci.Selector{BuildID: b.ID})
			if err != nil {
				t.Fatal(err)
			}
			checkPath(t, reg, mark, subject.Digest)
			if len(p.Attestations) != len(b.Attestations) || p.Listed != len(b.Attestations) {
				t.Fatalf("pulled %d of %d listed, want the %d attached", len(p.Attestations), p.Listed, len(b.Attestations))
			}
			in := distribute.ChainInput("pulled", p.Chain())
			for _, c := range in.Form {
				if !c.OK {
					t.Errorf("%s: %s", c.Name, c.Detail)
				}
			}
			lines := in.Raw
			sameEnvelopes(t, lines)
			if c := p.SubjectCheck(lines); !c.OK {
				t.Errorf("subject check failed: %s", c.Detail)
			}
			// Attaching again changes nothing: the manifests are reproducible.
			_, again := pushBuild(t, repo, b)
			if diff := cmp.Diff(digests(refs), digests(again)); diff != "" {
				t.Errorf("a second push made other referrers (-first +second):\n%s", diff)
			}
			t.Logf("%s: push: %+v", k.Name, repo.Stats())
		})
	}
}

// checkPath checks, on a registry with the referrers API, that the client
// listed the referrers of subject through it since the log was mark bytes
// long, and never read the referrers tag schema's index.
func checkPath(t *testing.T, reg *registrytest.Registry, mark int, subject digest.Digest) {
	t.Helper()
	if !reg.Referrers {
		return
	}
	log := reg.Log(t)[mark:]
	if !strings.Contains(log, "GET /v2/attestd/e2e/referrers/"+subject.String()) {
		t.Errorf("no GET of the referrers API in the registry's log:\n%s", log)
	}
	if strings.Contains(log, "/manifests/sha256-") {
		t.Errorf("the referrers tag schema's index was read:\n%s", log)
	}
}

// sameEnvelopes checks that lines hold the e2e bundle's envelopes and the
// event log prefixes they name.
func sameEnvelopes(t *testing.T, lines []byte) {
	t.Helper()
	raw, _ := os.ReadFile(e2eBundle)
	want, err := scai.DecodeBundle(raw)
	if err != nil {
		t.Fatal(err)
	}
	got, err := scai.DecodeBundle(lines)
	if err != nil {
		t.Fatal(err)
	}
	key := func(envs []*dsse.Envelope) map[string]bool {
		m := map[string]bool{}
		for _, e := range envs {
			m[e.Payload+"|"+e.Signatures[0].Sig] = true
		}
		return m
	}
	if diff := cmp.Diff(key(want.Envelopes), key(got.Envelopes)); diff != "" {
		t.Errorf("pulled envelopes differ (-pushed +pulled):\n%s", diff)
	}
	for _, env := range got.Envelopes {
		op, err := scai.Open(env)
		if err != nil {
			continue
		}
		if _, ok := scai.FindLog(got.Logs, op.Attestation.Log); !ok {
			t.Errorf("no event log for the %s attestation", op.Attestation.Purpose)
		}
	}
}

func digests(ds []ocispec.Descriptor) []digest.Digest {
	var out []digest.Digest
	for _, d := range ds {
		out = append(out, d.Digest)
	}
	return out
}

// TestTamperedLayer changes a bundle's bytes in the registry's storage (the
// filesystem driver serves them unchecked): the pull is refused.
func TestTamperedLayer(t *testing.T) {
	for _, k := range registrytest.Kinds {
		t.Run(k.Name, func(t *testing.T) {
			reg := registrytest.Start(t, k)
			repo := open(t, reg.Host, "attestd/e2e", oci.Limits{})
			b := readBuild(t)
			subject, _ := pushBuild(t, repo, b)
			bundle := digest.FromBytes(b.Attestations[len(b.Attestations)-1].Bundle)
			path := reg.BlobPath(bundle.Encoded())
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			data[len(data)/2] ^= 1
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			mark := len(reg.Log(t))
			_, err = open(t, reg.Host, "attestd/e2e", oci.Limits{}).Pull(context.Background(), subject.Digest, oci.Selector{})
			if !errors.Is(err, oci.ErrDigest) {
				t.Fatalf("pull with a tampered layer: %v, want ErrDigest", err)
			}
			checkPath(t, reg, mark, subject.Digest)
			t.Log(err)
		})
	}
}

// TestForgedSubject lists another manifest's referrers under the referrers
// tag schema (anyone who can push a tag can) or, on a registry with the
// referrers API, behind a proxy that answers the API for one manifest with
// the referrers of another: the pull is refused.
func TestForgedSubject(t *testing.T) {
	for _, k := range registrytest.Kinds {
		t.Run(k.Name, func(t *testing.T) {
			reg := registrytest.Start(t, k)
			repo := open(t, reg.Host, "attestd/e2e", oci.Limits{})
			subject, refs := pushBuild(t, repo, readBuild(t))
			other, err := repo.PushFiles(context.Background(), []oci.File{{Name: "other.txt", Path: writeFile(t, "another output\n")}}, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			pushIndex(t, reg.Host, "attestd/e2e", other.Digest, refs)
			host := reg.Host
			if reg.Referrers {
				target, _ := url.Parse("http://" + reg.Host)
				proxy := httputil.NewSingleHostReverseProxy(target)
				front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					r.URL.Path = strings.Replace(r.URL.Path, "/referrers/"+other.Digest.String(), "/referrers/"+subject.Digest.String(), 1)
					proxy.ServeHTTP(w, r)
				}))
				defer front.Close()
				host = strings.TrimPrefix(front.URL, "http://")
			}
			mark := len(reg.Log(t))
			_, err = open(t, host, "attestd/e2e", oci.Limits{}).Pull(context.Background(), other.Digest, oci.Selector{})
			checkPath(t, reg, mark, subject.Digest)
			if !errors.Is(err, oci.ErrSubject) {
				t.Fatalf("pull of referrers listed for another manifest: %v, want ErrSubject", err)
			}
			t.Log(err)
		})
	}
}

// TestAnotherBuildsOutputs attaches the e2e build's attestations to a
// manifest of other files: they pull, but the subject check fails.
func TestAnotherBuildsOutputs(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Distribution)
	repo := open(t, reg.Host, "attestd/e2e", oci.Limits{})
	ctx := context.Background()
	other, err := repo.PushFiles(ctx, []oci.File{{Name: "output.txt", Path: writeFile(t, "built by someone else\n")}}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range readBuild(t).Attestations {
		if _, err := repo.Attach(ctx, other, a); err != nil {
			t.Fatal(err)
		}
	}
	p, err := repo.Pull(ctx, other.Digest, oci.Selector{})
	if err != nil {
		t.Fatal(err)
	}
	if c := p.SubjectCheck(distribute.ChainInput("pulled", p.Chain()).Raw); c.OK || c.Name != oci.CheckSubject {
		t.Fatalf("subject check of another build's outputs: %+v, want failed", c)
	} else {
		t.Log(c.Detail)
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := ln.Addr().String()
	ln.Close()
	repo := open(t, host, "attestd/e2e", oci.Limits{})
	_, err = repo.Pull(context.Background(), digest.FromString("x"), oci.Selector{})
	if !errors.Is(err, oci.ErrUnreachable) {
		t.Fatalf("pull from a closed port: %v, want ErrUnreachable", err)
	}
	t.Log(err)
}

// TestGarbage: a server that answers junk to everything, and a real
// registry behind a proxy that answers junk to the referrers API, then to
// the referrers tag schema's index.
func TestGarbage(t *testing.T) {
	junk := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
		fmt.Fprint(w, "<html>garbage</html>")
	}))
	defer junk.Close()
	repo := open(t, strings.TrimPrefix(junk.URL, "http://"), "attestd/e2e", oci.Limits{})
	if _, err := repo.Pull(context.Background(), digest.FromString("x"), oci.Selector{}); !errors.Is(err, oci.ErrProtocol) {
		t.Errorf("pull from a server answering junk: %v, want ErrProtocol", err)
	} else {
		t.Log(err)
	}

	reg := registrytest.Start(t, registrytest.Distribution)
	subject, _ := pushBuild(t, open(t, reg.Host, "attestd/e2e", oci.Limits{}), readBuild(t))
	target, _ := url.Parse("http://" + reg.Host)
	proxy := httputil.NewSingleHostReverseProxy(target)
	for _, junkPath := range []string{"/referrers/", "/manifests/sha256-"} {
		front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, junkPath) {
				w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
				fmt.Fprint(w, `{"manifests": [garbage`)
				return
			}
			proxy.ServeHTTP(w, r)
		}))
		repo = open(t, strings.TrimPrefix(front.URL, "http://"), "attestd/e2e", oci.Limits{})
		if _, err := repo.Pull(context.Background(), subject.Digest, oci.Selector{}); !errors.Is(err, oci.ErrProtocol) && !errors.Is(err, oci.ErrDigest) {
			t.Errorf("pull with junk at %s: %v, want ErrProtocol or ErrDigest", junkPath, err)
		} else {
			t.Logf("junk at %s: %v", junkPath, err)
		}
		front.Close()
	}
}

// unrelated is how many unrelated referrers TestManyReferrers attaches;
// others of them are attestation referrers of other builds.
const (
	unrelated   = 2000
	otherBuilds = 100
)

// TestManyReferrers: a subject with thousands of unrelated referrers (and a
// hundred attestations of other builds) costs verify a bounded number of
// requests and bytes; without a build ID the other builds' attestations
// exceed MaxAttestations and the pull is refused.
func TestManyReferrers(t *testing.T) {
	for _, k := range registrytest.Kinds {
		t.Run(k.Name, func(t *testing.T) {
			reg := registrytest.Start(t, k)
			repo := open(t, reg.Host, "attestd/e2e", oci.Limits{})
			b := readBuild(t)
			subject, _ := pushBuild(t, repo, b)
			listUnrelated(t, reg.Host, subject)

			fresh := open(t, reg.Host, "attestd/e2e", oci.Limits{})
			start := time.Now()
			mark := len(reg.Log(t))
			p, err := fresh.Pull(context.Background(), subject.Digest, oci.Selector{BuildID: b.ID})
			checkPath(t, reg, mark, subject.Digest)
			if reg.Referrers {
				// Its listing says of none whether it is an attestation,
				// nor of which build: 2,105 undecided referrers are more
				// than MaxAttestations.
				st := fresh.Stats()
				t.Logf("%s: %v after %d requests, %d bytes, %v", k.Name, err, st.Requests, st.Bytes, time.Since(start))
				if !errors.Is(err, oci.ErrLimit) {
					t.Errorf("pull: %v, want ErrLimit", err)
				}
				if st.Requests > 4 {
					t.Errorf("%d requests, want at most 4 (the manifest, the listings)", st.Requests)
				}
				_, err = open(t, reg.Host, "attestd/e2e", oci.Limits{MaxListBytes: 16 << 10}).Pull(context.Background(), subject.Digest, oci.Selector{BuildID: b.ID})
				if !errors.Is(err, oci.ErrLimit) {
					t.Errorf("pull with a 16 KiB listing bound: %v, want ErrLimit", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			st := fresh.Stats()
			t.Logf("%s: %d unrelated referrers, %d attestations of other builds: pulled %d attestations of %d listed in %d requests, %d bytes, %v",
				k.Name, unrelated, otherBuilds, len(p.Attestations), p.Listed, st.Requests, st.Bytes, time.Since(start))
			if len(p.Attestations) != len(b.Attestations) {
				t.Errorf("pulled %d attestations, want %d", len(p.Attestations), len(b.Attestations))
			}
			// One manifest, a listing or two, and per attestation its
			// manifest and at most 3 layers.
			if max := int64(4 + 4*len(b.Attestations)); st.Requests > max {
				t.Errorf("%d requests, want at most %d", st.Requests, max)
			}

			_, err = open(t, reg.Host, "attestd/e2e", oci.Limits{}).Pull(context.Background(), subject.Digest, oci.Selector{})
			if !errors.Is(err, oci.ErrLimit) {
				t.Errorf("pull of every build's attestations: %v, want ErrLimit", err)
			}
			_, err = open(t, reg.Host, "attestd/e2e", oci.Limits{MaxListBytes: 16 << 10}).Pull(context.Background(), subject.Digest, oci.Selector{BuildID: b.ID})
			if !errors.Is(err, oci.ErrLimit) {
				t.Errorf("pull with a 16 KiB listing bound: %v, want ErrLimit", err)
			}
		})
	}
}

// unrelatedManifest is the manifest of the i-th unrelated referrer of
// subject: the first otherBuilds are attestation referrers of other builds,
// the rest of another artifact type.
func unrelatedManifest(i int, subject ocispec.Descriptor) (ocispec.Manifest, []byte) {
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: "application/vnd.example.unrelated",
		Config:       ocispec.DescriptorEmptyJSON,
		Layers:       []ocispec.Descriptor{ocispec.DescriptorEmptyJSON},
		Subject:      &subject,
		Annotations:  map[string]string{"n": fmt.Sprint(i)},
	}
	if i < otherBuilds {
		m.ArtifactType = oci.ArtifactTypeAttestation
		m.Annotations[oci.AnnotationBuildID] = fmt.Sprintf("other-build-%d", i)
	}
	raw, _ := json.Marshal(m)
	return m, raw
}

// listUnrelated pushes the unrelated referrers, eight at a time, then adds
// them to the referrers tag schema's index of subject at once (oras-go
// would rewrite the index for each, which is quadratic).
func listUnrelated(t *testing.T, host string, subject ocispec.Descriptor) {
	t.Helper()
	pushUnrelated(t, host, subject)
	repo := rawRepo(t, host, "attestd/e2e")
	tag := "sha256-" + subject.Digest.Encoded()
	_, rc, err := repo.FetchReference(context.Background(), tag)
	if err != nil {
		t.Fatal(err)
	}
	var idx ocispec.Index
	err = json.NewDecoder(rc).Decode(&idx)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	refs := idx.Manifests
	for i := range unrelated {
		m, raw := unrelatedManifest(i, subject)
		refs = append(refs, ocispec.Descriptor{MediaType: m.MediaType, ArtifactType: m.ArtifactType, Digest: digest.FromBytes(raw), Size: int64(len(raw)), Annotations: m.Annotations})
	}
	pushIndex(t, host, "attestd/e2e", subject.Digest, refs)
}

// pushUnrelated pushes the unrelated referrers' manifests, leaving the
// referrers index alone.
func pushUnrelated(t *testing.T, host string, subject ocispec.Descriptor) {
	t.Helper()
	repo := rawRepo(t, host, "attestd/e2e")
	repo.SetReferrersCapability(true) // so that oras-go does not index them
	ctx := context.Background()
	var g errgroup.Group
	g.SetLimit(8)
	for i := range unrelated {
		g.Go(func() error {
			m, raw := unrelatedManifest(i, subject)
			return repo.Push(ctx, ocispec.Descriptor{MediaType: m.MediaType, Digest: digest.FromBytes(raw), Size: int64(len(raw))}, bytes.NewReader(raw))
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

// pushIndex tags an index of refs as the referrers tag schema's index of
// subject.
func pushIndex(t *testing.T, host, name string, subject digest.Digest, refs []ocispec.Descriptor) {
	t.Helper()
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: refs}
	raw, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	desc := ocispec.Descriptor{MediaType: idx.MediaType, Digest: digest.FromBytes(raw), Size: int64(len(raw))}
	if err := rawRepo(t, host, name).PushReference(context.Background(), desc, bytes.NewReader(raw), "sha256-"+subject.Encoded()); err != nil {
		t.Fatal(err)
	}
}

// rawRepo is an oras-go client for pushing what attestd never would.
func rawRepo(t *testing.T, host, name string) *remote.Repository {
	t.Helper()
	repo, err := remote.NewRepository(host + "/" + name)
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	return repo
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestUndecidedListing: on the registry whose referrers API lists config
// media types for artifact types and drops annotations, Pull decides on
// each referrer's manifest what the listing leaves open: it keeps the
// build's attestations, skips other builds' and referrers of other
// artifact types with the empty config, and never fetches those whose
// listed type rules them out.
func TestUndecidedListing(t *testing.T) {
	const (
		others       = 20  // attestations of other builds
		emptyConfig  = 10  // other artifacts with the empty config
		typedConfigs = 100 // other artifacts with a config of their own type
	)
	reg := registrytest.Start(t, registrytest.ReferrersAPI)
	b := readBuild(t)
	subject, _ := pushBuild(t, open(t, reg.Host, "attestd/e2e", oci.Limits{}), b)
	repo := rawRepo(t, reg.Host, "attestd/e2e")
	repo.SetReferrersCapability(true)
	ctx := context.Background()
	for i := range others + emptyConfig + typedConfigs {
		m, _ := unrelatedManifest(i, subject)
		switch {
		case i < others:
		case i < others+emptyConfig:
			m.ArtifactType = "application/vnd.example.unrelated"
			delete(m.Annotations, oci.AnnotationBuildID)
		default:
			m.ArtifactType = ""
			m.Config.MediaType = "application/vnd.example.unrelated.config+json"
			delete(m.Annotations, oci.AnnotationBuildID)
		}
		raw, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := repo.Push(ctx, ocispec.Descriptor{MediaType: m.MediaType, Digest: digest.FromBytes(raw), Size: int64(len(raw))}, bytes.NewReader(raw)); err != nil {
			t.Fatal(err)
		}
	}
	fresh := open(t, reg.Host, "attestd/e2e", oci.Limits{})
	mark := len(reg.Log(t))
	p, err := fresh.Pull(ctx, subject.Digest, oci.Selector{BuildID: b.ID})
	if err != nil {
		t.Fatal(err)
	}
	checkPath(t, reg, mark, subject.Digest)
	st := fresh.Stats()
	t.Logf("pulled %d attestations of %d listed as undecided in %d requests, %d bytes", len(p.Attestations), p.Listed, st.Requests, st.Bytes)
	if len(p.Attestations) != len(b.Attestations) {
		t.Errorf("pulled %d attestations, want %d", len(p.Attestations), len(b.Attestations))
	}
	if want := len(b.Attestations) + others + emptyConfig; p.Listed != want {
		t.Errorf("listed %d, want %d (the typed configs ruled out by the listing)", p.Listed, want)
	}
	// The manifest, two listings, a manifest per undecided referrer and at
	// most 3 layers per attestation of the build.
	if max := int64(3 + p.Listed + 3*len(b.Attestations)); st.Requests > max {
		t.Errorf("%d requests, want at most %d", st.Requests, max)
	}
	// Pulled with the same listing, a MaxAttestations below the undecided
	// count is refused before any referrer is fetched.
	limited := open(t, reg.Host, "attestd/e2e", oci.Limits{MaxAttestations: others})
	if _, err := limited.Pull(ctx, subject.Digest, oci.Selector{BuildID: b.ID}); !errors.Is(err, oci.ErrLimit) {
		t.Errorf("pull with MaxAttestations %d: %v, want ErrLimit", others, err)
	} else if st := limited.Stats(); st.Requests > 3 {
		t.Errorf("refused after %d requests, want at most 3", st.Requests)
	}
}

// TestConformingListing: behind a proxy that makes the referrers-API
// registry's listing what the specification asks (each referrer's own
// artifactType and annotations, filtered by the artifactType query, with
// OCI-Filters-Applied), Pull takes the listing as it is: one listing
// request, no manifest fetched to decide, other builds skipped as listed.
func TestConformingListing(t *testing.T) {
	reg := registrytest.Start(t, registrytest.ReferrersAPI)
	b := readBuild(t)
	subject, _ := pushBuild(t, open(t, reg.Host, "attestd/e2e", oci.Limits{}), b)
	repo := rawRepo(t, reg.Host, "attestd/e2e")
	repo.SetReferrersCapability(true)
	ctx := context.Background()
	for i := range 20 {
		_, raw := unrelatedManifest(i, subject)
		if err := repo.Push(ctx, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(raw), Size: int64(len(raw))}, bytes.NewReader(raw)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var requested []string // by the client under test
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requested = append(requested, r.Method+" "+r.URL.Path)
		mu.Unlock()
		if !strings.Contains(r.URL.Path, "/referrers/") {
			rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: reg.Host})
			rp.ServeHTTP(w, r)
			return
		}
		conformingListing(t, w, r, repo)
	}))
	defer front.Close()

	fresh := open(t, strings.TrimPrefix(front.URL, "http://"), "attestd/e2e", oci.Limits{})
	p, err := fresh.Pull(ctx, subject.Digest, oci.Selector{BuildID: b.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Attestations) != len(b.Attestations) || p.Listed != len(b.Attestations)+20 {
		t.Errorf("pulled %d of %d listed, want %d of %d", len(p.Attestations), p.Listed, len(b.Attestations), len(b.Attestations)+20)
	}
	mu.Lock()
	log := strings.Join(requested, "\n")
	mu.Unlock()
	if n := strings.Count(log, "/referrers/"); n != 1 {
		t.Errorf("%d listings, want 1:\n%s", n, log)
	}
	// The build's manifests only: other builds are skipped as listed.
	if n := strings.Count(log, "GET /v2/attestd/e2e/manifests/"); n != 1+len(b.Attestations) {
		t.Errorf("%d manifests fetched, want %d (the subject, the build's referrers):\n%s", n, 1+len(b.Attestations), log)
	}
}

// conformingListing answers a referrers API request as the specification
// says, from the registry's listing and each listed referrer's manifest.
func conformingListing(t *testing.T, w http.ResponseWriter, r *http.Request, repo *remote.Repository) {
	d := digest.Digest(r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:])
	want := r.URL.Query().Get("artifactType")
	var listed []ocispec.Descriptor
	err := repo.Referrers(r.Context(), ocispec.Descriptor{Digest: d}, "", func(page []ocispec.Descriptor) error {
		for _, desc := range page {
			raw, err := content.FetchAll(r.Context(), repo, desc)
			if err != nil {
				return err
			}
			var m ocispec.Manifest
			if err := json.Unmarshal(raw, &m); err != nil {
				return err
			}
			desc.ArtifactType, desc.Annotations = m.ArtifactType, m.Annotations
			if want == "" || desc.ArtifactType == want {
				listed = append(listed, desc)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if want != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
	json.NewEncoder(w).Encode(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: listed})
}
