-- Facts: one row per ai.call.* event, with the Kafka position it came from.
-- Times are DateTime('UTC') so monthly partitions and day/month reports do
-- not depend on the server's timezone.
-- The (kafka_partition, kafka_offset) pair is how the processor resumes
-- effectively-once: progress is stored with the data (see docs/architecture.md).
CREATE TABLE IF NOT EXISTS calls
(
    event_id String,
    schema_version UInt16,
    kind LowCardinality(String),
    occurred_at DateTime('UTC'),
    occurred_at_ms UInt64,
    org_id String,
    team_id String,
    user_id String,
    api_key_id String,
    call_id String,
    trace_id String,
    provider LowCardinality(String),
    model LowCardinality(String),
    requested_model String,
    attempt UInt16,
    fallback_of String,
    operation LowCardinality(String),
    stream UInt8,
    duration_ms UInt32,
    has_ttft UInt8,
    ttft_ms UInt32,
    input_tokens UInt64,
    output_tokens UInt64,
    cached_input_tokens UInt64,
    cache_write_tokens UInt64,
    reasoning_tokens UInt64,
    images UInt32,
    audio_ms UInt64,
    outcome LowCardinality(String),
    http_status UInt16,
    error_type String,
    error_message String,
    cache_hit UInt8,
    prompt_sha256 String,
    response_sha256 String,
    tag_keys Array(String),
    tag_values Array(String),
    reported_cost String,
    ingested_at DateTime('UTC'),
    kafka_partition Int32,
    kafka_offset Int64
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (team_id, occurred_at, event_id);
