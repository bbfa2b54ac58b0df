-- Many proxies (docs/cost.md, "Shares among proxies"; docs/deployment-proxy.md).
--
-- proxy_members: every running proxy holds a row it renews (a lease on the
-- database's clock, like `leases`, but one per member: `leases` grants one
-- name to one holder, while here every live row counts). The live rows are
-- the proxies that split each hard budget's remaining amount and each rate
-- limit. `seq` orders joins (a new one on every join, also after a member's
-- row expired); `seen_seq` is the highest join a member has applied to its
-- own share: a newcomer takes a share only once every other live member
-- has seen it, so the shares in force never sum above 1.
CREATE SEQUENCE IF NOT EXISTS proxy_members_seq;
CREATE TABLE IF NOT EXISTS proxy_members (
    holder     TEXT PRIMARY KEY,
    seq        BIGINT NOT NULL,
    seen_seq   BIGINT NOT NULL DEFAULT 0,
    joined_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);

-- Rate-limit tiers: requests and tokens per minute for one key, user, team
-- or org (`tollgate ratelimits set`), enforced by every proxy on its share
-- of the limit (docs/proxy.md, "Rate-limit tiers").
CREATE TABLE IF NOT EXISTS rate_limits (
    id                  BIGSERIAL PRIMARY KEY,
    scope_kind          TEXT NOT NULL CHECK (scope_kind IN ('org', 'team', 'user', 'key')),
    scope_id            TEXT NOT NULL,
    requests_per_minute BIGINT CHECK (requests_per_minute > 0),
    tokens_per_minute   BIGINT CHECK (tokens_per_minute > 0),
    org_id              TEXT,
    updated_by          TEXT NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (requests_per_minute IS NOT NULL OR tokens_per_minute IS NOT NULL),
    UNIQUE (scope_kind, scope_id)
);
