-- A rate limit is one org's, like a budget (20261206000100): two orgs may
-- each limit their own team, user or key of the same id, and each limit
-- counts only its org's calls. A team, user or key limit without an org
-- (`tollgate ratelimits set` without --org) stays one per scope and counts
-- the id's calls in every org. The shared pool's windows
-- (`rate_limit_windows.scope_id`) now hold the scope as `<org>/<id>` or
-- `*/<id>` (tollgate_control::rate_limits::tier_id); windows last minutes,
-- so the ones written before this change simply expire.
ALTER TABLE rate_limits DROP CONSTRAINT IF EXISTS rate_limits_scope_kind_scope_id_key;
CREATE UNIQUE INDEX IF NOT EXISTS rate_limits_org_scope
    ON rate_limits ((COALESCE(org_id, '')), scope_kind, scope_id);
