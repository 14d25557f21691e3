package postgres

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/attestd/attestd/fleet"
	"github.com/attestd/attestd/fleet/internal/sqlstore"
	"github.com/attestd/attestd/fleet/storetest"
	"github.com/attestd/attestd/internal/pgtest"
)

// TestConformance runs the suite with a pool big enough that the racers
// really meet in the database, not in the pool's queue.
func TestConformance(t *testing.T) {
	srv := pgtest.Start(t)
	dsns := map[string]string{}
	storetest.Run(t, func(t *testing.T, db string) fleet.Store {
		if dsns[db] == "" {
			dsns[db] = srv.CreateDB(t, db) + " pool_max_conns=32"
		}
		s, err := Open(t.Context(), dsns[db])
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		return s
	})
}

// TestMigrateConcurrently opens one empty database from several stores at
// once, as replicas starting together do: the advisory lock lets exactly
// one migrate, and every Open succeeds.
func TestMigrateConcurrently(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.CreateDB(t, "migrate")
	const replicas = 8
	errs := make(chan error, replicas)
	gate := make(chan struct{})
	for range replicas {
		go func() {
			<-gate
			s, err := Open(t.Context(), dsn)
			if err == nil {
				err = s.Ping(t.Context())
				s.Close()
			}
			errs <- err
		}()
	}
	close(gate)
	for range replicas {
		if err := <-errs; err != nil {
			t.Errorf("Open: %v", err)
		}
	}
	s, err := Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	all, err := sqlstore.Migrations(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.pool.QueryRow(t.Context(), `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil || n != len(all) {
		t.Errorf("schema_migrations rows: %d, %v; want %d", n, err, len(all))
	}

	// A database a newer binary migrated is refused.
	if _, err := s.pool.Exec(t.Context(), `INSERT INTO schema_migrations (version, name) VALUES ($1, 'future')`, len(all)+1); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(t.Context(), dsn)
	if err == nil {
		s2.Close()
	}
	if !errors.Is(err, sqlstore.ErrSchema) {
		t.Errorf("open a database of a newer schema: %v, want %v", err, sqlstore.ErrSchema)
	}
}

// BenchmarkBuild runs the per-build sequence (storetest.Bench, and
// storetest.BenchParallel from 16 goroutines a core) on a private cluster
// and reports the round trips to the database it took (rt/op): a write to
// the connection after a read from it starts one. "durable" runs the
// cluster with fsync on, as in production: the difference is the cost of
// flushing 5 commits to this machine's disk, shared by concurrent builds
// (group commit).
func BenchmarkBuild(b *testing.B) {
	for _, opts := range []struct {
		name string
		pgtest.Options
	}{{"fsync=off", pgtest.Options{}}, {"durable", pgtest.Options{Durable: true}}} {
		b.Run(opts.name, func(b *testing.B) { benchBuild(b, opts.Options, storetest.Bench) })
		b.Run(opts.name+"/parallel", func(b *testing.B) {
			benchBuild(b, opts.Options, func(b *testing.B, s fleet.Store) { storetest.BenchParallel(b, s, 16) })
		})
	}
}

func benchBuild(b *testing.B, opts pgtest.Options, bench func(*testing.B, fleet.Store)) {
	srv := pgtest.StartWith(b, opts)
	cfg, err := pgxpool.ParseConfig(srv.CreateDB(b, "bench") + " pool_max_conns=32")
	if err != nil {
		b.Fatal(err)
	}
	var trips atomic.Int64
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := new(net.Dialer).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cc := &countingConn{Conn: c, trips: &trips}
		cc.read.Store(true)
		return cc, nil
	}
	s, err := open(b.Context(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	start := trips.Load()
	bench(b, s)
	b.ReportMetric(float64(trips.Load()-start)/float64(b.N), "rt/op")
}

// countingConn counts round trips: writes that follow a read.
type countingConn struct {
	net.Conn
	trips *atomic.Int64
	read  atomic.Bool // the last operation was a read
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.read.Store(true)
	return c.Conn.Read(p)
}

func (c *countingConn) Write(p []byte) (int, error) {
	if c.read.Swap(false) {
		c.trips.Add(1)
	}
	return c.Conn.Write(p)
}

// TestMigrateDispatchNonce: a ledger of schema version 1 migrated to the
// current one gives a reserved build the nonce of its dispatch challenge
// (a retried Dispatch answers with it).
func TestMigrateDispatchNonce(t *testing.T) {
	ctx := t.Context()
	dsn := pgtest.Start(t).CreateDB(t, "v1")
	v1, err := migrationFiles.ReadFile("migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	nonce := []byte("nonce of the dispatch of b-reserved")
	expires := time.Date(2026, 11, 30, 12, 5, 0, 0, time.UTC)
	for _, stmt := range []string{
		string(v1),
		`CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
		`INSERT INTO schema_migrations (version, name) VALUES (1, 'init')`,
		`INSERT INTO environments VALUES ('env-1', NULL, 'ak', '{}', '', 1, now(), NULL), ('env-2', NULL, 'ak', '{}', '', 1, now(), NULL)`,
		`INSERT INTO builds (build_id, env_key, state, reserved_at) VALUES ('b-reserved', 'env-1', 'reserved', now())`,
		`INSERT INTO builds (build_id, env_key, state, reserved_at, dispatched_at, dispatch) VALUES ('b-dispatched', 'env-2', 'dispatched', now(), now(), '\x00')`,
		`INSERT INTO challenges VALUES ('\x01', 'dispatch', 'env-2', 'b-dispatched', NULL, now(), now(), true)`,
	} {
		if _, err := db.Exec(ctx, stmt); err != nil {
			t.Fatalf("%.60s: %v", stmt, err)
		}
	}
	if _, err := db.Exec(ctx, `INSERT INTO challenges VALUES ($1, 'dispatch', 'env-1', 'b-reserved', NULL, now(), $2, false)`, nonce, expires); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b, err := s.Build(ctx, "b-reserved")
	if err != nil || string(b.DispatchNonce) != string(nonce) || !b.DispatchExpires.Equal(expires) {
		t.Errorf("reserved build after the migration: %+v, %v; want nonce %q expiring %v", b, err, nonce, expires)
	}
	if b, err := s.Build(ctx, "b-dispatched"); err != nil || b.DispatchNonce != nil {
		t.Errorf("dispatched build after the migration: %+v, %v; want no dispatch nonce (none is needed)", b, err)
	}
}
