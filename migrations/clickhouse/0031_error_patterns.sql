-- The error-patterns fold: ClickHouse views over the inserts into `calls`
-- (like the latency and cost rollups), so the counts are exactly-once with
-- the calls themselves. Only provider failures count (`ai.call.failed`):
-- a gate's refusal (`ai.call.blocked`) is Tollgate's decision, not a
-- failure pattern. docs/error-patterns.md explains each column.

-- Per minute x signature x tenant x key x provider x model:
--   failures         failed attempts with this signature
--   calls_recovered  calls whose first failure had this signature and whose
--                    last attempt succeeded
--   calls_failed     calls whose first failure (or only attempt) had this
--                    signature and whose last attempt failed
-- Two views feed it (failures by the attempt's own signature, endings by
-- the call's first failure); read it with sum() ... GROUP BY.
CREATE TABLE IF NOT EXISTS error_patterns_minute
(
    minute DateTime('UTC'),
    signature UInt64,
    org_id String,
    team_id String,
    api_key_id String,
    provider String,
    model String,
    failures UInt64,
    calls_recovered UInt64,
    calls_failed UInt64
)
ENGINE = SummingMergeTree((failures, calls_recovered, calls_failed))
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, signature, org_id, team_id, api_key_id, provider, model);

CREATE MATERIALIZED VIEW IF NOT EXISTS error_patterns_failures_mv TO error_patterns_minute AS
SELECT
    toStartOfMinute(occurred_at) AS minute,
    error_signature AS signature,
    org_id,
    team_id,
    api_key_id,
    CAST(provider AS String) AS provider,
    CAST(model AS String) AS model,
    count() AS failures,
    toUInt64(0) AS calls_recovered,
    toUInt64(0) AS calls_failed
FROM calls
WHERE kind = 'ai.call.failed' AND error_signature != 0
GROUP BY minute, signature, org_id, team_id, api_key_id, provider, model;

CREATE MATERIALIZED VIEW IF NOT EXISTS error_patterns_endings_mv TO error_patterns_minute AS
SELECT
    toStartOfMinute(occurred_at) AS minute,
    if(recovery_from_signature != 0, recovery_from_signature, error_signature) AS signature,
    org_id,
    team_id,
    api_key_id,
    if(recovery_from_signature != 0, recovery_from_provider, CAST(provider AS String)) AS provider,
    if(recovery_from_signature != 0, recovery_from_model, CAST(model AS String)) AS model,
    toUInt64(0) AS failures,
    toUInt64(sum(outcome = 'success')) AS calls_recovered,
    toUInt64(sum(outcome != 'success')) AS calls_failed
FROM calls
WHERE last_attempt = 1
    AND kind IN ('ai.call.completed', 'ai.call.failed')
    AND (recovery_from_signature != 0 OR error_signature != 0)
GROUP BY minute, signature, org_id, team_id, api_key_id, provider, model;

-- One row per pattern (and spelling of its class): template, first and
-- last seen. Read with minMerge/maxMerge ... GROUP BY signature.
CREATE TABLE IF NOT EXISTS error_pattern_catalog
(
    signature UInt64,
    provider String,
    http_status UInt16,
    error_type String,
    template String,
    first_seen AggregateFunction(min, DateTime('UTC')),
    last_seen AggregateFunction(max, DateTime('UTC'))
)
ENGINE = AggregatingMergeTree()
ORDER BY (signature, provider, http_status, error_type, template);

CREATE MATERIALIZED VIEW IF NOT EXISTS error_pattern_catalog_mv TO error_pattern_catalog AS
SELECT
    error_signature AS signature,
    CAST(provider AS String) AS provider,
    http_status,
    error_type,
    error_template AS template,
    minState(occurred_at) AS first_seen,
    maxState(occurred_at) AS last_seen
FROM calls
WHERE kind = 'ai.call.failed' AND error_signature != 0
GROUP BY signature, provider, http_status, error_type, template;

-- Per minute x (failed provider, model, signature) x strategy x target:
-- what recovery attempts did and cost. Added latency of an attempt is its
-- wait plus its duration; added cost is its own cost.
CREATE TABLE IF NOT EXISTS error_recovery_minute
(
    minute DateTime('UTC'),
    from_signature UInt64,
    from_provider String,
    from_model String,
    strategy String,
    provider String,
    model String,
    org_id String,
    team_id String,
    attempts UInt64,
    successes UInt64,
    wait_ms UInt64,
    duration_ms UInt64,
    cost Decimal(38, 12)
)
ENGINE = SummingMergeTree((attempts, successes, wait_ms, duration_ms, cost))
PARTITION BY toYYYYMM(minute)
ORDER BY (from_signature, from_provider, from_model, strategy, provider, model, minute, org_id, team_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS error_recovery_minute_mv TO error_recovery_minute AS
SELECT
    toStartOfMinute(occurred_at) AS minute,
    recovery_from_signature AS from_signature,
    recovery_from_provider AS from_provider,
    recovery_from_model AS from_model,
    CAST(recovery_strategy AS String) AS strategy,
    CAST(provider AS String) AS provider,
    CAST(model AS String) AS model,
    org_id,
    team_id,
    count() AS attempts,
    toUInt64(sum(outcome = 'success')) AS successes,
    sum(toUInt64(recovery_wait_ms)) AS wait_ms,
    sum(toUInt64(duration_ms)) AS duration_ms,
    sum(cost) AS cost
FROM calls
WHERE recovery_from_signature != 0 AND kind IN ('ai.call.completed', 'ai.call.failed')
GROUP BY minute, from_signature, from_provider, from_model, strategy, provider, model, org_id, team_id;

-- Learned merges of signatures (docs/error-patterns.md, "learned merges"):
-- written by the pattern learner, read by every replica and every report.
CREATE TABLE IF NOT EXISTS error_pattern_merges
(
    from_signature UInt64,
    into_signature UInt64,
    template String,
    learned_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree(learned_at)
ORDER BY (from_signature, into_signature);

-- Patterns already announced as `admin.error_pattern.new` events.
CREATE TABLE IF NOT EXISTS error_pattern_announced
(
    signature UInt64,
    announced_at DateTime('UTC'),
    event_id String
)
ENGINE = ReplacingMergeTree(announced_at)
ORDER BY signature;

-- Every breaker transition (model '' = the provider's own breaker).
CREATE TABLE IF NOT EXISTS breaker_transitions
(
    at DateTime('UTC'),
    at_ms UInt64,
    provider String,
    model String,
    from_state String,
    to_state String,
    generation UInt64,
    calls UInt64,
    failures UInt64,
    slow UInt64,
    signature UInt64,
    reason String,
    event_id String
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(at)
ORDER BY (provider, model, at_ms);
