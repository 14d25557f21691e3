package agent

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/scai"
)

// Limits on what an executor can make the daemon keep (docs/operating.md,
// "Limits"). Each is checked before anything is recorded, and the ones on
// the event log leave room for the events that must still fit.
const (
	maxLabel         = 128      // Extend domain and operation
	maxExtendContent = 16 << 10 // Extend content
	maxStatement     = 256 << 10
	// maxAdmissions admission attestations (Attest before dispatch) are
	// kept for the bundle, the newest ones. Attest after dispatch answers
	// but keeps nothing: the dispatch and completion attestations cover
	// that phase, and they would carry the growing event log each time.
	maxAdmissions = 8
	// maxSigned statements may be signed per build (SignStatement); the
	// same statement again returns the same envelope and counts once.
	maxSigned = 16
	// maxEventLog bounds the event log (40 MiB): room for 100,000 runtime
	// events of typical size (a digest as content: 189 bytes with one bank,
	// 336 with all four TPM banks), and, with the 16 signed statements,
	// below MaxResponseSize for GetBundle, which carries the log once
	// (format 2).
	maxEventLog = 40 << 20
	// logReserve bytes of the event log are kept for what must still fit
	// after the last runtime event: the complete event (under 200 bytes)
	// and a restart event for each daemon restart (about 250 bytes each).
	logReserve = 64 << 10
	// maxRuntimeLog is how far runtime events (Extend) may fill the log.
	maxRuntimeLog = maxEventLog - logReserve
	// maxStoredFile bounds one file of the state directory: the largest
	// attestation the daemon makes (evidence with a firmware event log; the
	// agent's log is not in it) or signed statement.
	maxStoredFile = 16 << 20
)

// phase is where the environment is in its one-build life.
type phase string

const (
	phaseLaunched   phase = "launched"   // measured, waiting for a build
	phaseDispatched phase = "dispatched" // bound to one build ID
	phaseCompleted  phase = "completed"  // spent
)

// Errors executors see (mapped to gRPC codes in statusCode).
var (
	// errState: the call is not allowed in the current phase.
	errState = errors.New("refused in this lifecycle phase")
	// errInput: a malformed executor request.
	errInput = errors.New("invalid request")
	// errLimit: the request is fine but would take a documented bound
	// past its limit (codes.ResourceExhausted).
	errLimit = errors.New("limit reached")
)

// lifecycle is the build state. The event log is its source of truth: the
// phase and build ID follow from the build-id and complete events, which the
// register holds, and are never stored. The state directory keeps only the
// attestations made (state.go), so a repeated call returns the same result
// and a restart loses nothing.
type lifecycle struct {
	Phase   phase
	BuildID string
	saved
	// signedDigests are the SHA-256 of each signed statement's payload,
	// parallel to Signed, so that the same statement is signed once.
	signedDigests [][32]byte
	// outputs are the outputs of the completion attestation (Complete), the
	// subjects SignStatement accepts: kept by Complete, read from the stored
	// attestation once after a restart, never per call.
	outputs []*ita.ResourceDescriptor
}

// fromLog derives phase and build ID from the event log's build events.
func fromLog(b measure.BuildLog, err error) (lifecycle, error) {
	switch {
	case err != nil:
		return lifecycle{}, err
	case b.Complete != nil:
		return lifecycle{Phase: phaseCompleted, BuildID: b.Dispatch.BuildID}, nil
	case b.Dispatch != nil:
		return lifecycle{Phase: phaseDispatched, BuildID: b.Dispatch.BuildID}, nil
	default:
		return lifecycle{Phase: phaseLaunched}, nil
	}
}

// loadState takes the attestations kept in the state directory, if the
// event log bears them out: a dispatch attestation needs the build-id
// event, a completion (and signed statements) the complete event. A log
// ahead of the state (a crash between extend and save) is fine: the
// attestation is made again on the next call. A state claiming more than
// the log is refused.
func (a *Agent) loadState() error {
	lc, err := fromLog(a.events.Build())
	if err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	st, err := readState(a.opts.RuntimeDir)
	if err != nil {
		return err
	}
	if (st.Dispatch != nil && lc.Phase == phaseLaunched) || ((st.Complete != nil || len(st.Signed) > 0) && lc.Phase != phaseCompleted) {
		return fmt.Errorf("state %s holds attestations of a build the event log (phase %s) does not record; reboot the environment", stateDir(a.opts.RuntimeDir), lc.Phase)
	}
	for _, env := range st.Signed {
		d, err := signedPayloadDigest(env)
		if err != nil {
			return fmt.Errorf("state %s: %w", stateDir(a.opts.RuntimeDir), err)
		}
		lc.signedDigests = append(lc.signedDigests, d)
	}
	if n := len(st.Admissions); n > maxAdmissions {
		st.Admissions = st.Admissions[n-maxAdmissions:]
	}
	lc.saved = st
	a.state = lc
	return nil
}

// signedPayloadDigest is the SHA-256 of the payload of a signed envelope.
func signedPayloadDigest(env []byte) ([32]byte, error) {
	e, err := scai.ParseEnvelope(env)
	if err != nil {
		return [32]byte{}, fmt.Errorf("signed statement: %w", err)
	}
	p, err := e.DecodeB64Payload()
	if err != nil {
		return [32]byte{}, fmt.Errorf("signed statement: %w", err)
	}
	return sha256.Sum256(p), nil
}

func checkOptionalNonce(nonce []byte) error {
	if len(nonce) == 0 {
		return nil
	}
	return attest.CheckNonce(nonce)
}

// BindBuildResult is the dispatch attestation and whether it was made
// earlier for the same build ID and request.
type BindBuildResult struct {
	Attestation
	Repeated bool
}

// BindBuild binds the environment to buildID (dispatch): it records the
// build ID and request digest in the register, re-quotes and returns the
// dispatch attestation. The same build ID and request again returns the
// same attestation; anything else after dispatch is refused.
func (a *Agent) BindBuild(ctx context.Context, buildID string, request []*ita.ResourceDescriptor, nonce []byte) (*BindBuildResult, error) {
	if err := attest.CheckBuildID(buildID); err != nil {
		return nil, err
	}
	if err := checkOptionalNonce(nonce); err != nil {
		return nil, err
	}
	reqDigest, err := scai.CheckRequest(request)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.launch.Load() == nil {
		return nil, errNotLaunched
	}
	switch a.state.Phase {
	case phaseCompleted:
		return nil, fmt.Errorf("%w: build %q is complete: the environment is spent", errState, a.state.BuildID)
	case phaseDispatched:
		if buildID != a.state.BuildID {
			return nil, fmt.Errorf("%w: the environment is bound to build %q; one build per environment", errState, a.state.BuildID)
		}
		if err := a.sameRequest(reqDigest); err != nil {
			return nil, err
		}
		if a.state.Dispatch != nil {
			return &BindBuildResult{Attestation: Attestation{Envelope: a.state.Dispatch, EventLog: a.events.View()}, Repeated: true}, nil
		}
		// Bound earlier, but the quote failed or was lost in a crash.
	case phaseLaunched:
		if err := a.events.Record(ctx, a.backend, measure.BuildIDEvent(buildID, reqDigest)); err != nil {
			return nil, fmt.Errorf("record build ID: %w", err)
		}
		a.state.Phase, a.state.BuildID = phaseDispatched, buildID
		a.log.Info("dispatched", "build_id", buildID, "request_sha256", hex.EncodeToString(reqDigest[:]))
	}
	att, err := a.attestLocked(ctx, scai.Attestation{Purpose: attest.PurposeDispatch, Nonce: nonce, Build: &scai.Build{ID: buildID, Request: request}})
	if err != nil {
		return nil, fmt.Errorf("%w: the environment is bound to build %q, but its dispatch attestation failed; call BindBuild again with the same build ID and request", err, buildID)
	}
	if err := putState(a.opts.RuntimeDir, stateDispatch, att.Envelope); err != nil {
		return nil, fmt.Errorf("%w; the environment is bound to build %q: call BindBuild again with the same build ID and request once there is space", err, buildID)
	}
	a.state.Dispatch = att.Envelope
	return &BindBuildResult{Attestation: *att}, nil
}

// sameRequest checks the logged build-id event carries reqDigest.
func (a *Agent) sameRequest(reqDigest [32]byte) error {
	b, err := a.events.Build()
	if err != nil || b.Dispatch == nil {
		return fmt.Errorf("build-id event: missing or unreadable: %v", err)
	}
	if b.Dispatch.RequestSHA256 != hex.EncodeToString(reqDigest[:]) {
		return fmt.Errorf("%w: build %q was bound with a different request", errState, b.Dispatch.BuildID)
	}
	return nil
}

// ExtendResult identifies the recorded event.
type ExtendResult struct {
	Seq     uint64
	Digests map[crypto.Hash][]byte
}

// Extend records one runtime measurement of the executor; only between
// dispatch and completion.
func (a *Agent) Extend(ctx context.Context, domain, operation string, content []byte) (*ExtendResult, error) {
	if err := checkLabel("domain", domain); err != nil {
		return nil, err
	}
	if err := checkLabel("operation", operation); err != nil {
		return nil, err
	}
	if len(content) > maxExtendContent {
		return nil, fmt.Errorf("%w: content is %d bytes, at most %d", errInput, len(content), maxExtendContent)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.launch.Load() == nil {
		return nil, errNotLaunched
	}
	switch a.state.Phase {
	case phaseLaunched:
		return nil, fmt.Errorf("%w: no build is bound yet: call BindBuild first", errState)
	case phaseCompleted:
		return nil, fmt.Errorf("%w: build %q is complete: the environment is spent", errState, a.state.BuildID)
	}
	rec, err := a.events.RecordWithin(ctx, a.backend, measure.RuntimeEvent(domain, operation, content), maxRuntimeLog)
	if errors.Is(err, measure.ErrLogFull) {
		return nil, fmt.Errorf("%w: %w; runtime events may fill %d bytes of the event log (the rest is kept for Complete): record fewer or smaller events, e.g. a digest instead of the content",
			errLimit, err, maxRuntimeLog)
	}
	if err != nil {
		return nil, fmt.Errorf("record runtime event: %w", err)
	}
	return &ExtendResult{Seq: rec.Seq, Digests: rec.Digests}, nil
}

func checkLabel(what, s string) error {
	if len(s) == 0 || len(s) > maxLabel {
		return fmt.Errorf("%w: %s must be 1 to %d characters (got %d)", errInput, what, maxLabel, len(s))
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return fmt.Errorf("%w: %s must be printable ASCII (byte %d is 0x%02x)", errInput, what, i, s[i])
		}
	}
	return nil
}

// Complete records the build's inputs and outputs, re-quotes and returns
// the completion attestation, whose subjects are the outputs. Afterwards the
// environment is spent.
func (a *Agent) Complete(ctx context.Context, buildID string, inputs, outputs []*ita.ResourceDescriptor, nonce []byte) (*Attestation, error) {
	if err := attest.CheckBuildID(buildID); err != nil {
		return nil, err
	}
	if err := checkOptionalNonce(nonce); err != nil {
		return nil, err
	}
	ioDigest, err := scai.CheckIO(inputs, outputs)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.launch.Load() == nil {
		return nil, errNotLaunched
	}
	if a.state.Phase == phaseLaunched {
		return nil, fmt.Errorf("%w: no build is bound yet: call BindBuild first", errState)
	}
	if buildID != a.state.BuildID {
		return nil, fmt.Errorf("%w: the environment is bound to build %q, not %q", errState, a.state.BuildID, buildID)
	}
	if a.state.Phase == phaseCompleted {
		// Only a completion whose quote failed may be retried, with the
		// same inputs and outputs.
		if a.state.Complete != nil || !a.loggedIO(ioDigest) {
			return nil, fmt.Errorf("%w: build %q is complete: the environment is spent", errState, buildID)
		}
	} else {
		if err := a.events.Record(ctx, a.backend, measure.CompleteEvent(buildID, ioDigest)); err != nil {
			return nil, fmt.Errorf("record completion: %w", err)
		}
		a.state.Phase = phaseCompleted
		a.log.Info("completed", "build_id", buildID, "outputs", len(outputs), "io_sha256", hex.EncodeToString(ioDigest[:]))
	}
	att, err := a.attestLocked(ctx, scai.Attestation{Purpose: attest.PurposeComplete, Nonce: nonce, Build: &scai.Build{ID: buildID, Inputs: inputs, Outputs: outputs}})
	if err != nil {
		return nil, fmt.Errorf("%w: build %q is recorded as complete, but its completion attestation failed; call Complete again with the same inputs and outputs", err, buildID)
	}
	if err := putState(a.opts.RuntimeDir, stateComplete, att.Envelope); err != nil {
		return nil, fmt.Errorf("%w; build %q is recorded as complete: call Complete again with the same inputs and outputs once there is space", err, buildID)
	}
	a.state.Complete, a.state.outputs = att.Envelope, outputs
	return att, nil
}

// loggedIO reports whether the complete event carries ioDigest.
func (a *Agent) loggedIO(ioDigest [32]byte) bool {
	b, err := a.events.Build()
	return err == nil && b.Complete != nil && b.Complete.IOSHA256 == hex.EncodeToString(ioDigest[:])
}

// SignStatement signs the tenant's in-toto statement (e.g. SLSA
// provenance) with the env key, after completion only, when every subject
// is among the outputs declared at completion. The exact bytes given are
// signed. attestd's own predicate type is refused so that an executor cannot
// mint something that reads like an attestd attestation.
func (a *Agent) SignStatement(ctx context.Context, buildID string, statement []byte) ([]byte, error) {
	if err := attest.CheckBuildID(buildID); err != nil {
		return nil, err
	}
	if len(statement) > maxStatement {
		return nil, fmt.Errorf("%w: statement is %d bytes, at most %d", errInput, len(statement), maxStatement)
	}
	st := &ita.Statement{}
	if err := protojson.Unmarshal(statement, st); err != nil {
		return nil, fmt.Errorf("%w: not an in-toto statement: %v", errInput, err)
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("%w: invalid in-toto statement: %v", errInput, err)
	}
	if st.GetType() != ita.StatementTypeUri {
		return nil, fmt.Errorf("%w: statement _type %q, want %q", errInput, st.GetType(), ita.StatementTypeUri)
	}
	if st.GetPredicateType() == scai.PredicateType {
		return nil, fmt.Errorf("%w: attestd does not sign SCAI statements for executors", errInput)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.state.Phase != phaseCompleted || a.state.Complete == nil {
		return nil, fmt.Errorf("%w: statements are signed only after Complete", errState)
	}
	if buildID != a.state.BuildID {
		return nil, fmt.Errorf("%w: the environment was bound to build %q, not %q", errState, a.state.BuildID, buildID)
	}
	if a.state.outputs == nil {
		outputs, err := completedOutputs(a.state.Complete)
		if err != nil {
			return nil, err
		}
		a.state.outputs = outputs
	}
	for i, s := range st.GetSubject() {
		if !scai.SubjectAmong(s, a.state.outputs) {
			return nil, fmt.Errorf("%w: subject %d (%q) is not among the outputs declared at Complete", errInput, i, s.GetName())
		}
	}
	digest := sha256.Sum256(statement)
	if i := slices.Index(a.state.signedDigests, digest); i >= 0 {
		return a.state.Signed[i], nil
	}
	if len(a.state.Signed) >= maxSigned {
		return nil, fmt.Errorf("%w: %d statements are signed already, at most %d per build: put the subjects into fewer statements", errLimit, len(a.state.Signed), maxSigned)
	}
	env, err := scai.SignPayload(ctx, a.backend.Signer(), statement)
	if err != nil {
		return nil, fmt.Errorf("sign statement: %w", err)
	}
	if err := putState(a.opts.RuntimeDir, seqName(stateSigned, a.state.nextSigned), env); err != nil {
		return nil, err
	}
	a.state.nextSigned++
	a.state.Signed = append(a.state.Signed, env)
	a.state.signedDigests = append(a.state.signedDigests, digest)
	a.log.Info("statement signed", "build_id", buildID, "predicate_type", st.GetPredicateType(), "subjects", len(st.GetSubject()))
	return env, nil
}

func completedOutputs(env []byte) ([]*ita.ResourceDescriptor, error) {
	e, err := scai.ParseEnvelope(env)
	if err != nil {
		return nil, fmt.Errorf("stored completion: %w", err)
	}
	op, err := scai.Open(e)
	if err != nil {
		return nil, fmt.Errorf("stored completion: %w", err)
	}
	return op.Attestation.Build.Outputs, nil
}

// Bundle is every attestation of this environment and what verifying them
// needs.
type Bundle struct {
	BuildID string
	// Envelopes in order: launch, admissions, dispatch, completion, signed
	// statements.
	Envelopes [][]byte
	// Proofs of the batched admissions among Envelopes (JSON).
	Proofs [][]byte
	// EventLog is the event log as it is now; every attestation names a
	// prefix of it.
	EventLog []byte
}

// Bundle returns every attestation of this environment.
func (a *Agent) Bundle() *Bundle {
	a.mu.Lock()
	defer a.mu.Unlock()
	for a.pendingKeeps > 0 {
		a.kept.Wait()
	}
	b := &Bundle{BuildID: a.state.BuildID, EventLog: a.events.View()}
	if l := a.launch.Load(); l != nil {
		b.Envelopes = append(b.Envelopes, l.Envelope)
	}
	for _, k := range a.state.Admissions {
		b.Envelopes = append(b.Envelopes, k.Envelope)
		if k.Proof != nil {
			b.Proofs = append(b.Proofs, k.Proof)
		}
	}
	for _, e := range [][]byte{a.state.Dispatch, a.state.Complete} {
		if e != nil {
			b.Envelopes = append(b.Envelopes, e)
		}
	}
	b.Envelopes = append(b.Envelopes, a.state.Signed...)
	return b
}

// Encode writes the bundle as in-toto JSON Lines: the envelopes, then the
// inclusion proofs and the event log as unsigned carrier lines
// (docs/formats.md).
func (b *Bundle) Encode() []byte {
	lines := slices.Clone(b.Envelopes)
	for _, p := range b.Proofs {
		lines = append(lines, scai.Carrier(scai.PayloadTypeInclusionProof, p))
	}
	return scai.EncodeBundle(append(lines, scai.Carrier(scai.PayloadTypeCEL, b.EventLog))...)
}

// Phase reports the lifecycle phase and build ID.
func (a *Agent) Phase() (string, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return string(a.state.Phase), a.state.BuildID
}
