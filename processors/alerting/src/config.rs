//! `[alerting]` in the configuration, and what can go wrong evaluating.

use serde::{Deserialize, Serialize};
use tollgate_control::alerts::AlertStoreError;
use tollgate_control::lease::LeaseError;

/// `[alerting]` in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// Seconds between evaluations (and lease renewals).
    pub interval_secs: u64,
    /// Lease time to live in intervals (at least 2): a holder that stops
    /// renewing is replaced within `lease_intervals + 1` intervals.
    pub lease_intervals: u32,
    /// Rules measured at once (each measurement is one or two ClickHouse
    /// queries).
    pub concurrency: usize,
    /// Prefix of the links in notifications (`https://tollgate.example`);
    /// empty gives paths relative to the Tollgate UI.
    pub public_url: String,
    /// Hosts (names or addresses, as receivers' URLs write them) that
    /// receivers may reach on private, loopback or link-local addresses,
    /// such as an Alertmanager on the internal network; `"*"` trusts every
    /// host. Every other receiver reaches public addresses only: receivers
    /// are created by each org's admins and SREs, and the evaluator sends
    /// from inside the network.
    pub receiver_private_hosts: Vec<String>,
    /// Where `tollgate alerts evaluate` serves `GET /metrics` and
    /// `GET /healthz` (`--metrics-listen` overrides it; `127.0.0.1:0` takes
    /// a free port, logged); unset: no listener.
    pub metrics_listen: Option<String>,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            interval_secs: 60,
            lease_intervals: 3,
            concurrency: 8,
            public_url: String::new(),
            receiver_private_hosts: Vec::new(),
            metrics_listen: None,
        }
    }
}

impl AlertingConfig {
    /// How long the lease lasts without renewal.
    pub fn lease_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.interval_secs * u64::from(self.lease_intervals.max(2)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EvaluatorError {
    #[error("alerting.interval_secs: must be at least 1")]
    Interval,
    #[error("alerting.concurrency: must be at least 1")]
    Concurrency,
    #[error("postgresql: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("alert store: {0}")]
    Store(#[from] AlertStoreError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("stored alert state: {0}")]
    Json(#[from] serde_json::Error),
    #[error("delivery: {0}")]
    Delivery(String),
    #[error("kafka: {0}")]
    Kafka(String),
}
