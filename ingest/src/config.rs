//! Settings owned by the ingest crate. Defaults are compiled in; the binary
//! layers a TOML file and `TOLLGATE_*` environment variables on top.

use serde::{Deserialize, Serialize};

/// Where Kafka is and which topics Tollgate uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Comma-separated bootstrap servers.
    pub brokers: String,
    /// Topic of immutable call events (key = team).
    pub events_topic: String,
    /// Dead-letter topic for events a processor could not use.
    pub dlq_topic: String,
    /// Compacted topic of gating decisions (key = subject).
    pub decisions_topic: String,
    /// Append-only topic anchoring every signed audit checkpoint outside
    /// ClickHouse (never compacted or expired; see docs/audit.md).
    pub audit_checkpoints_topic: String,
    /// Partitions used when Tollgate creates its topics.
    pub partitions: i32,
    /// How long a produce may wait for the broker before it is reported failed.
    pub message_timeout_ms: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            events_topic: "tollgate.events".into(),
            dlq_topic: "tollgate.events.dlq".into(),
            decisions_topic: "tollgate.decisions".into(),
            audit_checkpoints_topic: "tollgate.audit.checkpoints".into(),
            partitions: 4,
            message_timeout_ms: 30_000,
        }
    }
}

/// The PostgreSQL control plane (API keys, later prices and budgets).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    pub url: String,
    pub max_connections: u32,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: "postgres://tollgate:tollgate@127.0.0.1:5433/tollgate".into(),
            max_connections: 8,
        }
    }
}

/// The HTTP batch ingest endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    pub listen: String,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Most events in one request.
    pub max_events_per_request: usize,
    /// Allowed clock skew for `occurred_at` in the future, seconds.
    pub max_future_skew_secs: i64,
    /// Oldest accepted `occurred_at`, days.
    pub max_age_days: i64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 5 * 1024 * 1024,
            max_events_per_request: 10_000,
            max_future_skew_secs: 300,
            max_age_days: 400,
        }
    }
}
