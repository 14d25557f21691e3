package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// query runs SELECT 1 on dsn.
func query(dsn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	var n int
	return c.QueryRow(ctx, "SELECT 1").Scan(&n)
}

func TestStartStop(t *testing.T) {
	s := Start(t)
	dsn := s.CreateDB(t, "pgtest_db")
	if err := query(dsn); err != nil {
		t.Fatalf("query the new database: %v", err)
	}
	s.Stop(t)
	if err := query(dsn); err == nil {
		t.Fatal("query after Stop: no error")
	}
	s.Start(t)
	if err := query(dsn); err != nil {
		t.Fatalf("query after Start: %v", err)
	}
}
