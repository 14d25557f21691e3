package verify_test

import (
	"maps"
	"slices"
	"time"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/verify"
)

// evaluate is verify.Evaluate with the fixtures' per-attestation options
// (keys and fake-rooted backend verifiers made in memory) joining the
// policy (nil: an empty one), as attestctl's flags do.
func evaluate(p *verify.Policy, inputs []verify.Input, opts verify.Options, now time.Time) *verify.Evaluation {
	if p == nil {
		p = verify.NewPolicy()
	}
	q := *p
	q.Freshness.Nonces = maps.Clone(p.Freshness.Nonces)
	if q.Freshness.Nonces == nil {
		q.Freshness.Nonces = map[attest.Purpose]verify.Nonce{}
	}
	for pu, n := range opts.Nonces {
		q.Freshness.Nonces[pu] = n
	}
	if opts.Nonce != nil {
		q.Freshness.Nonces[attest.PurposeAttest] = opts.Nonce
	}
	if opts.BuildID != "" {
		q.Build.ID = opts.BuildID
	}
	q.Trust.TPM.InsecureTrustEmbeddedAK = q.Trust.TPM.InsecureTrustEmbeddedAK || opts.InsecureTrustEmbeddedAK
	res := &verify.Resolved{}
	if p.Resolved != nil {
		*res = *p.Resolved
	}
	res.TrustedAKs = append(slices.Clone(res.TrustedAKs), opts.TrustedAKs...)
	if opts.AKRoots != nil {
		res.AKRoots = opts.AKRoots
	}
	q.Resolved = res
	return verify.Evaluate(&q, inputs, verify.Config{Verifiers: opts.Verifiers, Now: now})
}
