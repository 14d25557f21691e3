package oci

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// File is an output file to push: its name (the output's name in the
// completion attestation, the layer's title) and where to read it.
type File struct {
	Name, Path string
}

// Layer is one layer's media type and content.
type Layer struct {
	MediaType string
	Data      []byte
}

// Attestation is one referrer to attach: a Sigstore bundle, the layers it
// needs beside it (the event log it names, a batched admission's inclusion
// proof) and the annotations that let consumers pick it (docs/distributing.md).
type Attestation struct {
	Bundle      []byte
	Extra       []Layer
	Annotations map[string]string
}

// PushFiles pushes files as one OCI artifact of ArtifactTypeOutputs, one
// layer per file titled by its name, with the manifest annotations given,
// and tags it
// with tag unless tag is empty. It returns the manifest's descriptor.
func (r *Repository) PushFiles(ctx context.Context, files []File, tag string, annotations map[string]string) (ocispec.Descriptor, error) {
	var layers []ocispec.Descriptor
	for _, f := range files {
		desc, err := r.pushFile(ctx, f)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		layers = append(layers, desc)
	}
	desc, err := r.pushManifest(ctx, ArtifactTypeOutputs, layers, nil, annotations)
	if err != nil {
		return ocispec.Descriptor{}, classify("push the outputs' manifest to "+r.Name(), err)
	}
	if tag != "" {
		if err := r.repo.Tag(ctx, desc, tag); err != nil {
			return ocispec.Descriptor{}, classify(fmt.Sprintf("tag %s as %s", desc.Digest, tag), err)
		}
	}
	return desc, nil
}

// pushFile hashes a file, then uploads it unless the registry has it.
func (r *Repository) pushFile(ctx context.Context, f File) (ocispec.Descriptor, error) {
	fh, err := os.Open(f.Path)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer fh.Close()
	d, size, err := hashReader(fh)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("read %s: %w", f.Path, err)
	}
	desc := ocispec.Descriptor{MediaType: MediaTypeOutput, Digest: d, Size: size, Annotations: map[string]string{AnnotationTitle: f.Name}}
	if _, err := fh.Seek(0, io.SeekStart); err != nil {
		return ocispec.Descriptor{}, err
	}
	return desc, r.pushBlob(ctx, desc, fh)
}

// fileDigest is the sha256 digest of the file at path.
func fileDigest(path string) (digest.Digest, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	d, _, err := hashReader(fh)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return d, nil
}

func hashReader(r io.Reader) (digest.Digest, int64, error) {
	h := sha256.New()
	size, err := io.Copy(h, r)
	return digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)), size, err
}

// pushBlob uploads content unless the registry already has it.
func (r *Repository) pushBlob(ctx context.Context, desc ocispec.Descriptor, content io.Reader) error {
	what := fmt.Sprintf("push blob %s (%d bytes) to %s", desc.Digest, desc.Size, r.Name())
	ok, err := r.repo.Exists(ctx, desc)
	if err != nil {
		return classify(what, err)
	}
	if ok {
		return nil
	}
	if err := r.repo.Push(ctx, desc, content); err != nil {
		return classify(what, err)
	}
	return nil
}

// Resolve returns the descriptor of the manifest d in the repository: the
// subject to attach to when the build's output is an image already there.
func (r *Repository) Resolve(ctx context.Context, d digest.Digest) (ocispec.Descriptor, error) {
	desc, err := r.repo.Resolve(ctx, d.String())
	if err != nil {
		return ocispec.Descriptor{}, classify(fmt.Sprintf("resolve %s@%s", r.Name(), d), err)
	}
	return desc, nil
}

// layerSuffix completes an attestation layer's title (its file name for
// oras pull) after the referrer's purpose.
var layerSuffix = map[string]string{
	ArtifactTypeAttestation: ".sigstore.json",
	MediaTypeEventLog:       ".cel",
	MediaTypeInclusionProof: ".inclusion-proof.json",
}

// Attach pushes a as a referrer of subject: a manifest of artifact type
// ArtifactTypeAttestation whose first layer is the bundle, then the extra
// layers, each titled PURPOSE.sigstore.json, PURPOSE.cel or
// PURPOSE.inclusion-proof.json. On a registry without the referrers API oras-go updates the
// referrers tag schema's index. It returns the referrer's descriptor.
func (r *Repository) Attach(ctx context.Context, subject ocispec.Descriptor, a Attestation) (ocispec.Descriptor, error) {
	layers := []ocispec.Descriptor{}
	for _, l := range append([]Layer{{ArtifactTypeAttestation, a.Bundle}}, a.Extra...) {
		desc := ocispec.Descriptor{MediaType: l.MediaType, Digest: digest.FromBytes(l.Data), Size: int64(len(l.Data)),
			Annotations: map[string]string{AnnotationTitle: a.Annotations[AnnotationPurpose] + layerSuffix[l.MediaType]}}
		if err := r.pushBlob(ctx, desc, bytes.NewReader(l.Data)); err != nil {
			return ocispec.Descriptor{}, err
		}
		layers = append(layers, desc)
	}
	desc, err := r.pushManifest(ctx, ArtifactTypeAttestation, layers, &subject, a.Annotations)
	if err != nil {
		return ocispec.Descriptor{}, classify(fmt.Sprintf("attach a referrer to %s@%s", r.Name(), subject.Digest), err)
	}
	return desc, nil
}

// pushManifest pushes an OCI 1.1 image manifest of artifactType with an
// empty config: no creation time is added, so the same content gives the
// same digest. With a subject, oras-go updates the referrers tag schema's
// index on a registry without the referrers API.
func (r *Repository) pushManifest(ctx context.Context, artifactType string, layers []ocispec.Descriptor, subject *ocispec.Descriptor, annotations map[string]string) (ocispec.Descriptor, error) {
	empty := ocispec.DescriptorEmptyJSON
	if err := r.pushBlob(ctx, empty, bytes.NewReader(empty.Data)); err != nil {
		return ocispec.Descriptor{}, err
	}
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: artifactType,
		Config:       empty,
		Layers:       layers,
		Subject:      subject,
		Annotations:  annotations,
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc := ocispec.Descriptor{MediaType: m.MediaType, ArtifactType: artifactType, Digest: digest.FromBytes(raw), Size: int64(len(raw)), Annotations: annotations}
	if err := r.repo.Push(ctx, desc, bytes.NewReader(raw)); err != nil {
		return ocispec.Descriptor{}, err
	}
	return desc, nil
}

// Publication is what Publish pushes: the output files as one artifact
// (with Annotations, tagged Tag unless empty) or, with no files, the
// manifest Subject already in the repository; and the attestations to
// attach to it.
type Publication struct {
	Files        []File
	Tag          string
	Annotations  map[string]string
	Subject      digest.Digest
	Attestations []Attestation
}

// Published is what Publish pushed: the subject manifest and its
// attestation referrers, in the publication's order.
type Published struct {
	Subject   ocispec.Descriptor
	Referrers []ocispec.Descriptor
}

// Publish pushes pub's files (or finds its subject) and attaches its
// attestations.
func (r *Repository) Publish(ctx context.Context, pub Publication) (*Published, error) {
	var desc ocispec.Descriptor
	var err error
	if len(pub.Files) > 0 {
		desc, err = r.PushFiles(ctx, pub.Files, pub.Tag, pub.Annotations)
	} else {
		desc, err = r.Resolve(ctx, pub.Subject)
	}
	if err != nil {
		return nil, err
	}
	p := &Published{Subject: desc}
	for _, a := range pub.Attestations {
		ref, err := r.Attach(ctx, desc, a)
		if err != nil {
			return nil, err
		}
		p.Referrers = append(p.Referrers, ref)
	}
	return p, nil
}
