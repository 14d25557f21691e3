-- The fleet ledger (fleet.Store). Times are Unix microseconds (UTC), the
-- precision PostgreSQL keeps, so both stores return the same values.

CREATE TABLE challenges (
	nonce    BLOB PRIMARY KEY,
	step     TEXT NOT NULL CHECK (step IN ('admit', 'dispatch', 'complete', 'register')),
	env_key  TEXT NOT NULL,
	build_id TEXT NOT NULL,
	data     BLOB,
	created  INTEGER NOT NULL,
	expires  INTEGER NOT NULL,
	used     INTEGER NOT NULL DEFAULT 0 CHECK (used IN (0, 1))
) WITHOUT ROWID;
CREATE INDEX challenges_expires ON challenges (expires);

CREATE TABLE environments (
	key_digest  TEXT PRIMARY KEY,
	-- NULL when the evidence names no boot; UNIQUE ignores NULLs.
	boot_id     TEXT UNIQUE,
	ak_digest   TEXT NOT NULL,
	backends    TEXT NOT NULL, -- JSON array of strings
	image       TEXT NOT NULL,
	level       INTEGER NOT NULL,
	admitted_at INTEGER NOT NULL,
	admission   BLOB
) WITHOUT ROWID;

-- One build per environment (env_key UNIQUE), one environment per build
-- (build_id PRIMARY KEY).
CREATE TABLE builds (
	build_id      TEXT PRIMARY KEY,
	env_key       TEXT NOT NULL UNIQUE REFERENCES environments (key_digest),
	state         TEXT NOT NULL CHECK (state IN ('reserved', 'dispatched', 'completed')),
	reserved_at   INTEGER NOT NULL,
	dispatched_at INTEGER,
	completed_at  INTEGER,
	dispatch      BLOB,
	completion    BLOB
) WITHOUT ROWID;

CREATE TABLE aks (
	digest         TEXT PRIMARY KEY,
	public_key     BLOB NOT NULL,
	ek_cert_digest TEXT NOT NULL,
	registered_at  INTEGER NOT NULL
) WITHOUT ROWID;
