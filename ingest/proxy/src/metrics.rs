//! The proxy's own metrics (`docs/metrics.md`), registered under
//! `tollgate_proxy_` and served by the binary at `GET /metrics`: upstream
//! attempts, refusals, event delivery (produced, spooled, replayed, spool
//! backlog), decision freshness and budget reservations. Responses by route
//! and status class, with their durations, are the binary's
//! `tollgate_http_*` metrics, common to every HTTP role.
//!
//! The handles are cheap clones of shared atomics: code updates them
//! through `ProxyState::metrics` (`ProxyMetrics::inc(&m.retries)`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// A gauge of seconds (or another float).
pub type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Debug, Default)]
pub struct ProxyMetrics {
    pub rate_limited_responses: Counter,
    pub upstream_attempts: Counter,
    pub upstream_failures: Counter,
    pub retries: Counter,
    pub fallbacks: Counter,
    /// Candidates (primary or fallback) a breaker took out of a call.
    pub breaker_skips: Counter,
    /// Fallback attempts whose order a learned recovery plan changed.
    pub recovery_reorders: Counter,
    pub blocked: Counter,
    /// Calls refused because their reservation did not fit a hard budget.
    pub budget_refusals: Counter,
    /// Calls admitted with a reservation against at least one hard budget.
    pub budget_reservations: Counter,
    /// Reservations held by calls still running (`BudgetLedger` keeps it).
    pub budget_reservations_open: Gauge,
    pub cancelled: Counter,
    pub events_produced: Counter,
    pub events_spooled: Counter,
    pub events_replayed: Counter,
    /// Spooled events the replay left out: the events topic had them.
    pub events_already_on_kafka: Counter,
    pub spool_pending_bytes: Gauge,
    /// The write-ahead log (`crate::wal`).
    pub wal_records: Counter,
    pub wal_fsyncs: Counter,
    pub wal_write_errors: Counter,
    pub wal_refused_calls: Counter,
    pub wal_unprotected_calls: Counter,
    pub wal_recovered_events: Counter,
    pub wal_interrupted_attempts: Counter,
    /// Segments the log started, and of them the spares written in
    /// advance (`crate::wal`): the rest grew as they were written.
    pub wal_segments: Counter,
    pub wal_spare_segments: Counter,
    pub wal_bytes: Gauge,
    pub wal_writable: Gauge,
    pub decision_records: Counter,
    pub decisions_in_force: Gauge,
    /// Seconds between the last decision record's Kafka timestamp and the
    /// moment the proxy applied it.
    pub decision_freshness: FloatGauge,
    /// When the proxy applied the last decision record (Unix seconds), so
    /// `time() - ...` is the age of the newest decision.
    pub decision_applied_at: FloatGauge,
    /// Reloads of stored provider credentials that failed (PostgreSQL
    /// unreachable, a row this proxy cannot decrypt).
    pub credential_reload_failures: Counter,
    /// This proxy's share of budgets (`crate::shares`).
    pub share: FloatGauge,
    /// Live proxies the last membership refresh saw.
    pub live_proxies: Gauge,
    /// Membership refreshes that failed (PostgreSQL unreachable).
    pub membership_failures: Counter,
    /// Calls refused by a rate-limit tier, by scope and limit.
    pub rate_limit_refusals: Family<crate::tiers::RefusalLabels, Counter>,
    /// Claims of rate-limit capacity from the shared pool that answered.
    pub rate_limit_claims: Counter,
    /// Claims that failed (PostgreSQL unreachable or erring).
    pub rate_limit_claim_failures: Counter,
    /// Calls refused because no claim came in within
    /// `proxy.tiers.claim_wait_ms` (or the last one failed).
    pub rate_limit_claim_timeouts: Counter,
    /// The proxy's own time on each call (`crate::overhead`).
    pub overhead: crate::overhead::OverheadHistogram,
}

impl ProxyMetrics {
    /// Count a response to a client (only 429s are counted here; every
    /// response is in the binary's `tollgate_http_requests_total`).
    pub fn response(&self, status: u16) {
        if status == 429 {
            self.rate_limited_responses.inc();
        }
    }

    pub fn inc(counter: &Counter) {
        counter.inc();
    }

    pub fn add(counter: &Counter, n: u64) {
        counter.inc_by(n);
    }

    pub fn set(gauge: &Gauge, value: u64) {
        gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
    }

    /// Register every metric in `registry` (the binary passes the one it
    /// serves, prefixed `tollgate_proxy`).
    pub fn register(&self, registry: &mut Registry) {
        let counters: [(&str, &str, &Counter); 16] = [
            (
                "budget_refusals",
                "Calls refused because the most they could cost did not fit a hard budget",
                &self.budget_refusals,
            ),
            (
                "budget_reservations",
                "Calls admitted with a reservation of the most they could cost against a hard budget",
                &self.budget_reservations,
            ),
            (
                "rate_limited_responses",
                "429 responses (gates and upstream)",
                &self.rate_limited_responses,
            ),
            (
                "upstream_attempts",
                "Requests sent to upstream providers",
                &self.upstream_attempts,
            ),
            (
                "upstream_failures",
                "Upstream attempts that failed before a successful response",
                &self.upstream_failures,
            ),
            (
                "retries",
                "Upstream attempts that were retries",
                &self.retries,
            ),
            (
                "fallbacks",
                "Calls that moved to a fallback model",
                &self.fallbacks,
            ),
            (
                "breaker_skips",
                "Candidate models a fleet or local breaker took out of a call",
                &self.breaker_skips,
            ),
            (
                "recovery_reorders",
                "Next attempts chosen by a learned recovery plan instead of the configured order",
                &self.recovery_reorders,
            ),
            (
                "blocked",
                "Calls refused by a gate (ai.call.blocked)",
                &self.blocked,
            ),
            (
                "cancelled",
                "Streams the client hung up on",
                &self.cancelled,
            ),
            (
                "events_produced",
                "Events Kafka acknowledged directly",
                &self.events_produced,
            ),
            (
                "events_spooled",
                "Events written to the disk spool",
                &self.events_spooled,
            ),
            (
                "events_replayed",
                "Spooled events Kafka acknowledged on replay",
                &self.events_replayed,
            ),
            (
                "events_already_on_kafka",
                "Spooled events left out of the replay because the events topic already had them (stored without an acknowledgement)",
                &self.events_already_on_kafka,
            ),
            (
                "decision_records",
                "Decision records read from the decisions topic",
                &self.decision_records,
            ),
        ];
        for (name, help, counter) in counters.into_iter().chain(self.wal_counters()) {
            registry.register(name, help, counter.clone());
        }
        let gauges: [(&str, &str, &Gauge); 3] = [
            (
                "spool_pending_bytes",
                "Bytes in the spool not yet replayed",
                &self.spool_pending_bytes,
            ),
            (
                "decisions_in_force",
                "Decisions (other than allow) in the cache",
                &self.decisions_in_force,
            ),
            (
                "budget_reservations_open",
                "Budget reservations held by calls still running",
                &self.budget_reservations_open,
            ),
        ];
        let wal_gauges: [(&str, &str, &Gauge); 2] = [
            (
                "wal_bytes",
                "Bytes in the write-ahead log's live segments",
                &self.wal_bytes,
            ),
            (
                "wal_writable",
                "1 while the write-ahead log can be written, 0 after a failed write (disk full) until one succeeds",
                &self.wal_writable,
            ),
        ];
        for (name, help, gauge) in gauges.into_iter().chain(wal_gauges) {
            registry.register(name, help, gauge.clone());
        }
        registry.register(
            "overhead_seconds",
            "The proxy's own time on each call, to its response head, less the client's body and the providers' answers and backoffs (the Server-Timing header's overhead)",
            self.overhead.0.clone(),
        );
        registry.register(
            "credential_reload_failures",
            "Reloads of stored provider credentials that failed (postgresql unreachable, a row under a master key this proxy lacks, an altered row); the proxy keeps the credential it holds",
            self.credential_reload_failures.clone(),
        );
        registry.register(
            "share",
            "This proxy's share of each hard budget's remaining amount (1/N of the N live proxies, 0 while joining or once its lease ran out, or proxy.budgets.share)",
            self.share.clone(),
        );
        registry.register(
            "live_proxies",
            "Live proxies (unexpired memberships in postgresql) the last refresh saw",
            self.live_proxies.clone(),
        );
        registry.register(
            "membership_failures",
            "Membership renewals that failed (postgresql unreachable); the share drops to 0 when the lease runs out",
            self.membership_failures.clone(),
        );
        // At zero from the start, so that `increase` sees the first refusal.
        for scope in ["key", "user", "team", "org"] {
            for limit in [
                crate::tiers::LimitKind::requests,
                crate::tiers::LimitKind::tokens,
            ] {
                let _ = self
                    .rate_limit_refusals
                    .get_or_create(&crate::tiers::RefusalLabels {
                        scope: scope.into(),
                        limit,
                    });
            }
        }
        registry.register(
            "rate_limit_refusals",
            "Calls refused by a rate-limit tier (429), by scope (key, user, team, org) and limit (requests, tokens)",
            self.rate_limit_refusals.clone(),
        );
        registry.register(
            "rate_limit_claims",
            "Claims of rate-limit capacity from the shared pool in postgresql that answered (with a grant, possibly 0 when the window's pool is spent)",
            self.rate_limit_claims.clone(),
        );
        registry.register(
            "rate_limit_claim_failures",
            "Claims of rate-limit capacity that failed (postgresql unreachable or erring); the proxy spends only what it has claimed",
            self.rate_limit_claim_failures.clone(),
        );
        registry.register(
            "rate_limit_claim_timeouts",
            "Calls refused (429) because no claim of rate-limit capacity came in within proxy.tiers.claim_wait_ms or the last claim failed",
            self.rate_limit_claim_timeouts.clone(),
        );
        registry.register(
            "decision_freshness_seconds",
            "From the last decision record's Kafka timestamp to its application",
            self.decision_freshness.clone(),
        );
        registry.register(
            "decision_applied_timestamp_seconds",
            "When the last decision record was applied (Unix time); time() minus this is the newest decision's age",
            self.decision_applied_at.clone(),
        );
    }
}

impl ProxyMetrics {
    fn wal_counters(&self) -> [(&'static str, &'static str, &Counter); 9] {
        [
            (
                "wal_records",
                "Records written to the write-ahead log (attempts started, final events, acknowledgements)",
                &self.wal_records,
            ),
            (
                "wal_fsyncs",
                "fsyncs of the write-ahead log (each covers every record written since the last)",
                &self.wal_fsyncs,
            ),
            (
                "wal_write_errors",
                "Failed writes or fsyncs of the write-ahead log (disk full, I/O error)",
                &self.wal_write_errors,
            ),
            (
                "wal_refused_calls",
                "Calls refused with 503 because the write-ahead log could not be written (proxy.wal_unwritable = refuse)",
                &self.wal_refused_calls,
            ),
            (
                "wal_unprotected_calls",
                "Attempts forwarded although the write-ahead log could not be written (proxy.wal_unwritable = serve)",
                &self.wal_unprotected_calls,
            ),
            (
                "wal_recovered_events",
                "Events recovered from an earlier run's write-ahead log and replayed",
                &self.wal_recovered_events,
            ),
            (
                "wal_interrupted_attempts",
                "Recovered attempts that never ended (recorded as proxy_interrupted)",
                &self.wal_interrupted_attempts,
            ),
            (
                "wal_segments",
                "Segments the write-ahead log started",
                &self.wal_segments,
            ),
            (
                "wal_spare_segments",
                "Segments the write-ahead log started on a spare of zeros written in advance (the others grew as they were written)",
                &self.wal_spare_segments,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::prometheus_text::encode;

    #[test]
    fn renders_prometheus_text() {
        let m = ProxyMetrics::default();
        m.response(200);
        m.response(429);
        ProxyMetrics::inc(&m.events_spooled);
        ProxyMetrics::set(&m.spool_pending_bytes, 4096);
        m.decision_freshness.set(0.25);
        m.rate_limit_refusals
            .get_or_create(&crate::tiers::RefusalLabels {
                scope: "team".into(),
                limit: crate::tiers::LimitKind::tokens,
            })
            .inc();
        let mut registry = Registry::with_prefix("tollgate_proxy");
        m.register(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap_or_default();
        for line in [
            "# TYPE tollgate_proxy_rate_limited_responses_total counter",
            "tollgate_proxy_rate_limited_responses_total 1",
            "tollgate_proxy_events_spooled_total 1",
            "tollgate_proxy_events_produced_total 0",
            "# TYPE tollgate_proxy_spool_pending_bytes gauge",
            "tollgate_proxy_spool_pending_bytes 4096",
            "# TYPE tollgate_proxy_decision_freshness_seconds gauge",
            "tollgate_proxy_decision_freshness_seconds 0.25",
            "tollgate_proxy_budget_reservations_open 0",
            "tollgate_proxy_credential_reload_failures_total 0",
            "# TYPE tollgate_proxy_share gauge",
            "tollgate_proxy_share 0.0",
            "tollgate_proxy_rate_limit_refusals_total{scope=\"team\",limit=\"tokens\"} 1",
            "# TYPE tollgate_proxy_rate_limit_claims_total counter",
            "tollgate_proxy_rate_limit_claims_total 0",
            "tollgate_proxy_rate_limit_claim_failures_total 0",
            "tollgate_proxy_rate_limit_claim_timeouts_total 0",
            "# TYPE tollgate_proxy_events_already_on_kafka_total counter",
            "tollgate_proxy_events_already_on_kafka_total 0",
            "# TYPE tollgate_proxy_overhead_seconds histogram",
            "tollgate_proxy_overhead_seconds_count 0",
            "# TYPE tollgate_proxy_wal_spare_segments_total counter",
            "tollgate_proxy_wal_segments_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        assert_eq!(names.len(), 41, "{text}");
        assert!(
            names.iter().all(|n| n.starts_with("tollgate_proxy_")),
            "{text}"
        );
    }
}
