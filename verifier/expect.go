package verifier

import (
	"crypto"
	"maps"
	"slices"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/verify"
)

// Expect is what one call expects beyond the policy: what a control plane
// decided for this environment (the nonces it issued, the build it
// recorded) and learnt since the policy was written (the AKs it
// registered). The zero value expects nothing more than the policy.
type Expect struct {
	// Nonces, by purpose, must be the nonces those attestations are bound
	// to, and those attestations must be in the bundle (policy-nonces);
	// they replace the policy's nonce for the same purpose.
	Nonces map[attest.Purpose][]byte
	// BuildID, when set, is the build ID dispatch and completion must carry,
	// and the bundle must hold the dispatch (policy-build); it replaces the
	// policy's build.id.
	BuildID string
	// Purposes must each appear in the bundle, besides the policy's
	// require.purposes (policy-purposes).
	Purposes []attest.Purpose
	// TrustedAKs are pinned for this call besides the policy's.
	TrustedAKs []crypto.PublicKey
}

// EvaluateExpecting is Evaluate with e joined to the policy for this call
// only. The evaluation names the policy's digest: the expectations are the
// caller's, recorded by it beside the result.
func (v *Verifier) EvaluateExpecting(inputs []verify.Input, e Expect) *verify.Evaluation {
	return verify.Evaluate(v.policyFor(e), inputs, verify.Config{Verifiers: v.verifiers, Now: v.now()})
}

// policyFor is a copy of the policy with e joined; the Verifier's policy is
// not changed, so calls may run concurrently.
func (v *Verifier) policyFor(e Expect) *verify.Policy {
	q := *v.policy
	q.Freshness.Nonces = maps.Clone(q.Freshness.Nonces)
	if q.Freshness.Nonces == nil && len(e.Nonces) > 0 {
		q.Freshness.Nonces = map[attest.Purpose]verify.Nonce{}
	}
	for pu, n := range e.Nonces {
		q.Freshness.Nonces[pu] = n
	}
	if e.BuildID != "" {
		q.Build.ID = e.BuildID
	}
	for _, pu := range e.Purposes {
		if !slices.Contains(q.Require.Purposes, pu) {
			q.Require.Purposes = append(slices.Clone(q.Require.Purposes), pu)
		}
	}
	if len(e.TrustedAKs) > 0 {
		res := *q.Resolved
		res.TrustedAKs = append(slices.Clone(res.TrustedAKs), e.TrustedAKs...)
		q.Resolved = &res
	}
	return &q
}
