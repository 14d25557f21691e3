package fleet_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/attestd/attestd/fleet"
	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
	"github.com/attestd/attestd/fleet/postgres"
	"github.com/attestd/attestd/internal/pgtest"
)

// retentionSQL is the retention example of docs/fleet.md, between
// <<'SQL' and SQL.
func retentionSQL(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("../docs/fleet.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "<<'SQL'\n")
	sql, _, ok2 := strings.Cut(rest, "\nSQL\n")
	if !ok || !ok2 {
		t.Fatal("docs/fleet.md has no retention example between <<'SQL' and SQL")
	}
	return sql
}

// TestRetentionSQL runs docs/fleet.md's retention statements on a
// PostgreSQL ledger: a build completed 100 days ago goes with its
// environment, a recent one stays.
func TestRetentionSQL(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Start(t).CreateDB(t, "fleet")
	st, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := startFleet(t, st)
	run := func(build string) string {
		e := newEnv(t, 0)
		defer e.close()
		key := f.admit(t, e).GetKeyDigest()
		if _, err := f.ConfirmDispatch(ctx, &fleetv1.ConfirmDispatchRequest{BuildId: build, Bundle: bind(t, e, build, f.dispatch(t, key, build))}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Complete(ctx, &fleetv1.CompleteRequest{BuildId: build, Bundle: finish(t, e, build, nil)}); err != nil {
			t.Fatal(err)
		}
		return key
	}
	f.clock.advance(-100 * 24 * time.Hour)
	oldKey := run("old-build")
	f.clock.advance(100 * 24 * time.Hour)
	newKey := run("new-build")

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, retentionSQL(t)); err != nil {
		t.Fatalf("the retention statements: %v", err)
	}
	if _, err := st.Build(ctx, "old-build"); !errors.Is(err, fleet.ErrNotFound) {
		t.Errorf("the old build: %v, want it deleted", err)
	}
	if _, err := st.Environment(ctx, oldKey); !errors.Is(err, fleet.ErrNotFound) {
		t.Errorf("the old environment: %v, want it deleted", err)
	}
	if _, err := st.Build(ctx, "new-build"); err != nil {
		t.Errorf("the recent build: %v", err)
	}
	if _, err := st.Environment(ctx, newKey); err != nil {
		t.Errorf("the recent environment: %v", err)
	}
}
