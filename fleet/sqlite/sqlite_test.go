package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/attestd/attestd/fleet"
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

func BenchmarkBuild(b *testing.B) {
	s, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	storetest.Bench(b, s)
}
