package agent

import (
	"context"
	"encoding/hex"

	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
)

func (s *service) BindBuild(ctx context.Context, req *apiv1.BindBuildRequest) (*apiv1.BindBuildResponse, error) {
	r, err := s.a.BindBuild(ctx, req.GetBuildId(), fromAPI(req.GetRequest()), req.GetNonce())
	if err != nil {
		return nil, err
	}
	return &apiv1.BindBuildResponse{Envelope: r.Envelope, Repeated: r.Repeated, EventLog: r.EventLog}, nil
}

func (s *service) Extend(ctx context.Context, req *apiv1.ExtendRequest) (*apiv1.ExtendResponse, error) {
	r, err := s.a.Extend(ctx, req.GetDomain(), req.GetOperation(), req.GetContent())
	if err != nil {
		return nil, err
	}
	return &apiv1.ExtendResponse{Seq: r.Seq, Sha256: hex.EncodeToString(r.Digests[sha256Hash]), Digests: digestMap(r.Digests)}, nil
}

func (s *service) Complete(ctx context.Context, req *apiv1.CompleteRequest) (*apiv1.CompleteResponse, error) {
	att, err := s.a.Complete(ctx, req.GetBuildId(), fromAPI(req.GetInputs()), fromAPI(req.GetOutputs()), req.GetNonce())
	if err != nil {
		return nil, err
	}
	return &apiv1.CompleteResponse{Envelope: att.Envelope, EventLog: att.EventLog}, nil
}

func (s *service) SignStatement(ctx context.Context, req *apiv1.SignStatementRequest) (*apiv1.SignStatementResponse, error) {
	env, err := s.a.SignStatement(ctx, req.GetBuildId(), req.GetStatement())
	if err != nil {
		return nil, err
	}
	return &apiv1.SignStatementResponse{Envelope: env}, nil
}

func (s *service) GetBundle(ctx context.Context, _ *apiv1.GetBundleRequest) (*apiv1.GetBundleResponse, error) {
	if s.a.LaunchAttestation() == nil {
		return nil, errNotLaunched
	}
	b := s.a.Bundle()
	return &apiv1.GetBundleResponse{BuildId: b.BuildID, Envelopes: b.Envelopes, EventLog: b.EventLog, InclusionProofs: b.Proofs}, nil
}

// BundleOf is the bundle a GetBundle response describes; Encode writes it.
func BundleOf(resp *apiv1.GetBundleResponse) *Bundle {
	return &Bundle{BuildID: resp.GetBuildId(), Envelopes: resp.GetEnvelopes(), Proofs: resp.GetInclusionProofs(), EventLog: resp.GetEventLog()}
}

// fromAPI converts the API's descriptors to in-toto ones.
func fromAPI(in []*apiv1.ResourceDescriptor) []*ita.ResourceDescriptor {
	out := make([]*ita.ResourceDescriptor, 0, len(in))
	for _, d := range in {
		rd := &ita.ResourceDescriptor{
			Name:             d.GetName(),
			Uri:              d.GetUri(),
			Digest:           d.GetDigest(),
			Content:          d.GetContent(),
			DownloadLocation: d.GetDownloadLocation(),
			MediaType:        d.GetMediaType(),
		}
		if a := d.GetAnnotations(); a != nil {
			rd.Annotations = proto.Clone(a).(*structpb.Struct)
		}
		out = append(out, rd)
	}
	return out
}

// ToAPI converts in-toto descriptors to the API's (for clients and tests).
func ToAPI(in []*ita.ResourceDescriptor) []*apiv1.ResourceDescriptor {
	out := make([]*apiv1.ResourceDescriptor, 0, len(in))
	for _, d := range in {
		rd := &apiv1.ResourceDescriptor{
			Name:             d.GetName(),
			Uri:              d.GetUri(),
			Digest:           d.GetDigest(),
			Content:          d.GetContent(),
			DownloadLocation: d.GetDownloadLocation(),
			MediaType:        d.GetMediaType(),
		}
		if a := d.GetAnnotations(); a != nil {
			rd.Annotations = proto.Clone(a).(*structpb.Struct)
		}
		out = append(out, rd)
	}
	return out
}
