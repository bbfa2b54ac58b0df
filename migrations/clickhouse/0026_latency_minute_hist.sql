-- Latency fold, second form: replaces the t-digest states of 0002 (see
-- docs/architecture.md, "Latency percentiles", for why).
--
-- Per minute x org x team x provider x model, for duration and for
-- time-to-first-token, in microseconds (events carry whole milliseconds, so
-- today every value is ms * 1000; storing us keeps sub-millisecond input
-- possible without another rollup):
--   *_sample  the values themselves, at most 1000 per row. A report group of
--             at most 1000 calls is made only of rows that kept all their
--             values, so its percentiles are computed exactly from them.
--   *_hist    a log-linear histogram: key = the bucket's lower bound, with
--             the exact count and sum of the values in it. A bucket holds
--             [lo, lo + w) where w = max(1, 2^floor(log2 v) / 256): 256
--             buckets per power of two, so w <= lo / 256. Counts and sums
--             are integers, so merging parts in any order gives the same
--             state and a report never depends on the part layout.
-- The bucket key is computed with integer arithmetic only (roundToExp2 is
-- the power of two at or below v), so a value's bucket is the same on every
-- ClickHouse version. 256 and 1000 are restated in
-- processors/src/read_models/latency.rs (a unit test checks they agree).
CREATE TABLE IF NOT EXISTS latency_minute_hist
(
    minute DateTime('UTC'),
    org_id String,
    team_id String,
    provider LowCardinality(String),
    model LowCardinality(String),
    calls AggregateFunction(count),
    errors AggregateFunction(sum, UInt64),
    duration_sample AggregateFunction(groupArray(1000), UInt64),
    duration_hist AggregateFunction(sumMap, Array(UInt64), Array(UInt64), Array(UInt64)),
    ttft_calls AggregateFunction(sum, UInt64),
    ttft_sample AggregateFunction(groupArrayIf(1000), UInt64, UInt8),
    ttft_hist AggregateFunction(sumMap, Array(UInt64), Array(UInt64), Array(UInt64))
)
ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, org_id, team_id, provider, model);

-- Backfill from the calls stored before this migration, only into an empty
-- table, so applying the file again never counts twice. Like every
-- migration, apply it before starting processors of this version: calls
-- stored between this statement and the view below would be missing.
INSERT INTO latency_minute_hist
SELECT
    toStartOfMinute(occurred_at) AS minute,
    org_id,
    team_id,
    provider,
    model,
    countState() AS calls,
    sumState(toUInt64(outcome != 'success')) AS errors,
    groupArrayState(1000)(toUInt64(duration_ms) * 1000) AS duration_sample,
    sumMapState(
        arrayMap(v -> intDiv(v, greatest(intDiv(roundToExp2(v), 256), toUInt64(1))) * greatest(intDiv(roundToExp2(v), 256), toUInt64(1)), [toUInt64(duration_ms) * 1000]),
        [toUInt64(1)],
        [toUInt64(duration_ms) * 1000]) AS duration_hist,
    sumState(toUInt64(has_ttft)) AS ttft_calls,
    groupArrayIfState(1000)(toUInt64(ttft_ms) * 1000, has_ttft) AS ttft_sample,
    sumMapState(
        arrayMap(v -> intDiv(v, greatest(intDiv(roundToExp2(v), 256), toUInt64(1))) * greatest(intDiv(roundToExp2(v), 256), toUInt64(1)), if(has_ttft = 1, [toUInt64(ttft_ms) * 1000], emptyArrayUInt64())),
        if(has_ttft = 1, [toUInt64(1)], emptyArrayUInt64()),
        if(has_ttft = 1, [toUInt64(ttft_ms) * 1000], emptyArrayUInt64())) AS ttft_hist
FROM calls
WHERE kind IN ('ai.call.completed', 'ai.call.failed')
    AND (SELECT count() FROM latency_minute_hist) = 0
GROUP BY minute, org_id, team_id, provider, model;

CREATE MATERIALIZED VIEW IF NOT EXISTS latency_minute_hist_mv TO latency_minute_hist AS
SELECT
    toStartOfMinute(occurred_at) AS minute,
    org_id,
    team_id,
    provider,
    model,
    countState() AS calls,
    sumState(toUInt64(outcome != 'success')) AS errors,
    groupArrayState(1000)(toUInt64(duration_ms) * 1000) AS duration_sample,
    sumMapState(
        arrayMap(v -> intDiv(v, greatest(intDiv(roundToExp2(v), 256), toUInt64(1))) * greatest(intDiv(roundToExp2(v), 256), toUInt64(1)), [toUInt64(duration_ms) * 1000]),
        [toUInt64(1)],
        [toUInt64(duration_ms) * 1000]) AS duration_hist,
    sumState(toUInt64(has_ttft)) AS ttft_calls,
    groupArrayIfState(1000)(toUInt64(ttft_ms) * 1000, has_ttft) AS ttft_sample,
    sumMapState(
        arrayMap(v -> intDiv(v, greatest(intDiv(roundToExp2(v), 256), toUInt64(1))) * greatest(intDiv(roundToExp2(v), 256), toUInt64(1)), if(has_ttft = 1, [toUInt64(ttft_ms) * 1000], emptyArrayUInt64())),
        if(has_ttft = 1, [toUInt64(1)], emptyArrayUInt64()),
        if(has_ttft = 1, [toUInt64(ttft_ms) * 1000], emptyArrayUInt64())) AS ttft_hist
FROM calls
WHERE kind IN ('ai.call.completed', 'ai.call.failed')
GROUP BY minute, org_id, team_id, provider, model;

-- The t-digest rollup is no longer read; stop feeding it and free its
-- space. It is derived data: nothing is lost that `calls` does not hold.
DROP TABLE IF EXISTS latency_minute_mv;

DROP TABLE IF EXISTS latency_minute;
