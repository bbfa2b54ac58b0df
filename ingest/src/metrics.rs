//! The ingest edge's own Prometheus metrics (`docs/metrics.md`): what
//! became of the events it was sent, and why the rejected ones were
//! refused. Request counts and durations per route are not here: the
//! binary measures them for every HTTP role alike.
//!
//! To count something new in ingest code (for example the OTLP receiver's
//! dropped spans): add a field to [`IngestMetrics`], register it in
//! [`IngestMetrics::register`] with its name, help and unit, update it
//! through `IngestState::metrics`, and give it a row in `docs/metrics.md`;
//! the exposition test in this module lists every name.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// At most this many distinct `field` label values; rejections of further
/// fields are counted under [`OTHER_FIELD`], so a client cannot grow the
/// exposition without bound.
pub const MAX_FIELDS: usize = 64;
pub const OTHER_FIELD: &str = "other";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FieldLabels {
    pub field: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// The ingest edge's metrics; registered under `tollgate_ingest_`.
#[derive(Debug, Default)]
pub struct IngestMetrics {
    /// Events by what became of them: `accepted` (Kafka acknowledged),
    /// `rejected` (invalid), `failed` (Kafka did not acknowledge).
    events: Family<OutcomeLabels, Counter>,
    /// Rejected events by the field their rejection names.
    rejected: Family<FieldLabels, Counter>,
    /// The `field` values seen so far (bounded by [`MAX_FIELDS`]).
    fields: Mutex<HashSet<String>>,
}

impl IngestMetrics {
    /// Register every metric in `registry` (the binary passes the one it
    /// serves, prefixed `tollgate_ingest`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "events",
            "Events sent to the ingest API, by outcome (accepted, rejected, failed)",
            self.events.clone(),
        );
        registry.register(
            "rejected_events",
            "Events rejected as invalid, by the field the rejection names (tags.* for any tag, [] for any index)",
            self.rejected.clone(),
        );
    }

    /// Count the outcome of one request's events.
    pub fn events(&self, accepted: usize, rejected: usize, failed: usize) {
        for (outcome, n) in [
            ("accepted", accepted),
            ("rejected", rejected),
            ("failed", failed),
        ] {
            if n > 0 {
                self.events
                    .get_or_create(&OutcomeLabels { outcome })
                    .inc_by(n as u64);
            }
        }
    }

    /// Count one rejected event by the field its rejection names.
    pub fn rejected(&self, field: &str) {
        let field = self.bounded(field_label(field));
        self.rejected.get_or_create(&FieldLabels { field }).inc();
    }

    fn bounded(&self, field: String) -> String {
        let mut seen = self.fields.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(&field) {
            return field;
        }
        if seen.len() >= MAX_FIELDS {
            return OTHER_FIELD.to_string();
        }
        seen.insert(field.clone());
        field
    }
}

/// The label of a rejection's field: the client's own names (tag keys,
/// array positions) are folded away, so the label names a field of the
/// schema, not of one request.
pub fn field_label(field: &str) -> String {
    if field == "tags" || field.starts_with("tags.") {
        return if field == "tags" { "tags" } else { "tags.*" }.to_string();
    }
    let mut out = String::with_capacity(field.len());
    let mut in_index = false;
    for c in field.chars().take(128) {
        match c {
            '[' => {
                in_index = true;
                out.push_str("[]");
            }
            ']' => in_index = false,
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::prometheus_text::encode;

    fn exposition(m: &IngestMetrics) -> String {
        let mut registry = Registry::with_prefix("tollgate_ingest");
        m.register(&mut registry);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap_or_default();
        text
    }

    #[test]
    fn rejections_are_counted_by_schema_field() {
        let m = IngestMetrics::default();
        m.rejected("call.usage.input_tokens");
        m.rejected("call.usage.input_tokens");
        m.rejected("tags.customer-7");
        m.rejected("tags.customer-8");
        m.rejected("matchers[3].value");
        m.events(5, 5, 0);
        let text = exposition(&m);
        for line in [
            "# TYPE tollgate_ingest_events_total counter",
            "tollgate_ingest_events_total{outcome=\"accepted\"} 5",
            "tollgate_ingest_events_total{outcome=\"rejected\"} 5",
            "# TYPE tollgate_ingest_rejected_events_total counter",
            "tollgate_ingest_rejected_events_total{field=\"call.usage.input_tokens\"} 2",
            "tollgate_ingest_rejected_events_total{field=\"tags.*\"} 2",
            "tollgate_ingest_rejected_events_total{field=\"matchers[].value\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(!text.contains("outcome=\"failed\""), "{text}");
    }

    #[test]
    fn field_values_are_bounded() {
        let m = IngestMetrics::default();
        for i in 0..MAX_FIELDS + 10 {
            m.rejected(&format!("field_{i}"));
        }
        m.rejected("field_0");
        let text = exposition(&m);
        let series = text
            .lines()
            .filter(|l| l.starts_with("tollgate_ingest_rejected_events_total{"))
            .count();
        assert_eq!(series, MAX_FIELDS + 1, "{text}");
        assert!(text.contains("tollgate_ingest_rejected_events_total{field=\"other\"} 10"));
        assert!(text.contains("tollgate_ingest_rejected_events_total{field=\"field_0\"} 2"));
    }
}
