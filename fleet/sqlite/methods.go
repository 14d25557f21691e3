package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	sqlite3 "modernc.org/sqlite/lib"

	"github.com/attestd/attestd/fleet"
	"github.com/attestd/attestd/fleet/internal/sqlstore"
)

// PutChallenge implements fleet.Store.
func (s *Store) PutChallenge(ctx context.Context, c fleet.Challenge) error {
	return s.tx(ctx, fmt.Sprintf("put %s challenge %x", c.Step, c.Nonce), func(tx *sql.Tx) error {
		return putChallenge(ctx, tx, c)
	})
}

func putChallenge(ctx context.Context, tx *sql.Tx, c fleet.Challenge) error {
	res, err := tx.ExecContext(ctx, `INSERT INTO challenges (nonce, step, env_key, build_id, data, created, expires, used)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (nonce) DO NOTHING`,
		c.Nonce, string(c.Step), c.EnvKey, c.BuildID, c.Data, micro(c.Created), micro(c.Expires), c.Used)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return errors.Join(err, fleet.ErrNonceExists)
	}
	return nil
}

// ConsumeChallenge implements fleet.Store.
func (s *Store) ConsumeChallenge(ctx context.Context, step fleet.Step, nonce []byte, now time.Time) (*fleet.Challenge, error) {
	var c *fleet.Challenge
	err := s.tx(ctx, fmt.Sprintf("consume %s nonce %x", step, nonce), func(tx *sql.Tx) (err error) {
		c, err = consume(ctx, tx, step, "", nonce, now)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// consume marks the challenge used if sqlstore.CheckChallenge allows it.
func consume(ctx context.Context, tx *sql.Tx, step fleet.Step, buildID string, nonce []byte, now time.Time) (*fleet.Challenge, error) {
	var (
		c                fleet.Challenge
		st               string
		created, expires int64
	)
	err := tx.QueryRowContext(ctx, `SELECT nonce, step, env_key, build_id, data, created, expires, used
		FROM challenges WHERE nonce = ?`, nonce).
		Scan(&c.Nonce, &st, &c.EnvKey, &c.BuildID, &c.Data, &created, &expires, &c.Used)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fleet.ErrNonceUnknown
	}
	if err != nil {
		return nil, err
	}
	c.Step, c.Created, c.Expires = fleet.Step(st), fromMicro(created), fromMicro(expires)
	if err := sqlstore.CheckChallenge(&c, step, buildID, now); err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE challenges SET used = 1 WHERE nonce = ? AND used = 0`, nonce); err != nil {
		return nil, err
	}
	c.Used = true
	return &c, nil
}

// Admit implements fleet.Store.
func (s *Store) Admit(ctx context.Context, nonce []byte, now time.Time, env fleet.Environment) error {
	backends, err := json.Marshal(env.Backends)
	if err != nil {
		return fmt.Errorf("admit environment %s: %w", env.KeyDigest, err)
	}
	return s.tx(ctx, "admit environment "+env.KeyDigest, func(tx *sql.Tx) error {
		if _, err := consume(ctx, tx, fleet.StepAdmit, "", nonce, now); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO environments
			(key_digest, boot_id, ak_digest, backends, image, level, admitted_at, admission)
			VALUES (?, NULLIF(?, ''), ?, ?, ?, ?, ?, ?) ON CONFLICT (key_digest) DO NOTHING`,
			env.KeyDigest, env.BootID, env.AKDigest, string(backends), env.Image, env.Level, micro(env.AdmittedAt), env.Admission)
		if constraint(err) == sqlite3.SQLITE_CONSTRAINT_UNIQUE {
			return fmt.Errorf("%w: boot %q", fleet.ErrBootReused, env.BootID)
		}
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(err, fleet.ErrAdmitted)
		}
		return nil
	})
}

// Environment implements fleet.Store.
func (s *Store) Environment(ctx context.Context, keyDigest string) (*fleet.Environment, error) {
	var (
		e        fleet.Environment
		boot     sql.NullString
		backends string
		admitted int64
	)
	err := s.r.QueryRowContext(ctx, `SELECT key_digest, boot_id, ak_digest, backends, image, level, admitted_at, admission
		FROM environments WHERE key_digest = ?`, keyDigest).
		Scan(&e.KeyDigest, &boot, &e.AKDigest, &backends, &e.Image, &e.Level, &admitted, &e.Admission)
	if errors.Is(err, sql.ErrNoRows) {
		err = fleet.ErrNotFound
	}
	if err == nil {
		err = json.Unmarshal([]byte(backends), &e.Backends)
	}
	if err != nil {
		return nil, sqlstore.Wrap("environment "+keyDigest, err)
	}
	e.BootID, e.AdmittedAt = boot.String, fromMicro(admitted)
	return &e, nil
}

// Reserve implements fleet.Store.
func (s *Store) Reserve(ctx context.Context, b fleet.Build, c fleet.Challenge) error {
	if err := sqlstore.CheckDispatch(b, c); err != nil {
		return err
	}
	return s.tx(ctx, fmt.Sprintf("reserve build %q on environment %s", b.BuildID, b.EnvKey), func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO builds (build_id, env_key, state, reserved_at, dispatch_nonce)
			VALUES (?, ?, 'reserved', ?, ?) ON CONFLICT (build_id) DO NOTHING`, b.BuildID, b.EnvKey, micro(b.ReservedAt), c.Nonce)
		switch constraint(err) {
		case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return fmt.Errorf("environment: %w", fleet.ErrNotFound)
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE:
			return fleet.ErrEnvironmentTaken
		}
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(err, fleet.ErrBuildTaken)
		}
		return putChallenge(ctx, tx, c)
	})
}

// Dispatched implements fleet.Store.
func (s *Store) Dispatched(ctx context.Context, buildID string, nonce []byte, now time.Time, result []byte) error {
	return s.tx(ctx, fmt.Sprintf("dispatched build %q", buildID), func(tx *sql.Tx) error {
		return advance(ctx, tx, buildID, fleet.StepDispatch, nonce, now, result)
	})
}

// Completed implements fleet.Store.
func (s *Store) Completed(ctx context.Context, buildID string, nonce []byte, now time.Time, result []byte) error {
	return s.tx(ctx, fmt.Sprintf("completed build %q", buildID), func(tx *sql.Tx) error {
		return advance(ctx, tx, buildID, fleet.StepComplete, nonce, now, result)
	})
}

// advance moves a build one state on for step (dispatch: reserved →
// dispatched; complete: dispatched → completed), consuming nonce first
// when there is one (dispatch always has one). Errors come in the order
// ErrNotFound, the nonce's, ErrState.
func advance(ctx context.Context, tx *sql.Tx, buildID string, step fleet.Step, nonce []byte, now time.Time, result []byte) error {
	from, to, set := fleet.BuildReserved, fleet.BuildDispatched, `dispatched_at = ?, dispatch = ?`
	if step == fleet.StepComplete {
		from, to, set = fleet.BuildDispatched, fleet.BuildCompleted, `completed_at = ?, completion = ?`
	}
	var state string
	err := tx.QueryRowContext(ctx, `SELECT state FROM builds WHERE build_id = ?`, buildID).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return fleet.ErrNotFound
	}
	if err != nil {
		return err
	}
	if step == fleet.StepDispatch || len(nonce) > 0 {
		if _, err := consume(ctx, tx, step, buildID, nonce, now); err != nil {
			return err
		}
	}
	if fleet.BuildState(state) != from {
		return fmt.Errorf("%w: %s, want %s", fleet.ErrState, state, from)
	}
	_, err = tx.ExecContext(ctx, `UPDATE builds SET state = ?, `+set+` WHERE build_id = ?`,
		string(to), micro(now), result, buildID)
	return err
}

// Build implements fleet.Store.
func (s *Store) Build(ctx context.Context, buildID string) (*fleet.Build, error) {
	var (
		b                              fleet.Build
		state                          string
		reserved                       int64
		dispatched, completed, expires sql.NullInt64
	)
	err := s.r.QueryRowContext(ctx, `SELECT b.build_id, b.env_key, b.state, b.reserved_at, b.dispatched_at, b.completed_at,
			b.dispatch, b.completion, c.nonce, c.expires
		FROM builds b LEFT JOIN challenges c ON c.nonce = b.dispatch_nonce
		WHERE b.build_id = ?`, buildID).
		Scan(&b.BuildID, &b.EnvKey, &state, &reserved, &dispatched, &completed, &b.Dispatch, &b.Completion,
			&b.DispatchNonce, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		err = fleet.ErrNotFound
	}
	if err != nil {
		return nil, sqlstore.Wrap(fmt.Sprintf("build %q", buildID), err)
	}
	b.State, b.ReservedAt = fleet.BuildState(state), fromMicro(reserved)
	if dispatched.Valid {
		b.DispatchedAt = fromMicro(dispatched.Int64)
	}
	if completed.Valid {
		b.CompletedAt = fromMicro(completed.Int64)
	}
	if expires.Valid {
		b.DispatchExpires = fromMicro(expires.Int64)
	}
	return &b, nil
}

// PutAK implements fleet.Store.
func (s *Store) PutAK(ctx context.Context, ak fleet.AK) error {
	return s.tx(ctx, "put AK "+ak.Digest, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO aks (digest, public_key, ek_cert_digest, registered_at)
			VALUES (?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING`, ak.Digest, ak.PublicKey, ak.EKCertDigest, micro(ak.RegisteredAt))
		return err
	})
}

// AK implements fleet.Store.
func (s *Store) AK(ctx context.Context, digest string) (*fleet.AK, error) {
	var (
		ak         fleet.AK
		registered int64
	)
	err := s.r.QueryRowContext(ctx, `SELECT digest, public_key, ek_cert_digest, registered_at FROM aks WHERE digest = ?`, digest).
		Scan(&ak.Digest, &ak.PublicKey, &ak.EKCertDigest, &registered)
	if errors.Is(err, sql.ErrNoRows) {
		err = fleet.ErrNotFound
	}
	if err != nil {
		return nil, sqlstore.Wrap("AK "+digest, err)
	}
	ak.RegisteredAt = fromMicro(registered)
	return &ak, nil
}

// Prune implements fleet.Store.
func (s *Store) Prune(ctx context.Context, before time.Time) (int, error) {
	var n int64
	err := s.tx(ctx, "prune challenges", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM challenges WHERE expires < ?`, micro(before))
		if err == nil {
			n, err = res.RowsAffected()
		}
		return err
	})
	return int(n), err
}

// micro is t as the stored Unix microseconds; the zero time is 0.
func micro(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// fromMicro is micro's inverse, in UTC.
func fromMicro(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}
