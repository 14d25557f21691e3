package sqlstore

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

// ErrSchema is a database schema this binary cannot migrate (a newer one,
// or one migrated by hand); Wrap passes it through rather than calling it
// ErrUnavailable.
var ErrSchema = errors.New("database schema")

// Migration is one versioned schema change, read from a file named
// VERSION_NAME.sql (e.g. 0001_init.sql). Versions start at 1 and have no
// gaps; a database records the versions it has applied.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// ParseName parses a migration file name: four or more decimal digits, an
// underscore, a name of lower-case letters, digits and underscores, and
// ".sql".
func ParseName(file string) (version int, name string, err error) {
	base, ok := strings.CutSuffix(file, ".sql")
	digits, name, found := strings.Cut(base, "_")
	if !ok || !found || len(digits) < 4 || name == "" {
		return 0, "", fmt.Errorf("migration file %q: want VERSION_NAME.sql, e.g. 0001_init.sql", file)
	}
	for _, r := range digits {
		if r < '0' || r > '9' {
			return 0, "", fmt.Errorf("migration file %q: version %q is not decimal", file, digits)
		}
	}
	for _, r := range name {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '_' {
			return 0, "", fmt.Errorf("migration file %q: name %q has %q (allowed: a-z, 0-9, _)", file, name, r)
		}
	}
	v, err := strconv.Atoi(digits)
	if err != nil || v < 1 {
		return 0, "", fmt.Errorf("migration file %q: version %q out of range", file, digits)
	}
	return v, name, nil
}

// Migrations reads the .sql files in dir of fsys, in version order, and
// checks the versions run 1, 2, 3… without gaps or repeats.
func Migrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var ms []Migration
	for _, e := range entries { // ReadDir sorts by name: zero-padded versions sort in order.
		v, name, err := ParseName(e.Name())
		if err != nil {
			return nil, err
		}
		if v != len(ms)+1 {
			return nil, fmt.Errorf("migration file %q: version %d, want %d (versions run 1, 2, 3… without gaps)", e.Name(), v, len(ms)+1)
		}
		sql, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration: %w", err)
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(sql)})
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("no migrations in %q", dir)
	}
	return ms, nil
}

// Pending returns the migrations a database that has applied the versions
// in applied (ascending) still needs. A database with versions this binary
// does not know, or with gaps, is an error: it was migrated by a newer
// binary, or by hand.
func Pending(all []Migration, applied []int) ([]Migration, error) {
	for i, v := range applied {
		if v != i+1 {
			return nil, fmt.Errorf("%w: versions %v applied, want 1…%d in order", ErrSchema, applied, len(applied))
		}
	}
	if len(applied) > len(all) {
		return nil, fmt.Errorf("%w: version %d is newer than this binary's %d", ErrSchema, len(applied), len(all))
	}
	return all[len(applied):], nil
}
