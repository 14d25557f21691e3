// Package verify is the consumer side of attestd: it opens attestations,
// checks their signatures, hands evidence to the backend verifiers, replays
// the agent's event log and reports every check by name.
//
// Authenticity (is it signed by what it claims?) lives in the backend
// verifiers and scai; this package composes them and adds the checks that
// tie an attestation to the verifier's expectations (nonce, event log).
package verify

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"sort"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/scai"
)

// Check names added by this package (backends add their own).
const (
	CheckStatement   = "statement"
	CheckSignature   = "dsse-signature"
	CheckNonce       = "nonce"
	CheckBinding     = "binding"
	CheckBackend     = "evidence-backend"
	CheckReplay      = "cel-replay"
	CheckLaunch      = "launch-frozen"
	CheckBuildID     = "build-id"
	CheckBuildEvents = "build-events"
	CheckInclusion   = "batch-inclusion"
)

// Options says what to trust and expect. The zero value trusts no AK and
// expects no particular nonce.
type Options struct {
	// Nonce, when set, must be the nonce an admission (attest) attestation
	// is bound to.
	Nonce []byte
	// Nonces, by purpose, are the nonces the verifier chose for each step
	// (attest, dispatch, complete); a purpose without one is not checked
	// for freshness.
	Nonces map[attest.Purpose][]byte
	// BuildID, when set, is the build ID dispatch and completion must carry.
	BuildID string
	// TrustedAKs pins attestation keys.
	TrustedAKs []crypto.PublicKey
	// AKRoots anchors AK certificates shipped in the evidence.
	AKRoots *x509.CertPool
	// InsecureTrustEmbeddedAK trusts whatever AK the evidence ships. Demos
	// and tests only; the result says so.
	InsecureTrustEmbeddedAK bool
	// Verifiers are the backend verifiers available, by Backend().
	Verifiers []attest.Verifier
}

// Result is the outcome for one attestation.
type Result struct {
	Purpose   attest.Purpose   `json:"purpose,omitempty"`
	BuildID   string           `json:"buildId,omitempty"`
	KeyDigest string           `json:"envKeySha256,omitempty"`
	Checks    []attest.Check   `json:"checks"`
	Events    []measure.Record `json:"-"`
	OK        bool             `json:"verified"`

	att       *scai.Attestation           // the opened attestation, if it opened
	registers map[measure.Register][]byte // authenticated registers: set only when every evidence check passed and the log replays
	bank      crypto.Hash                 // the hash of registers
	backends  []string                    // backends whose evidence passed every check
	hardware  bool                        // one of them claims hardware roots (attest.Claims.Hardware)
	firmware  []byte                      // the firmware event log that replayed to the quoted PCRs (attest.Claims.FirmwareLog)
	log       []byte                      // the event log prefix the attestation names, once found
}

// Failed returns the names of the failed checks.
func (r *Result) Failed() []string {
	var out []string
	for _, c := range r.Checks {
		if c.Failed() {
			out = append(out, c.Name)
		}
	}
	return out
}

func (r *Result) add(name string, err error, okDetail string) bool {
	c := attest.Check{Name: name, OK: err == nil, Detail: okDetail}
	if err != nil {
		c.Detail = err.Error()
	}
	r.Checks = append(r.Checks, c)
	return err == nil
}

func (r *Result) skip(name, detail string) {
	r.Checks = append(r.Checks, attest.Skipped(name, detail))
}

func (r *Result) notChecked(prereq string, names ...string) {
	for _, n := range names {
		r.Checks = append(r.Checks, attest.Check{Name: n, Detail: "not checked: " + prereq + " failed"})
	}
}

// Material is what travels beside the signed attestations, unsigned and
// authenticated by reference: the agent's event logs (each attestation names
// the prefix it covers by size and digest) and the inclusion proofs of
// batched admissions (docs/formats.md).
type Material struct {
	Logs   [][]byte
	Proofs []*scai.InclusionProof
}

// MaterialOf is the material a decoded bundle carries.
func MaterialOf(b *scai.Bundle) *Material { return &Material{Logs: b.Logs, Proofs: b.Proofs} }

// Envelope verifies one DSSE envelope, with the event logs and proofs of m
// (nil: none).
func Envelope(env *dsse.Envelope, m *Material, opts Options) *Result {
	op, err := scai.Open(env)
	return opened(env, op, err, m, opts)
}

// opened is Envelope for an envelope scai.Open has opened (or failed to).
func opened(env *dsse.Envelope, op *scai.Opened, err error, m *Material, opts Options) *Result {
	if m == nil {
		m = &Material{}
	}
	r := &Result{}
	defer func() { r.OK = len(r.Failed()) == 0 && len(r.Checks) > 0 }()

	detail := "in-toto Statement v1 with a SCAI v0.3 predicate; subject is the env key"
	if err == nil && op.Attestation.Purpose == attest.PurposeComplete {
		detail = fmt.Sprintf("in-toto Statement v1 with a SCAI v0.3 predicate; subjects are the build's %d output(s)", len(op.Attestation.Build.Outputs))
	}
	if !r.add(CheckStatement, err, detail) {
		r.notChecked(CheckStatement, CheckSignature, CheckNonce, CheckBinding, CheckReplay)
		return r
	}
	a := op.Attestation
	r.Purpose = a.Purpose
	r.att = a
	if a.Build != nil {
		r.BuildID = a.Build.ID
	}
	kd, err := attest.KeyDigest(a.EnvKey)
	if err != nil {
		r.add(CheckStatement, err, "")
		return r
	}
	r.KeyDigest = hex.EncodeToString(kd[:])

	if !r.add(CheckSignature, scai.VerifySignature(env, a.EnvKey), "DSSE envelope signed by the env key "+r.KeyDigest[:16]+"…") {
		r.notChecked(CheckSignature, CheckNonce, CheckBinding, CheckReplay)
		return r
	}
	if a.Batch != nil {
		r.checkBatch(a, m.Proofs, opts.expectedNonce(a.Purpose))
	} else {
		r.checkNonce(a, opts.expectedNonce(a.Purpose))
	}
	if opts.BuildID != "" && a.Build != nil && a.Build.ID != opts.BuildID {
		r.add(CheckBuildID, fmt.Errorf("attestation is bound to build %q, expected %q", a.Build.ID, opts.BuildID), "")
	}

	want, err := scai.ExpectedBinding(a)
	if err == nil && a.Binding != want {
		err = fmt.Errorf("statement declares binding %x, but its purpose, env key and data give %x", a.Binding[:], want[:])
	}
	r.add(CheckBinding, err, fmt.Sprintf("binding = H(%q, env key, %s) = %x…", a.Purpose, bindingWhat(a.Purpose), want[:8]))

	if len(a.Evidence) == 0 {
		r.add(CheckBackend, fmt.Errorf("the attestation carries no evidence"), "")
		return r
	}
	vopts := attest.VerifyOptions{
		Binding:                 want,
		EnvKey:                  a.EnvKey,
		TrustedAKs:              opts.TrustedAKs,
		AKRoots:                 opts.AKRoots,
		InsecureTrustEmbeddedAK: opts.InsecureTrustEmbeddedAK,
	}
	registers := map[measure.Register][]byte{}
	var bank crypto.Hash
	allClaims := true
	for _, ev := range a.Evidence {
		v := findVerifier(opts.Verifiers, ev.Backend)
		if v == nil {
			r.add(CheckBackend, fmt.Errorf("no verifier for evidence backend %q", ev.Backend), "")
			allClaims = false
			continue
		}
		claims, checks := v.Verify(ev, vopts)
		r.Checks = append(r.Checks, checks...)
		if claims == nil {
			allClaims = false
			continue
		}
		r.backends = append(r.backends, ev.Backend)
		r.hardware = r.hardware || claims.Hardware
		if claims.FirmwareLog != nil {
			r.firmware = claims.FirmwareLog
		}
		// The first evidence is the backend's, whose register the agent's
		// log extends; a TEE source beside it may claim another bank.
		if bank == 0 {
			bank = claims.Bank
		}
		for reg, val := range claims.Registers {
			registers[reg] = val
		}
	}
	r.checkEventLog(a, m.Logs, bank, registers, allClaims)
	if allClaims && passed(r.Checks, CheckReplay) {
		r.registers, r.bank = registers, bank
	}
	return r
}

// passed reports whether the check called name ran and passed.
func passed(checks []attest.Check, name string) bool {
	for _, c := range checks {
		if c.Name == name {
			return c.OK
		}
	}
	return false
}

func bindingWhat(p attest.Purpose) string {
	switch p {
	case attest.PurposeLaunch:
		return "no data"
	case attest.PurposeAttest:
		return "nonce"
	case attest.PurposeDispatch:
		return "build ID, request digest, nonce"
	default:
		return "build ID, inputs/outputs digest, nonce"
	}
}

func (o Options) expectedNonce(p attest.Purpose) []byte {
	if n, ok := o.Nonces[p]; ok {
		return n
	}
	if p == attest.PurposeAttest {
		return o.Nonce
	}
	return nil
}

// checkBatch ties a batched admission to the expected nonce: one of the
// proofs for this batch (same env key, root and size, and a path that leads
// from its nonce to that root) must hold the nonce. Proofs from a bundle
// were checked when it was read; a caller's own Material may hold anything,
// so each is checked again here.
func (r *Result) checkBatch(a *scai.Attestation, proofs []*scai.InclusionProof, want []byte) {
	kd, _ := attest.KeyDigest(a.EnvKey)
	var mine []*scai.InclusionProof
	for _, p := range proofs {
		if p != nil && p.KeyDigest == kd && p.Root == a.Batch.Root && p.Size == a.Batch.Size && p.Check() == nil {
			mine = append(mine, p)
		}
	}
	switch {
	case len(mine) == 0:
		r.add(CheckInclusion, fmt.Errorf("a batched admission (%d callers, root %x…) without an inclusion proof: no caller's nonce can be tied to it", a.Batch.Size, a.Batch.Root[:8]), "")
		return
	case want == nil:
		r.add(CheckInclusion, nil, fmt.Sprintf("leaf %d of a batch of %d callers (root %x…)", mine[0].Index, a.Batch.Size, a.Batch.Root[:8]))
		r.skip(CheckNonce, fmt.Sprintf("no nonce given: freshness not established (the proof names nonce %x)", mine[0].Nonce))
		return
	}
	for _, p := range mine {
		if bytes.Equal(p.Nonce, want) {
			r.add(CheckInclusion, nil, fmt.Sprintf("leaf %d of a batch of %d callers (root %x…)", p.Index, a.Batch.Size, a.Batch.Root[:8]))
			r.add(CheckNonce, nil, fmt.Sprintf("bound to the expected nonce %x through the batch root", want))
			return
		}
	}
	r.add(CheckInclusion, nil, fmt.Sprintf("%d inclusion proof(s) for this batch of %d callers", len(mine), a.Batch.Size))
	r.add(CheckNonce, fmt.Errorf("no inclusion proof ties the expected nonce %x to this batch (the proofs name %x)", want, mine[0].Nonce), "")
}

func (r *Result) checkNonce(a *scai.Attestation, want []byte) {
	switch {
	case want == nil && a.Purpose == attest.PurposeAttest:
		r.skip(CheckNonce, "no --nonce given: freshness not established")
	case want == nil && a.Nonce != nil:
		r.skip(CheckNonce, fmt.Sprintf("%s attestation carries nonce %x; none expected (--nonce %s=HEX)", a.Purpose, a.Nonce, a.Purpose))
	case want == nil:
		r.skip(CheckNonce, fmt.Sprintf("%s attestation: no nonce expected", a.Purpose))
	case a.Nonce == nil:
		r.add(CheckNonce, fmt.Errorf("expected nonce %x, but this %s attestation carries none", want, a.Purpose), "")
	case !bytes.Equal(a.Nonce, want):
		r.add(CheckNonce, fmt.Errorf("attestation is bound to nonce %x, expected %x", a.Nonce, want), "")
	default:
		r.add(CheckNonce, nil, fmt.Sprintf("bound to the expected nonce %x", want))
	}
}

// checkEventLog replays the agent's CEL against the quoted registers and
// checks the launch phase is closed by a separator.
func (r *Result) checkEventLog(a *scai.Attestation, logs [][]byte, bank crypto.Hash, registers map[measure.Register][]byte, haveClaims bool) {
	cel, ok := scai.FindLog(logs, a.Log)
	if !ok {
		r.add(CheckReplay, fmt.Errorf("%w: no event log in the bundle has a first %d bytes with sha256 %x (the log this attestation names)", attest.ErrMissingPart, a.Log.Size, a.Log.SHA256), "")
		return
	}
	r.log = cel
	recs, err := measure.ParseCEL(cel)
	if err != nil {
		r.add(CheckReplay, fmt.Errorf("parse event log: %w", err), "")
		return
	}
	r.Events = recs
	if !haveClaims {
		r.notChecked("evidence", CheckReplay)
	} else {
		r.add(CheckReplay, replayAll(recs, bank, registers), fmt.Sprintf("%d events replay to the quoted %s", len(recs), registerNames(recs)))
	}
	r.add(CheckLaunch, launchClosed(recs), "launch measurements closed by a separator event")
	if a.Build != nil {
		r.add(CheckBuildEvents, checkBuildEvents(a, recs), "the event log records this build ID and its "+map[attest.Purpose]string{attest.PurposeDispatch: "request", attest.PurposeComplete: "request, inputs and outputs"}[a.Purpose])
	}
}

// launchClosed checks the launch phase ran once, to its separator. A
// restart event before the separator means the daemon died during launch
// and measured it again: what the first, partial launch saw is unknown, so
// such an environment fails (replace it).
func launchClosed(recs []measure.Record) error {
	for _, rec := range recs {
		switch rec.Type {
		case measure.EventSeparator:
			return nil
		case measure.EventRestart:
			return fmt.Errorf("the daemon restarted during launch (restart event, seq %d, before the separator) and measured the launch again: replace this environment", rec.Seq)
		}
	}
	return fmt.Errorf("the event log has no launch separator: launch measurements were not completed")
}

// checkBuildEvents: the register must carry the build this attestation
// claims: a dispatch's log has the build-id event with its request digest,
// a completion's also the complete event with its inputs/outputs digest.
func checkBuildEvents(a *scai.Attestation, recs []measure.Record) error {
	b, err := measure.BuildFromLog(recs)
	if err != nil {
		return err
	}
	bid, done := b.Dispatch, b.Complete
	if bid == nil {
		return fmt.Errorf("the event log has no build-id event")
	}
	if bid.BuildID != a.Build.ID {
		return fmt.Errorf("the event log binds build %q, the attestation claims %q", bid.BuildID, a.Build.ID)
	}
	if a.Purpose == attest.PurposeDispatch {
		d, err := scai.RequestDigest(a.Build.Request)
		if err != nil {
			return err
		}
		if bid.RequestSHA256 != hex.EncodeToString(d[:]) {
			return fmt.Errorf("the event log binds request %s, the attestation's request digests to %x", bid.RequestSHA256, d)
		}
		return nil
	}
	if done == nil {
		return fmt.Errorf("the event log has no complete event")
	}
	d, err := scai.IODigest(a.Build.Inputs, a.Build.Outputs)
	if err != nil {
		return err
	}
	if done.IOSHA256 != hex.EncodeToString(d[:]) {
		return fmt.Errorf("the event log completes build %q with io %s, the attestation claims %x", done.BuildID, done.IOSHA256, d)
	}
	return nil
}

func replayAll(recs []measure.Record, bank crypto.Hash, registers map[measure.Register][]byte) error {
	if len(recs) == 0 {
		return fmt.Errorf("the event log is empty")
	}
	seen := map[measure.Register]bool{}
	for _, rec := range recs {
		reg := measure.Register{Kind: rec.Kind, Index: rec.Index}
		if seen[reg] {
			continue
		}
		seen[reg] = true
		val, ok := registers[reg]
		if !ok {
			return fmt.Errorf("the event log extends %s, which the evidence does not quote", reg)
		}
		if err := measure.CheckReplay(recs, bank, rec.Kind, rec.Index, val); err != nil {
			return err
		}
	}
	return nil
}

func registerNames(recs []measure.Record) string {
	set := map[string]bool{}
	for _, r := range recs {
		set[fmt.Sprintf("%s%d", r.Kind, r.Index)] = true
	}
	var names []string
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return fmt.Sprint(names)
}

func findVerifier(vs []attest.Verifier, backend string) attest.Verifier {
	for _, v := range vs {
		if v.Backend() == backend {
			return v
		}
	}
	return nil
}

// CheckEnvelope names the parsing of the bundle itself.
const CheckEnvelope = "envelope"
