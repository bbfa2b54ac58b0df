-- Latency fold, third form: the histogram leaves `sumMap` (issue 17).
--
-- 0026 kept each minute's log-linear histogram as a `sumMap` state in
-- `latency_minute_hist`, and merging those states was the slowest part of
-- the latency report (docs/performance.md, "Latency histogram without
-- sumMap"). The same histogram is now plain rows of a SummingMergeTree,
-- one per minute x org x team x provider x model x metric x bucket:
--   metric    0 = duration, 1 = time-to-first-token (streamed calls only)
--   bucket    the bucket's lower bound in microseconds, computed with the
--             same integer arithmetic as 0026 (256 buckets per power of two:
--             [lo, lo + w) with w = max(1, 2^floor(log2 v) / 256))
--   calls     how many values fell in the bucket
--   total_us  their exact sum
-- Calls, errors and the kept values (exact percentiles of groups of at most
-- 1000 values) move to `latency_minute_calls`, `latency_minute_hist` without
-- its two `*_hist` columns: 18.16 cannot leave a column out of a view's
-- insert, and an empty `sumMap` state per row cost about what a full one
-- did (the rows are nearly one per call), so the histogram columns could
-- not simply stop being filled.
--
-- Order, so that no call is counted twice or missed across the switch
-- (like every migration, apply it before starting processors of this
-- version: nothing inserts into `calls` while it runs):
--   1. the two tables;
--   2. backfill each from `latency_minute_hist`, only into an empty table,
--      so applying the file again never counts twice: the states of the
--      kept columns are copied as they are (AggregatingMergeTree merges
--      them later), the histograms become bucket rows;
--   3. the views that feed them from `calls`;
--   4. drop the old view. `latency_minute_hist` itself is left as it is,
--      no longer written nor read: retention drops its partitions as they
--      age (`retention.latency_minute_hist_days`), and
--      `DROP TABLE latency_minute_hist` frees it at once. It stays so that
--      applying this file again after an interruption still finds the
--      table its backfills read.
CREATE TABLE IF NOT EXISTS latency_minute_calls
(
    minute DateTime('UTC'),
    org_id String,
    team_id String,
    provider LowCardinality(String),
    model LowCardinality(String),
    calls AggregateFunction(count),
    errors AggregateFunction(sum, UInt64),
    duration_sample AggregateFunction(groupArray(1000), UInt64),
    ttft_calls AggregateFunction(sum, UInt64),
    ttft_sample AggregateFunction(groupArrayIf(1000), UInt64, UInt8)
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, org_id, team_id, provider, model);

CREATE TABLE IF NOT EXISTS latency_minute_buckets
(
    minute DateTime('UTC'),
    org_id String,
    team_id String,
    provider LowCardinality(String),
    model LowCardinality(String),
    metric UInt8,
    bucket UInt64,
    calls UInt64,
    total_us UInt64
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, org_id, team_id, provider, model, metric, bucket);

INSERT INTO latency_minute_calls (minute, org_id, team_id, provider, model, calls, errors, duration_sample, ttft_calls, ttft_sample)
SELECT minute, org_id, team_id, provider, model, calls, errors, duration_sample, ttft_calls, ttft_sample
FROM latency_minute_hist
WHERE (SELECT count() FROM latency_minute_calls) = 0;

INSERT INTO latency_minute_buckets (minute, org_id, team_id, provider, model, metric, bucket, calls, total_us)
SELECT
    minute,
    org_id,
    team_id,
    provider,
    model,
    tupleElement(entry, 1) AS metric,
    tupleElement(entry, 2) AS bucket,
    tupleElement(entry, 3) AS calls,
    tupleElement(entry, 4) AS total_us
FROM
(
    SELECT
        minute,
        org_id,
        team_id,
        provider,
        model,
        sumMapMerge(duration_hist) AS d,
        sumMapMerge(ttft_hist) AS t
    FROM latency_minute_hist
    GROUP BY minute, org_id, team_id, provider, model
)
ARRAY JOIN arrayConcat(
    arrayMap((k, c, s) -> (toUInt8(0), k, c, s), tupleElement(d, 1), tupleElement(d, 2), tupleElement(d, 3)),
    arrayMap((k, c, s) -> (toUInt8(1), k, c, s), tupleElement(t, 1), tupleElement(t, 2), tupleElement(t, 3))) AS entry
WHERE (SELECT count() FROM latency_minute_buckets) = 0;

CREATE MATERIALIZED VIEW IF NOT EXISTS latency_minute_buckets_duration_mv TO latency_minute_buckets AS
SELECT
    toStartOfMinute(occurred_at) AS minute,
    org_id,
    team_id,
    provider,
    model,
    toUInt8(0) AS metric,
    intDiv(toUInt64(duration_ms) * 1000, greatest(intDiv(roundToExp2(toUInt64(duration_ms) * 1000), 256), toUInt64(1))) * greatest(intDiv(roundToExp2(toUInt64(duration_ms) * 1000), 256), toUInt64(1)) AS bucket,
    count() AS calls,
    sum(toUInt64(duration_ms) * 1000) AS total_us
FROM calls
WHERE kind IN ('ai.call.completed', 'ai.call.failed')
GROUP BY minute, org_id, team_id, provider, model, bucket;

CREATE MATERIALIZED VIEW IF NOT EXISTS latency_minute_buckets_ttft_mv TO latency_minute_buckets AS
SELECT
    toStartOfMinute(occurred_at) AS minute,
    org_id,
    team_id,
    provider,
    model,
    toUInt8(1) AS metric,
    intDiv(toUInt64(ttft_ms) * 1000, greatest(intDiv(roundToExp2(toUInt64(ttft_ms) * 1000), 256), toUInt64(1))) * greatest(intDiv(roundToExp2(toUInt64(ttft_ms) * 1000), 256), toUInt64(1)) AS bucket,
    count() AS calls,
    sum(toUInt64(ttft_ms) * 1000) AS total_us
FROM calls
WHERE kind IN ('ai.call.completed', 'ai.call.failed') AND has_ttft = 1
GROUP BY minute, org_id, team_id, provider, model, bucket;

CREATE MATERIALIZED VIEW IF NOT EXISTS latency_minute_calls_mv TO latency_minute_calls AS
SELECT
    toStartOfMinute(occurred_at) AS minute,
    org_id,
    team_id,
    provider,
    model,
    countState() AS calls,
    sumState(toUInt64(outcome != 'success')) AS errors,
    groupArrayState(1000)(toUInt64(duration_ms) * 1000) AS duration_sample,
    sumState(toUInt64(has_ttft)) AS ttft_calls,
    groupArrayIfState(1000)(toUInt64(ttft_ms) * 1000, has_ttft) AS ttft_sample
FROM calls
WHERE kind IN ('ai.call.completed', 'ai.call.failed')
GROUP BY minute, org_id, team_id, provider, model;

-- Last: until here the old view fed `latency_minute_hist`, which the
-- backfills above read.
DROP TABLE IF EXISTS latency_minute_hist_mv;
