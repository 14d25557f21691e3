package sqlstore

import (
	"errors"
	"fmt"
	"testing"
	"testing/fstest"
	"time"

	"github.com/attestd/attestd/fleet"
)

func TestParseName(t *testing.T) {
	for _, tc := range []struct {
		file    string
		version int
		name    string
		ok      bool
	}{
		{"0001_init.sql", 1, "init", true},
		{"0012_add_index_2.sql", 12, "add_index_2", true},
		{"10000_big.sql", 10000, "big", true},
		{"001_short.sql", 0, "", false},
		{"0000_zero.sql", 0, "", false},
		{"0001_.sql", 0, "", false},
		{"0001init.sql", 0, "", false},
		{"0001_init.SQL", 0, "", false},
		{"0001_Init.sql", 0, "", false},
		{"0001_in-it.sql", 0, "", false},
		{"00a1_init.sql", 0, "", false},
		{"+001_init.sql", 0, "", false},
		{"99999999999999999999_big.sql", 0, "", false},
	} {
		v, name, err := ParseName(tc.file)
		if (err == nil) != tc.ok || v != tc.version || name != tc.name {
			t.Errorf("ParseName(%q) = %d, %q, %v; want %d, %q, ok %v", tc.file, v, name, err, tc.version, tc.name, tc.ok)
		}
	}
}

// FuzzParseName checks that an accepted name prints back to a name that
// parses the same, and that its parts are what the format allows.
func FuzzParseName(f *testing.F) {
	for _, s := range []string{"0001_init.sql", "0002_more_2.sql", "10000_x.sql", "001_x.sql", "0001_.sql", "0001_A.sql", "١٢٣٤_x.sql"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, file string) {
		v, name, err := ParseName(file)
		if err != nil {
			return
		}
		if v < 1 || name == "" {
			t.Fatalf("ParseName(%q) = %d, %q", file, v, name)
		}
		v2, name2, err := ParseName(fmt.Sprintf("%04d_%s.sql", v, name))
		if err != nil || v2 != v || name2 != name {
			t.Fatalf("ParseName(%q) = %d, %q; printed back: %d, %q, %v", file, v, name, v2, name2, err)
		}
	})
}

func TestMigrations(t *testing.T) {
	ok := fstest.MapFS{
		"m/0001_init.sql": {Data: []byte("CREATE TABLE a (x int);")},
		"m/0002_b.sql":    {Data: []byte("CREATE TABLE b (x int);")},
	}
	ms, err := Migrations(ok, "m")
	if err != nil || len(ms) != 2 || ms[1].Version != 2 || ms[1].Name != "b" || ms[1].SQL != "CREATE TABLE b (x int);" {
		t.Errorf("Migrations = %+v, %v", ms, err)
	}
	for name, fsys := range map[string]fstest.MapFS{
		"gap":      {"m/0001_a.sql": {}, "m/0003_c.sql": {}},
		"repeat":   {"m/0001_a.sql": {}, "m/0001_b.sql": {}},
		"bad name": {"m/0001_a.sql": {}, "m/README": {}},
		"empty":    {"m/.keep": {}},
		"missing":  {},
	} {
		if _, err := Migrations(fsys, "m"); err == nil {
			t.Errorf("Migrations, %s: no error", name)
		}
	}
}

func TestPending(t *testing.T) {
	all := []Migration{{Version: 1}, {Version: 2}, {Version: 3}}
	for _, tc := range []struct {
		applied []int
		want    int // versions pending; -1: error
	}{
		{nil, 3},
		{[]int{1}, 2},
		{[]int{1, 2, 3}, 0},
		{[]int{1, 2, 3, 4}, -1}, // migrated by a newer binary
		{[]int{1, 3}, -1},
		{[]int{2}, -1},
	} {
		p, err := Pending(all, tc.applied)
		if tc.want < 0 && !errors.Is(err, ErrSchema) || tc.want >= 0 && (err != nil || len(p) != tc.want) {
			t.Errorf("Pending(%v) = %d pending, %v; want %d", tc.applied, len(p), err, tc.want)
		}
	}
}

func TestCheckChallenge(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := fleet.Challenge{Step: fleet.StepDispatch, BuildID: "b", Expires: now.Add(time.Second)}
	used := c
	used.Used = true
	for _, tc := range []struct {
		name    string
		c       fleet.Challenge
		step    fleet.Step
		buildID string
		now     time.Time
		want    error
	}{
		{"valid", c, fleet.StepDispatch, "b", now, nil},
		{"any build", c, fleet.StepDispatch, "", now, nil},
		{"step", c, fleet.StepAdmit, "", now, fleet.ErrNonceForeign},
		{"build", c, fleet.StepDispatch, "other", now, fleet.ErrNonceForeign},
		{"foreign before used", used, fleet.StepAdmit, "", now, fleet.ErrNonceForeign},
		{"used", used, fleet.StepDispatch, "b", now, fleet.ErrNonceUsed},
		{"at expiry", c, fleet.StepDispatch, "b", c.Expires, fleet.ErrNonceExpired},
		{"just before expiry", c, fleet.StepDispatch, "b", c.Expires.Add(-time.Nanosecond), nil},
	} {
		err := CheckChallenge(&tc.c, tc.step, tc.buildID, tc.now)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestWrap(t *testing.T) {
	if err := Wrap("x", nil); err != nil {
		t.Errorf("Wrap(nil) = %v", err)
	}
	err := Wrap("admit", fmt.Errorf("inner: %w", fleet.ErrAdmitted))
	if !errors.Is(err, fleet.ErrAdmitted) || errors.Is(err, fleet.ErrUnavailable) {
		t.Errorf("Wrap(a sentinel) = %v: want it, not ErrUnavailable", err)
	}
	cause := errors.New("connection refused")
	err = Wrap("admit", cause)
	if !errors.Is(err, fleet.ErrUnavailable) || !errors.Is(err, cause) {
		t.Errorf("Wrap(a database error) = %v: want ErrUnavailable and the cause", err)
	}
}
