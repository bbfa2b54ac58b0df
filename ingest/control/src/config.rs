//! Where the servers every role talks to are: Kafka, PostgreSQL and
//! ClickHouse. Written once here; the binary layers a TOML file and
//! `TOLLGATE_*` environment variables on top of these defaults.

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
    /// Replicas of each topic Tollgate creates (`tollgate migrate`); unset:
    /// the broker's `default.replication.factor` (1 on the single-node dev
    /// stack). At most the number of brokers; 3 on a production cluster
    /// (docs/deployment.md, "Kafka").
    pub replication_factor: Option<u16>,
    /// `min.insync.replicas` set on each topic Tollgate creates: how many
    /// replicas must have an event before the broker acknowledges it to our
    /// `acks=all` producers. Unset: the broker's own setting. At most
    /// `replication_factor`; 2 with 3 replicas survives one broker down.
    pub min_insync_replicas: Option<u16>,
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
            replication_factor: None,
            min_insync_replicas: None,
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

/// Where the master key that seals provider credentials comes from when
/// it is not in the environment (`TOLLGATE_MASTER_KEY`,
/// `TOLLGATE_MASTER_KEY_PREVIOUS`); see `provider_credentials`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// A file holding the current master key (base64 of 32 bytes).
    pub master_key_file: Option<String>,
    /// A file holding the previous master key, while a rotation is rolled
    /// out (it only decrypts).
    pub previous_master_key_file: Option<String>,
}

/// Where ClickHouse is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: String,
    /// The ClickHouse cluster (a name in the servers' `remote_servers`)
    /// whose replicas hold the tables; empty (the default): a single
    /// server. When set, `tollgate migrate` creates every table `ON CLUSTER`
    /// as a `Replicated*MergeTree` with a `Distributed` table for reads in
    /// `<database>_dist`, and the reports read those (docs/deployment.md,
    /// "ClickHouse tier").
    pub cluster: String,
    /// How long an insert may wait for ClickHouse, seconds: to take each
    /// chunk of rows, and to answer once it has them all (its views
    /// included). An insert that takes longer is a failed insert, retried
    /// after the processor has read what it stored (`docs/processor.md`).
    /// 0: no limit.
    pub insert_timeout_secs: u64,
    /// How long each step of the processor's retry and resume path may
    /// wait for ClickHouse, seconds: the insert fence, the read of the
    /// stored offsets and of the recent event ids, the repair of the
    /// rollups after a failed insert. A step that takes longer has failed
    /// and is tried again after the backoff (a connection that died without
    /// a reset would otherwise hold the fold for ever). 0: no limit.
    pub query_timeout_secs: u64,
    /// The most calls a latency report or alert signal reads and sorts
    /// itself for exact percentiles: a window holding more is read from the
    /// minute rollups (histogram estimates above 1000 values per group).
    /// ClickHouse holds about 12 bytes per call sorted, so the default
    /// (16M) is about 200 MB per statement. 0: always the rollups
    /// (docs/architecture.md, "Latency percentiles").
    pub latency_sort_max_calls: u64,
    /// From how many calls a window read from the calls has its totals
    /// (and a latency alert signal) counted per distinct value, then the
    /// percentiles found in the running counts, rather than every value
    /// sorted: the same percentiles, for a tenth of the time at 10M calls,
    /// and memory for the distinct values only; slower over a few
    /// thousand calls (docs/performance.md, "Order statistics from counted
    /// values"). 0: always counted.
    pub latency_count_min_calls: u64,
    /// The most memory one read of the reports, pages and alert signals
    /// may take in ClickHouse, bytes (its `max_memory_usage`, sent with
    /// every read): a read that needs more is stopped there and answered
    /// with a 422 naming this setting, rather than taking the memory the
    /// inserts need. The largest read at the defaults (16M calls sorted)
    /// takes about 200 MB. 0: the server's own limit.
    pub read_max_memory_bytes: u64,
}

impl ClickHouseConfig {
    /// [`ClickHouseConfig::insert_timeout_secs`]; `None` for no limit.
    pub fn insert_timeout(&self) -> Option<std::time::Duration> {
        (self.insert_timeout_secs > 0)
            .then(|| std::time::Duration::from_secs(self.insert_timeout_secs))
    }

    /// [`ClickHouseConfig::query_timeout_secs`]; `None` for no limit.
    pub fn query_timeout(&self) -> Option<std::time::Duration> {
        (self.query_timeout_secs > 0)
            .then(|| std::time::Duration::from_secs(self.query_timeout_secs))
    }
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            database: "tollgate".into(),
            user: "default".into(),
            password: String::new(),
            cluster: String::new(),
            // Below the 5 minutes after which a consumer that does not poll
            // leaves its group, and four times the 30 s after which a
            // running insert is reported (`docs/processor.md`, "Stalls").
            insert_timeout_secs: 120,
            // Above the insert fence's own 30 s and a replica's catch-up,
            // below the 5 minutes of `max.poll.interval.ms`.
            query_timeout_secs: 120,
            latency_sort_max_calls: 16_000_000,
            latency_count_min_calls: 100_000,
            read_max_memory_bytes: 4_000_000_000,
        }
    }
}
