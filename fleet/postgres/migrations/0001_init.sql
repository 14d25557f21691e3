-- The fleet ledger (fleet.Store). Uniqueness is the database's: the
-- constraints are named because the store maps a violation of each to its
-- sentinel error (postgres.go).

CREATE TABLE challenges (
	nonce    bytea PRIMARY KEY,
	step     text NOT NULL CHECK (step IN ('admit', 'dispatch', 'complete', 'register')),
	env_key  text NOT NULL,
	build_id text NOT NULL,
	data     bytea,
	created  timestamptz NOT NULL,
	expires  timestamptz NOT NULL,
	used     boolean NOT NULL DEFAULT false
);
CREATE INDEX challenges_expires ON challenges (expires);

CREATE TABLE environments (
	key_digest  text PRIMARY KEY,
	-- NULL when the evidence names no boot; UNIQUE ignores NULLs.
	boot_id     text CONSTRAINT environments_boot_unique UNIQUE,
	ak_digest   text NOT NULL,
	backends    text[] NOT NULL,
	image       text NOT NULL,
	level       integer NOT NULL,
	admitted_at timestamptz NOT NULL,
	admission   bytea
);

-- One build per environment (env_key UNIQUE), one environment per build
-- (build_id PRIMARY KEY).
CREATE TABLE builds (
	build_id      text PRIMARY KEY,
	env_key       text NOT NULL
		CONSTRAINT builds_env_unique UNIQUE
		CONSTRAINT builds_env_fkey REFERENCES environments (key_digest),
	state         text NOT NULL CHECK (state IN ('reserved', 'dispatched', 'completed')),
	reserved_at   timestamptz NOT NULL,
	dispatched_at timestamptz,
	completed_at  timestamptz,
	dispatch      bytea,
	completion    bytea
);

CREATE TABLE aks (
	digest         text PRIMARY KEY,
	public_key     bytea NOT NULL,
	ek_cert_digest text NOT NULL,
	registered_at  timestamptz NOT NULL
);
