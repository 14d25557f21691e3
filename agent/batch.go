package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/scai"
)

// Attestation is one answer of the daemon: the signed envelope, the event
// log it names (a prefix of which it covers) and, for an admission answered
// together with other callers, this caller's inclusion proof.
type Attestation struct {
	Envelope []byte
	EventLog []byte
	Proof    []byte // JSON scai.InclusionProof; nil unless batched
}

// Encode writes the attestation as a JSON Lines bundle that verifies on its
// own (scai.AttestationLines).
func (a *Attestation) Encode() []byte { return scai.AttestationLines(a.Envelope, a.EventLog, a.Proof) }

// admission is one Attest caller waiting for a quote.
type admission struct {
	ctx   context.Context
	nonce []byte
	done  chan admissionResult // buffered: the runner never blocks on it
}

type admissionResult struct {
	att *Attestation
	err error
}

// batcher queues Attest callers. While one quote is being made, the callers
// that arrive wait; the next quote answers up to attest.MaxBatch of them at
// once (docs/formats.md, "Batched admissions"). A lone caller on an idle
// device is answered at once, in the single-binding form.
type batcher struct {
	mu      sync.Mutex
	queue   []*admission
	running bool
}

// Attest returns a fresh attestation bound to nonce. Callers that wait at the
// same time share one quote; each gets its inclusion proof.
func (a *Agent) Attest(ctx context.Context, nonce []byte) (*Attestation, error) {
	if err := attest.CheckNonce(nonce); err != nil {
		return nil, err
	}
	if a.LaunchAttestation() == nil {
		return nil, errNotLaunched
	}
	w := &admission{ctx: ctx, nonce: nonce, done: make(chan admissionResult, 1)}
	b := &a.batch
	b.mu.Lock()
	if !b.running {
		// The device is idle: answer this caller here, alone, and leave
		// whoever queued meanwhile to a runner.
		b.running = true
		b.mu.Unlock()
		r, keep := a.answer([]*admission{w})
		go keep()
		a.continueBatches()
		return r[0].att, r[0].err
	}
	b.queue = append(b.queue, w)
	b.mu.Unlock()
	select {
	case r := <-w.done:
		return r.att, r.err
	case <-ctx.Done():
		// Still queued: the runner skips it, its leaf is never quoted.
		// Already in a batch: the result is dropped.
		return nil, ctx.Err()
	}
}

// continueBatches hands the queue to a runner if callers are waiting, or
// marks the device idle.
func (a *Agent) continueBatches() {
	b := &a.batch
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		b.queue = nil
		b.running = false
		return
	}
	go a.runBatches()
}

// runBatches answers queued callers, a batch at a time, until none is left.
func (a *Agent) runBatches() {
	for {
		b := &a.batch
		b.mu.Lock()
		var take []*admission
		for len(b.queue) > 0 && len(take) < attest.MaxBatch {
			w := b.queue[0]
			b.queue[0] = nil
			b.queue = b.queue[1:]
			if w.ctx.Err() == nil {
				take = append(take, w)
			}
		}
		if len(take) == 0 {
			b.queue = nil
			b.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		results, keep := a.answer(take)
		for i, r := range results {
			take[i].done <- r
		}
		keep()
	}
}

// answer makes one attestation for the callers in take: the single-binding
// form for one caller, a batch for more. keep, called once the callers have
// their answers, keeps the admissions for the bundle (before dispatch): a
// crash in between loses only the bundle's copy of an admission its callers
// already hold.
func (a *Agent) answer(take []*admission) (out []admissionResult, keep func()) {
	out = make([]admissionResult, len(take))
	keep = func() {}
	fail := func(err error) ([]admissionResult, func()) {
		for i := range out {
			out[i] = admissionResult{err: err}
		}
		return out, keep
	}
	// No caller's deadline bounds the shared quote; the device has its own.
	ctx := context.Background()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(take) == 1 {
		att, err := a.attestLocked(ctx, scai.Attestation{Purpose: attest.PurposeAttest, Nonce: take[0].nonce})
		if err != nil {
			return fail(err)
		}
		out[0].att = att
		return out, a.keeper(out)
	}
	leaves := make([][32]byte, len(take))
	for i, w := range take {
		leaves[i] = attest.BatchLeaf(a.keyDigest, w.nonce)
	}
	root := attest.MerkleRoot(leaves)
	shared, err := a.attestLocked(ctx, scai.Attestation{Purpose: attest.PurposeAttest, Batch: &scai.Batch{Root: root, Size: len(take)}})
	if err != nil {
		return fail(err)
	}
	for i, w := range take {
		p, err := json.Marshal(&scai.InclusionProof{
			KeyDigest: a.keyDigest, Nonce: w.nonce, Index: i, Size: len(take),
			Path: attest.InclusionProof(leaves, i), Root: root,
		})
		if err != nil {
			return fail(fmt.Errorf("encode inclusion proof: %w", err))
		}
		out[i].att = &Attestation{Envelope: shared.Envelope, EventLog: shared.EventLog, Proof: p}
	}
	return out, a.keeper(out)
}

// keeper returns what keeps the newest of answered admissions within the
// admission window, if the environment is not yet dispatched (decided now,
// when they are made: a dispatch that overtakes the keeping does not drop
// them). Bundle waits for keepers not yet run. A failure to keep one is
// logged: the callers have their attestations. a.mu must be held.
func (a *Agent) keeper(answered []admissionResult) func() {
	if a.state.Phase != phaseLaunched {
		return func() {}
	}
	a.pendingKeeps++
	return func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		defer func() {
			a.pendingKeeps--
			a.kept.Broadcast()
		}()
		for _, r := range answered[max(0, len(answered)-maxAdmissions):] {
			if err := a.keepAdmission(r.att); err != nil {
				a.log.Warn("admission attestation not kept for the bundle", "err", err)
				return
			}
		}
	}
}
