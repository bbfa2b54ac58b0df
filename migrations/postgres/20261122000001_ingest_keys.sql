-- API keys for the ingest API (and later the report API). Only a SHA-256 of
-- the secret is stored; the plaintext is shown once, at creation.
CREATE TABLE IF NOT EXISTS api_keys (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    prefix      TEXT NOT NULL UNIQUE,
    secret_hash BYTEA NOT NULL,
    org_id      TEXT,
    role        TEXT NOT NULL DEFAULT 'ingest',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);
