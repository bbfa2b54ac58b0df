//! The evaluator's own Prometheus metrics (`docs/metrics.md`), registered
//! under `tollgate_alerts_` and served by `tollgate alerts evaluate`'s
//! metrics listener: its rounds and when the last one succeeded, whether
//! this replica holds the lease, the rules it measured and those firing,
//! and what became of the notifications it handed to delivery. They let
//! Prometheus tell an evaluator that stopped evaluating (or cannot reach
//! PostgreSQL), or whose receivers all fail, from a quiet one.
//!
//! [`crate::Evaluator`] updates them; each update is an atomic store or
//! add.

use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tollgate_processors::alerting::notify::{DeliveryOutcome, DeliveryResult};

/// A gauge of seconds (a Unix time).
type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

const OK: ResultLabels = ResultLabels { result: "ok" };
const FAILED: ResultLabels = ResultLabels { result: "failed" };
const DELIVERED: ResultLabels = ResultLabels {
    result: "delivered",
};
const DEAD_LETTERED: ResultLabels = ResultLabels {
    result: "dead_lettered",
};

/// Every metric of one `tollgate alerts evaluate`.
#[derive(Debug, Default)]
pub struct AlertsMetrics {
    /// Rounds this replica ran while holding the lease, by `result`.
    evaluations: Family<ResultLabels, Counter>,
    /// Unix seconds of the last round that succeeded; 0 before the first.
    last_evaluation: FloatGauge,
    /// 1 while this replica holds the lease.
    lease_held: Gauge,
    /// Enabled rules measured in the last evaluation (0 on a standby).
    rules: Gauge,
    /// Of them, those whose measurement was unknown (a source failed, or
    /// a figure nobody reported).
    rules_unknown: Gauge,
    /// Rules firing after the last evaluation (0 on a standby).
    firing: Gauge,
    /// Notifications whose delivery ended, by `result`.
    notifications: Family<ResultLabels, Counter>,
}

impl AlertsMetrics {
    /// Register every metric in `registry` (the binary passes the one it
    /// serves, prefixed `tollgate_alerts`). Every labelled series starts
    /// at 0, so `increase` sees the first count.
    pub fn register(&self, registry: &mut Registry) {
        for labels in [OK, FAILED] {
            let _ = self.evaluations.get_or_create(&labels);
        }
        for labels in [DELIVERED, DEAD_LETTERED] {
            let _ = self.notifications.get_or_create(&labels);
        }
        registry.register(
            "evaluations",
            "Evaluation rounds this replica ran while holding the alert-evaluator lease, by result (ok, failed)",
            self.evaluations.clone(),
        );
        registry.register(
            "last_evaluation_timestamp_seconds",
            "When this replica's last successful evaluation round ended (Unix time; 0 before the first)",
            self.last_evaluation.clone(),
        );
        registry.register(
            "lease_held",
            "1 while this replica holds the alert-evaluator lease (it is the active evaluator), else 0",
            self.lease_held.clone(),
        );
        registry.register(
            "rules",
            "Enabled rules measured in this replica's last evaluation (0 while standing by)",
            self.rules.clone(),
        );
        registry.register(
            "rules_unknown",
            "Of the rules measured in the last evaluation, those whose measurement was unknown (a source failed, or a figure nobody reported)",
            self.rules_unknown.clone(),
        );
        registry.register(
            "firing",
            "Rules firing after this replica's last evaluation (0 while standing by)",
            self.firing.clone(),
        );
        registry.register(
            "notifications",
            "Notifications whose delivery ended, by result (delivered: the receiver answered 2xx; dead_lettered: given up on)",
            self.notifications.clone(),
        );
    }

    /// A round ended at `at`: `ok` or not.
    pub fn round(&self, ok: bool, at: DateTime<Utc>) {
        if ok {
            self.evaluations.get_or_create(&OK).inc();
            // Milliseconds are enough; f64 holds them exactly.
            self.last_evaluation
                .set(at.timestamp_millis() as f64 / 1000.0);
        } else {
            self.evaluations.get_or_create(&FAILED).inc();
        }
    }

    /// Whether this replica holds the lease now.
    pub fn lease_held(&self, held: bool) {
        self.lease_held.set(i64::from(held));
        if !held {
            // A standby measures nothing: its last figures would count
            // twice beside the active replica's, and its last round's time
            // (from an earlier stint as the active one) would make a
            // takeover look like a stall.
            self.measured(0, 0, 0);
            self.last_evaluation.set(0.0);
        }
    }

    /// An evaluation measured `rules` enabled rules, `unknown` of them
    /// unknown, and left `firing` firing.
    pub fn measured(&self, rules: usize, unknown: usize, firing: usize) {
        self.rules.set(count(rules));
        self.rules_unknown.set(count(unknown));
        self.firing.set(count(firing));
    }

    /// A delivery ended: each of its notifications counts once.
    pub fn delivery(&self, outcome: &DeliveryOutcome) {
        let labels = match outcome.result {
            DeliveryResult::Delivered { .. } => &DELIVERED,
            DeliveryResult::DeadLettered { .. } => &DEAD_LETTERED,
        };
        self.notifications
            .get_or_create(labels)
            .inc_by(outcome.notification_ids.len() as u64);
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use prometheus_client::encoding::prometheus_text::encode;
    use uuid::Uuid;

    fn exposition(m: &AlertsMetrics) -> String {
        let mut registry = Registry::with_prefix("tollgate_alerts");
        m.register(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        text
    }

    fn has(text: &str, line: &str) {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }

    fn outcome(result: DeliveryResult, notifications: usize) -> DeliveryOutcome {
        DeliveryOutcome {
            receiver_id: Uuid::new_v4(),
            delivery_id: Uuid::new_v4(),
            notification_ids: (0..notifications).map(|_| Uuid::new_v4()).collect(),
            result,
        }
    }

    #[test]
    fn every_series_is_exposed_at_zero_from_the_start() {
        let text = exposition(&AlertsMetrics::default());
        for line in [
            "# TYPE tollgate_alerts_evaluations_total counter",
            "tollgate_alerts_evaluations_total{result=\"ok\"} 0",
            "tollgate_alerts_evaluations_total{result=\"failed\"} 0",
            "# TYPE tollgate_alerts_last_evaluation_timestamp_seconds gauge",
            "tollgate_alerts_last_evaluation_timestamp_seconds 0.0",
            "# TYPE tollgate_alerts_lease_held gauge",
            "tollgate_alerts_lease_held 0",
            "# TYPE tollgate_alerts_rules gauge",
            "tollgate_alerts_rules 0",
            "# TYPE tollgate_alerts_rules_unknown gauge",
            "tollgate_alerts_rules_unknown 0",
            "# TYPE tollgate_alerts_firing gauge",
            "tollgate_alerts_firing 0",
            "# TYPE tollgate_alerts_notifications_total counter",
            "tollgate_alerts_notifications_total{result=\"delivered\"} 0",
            "tollgate_alerts_notifications_total{result=\"dead_lettered\"} 0",
        ] {
            has(&text, line);
        }
    }

    #[test]
    fn rounds_lease_rules_and_notifications_are_counted() {
        let m = AlertsMetrics::default();
        let at = DateTime::from_timestamp(1_796_032_800, 250_000_000).unwrap();
        m.lease_held(true);
        m.round(true, at);
        m.round(false, at);
        m.round(true, at);
        m.measured(3, 1, 2);
        m.delivery(&outcome(DeliveryResult::Delivered { attempts: 1 }, 2));
        m.delivery(&outcome(
            DeliveryResult::DeadLettered {
                attempts: 10,
                error: "503".into(),
            },
            1,
        ));
        let text = exposition(&m);
        for line in [
            "tollgate_alerts_evaluations_total{result=\"ok\"} 2",
            "tollgate_alerts_evaluations_total{result=\"failed\"} 1",
            "tollgate_alerts_last_evaluation_timestamp_seconds 1796032800.25",
            "tollgate_alerts_lease_held 1",
            "tollgate_alerts_rules 3",
            "tollgate_alerts_rules_unknown 1",
            "tollgate_alerts_firing 2",
            "tollgate_alerts_notifications_total{result=\"delivered\"} 2",
            "tollgate_alerts_notifications_total{result=\"dead_lettered\"} 1",
        ] {
            has(&text, line);
        }
        // Standing by: nothing measured, no last success of its own.
        m.lease_held(false);
        let text = exposition(&m);
        for line in [
            "tollgate_alerts_lease_held 0",
            "tollgate_alerts_rules 0",
            "tollgate_alerts_firing 0",
            "tollgate_alerts_last_evaluation_timestamp_seconds 0.0",
        ] {
            has(&text, line);
        }
    }
}
