-- Cost per tag: day (UTC) x org x team x tag key x tag value x provider x
-- model x price version, with the same signed sums as `cost_daily` (0021).
-- A call with n tags contributes to n rows (one per key, and a call has each
-- key at most once: tags are a map), a call without tags to none: per key,
-- the rollup sums to the spend of the calls that carry that key, not to the
-- total spend. User and key are left out (tags times users would multiply
-- the rollup's size; per-user tag spend can be read from `calls`).
--
-- Repricing stays consistent: `cost_adjustments` rows carry the call's tags
-- (copied by `tollgate reprice`), and a second view folds them in here.

-- 18.16 has no ADD COLUMN IF NOT EXISTS: one statement adds both columns,
-- and the runner treats "already exists" as applied (see 0020).
ALTER TABLE cost_adjustments
    ADD COLUMN tag_keys Array(String),
    ADD COLUMN tag_values Array(String);

-- Ordered by tag key first: every read names exactly one key.
CREATE TABLE IF NOT EXISTS cost_daily_tags
(
    day Date,
    org_id String,
    team_id String,
    tag_key String,
    tag_value String,
    provider LowCardinality(String),
    model LowCardinality(String),
    price_version UInt64,
    calls Int64,
    unpriced_calls Int64,
    input_tokens Int64,
    output_tokens Int64,
    cached_input_tokens Int64,
    cache_write_tokens Int64,
    reasoning_tokens Int64,
    images Int64,
    audio_ms Int64,
    cost Decimal(38, 12)
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (tag_key, day, org_id, team_id, tag_value, provider, model, price_version);

-- Backfill from the calls and adjustments stored before this migration
-- (adjustments posted before it have no tags of their own: they take their
-- call's). Only into an empty table, so applying the file again (it is not
-- transactional) never counts twice. Like every migration, apply it before
-- starting processors of this version: calls stored between this statement
-- and the views below would be missing from the tag rollup.
INSERT INTO cost_daily_tags
SELECT
    day,
    org_id,
    team_id,
    tag_key,
    tag_value,
    provider,
    model,
    price_version,
    sum(n) AS calls,
    sum(unpriced) AS unpriced_calls,
    sum(input) AS input_tokens,
    sum(output) AS output_tokens,
    sum(cached) AS cached_input_tokens,
    sum(cache_write) AS cache_write_tokens,
    sum(reasoning) AS reasoning_tokens,
    sum(image_count) AS images,
    sum(audio) AS audio_ms,
    sum(c) AS cost
FROM
(
    SELECT
        toDate(occurred_at, 'UTC') AS day,
        org_id,
        team_id,
        tag_keys AS keys,
        tag_values AS vals,
        toString(provider) AS provider,
        toString(model) AS model,
        price_version,
        toInt64(1) AS n,
        toInt64(1 - priced) AS unpriced,
        toInt64(input_tokens) AS input,
        toInt64(output_tokens) AS output,
        toInt64(cached_input_tokens) AS cached,
        toInt64(cache_write_tokens) AS cache_write,
        toInt64(reasoning_tokens) AS reasoning,
        toInt64(images) AS image_count,
        toInt64(audio_ms) AS audio,
        cost AS c
    FROM calls
    WHERE kind IN ('ai.call.completed', 'ai.call.failed')
    UNION ALL
    SELECT
        toDate(occurred_at, 'UTC') AS day,
        org_id,
        team_id,
        call_tag_keys AS keys,
        call_tag_values AS vals,
        toString(provider) AS provider,
        toString(model) AS model,
        price_version,
        toInt64(sign) AS n,
        toInt64(unpriced) AS unpriced,
        input_tokens AS input,
        output_tokens AS output,
        cached_input_tokens AS cached,
        cache_write_tokens AS cache_write,
        reasoning_tokens AS reasoning,
        images AS image_count,
        audio_ms AS audio,
        cost AS c
    FROM cost_adjustments
    ANY LEFT JOIN
    (
        SELECT event_id, tag_keys AS call_tag_keys, tag_values AS call_tag_values
        FROM calls
        WHERE kind IN ('ai.call.completed', 'ai.call.failed')
    ) AS call_tags USING event_id
)
ARRAY JOIN keys AS tag_key, vals AS tag_value
WHERE (SELECT count() FROM cost_daily_tags) = 0
GROUP BY day, org_id, team_id, tag_key, tag_value, provider, model, price_version;

CREATE MATERIALIZED VIEW IF NOT EXISTS cost_daily_tags_mv TO cost_daily_tags AS
SELECT
    toDate(occurred_at, 'UTC') AS day,
    org_id,
    team_id,
    tag_key,
    tag_value,
    provider,
    model,
    price_version,
    toInt64(count()) AS calls,
    toInt64(sum(1 - priced)) AS unpriced_calls,
    toInt64(sum(input_tokens)) AS input_tokens,
    toInt64(sum(output_tokens)) AS output_tokens,
    toInt64(sum(cached_input_tokens)) AS cached_input_tokens,
    toInt64(sum(cache_write_tokens)) AS cache_write_tokens,
    toInt64(sum(reasoning_tokens)) AS reasoning_tokens,
    toInt64(sum(images)) AS images,
    toInt64(sum(audio_ms)) AS audio_ms,
    sum(cost) AS cost
FROM calls
ARRAY JOIN tag_keys AS tag_key, tag_values AS tag_value
WHERE kind IN ('ai.call.completed', 'ai.call.failed')
GROUP BY day, org_id, team_id, tag_key, tag_value, provider, model, price_version;

CREATE MATERIALIZED VIEW IF NOT EXISTS cost_adjustments_tags_mv TO cost_daily_tags AS
SELECT
    toDate(occurred_at, 'UTC') AS day,
    org_id,
    team_id,
    tag_key,
    tag_value,
    provider,
    model,
    price_version,
    toInt64(sum(sign)) AS calls,
    toInt64(sum(unpriced)) AS unpriced_calls,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_input_tokens) AS cached_input_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(images) AS images,
    sum(audio_ms) AS audio_ms,
    sum(cost) AS cost
FROM cost_adjustments
ARRAY JOIN tag_keys AS tag_key, tag_values AS tag_value
GROUP BY day, org_id, team_id, tag_key, tag_value, provider, model, price_version;
