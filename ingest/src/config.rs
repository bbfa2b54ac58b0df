//! Settings owned by the ingest crate. Defaults are compiled in; the binary
//! layers a TOML file and `TOLLGATE_*` environment variables on top.

use serde::{Deserialize, Serialize};

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
    /// How often the count of rejected events is written to ClickHouse's
    /// `pipeline_health`, seconds; 0 writes none
    /// (`docs/alerting-signals.md`, "pipeline_health").
    pub health_sample_secs: u64,
    /// Where the OTLP/gRPC trace receiver listens (`docs/otlp.md`); empty
    /// serves none. OTLP/HTTP (`POST /v1/traces`) is served on `listen`.
    pub otlp_grpc_listen: String,
    /// How many recently accepted OTLP span event ids each ingest process
    /// remembers, so an exporter's retry of a span it already delivered is
    /// answered without producing it again; 0 remembers none.
    pub otlp_recent_spans: usize,
    /// Where clients reach Tollgate proxies (`host`, `host:port` or a URL):
    /// a model-call span whose server is one of them is of a call the proxy
    /// already records, and is dropped rather than billed twice
    /// (`docs/otlp.md`, "Calls through the proxy"). Empty: the proxy's own
    /// `proxy.listen` when it names a host (not `0.0.0.0` or `[::]`).
    pub otlp_proxy_addresses: Vec<String>,
    /// Seconds a verified API key is trusted without asking PostgreSQL
    /// again; a revocation takes effect within this.
    pub key_cache_secs: u64,
    /// Seconds after its last successful check a key keeps working while
    /// PostgreSQL does not answer (`docs/reliability.md`); 0 refuses every
    /// request with 503 as soon as a key's check fails.
    pub key_cache_stale_secs: u64,
    /// The longest wait, in seconds, for the next piece of a request body
    /// being read (`POST /v1/events`, `POST /v1/traces`); a client that
    /// stops sending gets a 408 and its connection is closed. 0: the
    /// default, 30 (`docs/ingest-api.md`, "Slow clients").
    pub body_read_timeout_secs: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 5 * 1024 * 1024,
            max_events_per_request: 10_000,
            max_future_skew_secs: 300,
            max_age_days: 400,
            health_sample_secs: 10,
            otlp_grpc_listen: "127.0.0.1:4317".into(),
            otlp_recent_spans: 100_000,
            otlp_proxy_addresses: Vec::new(),
            key_cache_secs: 30,
            key_cache_stale_secs: 900,
            body_read_timeout_secs: 30,
        }
    }
}
