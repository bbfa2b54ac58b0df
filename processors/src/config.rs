//! Settings owned by the processors crate.

use serde::{Deserialize, Serialize};

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
