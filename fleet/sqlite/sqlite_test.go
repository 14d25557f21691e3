package sqlite_test

import (
	"database/sql"
	"errors"
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
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil || n != 1 {
		t.Errorf("schema_migrations rows after two opens: %d, %v; want 1", n, err)
	}
	if _, err := db.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (2, 'future', 0)`); err != nil {
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
