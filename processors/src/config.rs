//! Settings owned by the processors crate.

use serde::{Deserialize, Serialize};
use tollgate_contract::signature::DrainConfig;

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
    /// How often the calls fold writes its health samples (consumer lag per
    /// partition, dead letters) to `pipeline_health`, seconds; 0 writes
    /// none (`docs/processor.md`, "Health samples").
    pub health_sample_secs: u64,
    /// Where `tollgate process` serves `GET /metrics` (`docs/metrics.md`),
    /// e.g. `127.0.0.1:9464`; unset: no listener (several processes on one
    /// host each need their own port). The binary serves it; the
    /// processors only own the metrics.
    pub metrics_listen: Option<String>,
    /// The pattern learner (`crate::patterns`): `[processor.patterns]`.
    pub patterns: PatternsConfig,
    /// The recovery learner (`crate::recovery`): `[processor.recovery]`.
    pub recovery: RecoveryConfig,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            group_id: "tollgate-processor".into(),
            batch_max_rows: 20_000,
            batch_max_bytes: 16 * 1024 * 1024,
            batch_max_wait_ms: 500,
            session_timeout_ms: 10_000,
            health_sample_secs: 10,
            metrics_listen: None,
            patterns: PatternsConfig::default(),
            recovery: RecoveryConfig::default(),
        }
    }
}

/// The pattern learner: learns merges of signatures from the pattern
/// catalog and announces new patterns (`docs/error-patterns.md`, "The
/// pattern learner").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatternsConfig {
    /// How often the catalog is read, milliseconds (at least 100): a new
    /// pattern is announced and merged within about this long of being
    /// folded.
    pub every_ms: u64,
    /// Announce new patterns as `admin.error_pattern.new` events on the
    /// events topic; `false` only learns merges (for deployments that
    /// alert from the Errors page instead, and for tests that count the
    /// messages on the events topic).
    pub announce: bool,
    /// The Drain tree's parameters (`[processor.patterns.drain]`).
    pub drain: DrainConfig,
}

impl Default for PatternsConfig {
    fn default() -> Self {
        Self {
            every_ms: 5_000,
            announce: true,
            drain: DrainConfig::default(),
        }
    }
}

impl PatternsConfig {
    /// Why these settings cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.every_ms < 100 {
            return Err(format!(
                "processor.patterns.every_ms is {}: it must be at least 100",
                self.every_ms
            ));
        }
        self.drain
            .validate()
            .map_err(|e| format!("processor.patterns.{e}"))
    }
}

/// The recovery learner: ranks recovery strategies per failure and
/// publishes `recovery/…` decisions (`docs/error-patterns.md`, "Learned
/// recovery").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// How often the recovery counts are read, milliseconds (at least 100).
    pub every_ms: u64,
    /// How far back the counts reach, seconds (at least 60): a strategy's
    /// record older than this no longer ranks it.
    pub window_secs: u64,
    /// Attempts a strategy needs in the window before it is ranked at all
    /// (at least 1).
    pub min_samples: u64,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            every_ms: 5_000,
            window_secs: 86_400,
            min_samples: 20,
        }
    }
}

impl RecoveryConfig {
    /// Why these settings cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.every_ms < 100 {
            return Err(format!(
                "processor.recovery.every_ms is {}: it must be at least 100",
                self.every_ms
            ));
        }
        if self.window_secs < 60 {
            return Err(format!(
                "processor.recovery.window_secs is {}: it must be at least 60 (the counts are per minute)",
                self.window_secs
            ));
        }
        if self.min_samples == 0 {
            return Err("processor.recovery.min_samples is 0: it must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_key() {
        assert_eq!(PatternsConfig::default().validate(), Ok(()));
        assert_eq!(RecoveryConfig::default().validate(), Ok(()));
        let fast = PatternsConfig {
            every_ms: 10,
            ..PatternsConfig::default()
        };
        assert!(fast
            .validate()
            .unwrap_err()
            .contains("processor.patterns.every_ms"));
        let mut shallow = PatternsConfig::default();
        shallow.drain.depth = 2;
        assert!(shallow
            .validate()
            .unwrap_err()
            .starts_with("processor.patterns.drain.depth is 2"));
        let none = RecoveryConfig {
            min_samples: 0,
            ..RecoveryConfig::default()
        };
        assert!(none
            .validate()
            .unwrap_err()
            .contains("processor.recovery.min_samples"));
        let short = RecoveryConfig {
            window_secs: 5,
            ..RecoveryConfig::default()
        };
        assert!(short
            .validate()
            .unwrap_err()
            .contains("processor.recovery.window_secs"));
    }
}
