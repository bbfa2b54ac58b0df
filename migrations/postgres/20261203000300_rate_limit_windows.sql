-- The shared capacity pool of the rate-limit tiers (docs/proxy.md,
-- "Rate-limit tiers"; docs/cost.md, "Shares among proxies").
--
-- One row per limited scope (key, user, team or org) and UTC minute
-- (`minute` = Unix seconds / 60, on the claiming proxy's clock): how much of
-- the requests and tokens limits the proxies have claimed in that window.
-- A proxy claims a block with one INSERT ... ON CONFLICT DO UPDATE that
-- grants min(block, limit - claimed), so the claims never sum above the
-- limit; `last_*_grant` is what the statement that wrote the row version
-- granted (RETURNING sees only the new row). Windows a few minutes old are
-- deleted by the claimers.
CREATE TABLE IF NOT EXISTS rate_limit_windows (
    scope_kind          TEXT NOT NULL CHECK (scope_kind IN ('org', 'team', 'user', 'key')),
    scope_id            TEXT NOT NULL,
    minute              BIGINT NOT NULL,
    requests_claimed    BIGINT NOT NULL DEFAULT 0 CHECK (requests_claimed >= 0),
    tokens_claimed      BIGINT NOT NULL DEFAULT 0 CHECK (tokens_claimed >= 0),
    last_requests_grant BIGINT NOT NULL DEFAULT 0,
    last_tokens_grant   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (scope_kind, scope_id, minute)
);
CREATE INDEX IF NOT EXISTS rate_limit_windows_minute ON rate_limit_windows (minute);
