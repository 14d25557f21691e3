// Package sqlite is the fleet's embedded store: one SQLite file, in pure Go
// (modernc.org/sqlite, no cgo), for a single replica and the demo. Writes
// go through one connection in BEGIN IMMEDIATE transactions, so they are
// serialized; reads use a pool beside it (WAL). Each commit is synced to
// disk (synchronous=FULL): a reservation or a used nonce lost to a power
// cut could be granted again, so durability is worth the fsync (about 2 ms
// a commit here; BenchmarkBuild). Several processes on one
// file are safe (the busy timeout waits for the lock) but not fast: a fleet
// of replicas uses fleet/postgres.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/attestd/attestd/fleet"
	"github.com/attestd/attestd/fleet/internal/sqlstore"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// busyTimeoutMS is how long a statement waits for another process's lock.
const busyTimeoutMS = 30_000

// Store is a fleet.Store on a SQLite file.
type Store struct {
	w *sql.DB // one connection: the writer
	r *sql.DB // readers
}

var _ fleet.Store = (*Store)(nil)

// Open opens (creating it if needed) the SQLite database at path and
// applies pending schema migrations.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" || strings.ContainsAny(path, "?#") || strings.HasPrefix(path, ":memory:") || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("open sqlite store: path %q: want a file path without '?' or '#'", path)
	}
	q := url.Values{}
	q.Set("_busy_timeout", fmt.Sprint(busyTimeoutMS))
	q.Set("_foreign_keys", "1")
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "FULL") // a commit survives power loss: a lost reservation could be granted twice
	q.Set("_txlock", "immediate") // take the write lock at BEGIN: no deadlocking upgrades
	w, err := sql.Open("sqlite", path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	s := &Store{w: w}
	if err := s.migrate(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	q.Set("_query_only", "1")
	q.Del("_journal_mode") // set by the writer, persistent
	if s.r, err = sql.Open("sqlite", path+"?"+q.Encode()); err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	return s, nil
}

// migrate applies the pending migrations, each in its own transaction
// with its version recorded in schema_migrations.
func (s *Store) migrate(ctx context.Context) error {
	all, err := sqlstore.Migrations(migrationFiles, "migrations")
	if err != nil {
		return err
	}
	return s.tx(ctx, "migrate schema", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`); err != nil {
			return err
		}
		applied, err := versions(ctx, tx)
		if err != nil {
			return err
		}
		pending, err := sqlstore.Pending(all, applied)
		if err != nil {
			return err
		}
		for _, m := range pending {
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return fmt.Errorf("migration %d_%s: %w", m.Version, m.Name, err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at)
				VALUES (?, ?, unixepoch('subsec') * 1000000)`, m.Version, m.Name); err != nil {
				return err
			}
		}
		return nil
	})
}

func versions(ctx context.Context, tx *sql.Tx) ([]int, error) {
	rows, err := tx.QueryContext(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var vs []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	return vs, rows.Err()
}

// tx runs fn in one write transaction, committed when fn returns nil and
// rolled back otherwise; errors are wrapped with what (sqlstore.Wrap).
func (s *Store) tx(ctx context.Context, what string, fn func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return sqlstore.Wrap(what, err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return sqlstore.Wrap(what, err)
	}
	return sqlstore.Wrap(what, tx.Commit())
}

// constraint returns the SQLite extended result code of a constraint
// violation, or 0.
func constraint(err error) int {
	var e *sqlite.Error
	if errors.As(err, &e) && e.Code()&0xff == sqlite3.SQLITE_CONSTRAINT {
		return e.Code()
	}
	return 0
}

// Ping reports whether the database file answers a query.
func (s *Store) Ping(ctx context.Context) error {
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n)
	return sqlstore.Wrap("ping sqlite store", err)
}

// Close closes the database; calling it again is not an error.
func (s *Store) Close() error {
	return errors.Join(s.r.Close(), s.w.Close())
}
