-- Cost rollups per caller without provider, model and price version
-- (issue 17, part 5): day (UTC) x org x team x user (`cost_daily_by_user`)
-- and day x org x team x key (`cost_daily_by_key`), with the same signed
-- sums as `cost_daily` (0021). `cost_daily` has near one row per call at
-- scale; the reports that group or filter by user or by key and by nothing
-- but day, month, org and team (the report by user, the top users and top
-- keys of the cost overview, page and top spenders CSV, the spend of user
-- and key budgets) read these instead (`tollgate_control::cost_rollup`,
-- the one place that chooses). Two tables, not one by user and key: the
-- users and keys of a team cross, so one table would hold about as many
-- rows per day as users times keys per team (docs/performance.md,
-- "Cost rollups per user and per key").
--
-- Fed like `cost_daily` and `cost_daily_by_team` (0037): billable calls
-- from `calls` (the same WHERE) and the reversal/posting rows of
-- `tollgate reprice` from `cost_adjustments`, so a repricing correction
-- lands in every rollup in the same insert. Per cell each equals
-- `cost_daily` summed over the dimensions it drops. Erasing a person
-- (`tollgate_control::erasure`) moves their rows of `cost_daily_by_user`
-- under an empty user id, as it does those of `cost_daily`.
--
-- Order, so that no call is counted twice or missed across the switch
-- (the same as 0037, per table):
--   1. the table;
--   2. the two views, which feed it every insert that starts from then on;
--   3. the backfill: what `cost_daily` holds beyond this table, per cell
--      (`cost_daily` summed over the dropped dimensions, minus the table).
--      It adds exactly the calls and adjustments whose inserts the views
--      did not see, and nothing for the inserts the views did fold. A
--      difference is idempotent: applying the file again after an
--      interruption adds nothing twice (every difference is then zero).
-- Like every migration, apply it before starting processors of this
-- version and with no `tollgate reprice` running; running a backfill
-- statement again at a quiet moment brings any cell back to `cost_daily`'s
-- sums (docs/cost.md, "Where costs are stored"). Nothing reads the tables
-- before the file is recorded as applied and the binary that reads them
-- runs.
CREATE TABLE IF NOT EXISTS cost_daily_by_user
(
    day Date,
    org_id String,
    team_id String,
    user_id String,
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
ORDER BY (day, org_id, team_id, user_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS cost_daily_by_user_mv TO cost_daily_by_user AS
SELECT
    toDate(occurred_at, 'UTC') AS day,
    org_id,
    team_id,
    user_id,
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
GROUP BY day, org_id, team_id, user_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS cost_adjustments_by_user_mv TO cost_daily_by_user AS
SELECT
    toDate(occurred_at, 'UTC') AS day,
    org_id,
    team_id,
    user_id,
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
GROUP BY day, org_id, team_id, user_id;

-- The backfill of cost_daily_by_user (step 3). No aliases equal to a column name:
-- 18.16 would resolve the column to the alias.
INSERT INTO cost_daily_by_user (day, org_id, team_id, user_id, calls, unpriced_calls, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, images, audio_ms, cost)
SELECT
    day,
    org_id,
    team_id,
    user_id,
    sum(d_calls) AS s_calls,
    sum(d_unpriced_calls) AS s_unpriced_calls,
    sum(d_input_tokens) AS s_input_tokens,
    sum(d_output_tokens) AS s_output_tokens,
    sum(d_cached_input_tokens) AS s_cached_input_tokens,
    sum(d_cache_write_tokens) AS s_cache_write_tokens,
    sum(d_reasoning_tokens) AS s_reasoning_tokens,
    sum(d_images) AS s_images,
    sum(d_audio_ms) AS s_audio_ms,
    sum(d_cost) AS s_cost
FROM
(
    SELECT
        day,
        org_id,
        team_id,
        user_id,
        calls AS d_calls,
        unpriced_calls AS d_unpriced_calls,
        input_tokens AS d_input_tokens,
        output_tokens AS d_output_tokens,
        cached_input_tokens AS d_cached_input_tokens,
        cache_write_tokens AS d_cache_write_tokens,
        reasoning_tokens AS d_reasoning_tokens,
        images AS d_images,
        audio_ms AS d_audio_ms,
        cost AS d_cost
    FROM cost_daily
    UNION ALL
    SELECT
        day,
        org_id,
        team_id,
        user_id,
        -calls AS d_calls,
        -unpriced_calls AS d_unpriced_calls,
        -input_tokens AS d_input_tokens,
        -output_tokens AS d_output_tokens,
        -cached_input_tokens AS d_cached_input_tokens,
        -cache_write_tokens AS d_cache_write_tokens,
        -reasoning_tokens AS d_reasoning_tokens,
        -images AS d_images,
        -audio_ms AS d_audio_ms,
        -cost AS d_cost
    FROM cost_daily_by_user
)
GROUP BY day, org_id, team_id, user_id
HAVING s_calls != 0 OR s_unpriced_calls != 0 OR s_input_tokens != 0 OR s_output_tokens != 0 OR s_cached_input_tokens != 0 OR s_cache_write_tokens != 0 OR s_reasoning_tokens != 0 OR s_images != 0 OR s_audio_ms != 0 OR s_cost != 0;

CREATE TABLE IF NOT EXISTS cost_daily_by_key
(
    day Date,
    org_id String,
    team_id String,
    api_key_id String,
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
ORDER BY (day, org_id, team_id, api_key_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS cost_daily_by_key_mv TO cost_daily_by_key AS
SELECT
    toDate(occurred_at, 'UTC') AS day,
    org_id,
    team_id,
    api_key_id,
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
GROUP BY day, org_id, team_id, api_key_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS cost_adjustments_by_key_mv TO cost_daily_by_key AS
SELECT
    toDate(occurred_at, 'UTC') AS day,
    org_id,
    team_id,
    api_key_id,
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
GROUP BY day, org_id, team_id, api_key_id;

-- The backfill of cost_daily_by_key (step 3). No aliases equal to a column name:
-- 18.16 would resolve the column to the alias.
INSERT INTO cost_daily_by_key (day, org_id, team_id, api_key_id, calls, unpriced_calls, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, images, audio_ms, cost)
SELECT
    day,
    org_id,
    team_id,
    api_key_id,
    sum(d_calls) AS s_calls,
    sum(d_unpriced_calls) AS s_unpriced_calls,
    sum(d_input_tokens) AS s_input_tokens,
    sum(d_output_tokens) AS s_output_tokens,
    sum(d_cached_input_tokens) AS s_cached_input_tokens,
    sum(d_cache_write_tokens) AS s_cache_write_tokens,
    sum(d_reasoning_tokens) AS s_reasoning_tokens,
    sum(d_images) AS s_images,
    sum(d_audio_ms) AS s_audio_ms,
    sum(d_cost) AS s_cost
FROM
(
    SELECT
        day,
        org_id,
        team_id,
        api_key_id,
        calls AS d_calls,
        unpriced_calls AS d_unpriced_calls,
        input_tokens AS d_input_tokens,
        output_tokens AS d_output_tokens,
        cached_input_tokens AS d_cached_input_tokens,
        cache_write_tokens AS d_cache_write_tokens,
        reasoning_tokens AS d_reasoning_tokens,
        images AS d_images,
        audio_ms AS d_audio_ms,
        cost AS d_cost
    FROM cost_daily
    UNION ALL
    SELECT
        day,
        org_id,
        team_id,
        api_key_id,
        -calls AS d_calls,
        -unpriced_calls AS d_unpriced_calls,
        -input_tokens AS d_input_tokens,
        -output_tokens AS d_output_tokens,
        -cached_input_tokens AS d_cached_input_tokens,
        -cache_write_tokens AS d_cache_write_tokens,
        -reasoning_tokens AS d_reasoning_tokens,
        -images AS d_images,
        -audio_ms AS d_audio_ms,
        -cost AS d_cost
    FROM cost_daily_by_key
)
GROUP BY day, org_id, team_id, api_key_id
HAVING s_calls != 0 OR s_unpriced_calls != 0 OR s_input_tokens != 0 OR s_output_tokens != 0 OR s_cached_input_tokens != 0 OR s_cache_write_tokens != 0 OR s_reasoning_tokens != 0 OR s_images != 0 OR s_audio_ms != 0 OR s_cost != 0;
