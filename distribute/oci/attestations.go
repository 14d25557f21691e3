package oci

import (
	"bytes"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	ita "github.com/in-toto/attestation/go/v1"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/distribute"
	"github.com/attestd/attestd/scai"
)

// Build is an attestd bundle (attestctl bundle writes one) as the
// referrers to attach: one per signed envelope, each a Sigstore bundle
// with the event log it names and, for a batched admission, its inclusion
// proof.
type Build struct {
	ID string
	// Outputs are the completion attestation's outputs (its subjects).
	Outputs []*ita.ResourceDescriptor
	// Completed is the completion's time (zero if it carries none).
	Completed    time.Time
	Attestations []Attestation
}

// FromBundle reads an attestd bundle holding a completed build, in either
// form (distribute.ChainInput).
func FromBundle(raw []byte) (*Build, error) {
	in := distribute.ChainInput("", raw)
	for _, c := range in.Form {
		if c.Failed() {
			return nil, fmt.Errorf("%w: %s: %s", ErrBundle, c.Name, c.Detail)
		}
	}
	b, err := scai.DecodeBundle(in.Raw)
	if err != nil {
		return nil, err
	}
	out := &Build{}
	var envKey crypto.PublicKey
	var signed []*dsse.Envelope
	for i, env := range b.Envelopes {
		op, err := scai.Open(env)
		if errors.Is(err, scai.ErrPredicateType) {
			signed = append(signed, env)
			continue
		} else if err != nil {
			return nil, fmt.Errorf("envelope %d: %w", i+1, err)
		}
		a := op.Attestation
		envKey = a.EnvKey
		if a.Build != nil {
			out.ID = a.Build.ID
		}
		if a.Purpose == attest.PurposeComplete {
			out.Outputs, out.Completed = a.Build.Outputs, a.Time
		}
		at, err := attestation(env, a.EnvKey, string(a.Purpose), scai.PredicateType)
		if err != nil {
			return nil, fmt.Errorf("envelope %d (%s): %w", i+1, a.Purpose, err)
		}
		if log, ok := scai.FindLog(b.Logs, a.Log); ok {
			at.Extra = append(at.Extra, Layer{MediaTypeEventLog, log})
		}
		if proof := proofOf(b.Proofs, a); proof != nil {
			at.Extra = append(at.Extra, Layer{MediaTypeInclusionProof, proof})
		}
		out.Attestations = append(out.Attestations, at)
	}
	if out.Outputs == nil {
		return nil, fmt.Errorf("the bundle holds no completion attestation: nothing to attach to")
	}
	for _, env := range signed {
		at, err := attestation(env, envKey, PurposeSignedStatement, predicateType(env))
		if err != nil {
			return nil, fmt.Errorf("signed statement: %w", err)
		}
		out.Attestations = append(out.Attestations, at)
	}
	out.annotate()
	return out, nil
}

// AddResults adds verification results (attestctl verify --result-out: a
// VSA or SVR per line, either form), signed by pub, to the build's
// referrers.
func (b *Build) AddResults(raw []byte, pub crypto.PublicKey) error {
	for i, line := range bytes.Split(bytes.TrimSpace(raw), []byte("\n")) {
		env, err := resultEnvelope(line, pub)
		if err != nil {
			return fmt.Errorf("verification result %d: %w", i+1, err)
		}
		at, err := attestation(env, pub, PurposeVerificationResult, predicateType(env))
		if err != nil {
			return fmt.Errorf("verification result %d: %w", i+1, err)
		}
		delete(at.Annotations, AnnotationEnvKey)
		b.Attestations = append(b.Attestations, at)
	}
	b.annotate()
	return nil
}

// resultEnvelope is one line of verification results: a Sigstore bundle,
// verified with pub, or a DSSE envelope (NewBundle checks its signature).
func resultEnvelope(line []byte, pub crypto.PublicKey) (*dsse.Envelope, error) {
	if _, _, err := distribute.OpenBundle(line); err == nil {
		return distribute.VerifyBundle(line, []crypto.PublicKey{pub})
	}
	return scai.ParseEnvelope(line)
}

// Files returns the output files at paths, each named as the completion
// names the output of its digest; a file that is no output is refused.
func (b *Build) Files(paths []string) ([]File, error) {
	var files []File
	for _, path := range paths {
		d, err := fileDigest(path)
		if err != nil {
			return nil, err
		}
		name, ok := b.outputName(d)
		if !ok {
			return nil, fmt.Errorf("%s (%s): %w %q", path, d, ErrNotOutput, b.ID)
		}
		files = append(files, File{Name: name, Path: path})
	}
	return files, nil
}

func (b *Build) outputName(d digest.Digest) (string, bool) {
	for _, o := range b.Outputs {
		if o.GetDigest()["sha256"] == d.Encoded() {
			return o.GetName(), true
		}
	}
	return "", false
}

// Publication is the build to publish: files pushed as one artifact
// (tagged tag unless empty) or, with none, the manifest subject already in
// the repository, which must be one of the build's outputs.
func (b *Build) Publication(files []File, subject digest.Digest, tag string) (Publication, error) {
	if len(files) == 0 {
		if err := subject.Validate(); err != nil {
			return Publication{}, err
		}
		if _, ok := b.outputName(subject); !ok {
			return Publication{}, fmt.Errorf("%s: %w %q", subject, ErrNotOutput, b.ID)
		}
	}
	return Publication{Files: files, Tag: tag, Annotations: b.outputAnnotations(), Subject: subject, Attestations: b.Attestations}, nil
}

// outputAnnotations annotate the outputs' artifact with the build ID and
// the completion's time.
func (b *Build) outputAnnotations() map[string]string {
	a := map[string]string{AnnotationBuildID: b.ID}
	if !b.Completed.IsZero() {
		a[ocispec.AnnotationCreated] = b.Completed.UTC().Format(time.RFC3339)
	}
	return a
}

// annotate sets the annotations every referrer of the build carries: the
// build ID, and the completion's time as the creation time so that pushing
// the same build twice gives the same manifests.
func (b *Build) annotate() {
	for _, a := range b.Attestations {
		for k, v := range b.outputAnnotations() {
			a.Annotations[k] = v
		}
	}
}

// attestation is env as a Sigstore bundle signed by pub, annotated.
func attestation(env *dsse.Envelope, pub crypto.PublicKey, purpose, predicateType string) (Attestation, error) {
	bundle, err := distribute.NewBundle(env, pub)
	if err != nil {
		return Attestation{}, err
	}
	key, err := scai.KeyID(pub)
	if err != nil {
		return Attestation{}, err
	}
	return Attestation{Bundle: bundle, Annotations: map[string]string{
		AnnotationContent:       ContentDSSE,
		AnnotationPredicateType: predicateType,
		AnnotationPurpose:       purpose,
		AnnotationEnvKey:        key,
	}}, nil
}

// proofOf returns the inclusion proof (JSON) of a batched admission.
func proofOf(proofs []*scai.InclusionProof, a *scai.Attestation) []byte {
	if a.Batch == nil {
		return nil
	}
	for _, p := range proofs {
		if p.Root == a.Batch.Root {
			b, _ := json.Marshal(p)
			return b
		}
	}
	return nil
}

// predicateType is the predicate type an envelope's statement claims, for
// the annotation only ("" if the payload does not say).
func predicateType(env *dsse.Envelope) string {
	p, err := env.DecodeB64Payload()
	if err != nil {
		return ""
	}
	var st struct {
		PredicateType string `json:"predicateType"`
	}
	json.Unmarshal(p, &st)
	return st.PredicateType
}

// Chain returns what was pulled as a chain file in the Sigstore form
// (docs/formats.md): each referrer's Sigstore bundle on a line, then the
// event logs and inclusion proofs as carriers. distribute.ChainInput turns
// it into verify's input, having sigstore-go verify each bundle.
func (p *Pulled) Chain() []byte {
	var bundles, carriers [][]byte
	for _, r := range p.Attestations {
		bundles = append(bundles, r.Bundle)
		for _, l := range r.Extra {
			carriers = append(carriers, scai.Carrier(l.MediaType, l.Data))
		}
	}
	return scai.EncodeBundle(append(bundles, carriers...)...)
}
