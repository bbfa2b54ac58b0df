-- Cost rollup: day (UTC) x org x team x user x key x provider x model x
-- price version, with signed sums so that repricing can post corrections.
-- Fed by two materialized views: billable calls (completed, failed) from
-- `calls`, and reversal/posting rows from `cost_adjustments` (written by
-- `tollgate reprice`). A row of the rollup is exact because every source
-- insert is atomic per partition and folded by the view in the same insert.
CREATE TABLE IF NOT EXISTS cost_daily
(
    day Date,
    org_id String,
    team_id String,
    user_id String,
    api_key_id String,
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
ORDER BY (day, org_id, team_id, user_id, api_key_id, provider, model, price_version);

CREATE MATERIALIZED VIEW IF NOT EXISTS cost_daily_mv TO cost_daily AS
SELECT
    toDate(occurred_at, 'UTC') AS day,
    org_id,
    team_id,
    user_id,
    api_key_id,
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
WHERE kind IN ('ai.call.completed', 'ai.call.failed')
GROUP BY day, org_id, team_id, user_id, api_key_id, provider, model, price_version;

-- Corrections by `tollgate reprice`: for each call whose cost changes, a
-- reversal of what is on record (sign -1: negated counts, tokens and cost,
-- the old price version) and a posting of the new cost (sign +1). The
-- effective cost of a call is its `calls` row plus all its adjustments.
CREATE TABLE IF NOT EXISTS cost_adjustments
(
    event_id String,
    occurred_at DateTime('UTC'),
    org_id String,
    team_id String,
    user_id String,
    api_key_id String,
    provider LowCardinality(String),
    model LowCardinality(String),
    price_version UInt64,
    sign Int8,
    unpriced Int8,
    input_tokens Int64,
    output_tokens Int64,
    cached_input_tokens Int64,
    cache_write_tokens Int64,
    reasoning_tokens Int64,
    images Int64,
    audio_ms Int64,
    cost Decimal(38, 12),
    reprice_id String,
    adjusted_at DateTime('UTC')
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (model, occurred_at, event_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS cost_adjustments_mv TO cost_daily AS
SELECT
    toDate(occurred_at, 'UTC') AS day,
    org_id,
    team_id,
    user_id,
    api_key_id,
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
GROUP BY day, org_id, team_id, user_id, api_key_id, provider, model, price_version;
