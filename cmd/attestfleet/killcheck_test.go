package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/attestd/attestd/fleet"
	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
)

// The checks of TestKillReplicas once the replicas were killed and started
// again: the ledger in PostgreSQL, and what the replicas say of it.

// checkLedger reads the ledger from PostgreSQL: the schema migrated once
// and no advisory lock left; one build per environment; each build at a
// whole step with its nonces used accordingly; every admission nonce used
// by one environment; and every answer the client got recorded as given.
func (f *killFleet) checkLedger(t *testing.T, flows []*flow) {
	t.Helper()
	ctx := context.Background()
	db, err := pgx.Connect(ctx, f.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	count := func(what, sql string, args ...any) int {
		t.Helper()
		var n int
		if err := db.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return n
	}
	migrations, err := os.ReadDir("../../fleet/postgres/migrations")
	if err != nil {
		t.Fatal(err)
	}
	if n := count("migrations", `SELECT count(DISTINCT version) FROM schema_migrations`); n != len(migrations) ||
		count("migration rows", `SELECT count(*) FROM schema_migrations`) != n {
		t.Errorf("schema_migrations: %d versions, want each of the %d migrations once", n, len(migrations))
	}
	if n := count("advisory locks", `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'`); n != 0 {
		t.Errorf("%d advisory locks held after the replicas started", n)
	}
	if n := count("shared environments", `SELECT count(*) FROM (SELECT env_key FROM builds GROUP BY env_key HAVING count(*) > 1) s`); n != 0 {
		t.Errorf("%d environments hold more than one build", n)
	}
	// A whole step: the columns of the state, no others; the dispatch
	// nonce (one per build, the one the build names) used once
	// dispatched; one completion nonce used once completed (every flow
	// completes with one).
	for _, c := range []struct{ what, sql string }{
		{"builds with the columns of another state", `SELECT count(*) FROM builds WHERE NOT CASE state
			WHEN 'reserved' THEN dispatched_at IS NULL AND dispatch IS NULL AND completed_at IS NULL AND completion IS NULL
			WHEN 'dispatched' THEN dispatched_at IS NOT NULL AND dispatch IS NOT NULL AND completed_at IS NULL AND completion IS NULL
			ELSE dispatched_at IS NOT NULL AND dispatch IS NOT NULL AND completed_at IS NOT NULL AND completion IS NOT NULL END`},
		{"builds without exactly one dispatch nonce, theirs, used iff dispatched", `SELECT count(*) FROM builds b WHERE
			(SELECT count(*) FROM challenges c WHERE c.nonce = b.dispatch_nonce AND c.step = 'dispatch' AND c.build_id = b.build_id
				AND c.env_key = b.env_key AND c.used = (b.state <> 'reserved')) <> 1
			OR (SELECT count(*) FROM challenges c WHERE c.step = 'dispatch' AND c.build_id = b.build_id) <> 1`},
		{"builds whose used completion nonces are not one iff completed", `SELECT count(*) FROM builds b WHERE
			(SELECT count(*) FROM challenges c WHERE c.step = 'complete' AND c.build_id = b.build_id AND c.used)
				<> CASE b.state WHEN 'completed' THEN 1 ELSE 0 END`},
		{"dispatch or completion nonces of no build", `SELECT count(*) FROM challenges c WHERE c.step IN ('dispatch', 'complete')
			AND NOT EXISTS (SELECT FROM builds b WHERE b.build_id = c.build_id AND b.env_key = c.env_key)`},
	} {
		if n := count(c.what, c.sql); n != 0 {
			t.Errorf("%d %s", n, c.what)
		}
	}
	var states []string
	for _, st := range []fleet.BuildState{fleet.BuildReserved, fleet.BuildDispatched, fleet.BuildCompleted} {
		states = append(states, fmt.Sprintf("%d %s", count("builds "+string(st), `SELECT count(*) FROM builds WHERE state = $1`, string(st)), st))
	}
	t.Logf("the ledger: %d environments; builds: %s", count("environments", `SELECT count(*) FROM environments`), strings.Join(states, ", "))
	if used, envs := count("used admission nonces", `SELECT count(*) FROM challenges WHERE step = 'admit' AND used`),
		count("environments", `SELECT count(*) FROM environments`); used != envs {
		t.Errorf("%d admission nonces used for %d environments, want one each", used, envs)
	}
	for _, fl := range flows {
		if err := f.checkFlow(ctx, db, fl); err != nil {
			t.Errorf("environment %d (%s): %v", fl.n, fl.key, err)
		}
	}
}

// checkFlow checks that the ledger holds what fl's calls did, as their
// answers said.
func (f *killFleet) checkFlow(ctx context.Context, db *pgx.Conn, fl *flow) error {
	for _, n := range fl.nonces {
		var ok bool
		if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT FROM challenges WHERE nonce = $1)`, n).Scan(&ok); err != nil || !ok {
			return fmt.Errorf("nonce %x the client was given is not recorded (%v)", n, err)
		}
	}
	var admission []byte
	err := db.QueryRow(ctx, `SELECT admission FROM environments WHERE key_digest = $1`, fl.key).Scan(&admission)
	switch {
	case errors.Is(err, pgx.ErrNoRows) && !fl.admitted:
		return nil
	case err != nil:
		return fmt.Errorf("environment (admitted: %v): %w", fl.admitted, err)
	case !fl.admitted:
		return errors.New("recorded, but the client saw no admission")
	case fl.admission != nil && !bytes.Equal(admission, fl.admission):
		return errors.New("the recorded admission SVR is not the one the client got")
	}
	rows, _ := db.Query(ctx, `SELECT build_id, state, dispatch, completion FROM builds WHERE env_key = $1`, fl.key)
	type row struct {
		BuildID, State       string
		Dispatch, Completion []byte
	}
	builds, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		return err
	}
	if fl.holder == "" {
		if len(builds) != 0 {
			return fmt.Errorf("builds %+v, but no dispatch held the environment", builds)
		}
		return nil
	}
	if len(builds) != 1 || builds[0].BuildID != fl.holder {
		return fmt.Errorf("builds %+v, want the one build %s", builds, fl.holder)
	}
	b := builds[0]
	want := fleet.BuildReserved
	switch {
	case fl.completed:
		want = fleet.BuildCompleted
	case fl.confirmed:
		want = fleet.BuildDispatched
	}
	switch {
	case b.State != string(want):
		return fmt.Errorf("build %s is %s; the client saw it %s", b.BuildID, b.State, want)
	case fl.dispatch != nil && !bytes.Equal(b.Dispatch, fl.dispatch):
		return fmt.Errorf("build %s: the recorded dispatch SVR is not the one the client got", b.BuildID)
	case fl.vsa != nil && !bytes.Equal(b.Completion, fl.vsa):
		return fmt.Errorf("build %s: the recorded VSA is not the one the client got", b.BuildID)
	}
	// The client got the build's one dispatch nonce, the first time or
	// from a retry. A retry's answer created before the retry began was
	// stored by an attempt that died with its replica: it took effect.
	var created time.Time
	if err := db.QueryRow(ctx, `SELECT c.created FROM builds b JOIN challenges c ON c.nonce = b.dispatch_nonce
		WHERE b.build_id = $1 AND c.nonce = $2 AND c.step = 'dispatch' AND c.build_id = b.build_id`,
		fl.holder, fl.holderNonce).Scan(&created); err != nil {
		return fmt.Errorf("the dispatch nonce the client got is not build %s's (%v)", fl.holder, err)
	}
	if !fl.holderAsked.IsZero() && created.Before(fl.holderAsked.Truncate(time.Microsecond)) {
		f.tookEffect.Add(1)
		f.redispatched.Add(1)
	}
	return nil
}

// checkReplicas asks the replicas (each environment on another) for every
// environment and candidate build: they say what the ledger holds, and a
// candidate that lost the race was never recorded.
func (f *killFleet) checkReplicas(t *testing.T, flows []*flow) {
	t.Helper()
	ctx := context.Background()
	for _, fl := range flows {
		if !fl.admitted {
			continue
		}
		c, _ := f.procs[fl.n%len(f.procs)].current()
		e, err := c.GetEnvironment(ctx, &fleetv1.GetEnvironmentRequest{EnvKey: fl.key})
		if err != nil || e.GetKeyDigest() != fl.key || len(e.GetAdmission()) == 0 {
			t.Errorf("environment %d: GetEnvironment: %v, %v", fl.n, e, err)
		}
		for _, id := range fl.candidates {
			b, err := c.GetBuild(ctx, &fleetv1.GetBuildRequest{BuildId: id})
			switch {
			case id != fl.holder && (status.Code(err) != codes.NotFound || fleetv1.Reason(err) != string(fleet.ReasonBuildUnknown)):
				t.Errorf("environment %d: the losing dispatch's build %s: %v, %v; want BUILD_UNKNOWN", fl.n, id, b, err)
			case id == fl.holder && (err != nil || b.GetEnvKey() != fl.key || fl.completed && b.GetState() != string(fleet.BuildCompleted)):
				t.Errorf("environment %d: build %s: %v, %v", fl.n, id, b, err)
			}
		}
	}
}
