package oci

import (
	"context"
	"errors"
	"fmt"
	"io"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// candidate is a referrer Pull fetches the manifest of. undecided: the
// listing did not say it is an attestation, only that it may be one; its
// manifest decides.
type candidate struct {
	desc      ocispec.Descriptor
	undecided bool
}

// list returns the referrers of subject that Pull fetches, at most
// MaxAttestations of them.
//
// It asks for the referrers of artifact type ArtifactTypeAttestation: a
// registry with the referrers API filters them, or the client does (oras-go,
// also on the referrers tag schema's index). The OCI distribution
// specification has the listing report each referrer's artifactType, but
// some registries report its config media type instead
// (go-containerregistry's), which for attestd's referrers is the empty
// descriptor's; and they may drop annotations. So when the filtered listing
// holds nothing, list takes the whole listing and keeps, undecided, the
// referrers whose listed artifact type is the empty descriptor's or none:
// each one's own manifest then decides.
func (r *Repository) list(ctx context.Context, subject ocispec.Descriptor, sel Selector, p *Pulled) ([]candidate, error) {
	what := fmt.Sprintf("list the referrers of %s@%s", r.Name(), subject.Digest)
	var picked []candidate
	add := func(desc ocispec.Descriptor, undecided bool) error {
		p.Listed++
		if len(desc.Annotations) > 0 && !sel.keeps(desc.Annotations) {
			return nil
		}
		if len(picked) == r.limits.MaxAttestations {
			if undecided {
				return fmt.Errorf("%w: more than %d referrers of %s that may be attestations (the registry's listing does not say which are)", ErrLimit, r.limits.MaxAttestations, subject.Digest)
			}
			return fmt.Errorf("%w: more than %d attestation referrers of %s (a build ID narrows them)", ErrLimit, r.limits.MaxAttestations, subject.Digest)
		}
		picked = append(picked, candidate{desc: desc, undecided: undecided})
		return nil
	}
	err := r.repo.Referrers(ctx, subject, ArtifactTypeAttestation, func(page []ocispec.Descriptor) error {
		for _, desc := range page {
			if desc.ArtifactType != ArtifactTypeAttestation {
				continue
			}
			if err := add(desc, false); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, r.listError(what, err)
	}
	if p.Listed > 0 {
		return picked, nil
	}
	err = r.repo.Referrers(ctx, subject, "", func(page []ocispec.Descriptor) error {
		for _, desc := range page {
			if !undecidedType(desc.ArtifactType) {
				continue
			}
			if err := add(desc, true); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, r.listError(what, err)
	}
	return picked, nil
}

// listError classifies an error of listing. oras-go reads a referrers API
// response only up to MaxListBytes and then fails to decode it (unexpected
// EOF): that is the bound reached, or a registry that cut its answer short.
func (r *Repository) listError(what string, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%s: %w: the listing ends early: longer than %d bytes, or cut short: %v", what, ErrLimit, r.limits.MaxListBytes, err)
	}
	return classify(what, err)
}

// undecidedType tells whether a listed artifact type leaves open that the
// referrer is an attestation: none, or the empty descriptor's media type
// (attestd's referrers' config) reported in its place.
func undecidedType(t string) bool {
	return t == "" || t == ocispec.MediaTypeEmptyJSON
}
