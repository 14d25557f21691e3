package fleet

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
)

// timestamp is t for the API; the zero time is absent.
func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func environmentProto(e *Environment) *fleetv1.Environment {
	return &fleetv1.Environment{
		KeyDigest: e.KeyDigest, BootId: e.BootID, AkDigest: e.AKDigest, Backends: e.Backends, Image: e.Image,
		Level: int32(e.Level), AdmittedAt: timestamp(e.AdmittedAt), Admission: e.Admission,
	}
}

func buildProto(b *Build) *fleetv1.Build {
	return &fleetv1.Build{
		BuildId: b.BuildID, EnvKey: b.EnvKey, State: string(b.State),
		ReservedAt: timestamp(b.ReservedAt), DispatchedAt: timestamp(b.DispatchedAt), CompletedAt: timestamp(b.CompletedAt),
		Dispatch: b.Dispatch, Completion: b.Completion,
	}
}
