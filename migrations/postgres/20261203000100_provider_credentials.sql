-- Provider credentials (the API keys Tollgate presents to OpenAI, Anthropic,
-- ...), sealed with AES-256-GCM under a master key that is never stored here
-- (docs/proxy.md, "Provider credentials"). The provider's name is the
-- cipher's associated data, so a ciphertext moved to another row does not
-- decrypt; key_id names the master key a row is sealed under.
CREATE TABLE provider_credentials (
    provider    text PRIMARY KEY,
    key_id      text NOT NULL,
    nonce       bytea NOT NULL CHECK (octet_length(nonce) = 12),
    -- ciphertext and its 16-byte tag
    ciphertext  bytea NOT NULL CHECK (octet_length(ciphertext) > 16),
    -- 'sha256:' and 16 hex digits of the credential's SHA-256: tells which
    -- credential is stored, gives nothing to use
    fingerprint text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    rotated_at  timestamptz,
    updated_by  text NOT NULL
);
