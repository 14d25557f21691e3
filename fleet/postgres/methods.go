package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/attestd/attestd/fleet"
	"github.com/attestd/attestd/fleet/internal/sqlstore"
)

// The statements below lock the challenge (and build) rows they read FOR
// UPDATE: a racing call waits, then sees the row as the winner left it
// (READ COMMITTED re-reads a locked row), so the loser is told why.

// PutChallenge implements fleet.Store.
func (s *Store) PutChallenge(ctx context.Context, c fleet.Challenge) error {
	tag, err := s.pool.Exec(ctx, `INSERT INTO challenges (nonce, step, env_key, build_id, data, created, expires, used)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (nonce) DO NOTHING`,
		c.Nonce, string(c.Step), c.EnvKey, c.BuildID, c.Data, c.Created, c.Expires, c.Used)
	if err == nil && tag.RowsAffected() == 0 {
		err = fleet.ErrNonceExists
	}
	return sqlstore.Wrap(fmt.Sprintf("put %s challenge %x", c.Step, c.Nonce), err)
}

const consumeSQL = `
WITH c AS (
	SELECT nonce, step, env_key, build_id, data, created, expires, used
	FROM challenges WHERE nonce = $1 FOR UPDATE
), u AS (
	UPDATE challenges SET used = true
	WHERE nonce = $1 AND EXISTS (SELECT FROM c WHERE c.step = $2 AND NOT c.used AND c.expires > $3)
	RETURNING nonce
)
SELECT c.nonce, c.step, c.env_key, c.build_id, c.data, c.created, c.expires, c.used, EXISTS (SELECT FROM u)
FROM c`

// ConsumeChallenge implements fleet.Store.
func (s *Store) ConsumeChallenge(ctx context.Context, step fleet.Step, nonce []byte, now time.Time) (*fleet.Challenge, error) {
	var (
		c    fleet.Challenge
		st   string
		done bool
	)
	err := s.pool.QueryRow(ctx, consumeSQL, nonce, string(step), now).
		Scan(&c.Nonce, &st, &c.EnvKey, &c.BuildID, &c.Data, &c.Created, &c.Expires, &c.Used, &done)
	c.Step, c.Created, c.Expires = fleet.Step(st), c.Created.UTC(), c.Expires.UTC()
	if err == nil && !done {
		if err = sqlstore.CheckChallenge(&c, step, "", now); err == nil {
			err = errInconsistent
		}
	}
	if err != nil {
		err = noRows(err)
		return nil, sqlstore.Wrap(fmt.Sprintf("consume %s nonce %x", step, nonce), err)
	}
	c.Used = true
	return &c, nil
}

// errInconsistent is a refusal the store's rules cannot explain: the SQL
// and sqlstore.CheckChallenge disagree.
var errInconsistent = errors.New("the database refused a change the store's rules allow")

// noRows turns "no challenge row" into ErrNonceUnknown.
func noRows(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return fleet.ErrNonceUnknown
	}
	return err
}

const admitSQL = `
WITH c AS (
	SELECT step, env_key, build_id, expires, used FROM challenges WHERE nonce = $1 FOR UPDATE
), e AS (
	INSERT INTO environments (key_digest, boot_id, ak_digest, backends, image, level, admitted_at, admission)
	SELECT $3::text, NULLIF($4::text, ''), $5::text, $6::text[], $7::text, $8::integer, $9::timestamptz, $10::bytea
	WHERE EXISTS (SELECT FROM c WHERE c.step = 'admit' AND NOT c.used AND c.expires > $2)
	ON CONFLICT (key_digest) DO NOTHING
	RETURNING key_digest
), u AS (
	UPDATE challenges SET used = true WHERE nonce = $1 AND EXISTS (SELECT FROM e) RETURNING nonce
)
SELECT c.step, c.env_key, c.build_id, c.expires, c.used, EXISTS (SELECT FROM e), EXISTS (SELECT FROM u)
FROM c`

// Admit implements fleet.Store.
func (s *Store) Admit(ctx context.Context, nonce []byte, now time.Time, env fleet.Environment) error {
	var (
		c           fleet.Challenge
		st          string
		added, used bool
	)
	backends := env.Backends
	if backends == nil {
		backends = []string{}
	}
	err := s.pool.QueryRow(ctx, admitSQL, nonce, now, env.KeyDigest, env.BootID, env.AKDigest, backends,
		env.Image, env.Level, env.AdmittedAt, env.Admission).
		Scan(&st, &c.EnvKey, &c.BuildID, &c.Expires, &c.Used, &added, &used)
	c.Step = fleet.Step(st)
	switch {
	case violation(err) == "environments_boot_unique":
		// The insert of a key admitted by a racing call can fail on the
		// boot before it sees the key: say which.
		var admitted bool
		if err = s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM environments WHERE key_digest = $1)`, env.KeyDigest).Scan(&admitted); err == nil {
			err = fmt.Errorf("%w: boot %q", fleet.ErrBootReused, env.BootID)
			if admitted {
				err = fleet.ErrAdmitted
			}
		}
	case err != nil:
		err = noRows(err)
	case added && used:
	default:
		// Refused for the nonce, else for the key (ON CONFLICT DO NOTHING).
		if err = sqlstore.CheckChallenge(&c, fleet.StepAdmit, "", now); err == nil && !added {
			err = fleet.ErrAdmitted
		} else if err == nil {
			err = errInconsistent
		}
	}
	return sqlstore.Wrap("admit environment "+env.KeyDigest, err)
}

// Environment implements fleet.Store.
func (s *Store) Environment(ctx context.Context, keyDigest string) (*fleet.Environment, error) {
	var (
		e    fleet.Environment
		boot *string
	)
	err := s.pool.QueryRow(ctx, `SELECT key_digest, boot_id, ak_digest, backends, image, level, admitted_at, admission
		FROM environments WHERE key_digest = $1`, keyDigest).
		Scan(&e.KeyDigest, &boot, &e.AKDigest, &e.Backends, &e.Image, &e.Level, &e.AdmittedAt, &e.Admission)
	if errors.Is(err, pgx.ErrNoRows) {
		err = fleet.ErrNotFound
	}
	if err != nil {
		return nil, sqlstore.Wrap("environment "+keyDigest, err)
	}
	if boot != nil {
		e.BootID = *boot
	}
	e.AdmittedAt = e.AdmittedAt.UTC()
	return &e, nil
}

const reserveSQL = `
WITH b AS (
	INSERT INTO builds (build_id, env_key, state, reserved_at, dispatch_nonce) VALUES ($1, $2, 'reserved', $3, $4)
	ON CONFLICT (build_id) DO NOTHING
	RETURNING build_id
)
INSERT INTO challenges (nonce, step, env_key, build_id, data, created, expires)
SELECT $4::bytea, 'dispatch', $2::text, $1::text, $5::bytea, $6::timestamptz, $7::timestamptz FROM b`

// Reserve implements fleet.Store.
func (s *Store) Reserve(ctx context.Context, b fleet.Build, c fleet.Challenge) error {
	if err := sqlstore.CheckDispatch(b, c); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, reserveSQL, b.BuildID, b.EnvKey, b.ReservedAt, c.Nonce, c.Data, c.Created, c.Expires)
	switch violation(err) {
	case "builds_env_fkey":
		err = fmt.Errorf("environment: %w", fleet.ErrNotFound)
	case "challenges_pkey":
		err = fleet.ErrNonceExists
	case "builds_env_unique":
		// A racing call for the same build ID and environment can fail
		// on the environment before it sees the build ID: say which.
		var taken bool
		if err = s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM builds WHERE build_id = $1)`, b.BuildID).Scan(&taken); err == nil {
			err = fleet.ErrEnvironmentTaken
			if taken {
				err = fleet.ErrBuildTaken
			}
		}
	case "":
		if err == nil && tag.RowsAffected() == 0 {
			err = fleet.ErrBuildTaken
		}
	}
	return sqlstore.Wrap(fmt.Sprintf("reserve build %q on environment %s", b.BuildID, b.EnvKey), err)
}

// advanceSQL moves a build from one state to the next, setting the time
// and result columns named, when the build is in state from and the nonce
// ($2; NULL for none) is an unused, unexpired challenge of step for it.
func advanceSQL(step fleet.Step, from, to fleet.BuildState, at, result string) string {
	return fmt.Sprintf(`
WITH b AS (
	SELECT state FROM builds WHERE build_id = $1 FOR UPDATE
), c AS (
	SELECT step, env_key, build_id, expires, used FROM challenges WHERE nonce = $2 FOR UPDATE
), ok AS (
	SELECT FROM b WHERE b.state = '%[2]s' AND ($2::bytea IS NULL
		OR EXISTS (SELECT FROM c WHERE c.step = '%[1]s' AND c.build_id = $1 AND NOT c.used AND c.expires > $3))
), u AS (
	UPDATE builds SET state = '%[3]s', %[4]s = $3, %[5]s = $4 WHERE build_id = $1 AND EXISTS (SELECT FROM ok)
	RETURNING build_id
), n AS (
	UPDATE challenges SET used = true WHERE nonce = $2 AND EXISTS (SELECT FROM ok) RETURNING nonce
)
SELECT b.state, c.step, c.env_key, c.build_id, c.expires, c.used, EXISTS (SELECT FROM u)
FROM b LEFT JOIN c ON true`, step, from, to, at, result)
}

var (
	dispatchedSQL = advanceSQL(fleet.StepDispatch, fleet.BuildReserved, fleet.BuildDispatched, "dispatched_at", "dispatch")
	completedSQL  = advanceSQL(fleet.StepComplete, fleet.BuildDispatched, fleet.BuildCompleted, "completed_at", "completion")
)

// Dispatched implements fleet.Store.
func (s *Store) Dispatched(ctx context.Context, buildID string, nonce []byte, now time.Time, result []byte) error {
	if nonce == nil {
		nonce = []byte{} // not NULL: a dispatch always consumes a nonce
	}
	return sqlstore.Wrap(fmt.Sprintf("dispatched build %q", buildID),
		s.advance(ctx, dispatchedSQL, fleet.StepDispatch, fleet.BuildReserved, buildID, nonce, now, result))
}

// Completed implements fleet.Store.
func (s *Store) Completed(ctx context.Context, buildID string, nonce []byte, now time.Time, result []byte) error {
	if len(nonce) == 0 {
		nonce = nil // NULL: no challenge to consume
	}
	return sqlstore.Wrap(fmt.Sprintf("completed build %q", buildID),
		s.advance(ctx, completedSQL, fleet.StepComplete, fleet.BuildDispatched, buildID, nonce, now, result))
}

// advance runs a statement of advanceSQL and names a refusal, in the
// order ErrNotFound, the nonce's, ErrState.
func (s *Store) advance(ctx context.Context, sql string, step fleet.Step, from fleet.BuildState, buildID string, nonce []byte, now time.Time, result []byte) error {
	var (
		state, st, env, build *string
		expires               *time.Time
		used                  *bool
		done                  bool
	)
	err := s.pool.QueryRow(ctx, sql, buildID, nonce, now, result).Scan(&state, &st, &env, &build, &expires, &used, &done)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fleet.ErrNotFound
	case err != nil || done:
		return err
	case nonce != nil && st == nil:
		return fleet.ErrNonceUnknown
	case nonce != nil:
		c := fleet.Challenge{Step: fleet.Step(*st), EnvKey: *env, BuildID: *build, Expires: *expires, Used: *used}
		if err := sqlstore.CheckChallenge(&c, step, buildID, now); err != nil {
			return err
		}
	}
	if fleet.BuildState(*state) != from {
		return fmt.Errorf("%w: %s, want %s", fleet.ErrState, *state, from)
	}
	return errInconsistent
}

// Build implements fleet.Store.
func (s *Store) Build(ctx context.Context, buildID string) (*fleet.Build, error) {
	var (
		b                              fleet.Build
		state                          string
		dispatched, completed, expires *time.Time
	)
	err := s.pool.QueryRow(ctx, `SELECT b.build_id, b.env_key, b.state, b.reserved_at, b.dispatched_at, b.completed_at,
			b.dispatch, b.completion, c.nonce, c.expires
		FROM builds b LEFT JOIN challenges c ON c.nonce = b.dispatch_nonce
		WHERE b.build_id = $1`, buildID).
		Scan(&b.BuildID, &b.EnvKey, &state, &b.ReservedAt, &dispatched, &completed, &b.Dispatch, &b.Completion,
			&b.DispatchNonce, &expires)
	if errors.Is(err, pgx.ErrNoRows) {
		err = fleet.ErrNotFound
	}
	if err != nil {
		return nil, sqlstore.Wrap(fmt.Sprintf("build %q", buildID), err)
	}
	b.State, b.ReservedAt = fleet.BuildState(state), b.ReservedAt.UTC()
	if dispatched != nil {
		b.DispatchedAt = dispatched.UTC()
	}
	if completed != nil {
		b.CompletedAt = completed.UTC()
	}
	if expires != nil {
		b.DispatchExpires = expires.UTC()
	}
	return &b, nil
}

// PutAK implements fleet.Store.
func (s *Store) PutAK(ctx context.Context, ak fleet.AK) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO aks (digest, public_key, ek_cert_digest, registered_at)
		VALUES ($1, $2, $3, $4) ON CONFLICT (digest) DO NOTHING`, ak.Digest, ak.PublicKey, ak.EKCertDigest, ak.RegisteredAt)
	return sqlstore.Wrap("put AK "+ak.Digest, err)
}

// AK implements fleet.Store.
func (s *Store) AK(ctx context.Context, digest string) (*fleet.AK, error) {
	var ak fleet.AK
	err := s.pool.QueryRow(ctx, `SELECT digest, public_key, ek_cert_digest, registered_at FROM aks WHERE digest = $1`, digest).
		Scan(&ak.Digest, &ak.PublicKey, &ak.EKCertDigest, &ak.RegisteredAt)
	if errors.Is(err, pgx.ErrNoRows) {
		err = fleet.ErrNotFound
	}
	if err != nil {
		return nil, sqlstore.Wrap("AK "+digest, err)
	}
	ak.RegisteredAt = ak.RegisteredAt.UTC()
	return &ak, nil
}

// Prune implements fleet.Store.
func (s *Store) Prune(ctx context.Context, before time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM challenges WHERE expires < $1`, before)
	if err != nil {
		return 0, sqlstore.Wrap("prune challenges", err)
	}
	return int(tag.RowsAffected()), nil
}
