package oci

import (
	"encoding/json"
	"errors"
	"fmt"

	ita "github.com/in-toto/attestation/go/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/scai"
)

// CheckSubject names the check that ties the verified build to the
// manifest asked about.
const CheckSubject = "oci-subject"

// SubjectCheck checks that the manifest pulled is what the build's
// completion attestation describes: the manifest itself is one of the
// build's outputs (an image the build pushed), or it is an artifact of
// ArtifactTypeOutputs whose every layer is an output, by sha256 and by
// name. lines is the chain in the DSSE form (distribute.ChainInput's Raw);
// the check means something only when the completion's signature and
// evidence verify too (package verify).
func (p *Pulled) SubjectCheck(lines []byte) attest.Check {
	c := attest.Check{Name: CheckSubject}
	outputs, err := completionOutputs(lines)
	if err == nil {
		c.Detail, err = p.matchOutputs(outputs)
	}
	c.OK = err == nil
	if err != nil {
		c.Detail = err.Error()
	}
	return c
}

func (p *Pulled) matchOutputs(outputs []*ita.ResourceDescriptor) (string, error) {
	self := &ita.ResourceDescriptor{Digest: map[string]string{"sha256": p.Subject.Digest.Encoded()}}
	if scai.SubjectAmong(self, outputs) {
		return fmt.Sprintf("the manifest %s is an output of the build", p.Subject.Digest), nil
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(p.Manifest, &m); err != nil || m.ArtifactType != ArtifactTypeOutputs || len(m.Layers) == 0 {
		return "", fmt.Errorf("the manifest %s is not an output of the build, nor an artifact of %s", p.Subject.Digest, ArtifactTypeOutputs)
	}
	for _, l := range m.Layers {
		name := l.Annotations[AnnotationTitle]
		if !isOutput(name, l.Digest.Encoded(), outputs) {
			return "", fmt.Errorf("layer %q (%s) of the manifest is not an output of the build", name, l.Digest)
		}
	}
	return fmt.Sprintf("all %d files of the manifest are outputs of the build", len(m.Layers)), nil
}

func isOutput(name, sha256 string, outputs []*ita.ResourceDescriptor) bool {
	for _, o := range outputs {
		if o.GetName() == name && o.GetDigest()["sha256"] == sha256 {
			return true
		}
	}
	return false
}

// completionOutputs returns the outputs of the one completion attestation
// among lines.
func completionOutputs(lines []byte) ([]*ita.ResourceDescriptor, error) {
	b, err := scai.DecodeBundle(lines)
	if err != nil {
		return nil, err
	}
	var outputs []*ita.ResourceDescriptor
	n := 0
	for _, env := range b.Envelopes {
		op, err := scai.Open(env)
		if errors.Is(err, scai.ErrPredicateType) {
			continue
		}
		if err == nil && op.Attestation.Purpose == attest.PurposeComplete {
			outputs = op.Attestation.Build.Outputs
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("%d completion attestations among the referrers, want 1", n)
	}
	return outputs, nil
}
