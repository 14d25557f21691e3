package sqlite_test

import (
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/attestd/attestd/fleet"
	"github.com/attestd/attestd/fleet/internal/sqlstore"
	"github.com/attestd/attestd/fleet/sqlite"
	"github.com/attestd/attestd/fleet/storetest"
)

func TestConformance(t *testing.T) {
	dir := t.TempDir()
	storetest.Run(t, func(t *testing.T, db string) fleet.Store {
		s, err := sqlite.Open(t.Context(), filepath.Join(dir, db+".db"))
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		return s
	})
}

// BenchmarkBuild runs the per-build sequence (storetest.Bench, and
// storetest.BenchParallel from 16 goroutines a core; the writes still go
// one at a time through the one writer).
func BenchmarkBuild(b *testing.B) {
	for name, bench := range map[string]func(*testing.B, fleet.Store){
		"sequential": storetest.Bench,
		"parallel":   func(b *testing.B, s fleet.Store) { storetest.BenchParallel(b, s, 16) },
	} {
		b.Run(name, func(b *testing.B) {
			s, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "bench.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			bench(b, s)
		})
	}
}

// TestSchemaNewer refuses a database a newer binary migrated, and records
// each applied version once.
func TestSchemaNewer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fleet.db")
	for range 2 {
		s, err := sqlite.Open(t.Context(), path)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		s.Close()
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	migrations, err := os.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil || n != len(migrations) {
		t.Errorf("schema_migrations rows after two opens: %d, %v; want %d", n, err, len(migrations))
	}
	if _, err := db.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'future', 0)`, len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	s, err := sqlite.Open(t.Context(), path)
	if err == nil {
		s.Close()
	}
	if !errors.Is(err, sqlstore.ErrSchema) {
		t.Fatalf("open a database of a newer schema: %v, want %v", err, sqlstore.ErrSchema)
	}
}

func TestOpenBadPath(t *testing.T) {
	for _, path := range []string{"", ":memory:", "file:x.db", "x.db?mode=ro", filepath.Join(t.TempDir(), "missing", "x.db")} {
		if s, err := sqlite.Open(t.Context(), path); err == nil {
			s.Close()
			t.Errorf("Open(%q): no error", path)
		}
	}
}

// TestMigrateDispatchNonce: a ledger of schema version 1 migrated to the
// current one gives a reserved build the nonce of its dispatch challenge
// (a retried Dispatch answers with it).
func TestMigrateDispatchNonce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fleet.db")
	v1, err := os.ReadFile("migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	nonce := []byte("nonce of the dispatch of b-reserved")
	for _, stmt := range []string{
		string(v1),
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`,
		`INSERT INTO schema_migrations VALUES (1, 'init', 0)`,
		`INSERT INTO environments VALUES ('env-1', NULL, 'ak', '[]', '', 1, 1, NULL), ('env-2', NULL, 'ak', '[]', '', 1, 1, NULL)`,
		`INSERT INTO builds (build_id, env_key, state, reserved_at) VALUES ('b-reserved', 'env-1', 'reserved', 1)`,
		`INSERT INTO builds (build_id, env_key, state, reserved_at, dispatched_at, dispatch) VALUES ('b-dispatched', 'env-2', 'dispatched', 1, 2, x'00')`,
		`INSERT INTO challenges VALUES (x'01', 'dispatch', 'env-2', 'b-dispatched', NULL, 1, 300000001, 1)`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%.60s: %v", stmt, err)
		}
	}
	if _, err := db.Exec(`INSERT INTO challenges VALUES (?, 'dispatch', 'env-1', 'b-reserved', NULL, 1, 300000001, 0)`, nonce); err != nil {
		t.Fatal(err)
	}
	s, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b, err := s.Build(t.Context(), "b-reserved")
	if err != nil || string(b.DispatchNonce) != string(nonce) || b.DispatchExpires.UnixMicro() != 300000001 {
		t.Errorf("reserved build after the migration: %+v, %v; want nonce %q", b, err, nonce)
	}
	if b, err := s.Build(t.Context(), "b-dispatched"); err != nil || b.DispatchNonce != nil {
		t.Errorf("dispatched build after the migration: %+v, %v; want no dispatch nonce (none is needed)", b, err)
	}
}
