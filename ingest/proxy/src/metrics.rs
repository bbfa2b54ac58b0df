//! The proxy's own counters, served as Prometheus text at `GET /metrics`:
//! responses by status class, upstream attempts, refusals, event delivery
//! (produced, spooled, replayed, spool backlog) and decision freshness (how
//! long after a decision record was written the proxy applied it).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct ProxyMetrics {
    /// Index = status / 100 (1..=5).
    responses: [AtomicU64; 6],
    pub rate_limited_responses: AtomicU64,
    pub upstream_attempts: AtomicU64,
    pub upstream_failures: AtomicU64,
    pub retries: AtomicU64,
    pub fallbacks: AtomicU64,
    /// Candidates (primary or fallback) a breaker took out of a call.
    pub breaker_skips: AtomicU64,
    /// Fallback attempts whose order a learned recovery plan changed.
    pub recovery_reorders: AtomicU64,
    pub blocked: AtomicU64,
    /// Calls refused because their reservation did not fit a hard budget.
    pub budget_refusals: AtomicU64,
    pub cancelled: AtomicU64,
    pub events_produced: AtomicU64,
    pub events_spooled: AtomicU64,
    pub events_replayed: AtomicU64,
    pub spool_pending_bytes: AtomicU64,
    pub decision_records: AtomicU64,
    pub decisions_in_force: AtomicU64,
    /// Milliseconds between the last decision record's Kafka timestamp and
    /// the moment the proxy applied it.
    pub decision_lag_ms: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl ProxyMetrics {
    pub fn response(&self, status: u16) {
        let class = usize::from(status / 100).min(5);
        add(&self.responses[class], 1);
        if status == 429 {
            add(&self.rate_limited_responses, 1);
        }
    }

    pub fn inc(counter: &AtomicU64) {
        add(counter, 1);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        add(counter, n);
    }

    pub fn set(gauge: &AtomicU64, value: u64) {
        gauge.store(value, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP tollgate_proxy_responses_total Responses sent to clients, by status class."
        );
        let _ = writeln!(out, "# TYPE tollgate_proxy_responses_total counter");
        for class in 1..=5 {
            let _ = writeln!(
                out,
                "tollgate_proxy_responses_total{{class=\"{class}xx\"}} {}",
                get(&self.responses[class])
            );
        }
        let counters: [(&str, &str, &AtomicU64); 14] = [
            (
                "tollgate_proxy_budget_refusals_total",
                "Calls refused because the most they could cost did not fit a hard budget.",
                &self.budget_refusals,
            ),
            (
                "tollgate_proxy_rate_limited_responses_total",
                "429 responses (gates and upstream).",
                &self.rate_limited_responses,
            ),
            (
                "tollgate_proxy_upstream_attempts_total",
                "Requests sent to upstream providers.",
                &self.upstream_attempts,
            ),
            (
                "tollgate_proxy_upstream_failures_total",
                "Upstream attempts that failed before a successful response.",
                &self.upstream_failures,
            ),
            (
                "tollgate_proxy_retries_total",
                "Upstream attempts that were retries.",
                &self.retries,
            ),
            (
                "tollgate_proxy_fallbacks_total",
                "Calls that moved to a fallback model.",
                &self.fallbacks,
            ),
            (
                "tollgate_proxy_breaker_skips_total",
                "Candidate models a fleet or local breaker took out of a call.",
                &self.breaker_skips,
            ),
            (
                "tollgate_proxy_recovery_reorders_total",
                "Next attempts chosen by a learned recovery plan instead of the configured order.",
                &self.recovery_reorders,
            ),
            (
                "tollgate_proxy_blocked_total",
                "Calls refused by a gate (ai.call.blocked).",
                &self.blocked,
            ),
            (
                "tollgate_proxy_cancelled_total",
                "Streams the client hung up on.",
                &self.cancelled,
            ),
            (
                "tollgate_proxy_events_produced_total",
                "Events Kafka acknowledged directly.",
                &self.events_produced,
            ),
            (
                "tollgate_proxy_events_spooled_total",
                "Events written to the disk spool.",
                &self.events_spooled,
            ),
            (
                "tollgate_proxy_events_replayed_total",
                "Spooled events Kafka acknowledged on replay.",
                &self.events_replayed,
            ),
            (
                "tollgate_proxy_decision_records_total",
                "Decision records read from the decisions topic.",
                &self.decision_records,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                get(counter)
            );
        }
        let gauges: [(&str, &str, &AtomicU64); 3] = [
            (
                "tollgate_proxy_spool_pending_bytes",
                "Bytes in the spool not yet replayed.",
                &self.spool_pending_bytes,
            ),
            (
                "tollgate_proxy_decisions_in_force",
                "Decisions (other than allow) in the cache.",
                &self.decisions_in_force,
            ),
            (
                "tollgate_proxy_decision_freshness_ms",
                "From the last decision record's Kafka timestamp to its application.",
                &self.decision_lag_ms,
            ),
        ];
        for (name, help, gauge) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                get(gauge)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = ProxyMetrics::default();
        m.response(200);
        m.response(429);
        ProxyMetrics::inc(&m.events_spooled);
        let text = m.render();
        assert!(text.contains("tollgate_proxy_responses_total{class=\"2xx\"} 1"));
        assert!(text.contains("tollgate_proxy_responses_total{class=\"4xx\"} 1"));
        assert!(text.contains("tollgate_proxy_rate_limited_responses_total 1"));
        assert!(text.contains("tollgate_proxy_events_spooled_total 1"));
    }
}
