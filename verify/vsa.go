package verify

import (
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"time"

	vsapb "github.com/in-toto/attestation/go/predicates/vsa/v1"
	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/attestd/attestd/scai"
)

// VSAPredicateType is the SLSA Verification Summary Attestation v1 type.
const VSAPredicateType = "https://slsa.dev/verification_summary/v1"

// VSALevel is the verifiedLevels token for SLSA BuildEnv level n. No such
// token is standardized yet (docs/verifying.md).
func VSALevel(n int) string { return fmt.Sprintf("SLSA_BUILDENV_LEVEL_%d", n) }

// VSAOptions describe the verifier and the policy in a VSA.
type VSAOptions struct {
	VerifierID string // e.g. https://attestd.dev/attestctl
	Version    string // attestctl's version
	PolicyURI  string // where the policy lives (e.g. its file name)
	Time       time.Time
}

// NewVSA returns a SLSA VSA v1 statement (JSON) summarising bundle b of ev:
// the subjects are the build's outputs when the bundle holds a completion,
// else the environment key; resourceUri names the env key and build;
// inputAttestations is the bundle's SHA-256; verifiedLevels holds
// SLSA_BUILDENV_LEVEL_<n> for n ≤ the bundle's level when it passed.
func NewVSA(ev *Evaluation, b *BundleEvaluation, o VSAOptions) ([]byte, error) {
	rs := attestdResults(b.Report)
	var subject []*ita.ResourceDescriptor
	keyDigest, buildID := "", ""
	for _, r := range rs {
		keyDigest = r.KeyDigest
		if r.BuildID != "" {
			buildID = r.BuildID
		}
		if r.Purpose == "complete" && r.att.Build != nil {
			subject = cloneOutputs(r.att.Build.Outputs)
		}
	}
	if keyDigest == "" {
		return nil, fmt.Errorf("vsa: %s holds no attestd attestation that opened", b.Name)
	}
	if subject == nil {
		subject = []*ita.ResourceDescriptor{{Name: scai.SubjectName, Digest: map[string]string{"sha256": keyDigest}}}
	}
	resource := "attestd:env-key:sha256:" + keyDigest
	if buildID != "" {
		resource += ";build-id=" + buildID
	}
	result := "FAILED"
	var levels []string
	if b.OK && ev.OK {
		result = "PASSED"
		for n := 1; n <= b.Level; n++ {
			levels = append(levels, VSALevel(n))
		}
	}
	if o.Time.IsZero() {
		o.Time = time.Now()
	}
	pred := &vsapb.VerificationSummary{
		Verifier:           &vsapb.VerificationSummary_Verifier{Id: o.VerifierID},
		TimeVerified:       timestamppb.New(o.Time.UTC().Truncate(time.Second)),
		ResourceUri:        resource,
		InputAttestations:  []*vsapb.VerificationSummary_InputAttestation{{Uri: b.Name, Digest: map[string]string{"sha256": b.SHA256}}},
		VerificationResult: result,
		VerifiedLevels:     levels,
		SlsaVersion:        "1.0",
	}
	if ev.PolicySHA256 != "" {
		pred.Policy = &vsapb.VerificationSummary_Policy{Uri: o.PolicyURI, Digest: map[string]string{"sha256": ev.PolicySHA256}}
	}
	pj, err := protojson.Marshal(pred)
	if err != nil {
		return nil, fmt.Errorf("vsa: %w", err)
	}
	ps := &structpb.Struct{}
	if err := protojson.Unmarshal(pj, ps); err != nil {
		return nil, fmt.Errorf("vsa: %w", err)
	}
	// verifier.version is in the VSA v1 spec but not in the v1.2.0 Go
	// binding's message: add it to the JSON.
	if o.Version != "" {
		v, _ := structpb.NewStruct(map[string]any{"attestctl": o.Version})
		ps.Fields["verifier"].GetStructValue().Fields["version"] = structpb.NewStructValue(v)
	}
	st := &ita.Statement{Type: ita.StatementTypeUri, Subject: subject, PredicateType: VSAPredicateType, Predicate: ps}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("vsa: %w", err)
	}
	out, err := protojson.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("vsa: %w", err)
	}
	// Re-encode compactly with encoding/json: stable bytes to sign.
	var generic any
	if err := json.Unmarshal(out, &generic); err != nil {
		return nil, err
	}
	return json.Marshal(generic)
}

// SignVSA signs a VSA statement (DSSE, application/vnd.in-toto+json).
func SignVSA(ctx context.Context, key crypto.Signer, statement []byte) ([]byte, error) {
	return scai.SignPayload(ctx, key, statement)
}

func cloneOutputs(in []*ita.ResourceDescriptor) []*ita.ResourceDescriptor {
	out := make([]*ita.ResourceDescriptor, 0, len(in))
	for _, rd := range in {
		out = append(out, &ita.ResourceDescriptor{Name: rd.GetName(), Uri: rd.GetUri(), Digest: rd.GetDigest()})
	}
	return out
}
