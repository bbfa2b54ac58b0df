-- A cancelled call (its client hung up) is not an error: the latency
-- rollup's error count, and so the latency report's error rate and
-- error-rate alerts, leave it out from here on
-- (`tollgate_contract::FAILED_OUTCOME_SQL`). Before, `outcome != 'success'`
-- counted it, so users pressing Stop in a chat window looked like a
-- failing provider. A cancelled call is still a call (its duration is the
-- time until the client left).
--
-- The view is replaced under its name: like every migration, apply it
-- before starting processors of this version, with none running. Minutes
-- folded before keep their error counts (cancelled calls among them): the
-- reads of windows long enough to count from `calls` itself
-- (`tollgate_queries::latency_source`) leave them out there too.
DROP TABLE IF EXISTS latency_minute_calls_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS latency_minute_calls_mv TO latency_minute_calls AS
SELECT
    toStartOfMinute(occurred_at) AS minute,
    org_id,
    team_id,
    provider,
    model,
    countState() AS calls,
    sumState(toUInt64(outcome NOT IN ('success', 'cancelled'))) AS errors,
    groupArrayState(1000)(toUInt64(duration_ms) * 1000) AS duration_sample,
    sumState(toUInt64(has_ttft)) AS ttft_calls,
    groupArrayIfState(1000)(toUInt64(ttft_ms) * 1000, has_ttft) AS ttft_sample
FROM calls
WHERE kind IN ('ai.call.completed', 'ai.call.failed')
GROUP BY minute, org_id, team_id, provider, model;
