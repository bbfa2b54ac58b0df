-- Every alert transition (docs/alerting.md, "The evaluator"): the Alerts
-- page's timeline and the compliance trail. Written from the evaluator's
-- PostgreSQL outbox at least once; a re-publish after a crash repeats a row
-- with the same event_id (and notification_id), which ReplacingMergeTree
-- folds away on merge and `FINAL` / `GROUP BY event_id` hides at read time.
CREATE TABLE IF NOT EXISTS alert_transitions
(
    at DateTime('UTC'),
    at_ms UInt64,
    org_id String,
    rule_id Int64,
    rule_name String,
    from_state String,
    to_state String,
    value String,
    since DateTime('UTC'),
    notification_id String,
    silenced UInt8,
    event_id String
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(at)
ORDER BY (org_id, rule_id, at_ms, event_id);
