-- People: accounts, what they may do in which org, their sessions and the
-- invitations that create them (docs/sign-in.md). Programs keep using API
-- keys (api_keys); a key's role and org scope mean what a grant does.

CREATE TABLE IF NOT EXISTS users (
    id               UUID PRIMARY KEY,
    -- Stored lowercased: one person, one address.
    email            TEXT NOT NULL UNIQUE CHECK (email = lower(email) AND email <> ''),
    display_name     TEXT NOT NULL,
    -- argon2id in PHC format; NULL for people who only sign in through SSO.
    password_hash    TEXT,
    sso_issuer       TEXT,
    sso_subject      TEXT,
    -- Failed password attempts since the last success; at the limit the
    -- account is locked until locked_until.
    failed_attempts  INTEGER NOT NULL DEFAULT 0,
    locked_until     TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    disabled_at      TIMESTAMPTZ,
    UNIQUE (sso_issuer, sso_subject)
);

-- A role in one org, or in every org when org_id is NULL.
CREATE TABLE IF NOT EXISTS user_grants (
    user_id     UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id      TEXT,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'finance', 'sre', 'compliance', 'viewer')),
    granted_by  TEXT NOT NULL,
    granted_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS user_grants_unique
    ON user_grants (user_id, coalesce(org_id, ''), role);

-- Only the SHA-256 of a session's token is stored: a leaked table does not
-- sign anyone in.
CREATE TABLE IF NOT EXISTS sessions (
    token_hash    BYTEA PRIMARY KEY,
    user_id       UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf          TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at    TIMESTAMPTZ NOT NULL,
    last_seen_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id);

CREATE TABLE IF NOT EXISTS invitations (
    token_hash   BYTEA PRIMARY KEY,
    email        TEXT NOT NULL CHECK (email = lower(email) AND email <> ''),
    org_id       TEXT,
    role         TEXT NOT NULL CHECK (role IN ('admin', 'finance', 'sre', 'compliance', 'viewer')),
    created_by   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL,
    accepted_at  TIMESTAMPTZ
);

-- Budgets belong to an org, so an org's people see only theirs. Budgets of
-- an org subject are that org's; older team/user/key budgets stay without
-- one (only people of every org see them) until set again with an org.
ALTER TABLE budgets ADD COLUMN IF NOT EXISTS org_id TEXT;
UPDATE budgets SET org_id = subject_id WHERE subject_kind = 'org' AND org_id IS NULL;
