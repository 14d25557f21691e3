package oci

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
)

// Selector picks the attestation referrers Pull fetches, by their
// annotations.
type Selector struct {
	// BuildID, when set, keeps only referrers of this build.
	BuildID string
	// Purposes, when set, keeps only referrers of these purposes; by
	// default verification results are left out (a verifier makes its
	// own).
	Purposes []string
}

// keeps tells whether a referrer with these annotations is selected.
// Listings without annotations (the referrers API may omit them) are
// decided on the manifest's own.
func (s Selector) keeps(annotations map[string]string) bool {
	purpose := annotations[AnnotationPurpose]
	if len(s.Purposes) > 0 && !slices.Contains(s.Purposes, purpose) || len(s.Purposes) == 0 && purpose == PurposeVerificationResult {
		return false
	}
	return s.BuildID == "" || annotations[AnnotationBuildID] == s.BuildID
}

// Pulled is what Pull fetched: the subject manifest and the attestations
// attached to it, every byte checked against its digest.
type Pulled struct {
	// Subject is the manifest asked about; Manifest is its content.
	Subject  ocispec.Descriptor
	Manifest []byte
	// Attestations are the referrers pulled, in chain order (launch,
	// attest, dispatch, complete, signed statements), then by digest.
	Attestations []*Referrer
	// Listed counts the attestation referrers listed (before Selector),
	// and those listed without an artifact type that says otherwise.
	Listed int
}

// Referrer is one attestation referrer pulled.
type Referrer struct {
	Descriptor  ocispec.Descriptor
	Annotations map[string]string
	Bundle      []byte
	Extra       []Layer
}

// Pull fetches the manifest d and the attestation referrers attached to it
// that sel keeps, within the repository's Limits. Every manifest and layer
// is checked against its digest (ErrDigest), every referrer must name d as
// its subject (ErrSubject) and be laid out as docs/distributing.md says
// (ErrLayout). Nothing else is fetched: not the subject's layers, not
// referrers of other artifact types.
func (r *Repository) Pull(ctx context.Context, d digest.Digest, sel Selector) (*Pulled, error) {
	subject, raw, err := r.fetchManifest(ctx, d)
	if err != nil {
		return nil, err
	}
	p := &Pulled{Subject: subject, Manifest: raw}
	picked, err := r.list(ctx, subject, sel, p)
	if err != nil {
		return nil, err
	}
	budget := r.limits.MaxBytes
	for _, c := range picked {
		ref, err := r.pullReferrer(ctx, c, d, sel, &budget)
		if err != nil {
			return nil, err
		}
		if ref != nil {
			p.Attestations = append(p.Attestations, ref)
		}
	}
	slices.SortFunc(p.Attestations, func(a, b *Referrer) int {
		if c := purposeRank(a) - purposeRank(b); c != 0 {
			return c
		}
		return strings.Compare(string(a.Descriptor.Digest), string(b.Descriptor.Digest))
	})
	return p, nil
}

// purposeOrder is the chain order Pulled.Attestations follow.
var purposeOrder = []string{"launch", "attest", "dispatch", "complete", PurposeSignedStatement}

func purposeRank(r *Referrer) int {
	if i := slices.Index(purposeOrder, r.Annotations[AnnotationPurpose]); i >= 0 {
		return i
	}
	return len(purposeOrder)
}

// fetchManifest fetches the manifest d within MaxManifestSize, checked
// against d.
func (r *Repository) fetchManifest(ctx context.Context, d digest.Digest) (ocispec.Descriptor, []byte, error) {
	what := fmt.Sprintf("fetch manifest %s@%s", r.Name(), d)
	desc, rc, err := r.repo.FetchReference(ctx, d.String())
	if err != nil {
		return ocispec.Descriptor{}, nil, classify(what, err)
	}
	defer rc.Close()
	if desc.Digest != d {
		return ocispec.Descriptor{}, nil, fmt.Errorf("%s: %w: the registry answered with %s", what, ErrDigest, desc.Digest)
	}
	if desc.Size > r.limits.MaxManifestSize {
		return ocispec.Descriptor{}, nil, fmt.Errorf("%s: %w: %d bytes, more than %d", what, ErrLimit, desc.Size, r.limits.MaxManifestSize)
	}
	raw, err := content.ReadAll(rc, desc)
	if err != nil {
		return ocispec.Descriptor{}, nil, classify(what, err)
	}
	return desc, raw, nil
}

// pullReferrer fetches one attestation referrer and, if sel keeps it, its
// layers, taking their sizes from budget. It returns nil for a referrer
// sel does not keep, and for an undecided one that its manifest shows to be
// of another artifact type.
func (r *Repository) pullReferrer(ctx context.Context, c candidate, subject digest.Digest, sel Selector, budget *int64) (*Referrer, error) {
	desc := c.desc
	what := fmt.Sprintf("referrer %s of %s@%s", desc.Digest, r.Name(), subject)
	if desc.Size > r.limits.MaxManifestSize {
		return nil, fmt.Errorf("%s: %w: manifest of %d bytes, more than %d", what, ErrLimit, desc.Size, r.limits.MaxManifestSize)
	}
	raw, err := content.FetchAll(ctx, r.repo, desc)
	if err != nil {
		return nil, classify("fetch "+what, err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%s: %w: manifest: %v", what, ErrLayout, err)
	}
	// The subject first: a listing that names a referrer of another
	// manifest is refused whatever the referrer is. Then what is not to be
	// pulled is skipped, whatever its layout.
	if err := checkSubject(&m, subject); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if c.undecided && m.ArtifactType != ArtifactTypeAttestation || !sel.keeps(m.Annotations) {
		return nil, nil
	}
	if err := checkReferrer(&m, subject); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	ref := &Referrer{Descriptor: desc, Annotations: m.Annotations}
	for i, l := range m.Layers {
		if l.Size < 0 || l.Size > *budget {
			return nil, fmt.Errorf("%s: layer %d: %w: %d bytes, %d left of the %d pulled in all", what, i, ErrLimit, l.Size, *budget, r.limits.MaxBytes)
		}
		*budget -= l.Size
		data, err := content.FetchAll(ctx, r.repo, l)
		if err != nil {
			return nil, classify(fmt.Sprintf("fetch %s: layer %d (%s)", what, i, l.Digest), err)
		}
		if i == 0 {
			ref.Bundle = data
		} else {
			ref.Extra = append(ref.Extra, Layer{MediaType: l.MediaType, Data: data})
		}
	}
	return ref, nil
}

// checkSubject checks that a referrer's manifest names subject as its
// subject.
func checkSubject(m *ocispec.Manifest, subject digest.Digest) error {
	switch {
	case m.Subject == nil:
		return fmt.Errorf("%w: it has no subject", ErrSubject)
	case m.Subject.Digest != subject:
		return fmt.Errorf("%w: its subject is %s", ErrSubject, m.Subject.Digest)
	}
	return nil
}

// checkReferrer checks a referrer's manifest before any layer is fetched:
// its subject, artifact type and layer media types.
func checkReferrer(m *ocispec.Manifest, subject digest.Digest) error {
	if err := checkSubject(m, subject); err != nil {
		return err
	}
	switch {
	case m.MediaType != ocispec.MediaTypeImageManifest:
		return fmt.Errorf("%w: manifest media type %q, want %q", ErrLayout, m.MediaType, ocispec.MediaTypeImageManifest)
	case m.ArtifactType != ArtifactTypeAttestation:
		return fmt.Errorf("%w: artifact type %q, want %q", ErrLayout, m.ArtifactType, ArtifactTypeAttestation)
	case len(m.Layers) == 0 || m.Layers[0].MediaType != ArtifactTypeAttestation:
		return fmt.Errorf("%w: its first layer must be a %s", ErrLayout, ArtifactTypeAttestation)
	case len(m.Layers) > 3:
		return fmt.Errorf("%w: %d layers, want at most 3 (bundle, event log, inclusion proof)", ErrLayout, len(m.Layers))
	}
	for _, l := range m.Layers[1:] {
		if l.MediaType != MediaTypeEventLog && l.MediaType != MediaTypeInclusionProof {
			return fmt.Errorf("%w: a layer of media type %q", ErrLayout, l.MediaType)
		}
	}
	return nil
}
