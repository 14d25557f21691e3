-- The nonce of a build's dispatch challenge, kept with the build: Build
-- reads the challenge with it (a retried Dispatch answers with the nonce
-- the first one gave). Builds reserved before this migration get theirs
-- from the challenges; the others need none.
ALTER TABLE builds ADD COLUMN dispatch_nonce bytea;
UPDATE builds b SET dispatch_nonce = c.nonce
FROM challenges c
WHERE b.state = 'reserved' AND c.step = 'dispatch' AND c.build_id = b.build_id AND c.env_key = b.env_key;
