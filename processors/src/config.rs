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
    /// librdkafka's pre-fetch queue per consumer fold
    /// (`queued.max.messages.kbytes`): messages fetched ahead of the loop,
    /// each fold's memory besides one batch (`docs/performance.md`).
    pub prefetch_kbytes: u32,
    /// ...and at most about this many events per assigned partition
    /// (`queued.min.messages`): the bound that holds whatever the
    /// compression ratio, since librdkafka counts `prefetch_kbytes` in
    /// compressed bytes but keeps the decompressed sets in memory.
    pub prefetch_events_per_partition: u32,
    /// How long librdkafka waits before it looks again at a partition whose
    /// pre-fetch queue reached either bound (`fetch.queue.backoff.ms`),
    /// milliseconds. Short, so that a small queue is refilled as the fold
    /// drains it: with librdkafka's 1 000 ms a queue of a few thousand
    /// events runs dry first and the fold idles (`docs/performance.md`).
    pub prefetch_backoff_ms: u32,
    /// The most one fetch brings per partition, KiB of compressed events
    /// (`fetch.message.max.bytes`; librdkafka raises it for a larger
    /// message): a queue is refilled by whole fetches, so the read-ahead
    /// per partition is about `prefetch_events_per_partition` plus this.
    pub prefetch_fetch_kbytes: u32,
    /// Kafka consumer session timeout: how long a crashed processor keeps
    /// its partitions before the group hands them to another member (and,
    /// without `instance_id`, how long its restart waits for them).
    pub session_timeout_ms: u64,
    /// Static group membership (Kafka's `group.instance.id`): a processor
    /// restarted with the same id gets its partitions back at once instead
    /// of after `session_timeout_ms`. `{host}` is replaced by the host name.
    /// Unset: dynamic membership. Two running processors must never share
    /// an id (the broker fences the older one, which then exits).
    pub instance_id: Option<String>,
    /// How often the calls fold writes its health samples (consumer lag per
    /// partition, dead letters) to `pipeline_health`, and every consumer
    /// fold samples its lag for `/metrics`, seconds; 0: neither
    /// (`docs/processor.md`, "Health samples").
    pub health_sample_secs: u64,
    /// A consumer fold stalled this long (nothing consumed or stored while
    /// the lag sampler says events wait: `crate::stall`) closes its Kafka
    /// consumer and joins the group with a new one, seconds; checked at
    /// each progress line (every 10 s); 0: never. Needs the lag sampler
    /// (`health_sample_secs` > 0).
    pub stall_restart_secs: u64,
    /// Where `tollgate process` serves `GET /metrics` (`docs/metrics.md`),
    /// e.g. `127.0.0.1:9464`; unset: no listener (several processes on one
    /// host each need their own port). The binary serves it; the
    /// processors only own the metrics.
    pub metrics_listen: Option<String>,
    /// How many event ids per Kafka partition the calls fold remembers, to
    /// leave out a copy of an event it already folded (a client's retry
    /// after a lost response): a copy is caught while fewer events of its
    /// partition came between it and its original. 22 to 28 bytes each;
    /// 0: remember none, store every copy (`docs/processor.md`, "Copies of
    /// an event").
    pub recent_event_ids_per_partition: usize,
    /// The pattern learner (`crate::patterns`): `[processor.patterns]`.
    pub patterns: PatternsConfig,
    /// The recovery learner (`crate::recovery`): `[processor.recovery]`.
    pub recovery: RecoveryConfig,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            group_id: "tollgate-processor".into(),
            batch_max_rows: 60_000,
            batch_max_bytes: 64 * 1024 * 1024,
            batch_max_wait_ms: 500,
            prefetch_kbytes: 32 * 1024,
            prefetch_events_per_partition: 2_000,
            prefetch_backoff_ms: 10,
            prefetch_fetch_kbytes: 256,
            session_timeout_ms: 10_000,
            instance_id: None,
            health_sample_secs: 10,
            stall_restart_secs: 120,
            metrics_listen: None,
            recent_event_ids_per_partition: 100_000,
            patterns: PatternsConfig::default(),
            recovery: RecoveryConfig::default(),
        }
    }
}

/// The broker's default bounds of a consumer session timeout
/// (`group.min.session.timeout.ms`, `group.max.session.timeout.ms`).
const SESSION_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 6_000..=1_800_000;

/// librdkafka's bounds of `queued.max.messages.kbytes`.
const PREFETCH_KBYTES: std::ops::RangeInclusive<u32> = 1..=2_097_151;

/// librdkafka's bounds of `queued.min.messages`.
const PREFETCH_EVENTS: std::ops::RangeInclusive<u32> = 1..=10_000_000;

/// librdkafka's bounds of `fetch.queue.backoff.ms`.
const PREFETCH_BACKOFF_MS: std::ops::RangeInclusive<u32> = 0..=300_000;

/// librdkafka's bounds of `fetch.message.max.bytes`, in KiB.
const PREFETCH_FETCH_KBYTES: std::ops::RangeInclusive<u32> = 1..=976_562;

/// The most event ids per partition the calls fold may be told to keep
/// (up to 280 MB per partition).
pub const RECENT_EVENT_IDS_MAX: usize = 10_000_000;

/// Kafka's limit on a `group.instance.id`.
const INSTANCE_ID_MAX_LEN: usize = 249;

/// `processor.<key>` is within the `bounds` librdkafka accepts for the
/// property it sets; the error names the key, the value and the bounds.
fn within_librdkafka(
    key: &str,
    value: u32,
    bounds: std::ops::RangeInclusive<u32>,
) -> Result<(), String> {
    if bounds.contains(&value) {
        return Ok(());
    }
    Err(format!(
        "processor.{key} is {value}: librdkafka accepts {} to {}",
        bounds.start(),
        bounds.end()
    ))
}

impl ProcessorConfig {
    /// Why the consumer settings cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        within_librdkafka("prefetch_kbytes", self.prefetch_kbytes, PREFETCH_KBYTES)?;
        within_librdkafka(
            "prefetch_events_per_partition",
            self.prefetch_events_per_partition,
            PREFETCH_EVENTS,
        )?;
        within_librdkafka(
            "prefetch_backoff_ms",
            self.prefetch_backoff_ms,
            PREFETCH_BACKOFF_MS,
        )?;
        within_librdkafka(
            "prefetch_fetch_kbytes",
            self.prefetch_fetch_kbytes,
            PREFETCH_FETCH_KBYTES,
        )?;
        if !SESSION_TIMEOUT_MS.contains(&self.session_timeout_ms) {
            return Err(format!(
                "processor.session_timeout_ms is {}: a Kafka broker accepts {} to {} by default",
                self.session_timeout_ms,
                SESSION_TIMEOUT_MS.start(),
                SESSION_TIMEOUT_MS.end()
            ));
        }
        if self.recent_event_ids_per_partition > RECENT_EVENT_IDS_MAX {
            return Err(format!(
                "processor.recent_event_ids_per_partition is {}: at most {RECENT_EVENT_IDS_MAX} (up to 28 bytes of memory each, per partition)",
                self.recent_event_ids_per_partition
            ));
        }
        if let Some(id) = &self.instance_id {
            instance_id_problem(id).map_or(Ok(()), |why| {
                Err(format!("processor.instance_id {id:?}: {why}"))
            })?;
        }
        Ok(())
    }

    /// The consumer's `group.instance.id`: `instance_id` with `{host}`
    /// replaced by `host`; `None` for dynamic membership.
    pub fn group_instance_id(&self, host: &str) -> Option<String> {
        self.instance_id
            .as_ref()
            .map(|id| id.replace("{host}", host))
    }
}

/// Why `id` (before `{host}` is replaced) cannot be a `group.instance.id`.
fn instance_id_problem(id: &str) -> Option<&'static str> {
    let rest = id.replace("{host}", "");
    if id.is_empty() {
        Some("it is empty (leave it unset for dynamic membership)")
    } else if id.len() > INSTANCE_ID_MAX_LEN {
        Some("it is longer than 249 characters")
    } else if !rest
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Some("Kafka allows only ASCII letters, digits, '.', '_' and '-' (and the placeholder {host})")
    } else {
        None
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
    fn consumer_settings_are_checked_and_name_the_key() {
        assert_eq!(ProcessorConfig::default().validate(), Ok(()));
        let short = ProcessorConfig {
            session_timeout_ms: 500,
            ..ProcessorConfig::default()
        };
        assert_eq!(
            short.validate().unwrap_err(),
            "processor.session_timeout_ms is 500: a Kafka broker accepts 6000 to 1800000 by default"
        );
        let with = |id: &str| ProcessorConfig {
            instance_id: Some(id.into()),
            ..ProcessorConfig::default()
        };
        assert_eq!(with("{host}-calls").validate(), Ok(()));
        assert_eq!(
            with("{host}-calls").group_instance_id("box-1").as_deref(),
            Some("box-1-calls")
        );
        assert_eq!(ProcessorConfig::default().group_instance_id("box-1"), None);
        let no_prefetch = ProcessorConfig {
            prefetch_kbytes: 0,
            ..ProcessorConfig::default()
        };
        assert_eq!(
            no_prefetch.validate().unwrap_err(),
            "processor.prefetch_kbytes is 0: librdkafka accepts 1 to 2097151"
        );
        let too_many = ProcessorConfig {
            prefetch_events_per_partition: 10_000_001,
            ..ProcessorConfig::default()
        };
        assert_eq!(
            too_many.validate().unwrap_err(),
            "processor.prefetch_events_per_partition is 10000001: librdkafka accepts 1 to 10000000"
        );
        let slow = ProcessorConfig {
            prefetch_backoff_ms: 300_001,
            ..ProcessorConfig::default()
        };
        assert_eq!(
            slow.validate().unwrap_err(),
            "processor.prefetch_backoff_ms is 300001: librdkafka accepts 0 to 300000"
        );
        let no_fetch = ProcessorConfig {
            prefetch_fetch_kbytes: 0,
            ..ProcessorConfig::default()
        };
        assert_eq!(
            no_fetch.validate().unwrap_err(),
            "processor.prefetch_fetch_kbytes is 0: librdkafka accepts 1 to 976562"
        );
        let huge_window = ProcessorConfig {
            recent_event_ids_per_partition: 10_000_001,
            ..ProcessorConfig::default()
        };
        assert_eq!(
            huge_window.validate().unwrap_err(),
            "processor.recent_event_ids_per_partition is 10000001: at most 10000000 (up to 28 bytes of memory each, per partition)"
        );
        assert_eq!(
            with("").validate().unwrap_err(),
            "processor.instance_id \"\": it is empty (leave it unset for dynamic membership)"
        );
        assert!(with("a b")
            .validate()
            .unwrap_err()
            .starts_with("processor.instance_id \"a b\": Kafka allows only"));
        assert!(with(&"x".repeat(250))
            .validate()
            .unwrap_err()
            .ends_with("it is longer than 249 characters"));
    }

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
