package main

import (
	"bytes"
	"context"
	"crypto"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attestd/attestd/distribute/oci"
	"github.com/attestd/attestd/internal/registrytest"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/scai"
	"github.com/attestd/attestd/verify"
)

// withReference adds reference values signed by the image's bake key (the
// e2e image's values, re-signed) to a baked image.
func withReference(t *testing.T, b bakedImage) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(e2eDir, "reference.intoto.json"))
	if err != nil {
		t.Fatal(err)
	}
	env, err := scai.ParseEnvelope(raw)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := env.DecodeB64Payload()
	if err != nil {
		t.Fatal(err)
	}
	signed, err := verify.SignReference(context.Background(), b.key, payload)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(b.dir, "reference.intoto.json")
	writeFile(t, path, string(signed)+"\n")
	return path
}

// pushImage pushes a baked image with attestctl push and returns
// oci://REPO@DIGEST.
func pushImage(t *testing.T, reg *registrytest.Registry, b bakedImage, ref string) string {
	t.Helper()
	code, stdout, stderr := ctl(t, "push", "--plain-http", "--json", "--provenance", b.prov, "--reference", ref, "--key", b.pub,
		"--output", b.disk, "--output", b.uki, "--tag", "v1", reg.Host+"/attestd/runner")
	var res pushJSON
	if code != exitOK || json.Unmarshal([]byte(stdout), &res) != nil || len(res.Referrers) != 2 {
		t.Fatalf("push of an image: exit %d\n%s%s", code, stdout, stderr)
	}
	return "oci://" + res.Repository + "@" + res.Subject.Digest
}

func TestPushPullImage(t *testing.T) {
	for _, k := range registrytest.Kinds {
		t.Run(k.Name, func(t *testing.T) {
			reg := registrytest.Start(t, k)
			b := bakeImage(t)
			ref := pushImage(t, reg, b, withReference(t, b))
			out := filepath.Join(t.TempDir(), "pulled")
			mark := len(reg.Log(t))
			code, stdout, stderr := ctl(t, "pull", "--plain-http", "--key", b.pub, "--out", out, ref)
			if code != exitOK || !strings.Contains(stdout, "VERIFIED") {
				t.Fatalf("pull: exit %d\n%s%s", code, stdout, stderr)
			}
			referrersAPITaken(t, &registryBuild{reg: reg, ref: ref}, mark)
			for _, f := range []string{b.disk, b.uki} {
				want, _ := os.ReadFile(f)
				got, err := os.ReadFile(filepath.Join(out, filepath.Base(f)))
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("pulled %s differs (%v)", filepath.Base(f), err)
				}
			}
			pub, err := readPublicKey(b.pub)
			if err != nil {
				t.Fatal(err)
			}
			refRaw, _ := os.ReadFile(filepath.Join(out, oci.ReferenceFile))
			if _, err := verify.OpenReference(refRaw, []crypto.PublicKey{pub}); err != nil {
				t.Errorf("pulled reference values: %v", err)
			}
			if code, stdout, stderr := ctl(t, "verify-image", "--key", b.pub, "--provenance", filepath.Join(out, oci.ProvenanceFile),
				filepath.Join(out, "disk.img"), filepath.Join(out, "uki.efi")); code != exitOK {
				t.Errorf("verify-image of the pulled files: exit %d\n%s%s", code, stdout, stderr)
			}
		})
	}
}

// TestPullImageRefuses: another key, and files the provenance does not
// name, are refused before any file is written.
func TestPullImageRefuses(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Distribution)
	b := bakeImage(t)
	refFile := withReference(t, b)
	ref := pushImage(t, reg, b, refFile)

	// The image's referrers attached to another disk image.
	pub, _ := readPublicKey(b.pub)
	prov, _ := os.ReadFile(b.prov)
	refRaw, _ := os.ReadFile(refFile)
	im, err := oci.FromImage(prov, refRaw, pub)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := oci.Open(reg.Host+"/attestd/runner", oci.Options{PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	evil := filepath.Join(t.TempDir(), "disk.img")
	writeFile(t, evil, "a disk image with a backdoor")
	swapped, err := repo.Publish(context.Background(), oci.Publication{Files: []oci.File{{Name: "disk.img", Path: evil}}, Attestations: im.Attestations})
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "other.pub.pem")
	writeKey(t, other)

	// The disk image changed in the registry's storage, under its digest.
	reg2 := registrytest.Start(t, registrytest.DockerRegistry)
	tampered := pushImage(t, reg2, b, refFile)
	sum, err := measure.FileSHA256(b.disk)
	if err != nil {
		t.Fatal(err)
	}
	blob := reg2.BlobPath(hex.EncodeToString(sum[:]))
	disk, _ := os.ReadFile(blob)
	disk[0] ^= 1
	writeFile(t, blob, string(disk))

	for _, tc := range []struct {
		name, key, ref, want string
	}{
		{"another key", other, ref, "not verified with the bake key"},
		{"a file the provenance does not name", b.pub, "oci://" + repo.Name() + "@" + swapped.Subject.Digest.String(), "not an output"},
		{"a tampered disk image", b.pub, tampered, "content does not match its digest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			code, stdout, stderr := ctl(t, "pull", "--plain-http", "--key", tc.key, "--out", out, tc.ref)
			if code != exitFailed || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, want 1 naming %q:\n%s%s", code, tc.want, stdout, stderr)
			}
			if entries, _ := os.ReadDir(out); len(entries) > 0 {
				t.Errorf("pull wrote %d files although nothing verified", len(entries))
			}
		})
	}

	// push refuses files the provenance does not name.
	code, _, stderr := ctl(t, "push", "--plain-http", "--provenance", b.prov, "--reference", refFile, "--key", b.pub,
		"--output", evil, reg.Host+"/attestd/runner")
	if code != exitUsage || !strings.Contains(stderr, "not an output") {
		t.Errorf("push of a file the provenance does not name: exit %d: %s", code, stderr)
	}
}
