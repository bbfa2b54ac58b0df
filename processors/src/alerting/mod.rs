//! Alerting in the processors: delivering notifications to the receivers
//! teams already run ([`notify`]: signed webhooks, Slack, Prometheus
//! Alertmanager; retries, dead letters, grouping and silences).
pub mod notify;
