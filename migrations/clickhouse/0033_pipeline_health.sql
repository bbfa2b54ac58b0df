-- Samples of the pipeline's own health (docs/alerting-signals.md,
-- "pipeline_health"; docs/architecture.md): written every few seconds by the
-- components themselves through `tollgate_control::pipeline_health`:
-- `process` (consumer_lag per Kafka partition, a gauge; dead_letters since
-- the last sample, a count), `ingest` (rejected_ingest since the last
-- sample, a count) and `proxy` (proxy_spool_depth in bytes, a gauge).
-- `kafka_partition` is the Kafka partition of consumer_lag, -1 for the others.
-- Fleet-wide: no org. ClickHouse 18.16 has no table TTL (it came in 19.6),
-- so the table is partitioned by day and old days are dropped with
-- `ALTER TABLE pipeline_health DROP PARTITION <yyyymmdd>` (docs/architecture.md).
CREATE TABLE IF NOT EXISTS pipeline_health
(
    at DateTime('UTC'),
    at_ms UInt64,
    component String,
    instance String,
    metric String,
    kafka_partition Int32,
    value UInt64
)
ENGINE = MergeTree()
PARTITION BY toYYYYMMDD(at)
ORDER BY (metric, at, instance, kafka_partition);
