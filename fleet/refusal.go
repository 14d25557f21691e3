package fleet

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
)

// Reason names why a call was refused: the ErrorInfo reason of its status
// (docs/fleet.md, "Refusals").
type Reason string

// Reasons. Each has one gRPC code (reasonCodes).
const (
	ReasonBadRequest         Reason = "BAD_REQUEST"
	ReasonTooLarge           Reason = "TOO_LARGE"
	ReasonNonceUnknown       Reason = "NONCE_UNKNOWN"
	ReasonNonceForeign       Reason = "NONCE_FOREIGN"
	ReasonNonceUsed          Reason = "NONCE_USED"
	ReasonNonceExpired       Reason = "NONCE_EXPIRED"
	ReasonAlreadyAdmitted    Reason = "ALREADY_ADMITTED"
	ReasonBootReused         Reason = "BOOT_REUSED"
	ReasonEnvironmentUnknown Reason = "ENVIRONMENT_UNKNOWN"
	ReasonEnvironmentTaken   Reason = "ENVIRONMENT_TAKEN"
	ReasonBuildUnknown       Reason = "BUILD_UNKNOWN"
	ReasonBuildTaken         Reason = "BUILD_TAKEN"
	ReasonWrongState         Reason = "WRONG_STATE"
	ReasonWrongStep          Reason = "WRONG_STEP"
	ReasonVerificationFailed Reason = "VERIFICATION_FAILED"
	ReasonAttestationForeign Reason = "ATTESTATION_FOREIGN"
	ReasonBuildMismatch      Reason = "BUILD_MISMATCH"
	ReasonEKUntrusted        Reason = "EK_UNTRUSTED"
	ReasonNoTPM              Reason = "NO_TPM"
	ReasonActivationFailed   Reason = "ACTIVATION_FAILED"
	ReasonStoreUnavailable   Reason = "STORE_UNAVAILABLE"
	ReasonInternal           Reason = "INTERNAL"
)

// reasonCodes is the one place a reason gets its gRPC code: bad input is
// InvalidArgument, a state the call needs but does not find is
// FailedPrecondition, a second claim on something taken is AlreadyExists,
// evidence that does not convince is PermissionDenied.
var reasonCodes = map[Reason]codes.Code{
	ReasonBadRequest:         codes.InvalidArgument,
	ReasonTooLarge:           codes.ResourceExhausted,
	ReasonNonceUnknown:       codes.InvalidArgument,
	ReasonNonceForeign:       codes.PermissionDenied,
	ReasonNonceUsed:          codes.FailedPrecondition,
	ReasonNonceExpired:       codes.FailedPrecondition,
	ReasonAlreadyAdmitted:    codes.AlreadyExists,
	ReasonBootReused:         codes.PermissionDenied,
	ReasonEnvironmentUnknown: codes.NotFound,
	ReasonEnvironmentTaken:   codes.AlreadyExists,
	ReasonBuildUnknown:       codes.NotFound,
	ReasonBuildTaken:         codes.AlreadyExists,
	ReasonWrongState:         codes.FailedPrecondition,
	ReasonWrongStep:          codes.FailedPrecondition,
	ReasonVerificationFailed: codes.PermissionDenied,
	ReasonAttestationForeign: codes.PermissionDenied,
	ReasonBuildMismatch:      codes.PermissionDenied,
	ReasonEKUntrusted:        codes.PermissionDenied,
	ReasonNoTPM:              codes.FailedPrecondition,
	ReasonActivationFailed:   codes.PermissionDenied,
	ReasonStoreUnavailable:   codes.Unavailable,
	ReasonInternal:           codes.Internal,
}

// Code is the gRPC code of a refusal for r.
func (r Reason) Code() codes.Code { return reasonCodes[r] }

// refusal is a call refused for a named reason; metadata goes to the
// ErrorInfo (e.g. the failed checks).
type refusal struct {
	reason Reason
	msg    string
	meta   map[string]string
}

func (r *refusal) Error() string { return string(r.reason) + ": " + r.msg }

func refuse(reason Reason, format string, a ...any) *refusal {
	return &refusal{reason: reason, msg: fmt.Sprintf(format, a...)}
}

// storeReasons are the Store's errors as refusals.
var storeReasons = []struct {
	err    error
	reason Reason
}{
	{ErrNonceUnknown, ReasonNonceUnknown},
	{ErrNonceForeign, ReasonNonceForeign},
	{ErrNonceUsed, ReasonNonceUsed},
	{ErrNonceExpired, ReasonNonceExpired},
	{ErrAdmitted, ReasonAlreadyAdmitted},
	{ErrBootReused, ReasonBootReused},
	{ErrEnvironmentTaken, ReasonEnvironmentTaken},
	{ErrBuildTaken, ReasonBuildTaken},
	{ErrState, ReasonWrongState},
	{ErrUnavailable, ReasonStoreUnavailable},
}

// storeRefusal is a Store error as a refusal; notFound is the reason for
// ErrNotFound in the caller's context. An error the Store contract does
// not name means the database could not answer.
func storeRefusal(err error, notFound Reason) *refusal {
	if errors.Is(err, ErrNotFound) {
		return &refusal{reason: notFound, msg: err.Error()}
	}
	for _, sr := range storeReasons {
		if errors.Is(err, sr.err) {
			return &refusal{reason: sr.reason, msg: err.Error()}
		}
	}
	return &refusal{reason: ReasonStoreUnavailable, msg: err.Error()}
}

// verificationFailed refuses a bundle whose evaluation failed, naming the
// failed checks.
func verificationFailed(failed []string) *refusal {
	return &refusal{
		reason: ReasonVerificationFailed,
		msg:    "the bundle failed verification: " + strings.Join(failed, ", "),
		meta:   map[string]string{"checks": strings.Join(failed, ",")},
	}
}

// asRefusal is err as a refusal (an error that is none is internal).
func asRefusal(err error) *refusal {
	var r *refusal
	if errors.As(err, &r) {
		return r
	}
	return &refusal{reason: ReasonInternal, msg: err.Error()}
}

// grpcStatus is a refusal as the status the client gets.
func (r *refusal) grpcStatus() error {
	st := status.New(r.reason.Code(), r.msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: string(r.reason), Domain: fleetv1.ErrorDomain, Metadata: r.meta}); err == nil {
		st = d
	}
	return st.Err()
}
