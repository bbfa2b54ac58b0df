-- The audit chain of custody (docs/audit.md): one hash chain per Kafka
-- message key (team), appended by the audit fold of `tollgate process`, which
-- keeps its progress in (kafka_partition, kafka_offset) like `calls` does.
-- No PARTITION BY: every insert lands in one table partition, so it is atomic.
CREATE TABLE IF NOT EXISTS audit_chain
(
    chain_id String,
    seq UInt64,
    occurred_at DateTime,
    occurred_at_ms UInt64,
    event_id String,
    kind String,
    org_id String,
    team_id String,
    user_id String,
    api_key_id String,
    provider String,
    model String,
    outcome String,
    decision String,
    decision_reason String,
    event_json String,
    prev_hash String,
    entry_hash String,
    kafka_partition Int32,
    kafka_offset Int64,
    appended_at DateTime DEFAULT now()
)
ENGINE = MergeTree()
ORDER BY (chain_id, seq);

-- Signed checkpoints over segments of a chain. A retried insert writes the
-- same checkpoint again; readers take one row per (chain_id, to_seq, signature).
CREATE TABLE IF NOT EXISTS audit_checkpoints
(
    chain_id String,
    from_seq UInt64,
    to_seq UInt64,
    head_hash String,
    merkle_root String,
    created_at_ms UInt64,
    public_key String,
    signature String
)
ENGINE = MergeTree()
ORDER BY (chain_id, to_seq);
