package oci

import (
	"github.com/attestd/attestd/distribute"
	"github.com/attestd/attestd/scai"
)

// The layout of what attestd pushes (docs/distributing.md).
const (
	// ArtifactTypeOutputs is the artifact type of a build's output files
	// pushed as one OCI artifact: one layer per file.
	ArtifactTypeOutputs = "application/vnd.attestd.build-outputs.v1"
	// MediaTypeOutput is the media type of an output file's layer.
	MediaTypeOutput = "application/octet-stream"

	// ArtifactTypeAttestation is the artifact type of every attestation
	// referrer, and the media type of its first layer: a Sigstore bundle
	// v0.3 holding one DSSE envelope.
	ArtifactTypeAttestation = distribute.MediaTypeBundle
	// MediaTypeEventLog is the media type of the layer holding the prefix
	// of the agent's event log (CEL-TLV) an attestation covers.
	MediaTypeEventLog = scai.MediaTypeCEL
	// MediaTypeInclusionProof is the media type of the layer holding a
	// batched admission's inclusion proof (JSON).
	MediaTypeInclusionProof = scai.PayloadTypeInclusionProof
)

// Annotations of an attestation referrer's manifest. They let a consumer
// pick what it needs without pulling; they are not signed, and a verifier
// trusts only what the bundles themselves prove.
const (
	// AnnotationContent is "dsse-envelope", as cosign writes it.
	AnnotationContent = "dev.sigstore.bundle.content"
	// AnnotationPredicateType is the in-toto predicate type of the
	// envelope's statement, as cosign writes it.
	AnnotationPredicateType = "dev.sigstore.bundle.predicateType"
	// AnnotationPurpose is launch, attest, dispatch, complete (attestd
	// attestations), signed-statement (a statement the environment signed,
	// e.g. SLSA provenance) or verification-result (a VSA or SVR).
	AnnotationPurpose = "dev.attestd.purpose"
	// AnnotationBuildID is the build the attestation belongs to: every
	// referrer of one build's chain carries it, its launch and admission
	// too.
	AnnotationBuildID = "dev.attestd.build-id"
	// AnnotationEnvKey is the SHA-256 (hex) of the environment key's PKIX
	// DER: the key that signed the envelope (absent on verification
	// results, which a verifier signs).
	AnnotationEnvKey = "dev.attestd.env-key-sha256"
	// AnnotationTitle names an output file's layer (the output's name in
	// the completion attestation).
	AnnotationTitle = "org.opencontainers.image.title"
)

// ContentDSSE is the value of AnnotationContent.
const ContentDSSE = "dsse-envelope"

// Purposes of AnnotationPurpose beyond attestd's own (attest.Purpose).
const (
	PurposeSignedStatement    = "signed-statement"
	PurposeVerificationResult = "verification-result"
)

// Limits bound what Pull fetches from a registry, whatever the registry or
// anyone who can push to the repository does.
type Limits struct {
	// MaxPages bounds the pages of referrers listed.
	MaxPages int
	// MaxListBytes bounds each response listing referrers (and the
	// referrers index of the tag schema).
	MaxListBytes int64
	// MaxAttestations bounds the attestation referrers pulled (after
	// filtering by artifact type, purpose and build ID), or, when the
	// listing does not say which referrers are attestations, the referrers
	// whose manifests are fetched to decide; more is refused.
	MaxAttestations int
	// MaxManifestSize bounds each manifest fetched.
	MaxManifestSize int64
	// MaxBytes bounds the layers pulled, all together.
	MaxBytes int64
}

// DefaultLimits hold a build's chain (launch, admission, dispatch,
// completion, a few signed statements) many times over, and a listing of
// about 10,000 unrelated referrers.
var DefaultLimits = Limits{
	MaxPages:        32,
	MaxListBytes:    4 << 20,
	MaxAttestations: 64,
	MaxManifestSize: 256 << 10,
	MaxBytes:        64 << 20,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.MaxPages > 0 {
		d.MaxPages = l.MaxPages
	}
	if l.MaxListBytes > 0 {
		d.MaxListBytes = l.MaxListBytes
	}
	if l.MaxAttestations > 0 {
		d.MaxAttestations = l.MaxAttestations
	}
	if l.MaxManifestSize > 0 {
		d.MaxManifestSize = l.MaxManifestSize
	}
	if l.MaxBytes > 0 {
		d.MaxBytes = l.MaxBytes
	}
	return d
}
