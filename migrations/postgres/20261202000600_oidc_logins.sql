-- Single sign-on logins in progress (ingest/control/src/sso_logins.rs,
-- docs/sign-in-sso.md): what `GET /auth/oidc/start` must remember until the
-- browser comes back to `GET /auth/oidc/callback` — the PKCE verifier, the
-- nonce the ID token must carry and where to go afterwards. Kept on the
-- server (not in a cookie) so any replica can finish a login another one
-- started. The key is a SHA-256 of the `state` parameter, which only the
-- browser's URL carries. A row is used once: `used_at` is set by the
-- callback that takes it, so a replayed callback is refused by name.
CREATE TABLE IF NOT EXISTS oidc_logins (
    state_hash    BYTEA PRIMARY KEY,
    pkce_verifier TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    next          TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at    TIMESTAMPTZ NOT NULL,
    used_at       TIMESTAMPTZ
);

CREATE INDEX IF NOT EXISTS oidc_logins_expires_at ON oidc_logins (expires_at);
