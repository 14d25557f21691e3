// Package postgres is the fleet's store for several replicas: PostgreSQL
// through pgx (pgxpool). The database decides every uniqueness question
// (primary keys, UNIQUE constraints, single-use nonces consumed by a
// conditional UPDATE), so replicas need no coordination of their own.
//
// Every method is one SQL statement, so one implicit transaction, and one
// round trip to the database:
//
//	PutChallenge, ConsumeChallenge, Admit, Environment, Reserve,
//	Dispatched, Completed, Build, PutAK, AK, Prune, Ping   1 each
//	Admit refused for a boot (was the key admitted too?)    +1
//	Reserve refused for an environment (build ID taken?)    +1
//	first use of a statement on a pool connection (prepare) +1
//	a connection idle for over a second (pgxpool's ping)    +1
//
// The per-build sequence PutChallenge, Admit, Reserve, Dispatched,
// Completed is 5 round trips; BenchmarkBuild counts them on the wire.
//
// Connection failures, a server that stops, and context deadlines are
// errors wrapping fleet.ErrUnavailable; a statement either commits whole or
// not at all, and the pool reconnects when the server is back.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/attestd/attestd/fleet"
	"github.com/attestd/attestd/fleet/internal/sqlstore"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLock is the key of the advisory lock Open holds while it
// migrates, so replicas starting together migrate one at a time (the
// bytes of "attestd\x00" as an int64).
const migrationLock = 0x6174746573746400

// Store is a fleet.Store on a PostgreSQL database.
type Store struct {
	pool *pgxpool.Pool
}

var _ fleet.Store = (*Store)(nil)

// Open connects to the database dsn names (a libpq connection string or
// URL; pgxpool's pool_* parameters size the pool) and applies the pending
// schema migrations under an advisory lock.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	return open(ctx, cfg)
}

func open(ctx context.Context, cfg *pgxpool.Config) (*Store, error) {
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, sqlstore.Wrap("open postgres store", err)
	}
	s := &Store{pool: pool}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, sqlstore.Wrap(fmt.Sprintf("open postgres store %s/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Database), err)
	}
	return s, nil
}

// migrate applies the pending migrations in one transaction holding the
// advisory lock, each recorded in schema_migrations.
func (s *Store) migrate(ctx context.Context) error {
	all, err := sqlstore.Migrations(migrationFiles, "migrations")
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
			return fmt.Errorf("lock for migration: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		rows, _ := tx.Query(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
		applied, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			return err
		}
		pending, err := sqlstore.Pending(all, applied)
		if err != nil {
			return err
		}
		for _, m := range pending {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("migration %d_%s: %w", m.Version, m.Name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
				return err
			}
		}
		return nil
	})
}

// violation returns the constraint a unique (23505) or foreign-key (23503)
// violation names, or "".
func violation(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "23505" || pe.Code == "23503") {
		return pe.ConstraintName
	}
	return ""
}

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error {
	return sqlstore.Wrap("ping postgres store", s.pool.Ping(ctx))
}

// Close closes the pool; calling it again is not an error.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}
