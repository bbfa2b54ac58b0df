//! Settings owned by the processors crate.

use serde::{Deserialize, Serialize};

/// Where ClickHouse is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: String,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            database: "tollgate".into(),
            user: "default".into(),
            password: String::new(),
        }
    }
}

/// The event processor (`tollgate process`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessorConfig {
    /// Kafka consumer group.
    pub group_id: String,
    /// Flush a batch at this many rows...
    pub batch_max_rows: usize,
    /// ...or this many bytes of message payload...
    pub batch_max_bytes: usize,
    /// ...or when the oldest row has waited this long.
    pub batch_max_wait_ms: u64,
    /// Kafka consumer session timeout: how long a crashed processor keeps
    /// its partitions before the group hands them to another member.
    pub session_timeout_ms: u64,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            group_id: "tollgate-processor".into(),
            batch_max_rows: 20_000,
            batch_max_bytes: 16 * 1024 * 1024,
            batch_max_wait_ms: 500,
            session_timeout_ms: 10_000,
        }
    }
}
