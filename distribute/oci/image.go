package oci

import (
	"context"
	"crypto"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"oras.land/oras-go/v2/content"

	"github.com/attestd/attestd/distribute"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/verify"
)

// Purposes of a baked image's referrers (AnnotationPurpose), both signed
// by the bake key.
const (
	PurposeImageProvenance = "image-provenance"
	PurposeReferenceValues = "reference-values"
)

// AnnotationBakeKey is the SHA-256 (hex) of the bake key's PKIX DER on a
// baked image's referrers.
const AnnotationBakeKey = "dev.attestd.bake-key-sha256"

// Files an image pull writes beside the image's files.
const (
	ProvenanceFile = "provenance.intoto.json"
	ReferenceFile  = "reference.intoto.json"
)

// Image is a baked image to publish (attestctl reference writes its
// provenance and reference values): its files are the provenance's
// subjects, and both statements are attached as referrers.
type Image struct {
	Provenance   *verify.ImageProvenance
	Attestations []Attestation
}

// FromImage reads an image's signed provenance and reference values (each
// a DSSE envelope or a Sigstore bundle), both signed by key.
func FromImage(provenance, reference []byte, key crypto.PublicKey) (*Image, error) {
	keys := []crypto.PublicKey{key}
	provEnv, err := envelopeOf(provenance, key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", PurposeImageProvenance, err)
	}
	prov, err := verify.OpenImageProvenance(mustJSON(provEnv), keys)
	if err != nil {
		return nil, err
	}
	refEnv, err := envelopeOf(reference, key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", PurposeReferenceValues, err)
	}
	if _, err := verify.OpenReference(mustJSON(refEnv), keys); err != nil {
		return nil, fmt.Errorf("%s: %w", PurposeReferenceValues, err)
	}
	im := &Image{Provenance: prov}
	for _, s := range []struct {
		env     *dsse.Envelope
		purpose string
	}{{provEnv, PurposeImageProvenance}, {refEnv, PurposeReferenceValues}} {
		a, err := attestation(s.env, key, s.purpose, predicateType(s.env))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.purpose, err)
		}
		a.Annotations[AnnotationBakeKey] = a.Annotations[AnnotationEnvKey]
		delete(a.Annotations, AnnotationEnvKey)
		im.Attestations = append(im.Attestations, a)
	}
	return im, nil
}

// Files returns the image files at paths, each checked against the
// provenance's subject of its base name.
func (im *Image) Files(paths []string) ([]File, error) {
	var files []File
	for _, path := range paths {
		sum, err := measure.FileSHA256(path)
		if err != nil {
			return nil, err
		}
		name := filepath.Base(path)
		if err := im.Provenance.CheckArtifact(name, sum); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNotOutput, err)
		}
		files = append(files, File{Name: name, Path: path})
	}
	return files, nil
}

// Publication is the image to publish: its files as one artifact, tagged
// tag unless empty, with the provenance and reference values attached.
func (im *Image) Publication(files []File, tag string) Publication {
	return Publication{Files: files, Tag: tag, Attestations: im.Attestations}
}

// PulledImage is a baked image pulled and checked (PullImage).
type PulledImage struct {
	Subject    ocispec.Descriptor
	Provenance *verify.ImageProvenance
	// Files are the image's files written, by name.
	Files []ocispec.Descriptor
}

// PullImage pulls the image manifest d and its provenance and reference
// values, checks both are signed by key and that each of the image's files
// is a subject of the provenance, and only then fetches the files into dir
// (each checked against its digest before it takes its name), with the
// provenance and the reference values (DSSE envelopes) as ProvenanceFile
// and ReferenceFile. Nothing is written under a file's name unless it
// verified.
func (r *Repository) PullImage(ctx context.Context, d digest.Digest, key crypto.PublicKey, dir string) (*PulledImage, error) {
	p, err := r.Pull(ctx, d, Selector{Purposes: []string{PurposeImageProvenance, PurposeReferenceValues}})
	if err != nil {
		return nil, err
	}
	envs, err := imageEnvelopes(p, key)
	if err != nil {
		return nil, err
	}
	prov, err := verify.OpenImageProvenance(envs[PurposeImageProvenance], []crypto.PublicKey{key})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnverified, err)
	}
	if _, err := verify.OpenReference(envs[PurposeReferenceValues], []crypto.PublicKey{key}); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnverified, err)
	}
	layers, err := imageLayers(p.Manifest, prov)
	if err != nil {
		return nil, fmt.Errorf("%s@%s: %w", r.Name(), d, err)
	}
	for _, l := range layers {
		if err := r.fetchFile(ctx, l, filepath.Join(dir, l.Annotations[AnnotationTitle])); err != nil {
			return nil, err
		}
	}
	for name, purpose := range map[string]string{ProvenanceFile: PurposeImageProvenance, ReferenceFile: PurposeReferenceValues} {
		if err := os.WriteFile(filepath.Join(dir, name), envs[purpose], 0o644); err != nil {
			return nil, err
		}
	}
	return &PulledImage{Subject: p.Subject, Provenance: prov, Files: layers}, nil
}

// imageEnvelopes returns the one provenance and the one reference values
// envelope (DSSE JSON) among the referrers, their bundles verified with key.
func imageEnvelopes(p *Pulled, key crypto.PublicKey) (map[string][]byte, error) {
	envs := map[string][]byte{}
	for _, ref := range p.Attestations {
		purpose := ref.Annotations[AnnotationPurpose]
		if envs[purpose] != nil {
			return nil, fmt.Errorf("%w: more than one %s referrer", ErrLayout, purpose)
		}
		env, err := distribute.VerifyBundle(ref.Bundle, []crypto.PublicKey{key})
		if err != nil {
			return nil, fmt.Errorf("%w: %s referrer %s: %w", ErrUnverified, purpose, ref.Descriptor.Digest, err)
		}
		envs[purpose] = mustJSON(env)
	}
	for _, purpose := range []string{PurposeImageProvenance, PurposeReferenceValues} {
		if envs[purpose] == nil {
			return nil, fmt.Errorf("%w: no %s referrer", ErrNotFound, purpose)
		}
	}
	return envs, nil
}

// imageLayers checks the image manifest before any file is fetched: an
// artifact of ArtifactTypeOutputs whose every layer is titled by a plain
// file name that is a provenance subject with the layer's sha256.
func imageLayers(manifest []byte, prov *verify.ImageProvenance) ([]ocispec.Descriptor, error) {
	var m ocispec.Manifest
	if err := json.Unmarshal(manifest, &m); err != nil || m.ArtifactType != ArtifactTypeOutputs || len(m.Layers) == 0 {
		return nil, fmt.Errorf("%w: the manifest is not an artifact of %s", ErrLayout, ArtifactTypeOutputs)
	}
	for _, l := range m.Layers {
		name := l.Annotations[AnnotationTitle]
		if name == "" || name != filepath.Base(name) || name == "." || name == ".." || slices.Contains([]string{ProvenanceFile, ReferenceFile}, name) {
			return nil, fmt.Errorf("%w: a layer titled %q", ErrLayout, name)
		}
		sum, err := hex.DecodeString(l.Digest.Encoded())
		if err != nil || l.Digest.Algorithm() != digest.SHA256 || len(sum) != 32 {
			return nil, fmt.Errorf("%w: layer %q: digest %s", ErrLayout, name, l.Digest)
		}
		if err := prov.CheckArtifact(name, [32]byte(sum)); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNotOutput, err)
		}
	}
	return m.Layers, nil
}

// fetchFile fetches a layer into a temporary file beside path, checks its
// digest and size, and only then renames it to path.
func (r *Repository) fetchFile(ctx context.Context, desc ocispec.Descriptor, path string) (err error) {
	what := fmt.Sprintf("fetch %s (%s) from %s", filepath.Base(path), desc.Digest, r.Name())
	rc, err := r.repo.Fetch(ctx, desc)
	if err != nil {
		return classify(what, err)
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".pull-*")
	if err != nil {
		return err
	}
	defer func() {
		tmp.Close()
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	vr := content.NewVerifyReader(rc, desc)
	if _, err := tmp.ReadFrom(vr); err != nil {
		return classify(what, err)
	}
	if err := vr.Verify(); err != nil {
		return classify(what, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// envelopeOf parses a DSSE envelope or a Sigstore bundle signed by key.
func envelopeOf(raw []byte, key crypto.PublicKey) (*dsse.Envelope, error) {
	env, err := distribute.ToDSSE(raw, []crypto.PublicKey{key})
	if err != nil {
		return nil, err
	}
	var e dsse.Envelope
	if err := json.Unmarshal(env, &e); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBundle, err)
	}
	return &e, nil
}

// mustJSON marshals a DSSE envelope (strings only: it cannot fail).
func mustJSON(env *dsse.Envelope) []byte {
	b, _ := json.Marshal(env)
	return b
}
