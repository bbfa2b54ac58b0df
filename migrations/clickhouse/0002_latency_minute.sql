-- Latency fold: per minute x org x team x provider x model, quantile states of
-- duration and time-to-first-token, plus call and error counts. Only terminal
-- call events (completed, failed) are folded; blocked calls never reached a
-- provider and lifecycle events would double count.
CREATE TABLE IF NOT EXISTS latency_minute
(
    minute DateTime('UTC'),
    org_id String,
    team_id String,
    provider LowCardinality(String),
    model LowCardinality(String),
    calls AggregateFunction(count),
    errors AggregateFunction(sum, UInt64),
    duration_q AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt32),
    ttft_q AggregateFunction(quantilesTDigestIf(0.5, 0.95, 0.99), UInt32, UInt8),
    ttft_calls AggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, org_id, team_id, provider, model);

CREATE MATERIALIZED VIEW IF NOT EXISTS latency_minute_mv TO latency_minute AS
SELECT
    toStartOfMinute(occurred_at) AS minute,
    org_id,
    team_id,
    provider,
    model,
    countState() AS calls,
    sumState(toUInt64(outcome != 'success')) AS errors,
    quantilesTDigestState(0.5, 0.95, 0.99)(duration_ms) AS duration_q,
    quantilesTDigestIfState(0.5, 0.95, 0.99)(ttft_ms, has_ttft) AS ttft_q,
    sumState(toUInt64(has_ttft)) AS ttft_calls
FROM calls
WHERE kind IN ('ai.call.completed', 'ai.call.failed')
GROUP BY minute, org_id, team_id, provider, model;
