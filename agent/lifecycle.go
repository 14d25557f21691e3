package agent

import (
	"context"
	"crypto"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/scai"
)

// StateName is the lifecycle state file in the runtime dir.
const StateName = "state.json"

// Limits on executor input.
const (
	maxLabel         = 128      // Extend domain and operation
	maxExtendContent = 16 << 10 // Extend content
	maxStatement     = 256 << 10
	maxAdmissions    = 8 // admission attestations kept for the bundle
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
)

// lifecycle is the build state. The event log is its source of truth: the
// phase and build ID follow from the build-id and complete events, which the
// register holds, and are never stored. state.json keeps only the
// attestations made, so a repeated call returns the same result and a
// restart loses nothing.
type lifecycle struct {
	Phase   phase  `json:"-"`
	BuildID string `json:"-"`

	Dispatch   []byte   `json:"dispatch,omitempty"`
	Complete   []byte   `json:"complete,omitempty"`
	Signed     [][]byte `json:"signed,omitempty"`
	Admissions [][]byte `json:"admissions,omitempty"`
}

// fromLog derives phase and build ID from the event log.
func fromLog(recs []measure.Record) (lifecycle, error) {
	b, err := measure.BuildFromLog(recs)
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

// loadState takes the attestations kept in state.json, if the event log
// bears them out: a dispatch attestation needs the build-id event, a
// completion (and signed statements) the complete event. A log ahead of
// state.json (a crash between extend and save) is fine: the attestation is
// made again on the next call. state.json claiming more than the log is
// refused.
func (a *Agent) loadState() error {
	lc, err := fromLog(a.events.Records())
	if err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	path := filepath.Join(a.opts.RuntimeDir, StateName)
	raw, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		a.state = lc
		return nil
	case err != nil:
		return fmt.Errorf("read state: %w", err)
	}
	var st lifecycle
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	if (st.Dispatch != nil && lc.Phase == phaseLaunched) || ((st.Complete != nil || len(st.Signed) > 0) && lc.Phase != phaseCompleted) {
		return fmt.Errorf("state %s holds attestations of a build the event log (phase %s) does not record; reboot the environment", path, lc.Phase)
	}
	lc.Dispatch, lc.Complete, lc.Signed, lc.Admissions = st.Dispatch, st.Complete, st.Signed, st.Admissions
	a.state = lc
	return nil
}

// saveState writes state.json; a.mu must be held.
func (a *Agent) saveState() error {
	raw, err := json.Marshal(a.state)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(a.opts.RuntimeDir, StateName), raw, 0o640); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
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
	Envelope []byte
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
	if err := scai.CheckDescriptors("request", request, false); err != nil {
		return nil, err
	}
	reqDigest, err := scai.RequestDigest(request)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.launch == nil {
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
			return &BindBuildResult{Envelope: a.state.Dispatch, Repeated: true}, nil
		}
		// Bound earlier, but the quote failed or was lost in a crash.
	case phaseLaunched:
		if err := a.events.Record(ctx, a.backend, measure.BuildIDEvent(buildID, reqDigest)); err != nil {
			return nil, fmt.Errorf("record build ID: %w", err)
		}
		a.state.Phase, a.state.BuildID = phaseDispatched, buildID
		if err := a.saveState(); err != nil {
			return nil, err
		}
		a.log.Info("dispatched", "build_id", buildID, "request_sha256", hex.EncodeToString(reqDigest[:]))
	}
	env, err := a.attestLocked(ctx, attest.PurposeDispatch, nonce, &scai.Build{ID: buildID, Request: request})
	if err != nil {
		return nil, fmt.Errorf("dispatch attestation: %w", err)
	}
	a.state.Dispatch = env
	if err := a.saveState(); err != nil {
		return nil, err
	}
	return &BindBuildResult{Envelope: env}, nil
}

// sameRequest checks the logged build-id event carries reqDigest.
func (a *Agent) sameRequest(reqDigest [32]byte) error {
	b, err := measure.BuildFromLog(a.events.Records())
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
	if a.launch == nil {
		return nil, errNotLaunched
	}
	switch a.state.Phase {
	case phaseLaunched:
		return nil, fmt.Errorf("%w: no build is bound yet: call BindBuild first", errState)
	case phaseCompleted:
		return nil, fmt.Errorf("%w: build %q is complete: the environment is spent", errState, a.state.BuildID)
	}
	ev := measure.RuntimeEvent(domain, operation, content)
	if err := a.events.Record(ctx, a.backend, ev); err != nil {
		return nil, fmt.Errorf("record runtime event: %w", err)
	}
	recs := a.events.Records()
	last := recs[len(recs)-1]
	return &ExtendResult{Seq: last.Seq, Digests: last.Digests}, nil
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
func (a *Agent) Complete(ctx context.Context, buildID string, inputs, outputs []*ita.ResourceDescriptor, nonce []byte) ([]byte, error) {
	if err := attest.CheckBuildID(buildID); err != nil {
		return nil, err
	}
	if err := checkOptionalNonce(nonce); err != nil {
		return nil, err
	}
	if len(outputs) == 0 {
		return nil, fmt.Errorf("%w: at least one output is required", scai.ErrDescriptor)
	}
	if err := scai.CheckDescriptors("input", inputs, true); err != nil {
		return nil, err
	}
	if err := scai.CheckDescriptors("output", outputs, true); err != nil {
		return nil, err
	}
	ioDigest, err := scai.IODigest(inputs, outputs)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.launch == nil {
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
		if err := a.saveState(); err != nil {
			return nil, err
		}
		a.log.Info("completed", "build_id", buildID, "outputs", len(outputs), "io_sha256", hex.EncodeToString(ioDigest[:]))
	}
	env, err := a.attestLocked(ctx, attest.PurposeComplete, nonce, &scai.Build{ID: buildID, Inputs: inputs, Outputs: outputs})
	if err != nil {
		return nil, fmt.Errorf("completion attestation: %w", err)
	}
	a.state.Complete = env
	if err := a.saveState(); err != nil {
		return nil, err
	}
	return env, nil
}

// loggedIO reports whether the complete event carries ioDigest.
func (a *Agent) loggedIO(ioDigest [32]byte) bool {
	b, err := measure.BuildFromLog(a.events.Records())
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
	outputs, err := completedOutputs(a.state.Complete)
	if err != nil {
		return nil, err
	}
	for i, s := range st.GetSubject() {
		if !scai.SubjectAmong(s, outputs) {
			return nil, fmt.Errorf("%w: subject %d (%q) is not among the outputs declared at Complete", errInput, i, s.GetName())
		}
	}
	env, err := scai.SignPayload(ctx, a.backend.Signer(), statement)
	if err != nil {
		return nil, fmt.Errorf("sign statement: %w", err)
	}
	a.state.Signed = append(a.state.Signed, env)
	if err := a.saveState(); err != nil {
		return nil, err
	}
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

// Bundle returns every attestation of this environment, in order: launch,
// admissions, dispatch, completion, signed statements.
func (a *Agent) Bundle() (buildID string, envs [][]byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	envs = append(envs, a.launch)
	envs = append(envs, a.state.Admissions...)
	for _, e := range [][]byte{a.state.Dispatch, a.state.Complete} {
		if e != nil {
			envs = append(envs, e)
		}
	}
	envs = append(envs, a.state.Signed...)
	return a.state.BuildID, envs
}

// Phase reports the lifecycle phase and build ID.
func (a *Agent) Phase() (string, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return string(a.state.Phase), a.state.BuildID
}
