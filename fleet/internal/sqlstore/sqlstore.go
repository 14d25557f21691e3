// Package sqlstore holds what the fleet's two SQL stores (fleet/sqlite and
// fleet/postgres) share beyond their SQL dialect: the rule a challenge must
// meet to be consumed, and the versioned migration files.
package sqlstore

import (
	"errors"
	"fmt"
	"time"

	"github.com/attestd/attestd/fleet"
)

// CheckChallenge says why c cannot be consumed now for step and, when
// buildID is not empty, for that build: ErrNonceForeign, ErrNonceUsed or
// ErrNonceExpired (in that order), or nil when it can. A challenge is valid
// strictly before its Expires.
func CheckChallenge(c *fleet.Challenge, step fleet.Step, buildID string, now time.Time) error {
	switch {
	case c.Step != step:
		return fmt.Errorf("%w: issued for step %q, not %q", fleet.ErrNonceForeign, c.Step, step)
	case buildID != "" && c.BuildID != buildID:
		return fmt.Errorf("%w: issued for build %q, not %q", fleet.ErrNonceForeign, c.BuildID, buildID)
	case c.Used:
		return fleet.ErrNonceUsed
	case !now.Before(c.Expires):
		return fmt.Errorf("%w: at %s", fleet.ErrNonceExpired, c.Expires.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// CheckDispatch checks that c is the dispatch challenge Reserve may store
// for b: step dispatch, for b's environment and build ID.
func CheckDispatch(b fleet.Build, c fleet.Challenge) error {
	if c.Step != fleet.StepDispatch || c.EnvKey != b.EnvKey || c.BuildID != b.BuildID {
		return fmt.Errorf("reserve build %q on environment %q: challenge is for step %q, environment %q, build %q",
			b.BuildID, b.EnvKey, c.Step, c.EnvKey, c.BuildID)
	}
	return nil
}

// sentinels are the errors callers branch on; Wrap passes them through.
var sentinels = []error{
	fleet.ErrNotFound, fleet.ErrNonceExists, fleet.ErrNonceUnknown, fleet.ErrNonceForeign,
	fleet.ErrNonceUsed, fleet.ErrNonceExpired, fleet.ErrAdmitted, fleet.ErrBootReused,
	fleet.ErrEnvironmentTaken, fleet.ErrBuildTaken, fleet.ErrState, fleet.ErrUnavailable,
	ErrSchema,
}

// Wrap prefixes err with what was being done. An error that is none of
// fleet's sentinels (nor ErrSchema) came from the database and also wraps
// ErrUnavailable.
func Wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	return fmt.Errorf("%s: %w: %w", what, fleet.ErrUnavailable, err)
}
