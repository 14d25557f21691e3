package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// query runs SELECT 1 on dsn.
func query(dsn string) error {
	_, err := show(dsn, "server_version")
	return err
}

// show returns a server setting.
func show(dsn, setting string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer c.Close(ctx)
	var v string
	err = c.QueryRow(ctx, "SHOW "+setting).Scan(&v)
	return v, err
}

// wantSetting fails the test unless the server's setting is want.
func wantSetting(t *testing.T, dsn, setting, want string) {
	t.Helper()
	if v, err := show(dsn, setting); err != nil || v != want {
		t.Errorf("SHOW %s: %q, %v; want %q", setting, v, err, want)
	}
}

func TestStartStop(t *testing.T) {
	s := Start(t)
	dsn := s.CreateDB(t, "pgtest_db")
	if err := query(dsn); err != nil {
		t.Fatalf("query the new database: %v", err)
	}
	wantSetting(t, dsn, "listen_addresses", "") // no TCP
	wantSetting(t, dsn, "fsync", "off")
	s.Stop(t)
	if err := query(dsn); err == nil {
		t.Fatal("query after Stop: no error")
	}
	s.Start(t)
	if err := query(dsn); err != nil {
		t.Fatalf("query after Start: %v", err)
	}
}

func TestDurable(t *testing.T) {
	s := StartWith(t, Options{Durable: true})
	wantSetting(t, s.DSN("postgres"), "fsync", "on")
}
