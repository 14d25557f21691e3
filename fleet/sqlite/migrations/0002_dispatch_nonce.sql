-- The nonce of a build's dispatch challenge, kept with the build: Build
-- reads the challenge with it (a retried Dispatch answers with the nonce
-- the first one gave). Builds reserved before this migration get theirs
-- from the challenges; the others need none.
ALTER TABLE builds ADD COLUMN dispatch_nonce BLOB;
UPDATE builds SET dispatch_nonce = (
	SELECT c.nonce FROM challenges c
	WHERE c.step = 'dispatch' AND c.build_id = builds.build_id AND c.env_key = builds.env_key
	ORDER BY c.created LIMIT 1)
WHERE state = 'reserved';
