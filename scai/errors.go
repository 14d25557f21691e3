package scai

import "errors"

// Sentinel errors callers branch on with errors.Is. Every error returned by
// ParseEnvelope, ParseBundle, Open and VerifySignature wraps exactly one of
// them.
var (
	// ErrEnvelope: the bytes are not a well-formed DSSE envelope or bundle
	// (bad JSON, unknown or duplicate fields, bad base64, no signature, too
	// large).
	ErrEnvelope = errors.New("malformed DSSE envelope")
	// ErrPayloadType: the envelope's payloadType is not PayloadType.
	ErrPayloadType = errors.New("wrong DSSE payload type")
	// ErrStatement: the payload is not an in-toto Statement v1 carrying an
	// attestd SCAI predicate in the layout of docs/formats.md.
	ErrStatement = errors.New("malformed attestd statement")
	// ErrPredicateType: the statement's predicateType is not PredicateType.
	ErrPredicateType = errors.New("wrong predicate type")
	// ErrSubject: the subject is not exactly one "env-key" descriptor whose
	// sha256 digest is the digest of the statement's environment key.
	ErrSubject = errors.New("statement subject does not name the environment key")
	// ErrEnvKey: the environment key attribute is missing, malformed or of an
	// unsupported type.
	ErrEnvKey = errors.New("bad environment key")
	// ErrBinding: the binding recorded in the statement does not match its
	// purpose, key and nonce.
	ErrBinding = errors.New("binding mismatch")
	// ErrSignature: no envelope signature verifies with the given key.
	ErrSignature = errors.New("signature verification failed")
)
