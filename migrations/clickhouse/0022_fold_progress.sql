-- Fold progress: per events-topic partition, the highest Kafka offset whose
-- event is stored in `calls` and in every view fed by it (`cost_daily`,
-- `latency_minute`). The calls fold writes a row after its insert returns,
-- which is after ClickHouse has written the views. The budget watcher reads
-- this table before it reads spend, so every event at or below these offsets
-- is in the spend it publishes; the proxy uses that to settle its budget
-- reservations (docs/cost.md, "Reserve and settle").
-- Readers take max(kafka_offset): unmerged parts never matter. The offset is
-- unsigned because 18.16 accepts only unsigned integers, Date and DateTime as
-- a ReplacingMergeTree version.
CREATE TABLE IF NOT EXISTS fold_progress
(
    topic String,
    kafka_partition Int32,
    kafka_offset UInt64,
    recorded_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree(kafka_offset)
ORDER BY (topic, kafka_partition);
