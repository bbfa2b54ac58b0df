-- Failed password sign-ins of addresses that have no account, counted and
-- locked exactly as an account's (users.failed_attempts, locked_until), so
-- that five wrong guesses no longer tell which addresses have accounts: an
-- unknown address is locked after as many failures, with the same answer.
-- Keyed by the SHA-256 of the normalized address: what strangers type is
-- not kept.
CREATE TABLE IF NOT EXISTS sign_in_failures (
    email_sha256     BYTEA PRIMARY KEY,
    failed_attempts  INTEGER NOT NULL DEFAULT 0,
    locked_until     TIMESTAMPTZ
);
