package fleet

import (
	"context"
	"errors"
	"time"
)

// Store is the fleet's ledger: the one place where "each nonce once", "each
// environment admitted once" and "one build per environment, one environment
// per build" are decided. Every replica of the service shares one Store;
// each method is one transaction, so a replica killed mid-call leaves either
// all of a change or none of it, and two replicas racing for the same row
// get exactly one success (the database's constraints decide, not the
// service). Implementations: fleet/postgres (several replicas) and
// fleet/sqlite (one replica, the default); fleet/storetest is the
// conformance suite both pass.
//
// Errors are the sentinels below (wrapped, test with errors.Is); anything
// else means the database could not answer and wraps ErrUnavailable.
type Store interface {
	// PutChallenge records a fresh challenge. A nonce already stored is
	// ErrNonceExists.
	PutChallenge(ctx context.Context, c Challenge) error
	// ConsumeChallenge uses a challenge up: it must exist (ErrNonceUnknown),
	// be for this step (ErrNonceForeign), not be used (ErrNonceUsed) and not
	// have expired at now (ErrNonceExpired). It returns the challenge as
	// stored.
	ConsumeChallenge(ctx context.Context, step Step, nonce []byte, now time.Time) (*Challenge, error)

	// Admit consumes the admission nonce (as ConsumeChallenge with
	// StepAdmit) and records the environment, in one transaction. An
	// environment whose key digest is recorded is ErrAdmitted; one whose
	// boot (BootID, when not empty) is recorded for another key is
	// ErrBootReused. On any error nothing changes, the nonce included.
	Admit(ctx context.Context, nonce []byte, now time.Time, env Environment) error
	// Environment returns an environment's record (ErrNotFound).
	Environment(ctx context.Context, keyDigest string) (*Environment, error)

	// Reserve binds b.BuildID to the admitted environment b.EnvKey and
	// stores the dispatch challenge c (c.Step StepDispatch, c.EnvKey and
	// c.BuildID set) in one transaction. An environment not admitted is
	// ErrNotFound; one holding a build already is ErrEnvironmentTaken; a
	// build ID bound already is ErrBuildTaken, to the same environment
	// too: a build has one dispatch challenge, which Build returns.
	Reserve(ctx context.Context, b Build, c Challenge) error
	// Dispatched consumes the build's dispatch nonce and moves the build
	// from BuildReserved to BuildDispatched with its signed result, in one
	// transaction (ErrNotFound, ErrState, and the nonce errors).
	Dispatched(ctx context.Context, buildID string, nonce []byte, now time.Time, result []byte) error
	// Completed moves the build from BuildDispatched to BuildCompleted with
	// its signed result; a non-empty nonce is consumed as a StepComplete
	// challenge issued for this build, in the same transaction.
	Completed(ctx context.Context, buildID string, nonce []byte, now time.Time, result []byte) error
	// Build returns a build's record (ErrNotFound), with the nonce and
	// expiry of the dispatch challenge Reserve stored with it (one query).
	Build(ctx context.Context, buildID string) (*Build, error)

	// PutAK records an attestation key proven to live in a certified TPM.
	// Registering the same key again is not an error.
	PutAK(ctx context.Context, ak AK) error
	// AK returns a registered AK by the hex SHA-256 of its PKIX DER
	// (ErrNotFound).
	AK(ctx context.Context, digest string) (*AK, error)

	// Prune deletes challenges that expired before the given time and
	// returns how many went. Environments and builds are kept (retention
	// is the operator's: docs/fleet.md).
	Prune(ctx context.Context, before time.Time) (int, error)
	// Ping reports whether the database answers (health).
	Ping(ctx context.Context) error
	Close() error
}

// Step is what a challenge nonce is for.
type Step string

const (
	StepAdmit    Step = "admit"
	StepDispatch Step = "dispatch"
	StepComplete Step = "complete"
	StepRegister Step = "register"
)

// Challenge is a nonce the service handed out, usable once before Expires.
type Challenge struct {
	Nonce   []byte // 32 random bytes
	Step    Step
	EnvKey  string // the environment it was issued for (hex SHA-256 of its key); empty for StepAdmit
	BuildID string // StepDispatch, StepComplete
	// Data is step-specific and opaque to the store (StepRegister: what the
	// answer must match).
	Data    []byte
	Created time.Time
	Expires time.Time
	Used    bool
}

// Environment is an admitted build environment.
type Environment struct {
	KeyDigest string // hex SHA-256 of the environment key's PKIX DER: the primary key
	// BootID names the boot the environment was measured in (e.g. the TPM
	// AK digest and reset count); empty when the evidence has none. Two
	// environment keys in one boot mean the environment was reset without
	// a reboot.
	BootID     string
	AKDigest   string   // hex SHA-256 of the TPM AK's PKIX DER, if any
	Backends   []string // evidence backends that passed, e.g. "tpm", "snp"
	Image      string   // image identity the policy matched (e.g. "sha256:…"), if any
	Level      int      // SLSA BuildEnv level the admission supports
	AdmittedAt time.Time
	Admission  []byte // the signed admission result (DSSE envelope of an SVR)
}

// BuildState is where a build is in its lifecycle.
type BuildState string

const (
	BuildReserved   BuildState = "reserved"   // bound to an environment; its dispatch attestation not yet verified
	BuildDispatched BuildState = "dispatched" // dispatch attestation verified
	BuildCompleted  BuildState = "completed"  // completion verified, VSA issued
)

// Build is one build ID bound to one environment.
type Build struct {
	BuildID      string
	EnvKey       string
	State        BuildState
	ReservedAt   time.Time
	DispatchedAt time.Time // zero until dispatched
	CompletedAt  time.Time // zero until completed
	Dispatch     []byte    // the signed dispatch result (SVR)
	Completion   []byte    // the signed VSA
	// DispatchNonce is the nonce of the dispatch challenge Reserve stored
	// for the build, and DispatchExpires its expiry: what Dispatch
	// answered, so a retried Dispatch can answer it again. Nil (and zero)
	// once Prune has deleted the expired challenge. Set by Build only;
	// Reserve takes them from its challenge.
	DispatchNonce   []byte
	DispatchExpires time.Time
}

// AK is a TPM attestation key registered through credential activation.
type AK struct {
	Digest       string // hex SHA-256 of PKIX DER
	PublicKey    []byte // PKIX DER
	EKCertDigest string // hex SHA-256 of the EK certificate it was activated against
	RegisteredAt time.Time
}

// Store errors.
var (
	ErrNotFound         = errors.New("not found")
	ErrNonceExists      = errors.New("nonce already issued")
	ErrNonceUnknown     = errors.New("nonce unknown")
	ErrNonceForeign     = errors.New("nonce issued for another step, environment or build")
	ErrNonceUsed        = errors.New("nonce already used")
	ErrNonceExpired     = errors.New("nonce expired")
	ErrAdmitted         = errors.New("environment already admitted")
	ErrBootReused       = errors.New("boot already admitted under another environment key")
	ErrEnvironmentTaken = errors.New("environment already dispatched to a build")
	ErrBuildTaken       = errors.New("build ID already dispatched to an environment")
	ErrState            = errors.New("build not in the state this step needs")
	ErrUnavailable      = errors.New("store unavailable")
)
