//! The ingest edge's own Prometheus metrics (`docs/metrics.md`): what
//! became of the events it was sent, why the rejected ones (JSON events
//! and OTLP model-call spans) were refused, and why requests were refused
//! whole, per API. Request counts and durations per route are not here:
//! the binary measures them for every HTTP role alike.
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

/// The API a request came in on: the `api` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// `POST /v1/events`.
    Events,
    /// `POST /v1/traces`.
    OtlpHttp,
    /// OTLP/gRPC `TraceService/Export`.
    OtlpGrpc,
}

impl Api {
    pub fn label(self) -> &'static str {
        match self {
            Api::Events => "events",
            Api::OtlpHttp => "otlp_http",
            Api::OtlpGrpc => "otlp_grpc",
        }
    }
}

/// Why a request was refused whole: the `reason` label of
/// `tollgate_ingest_rejected_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// No key, or an unknown or revoked one (401, `UNAUTHENTICATED`).
    Unauthenticated,
    /// A key whose role may not ingest (403, `PERMISSION_DENIED`).
    Forbidden,
    /// A body (or a decompressed one, or a gRPC message) over
    /// `ingest.max_body_bytes` (413, `RESOURCE_EXHAUSTED`).
    TooLarge,
    /// A content type OTLP/HTTP does not take (415).
    UnsupportedMediaType,
    /// A `Content-Encoding` other than gzip or none (415).
    UnsupportedEncoding,
    /// A body that stopped arriving for longer than
    /// `ingest.body_read_timeout_secs` (408).
    SlowBody,
    /// A body that cannot be read or decoded (400, `INVALID_ARGUMENT`).
    Malformed,
    /// More events than `ingest.max_events_per_request` (400).
    TooManyEvents,
    /// More spans than `ingest.max_events_per_request` (400,
    /// `INVALID_ARGUMENT`).
    TooManySpans,
    /// More attributes, events and links than the spans allowed may carry
    /// (400, `INVALID_ARGUMENT`).
    TooManyAttributes,
    /// A dependency did not answer: PostgreSQL for the key, Kafka for the
    /// spans (503, `UNAVAILABLE`; retryable).
    Unavailable,
    /// Tollgate's own fault (500, `INTERNAL`).
    Internal,
}

impl Refusal {
    /// The reasons a request of `api` can be refused for: their series are
    /// exposed at zero from the start, so that Prometheus' `increase` sees
    /// the first refusal of each (a series born at its first increment
    /// shows none, and an alert on it misses it).
    pub fn of(api: Api) -> &'static [Refusal] {
        use Refusal::*;
        match api {
            Api::Events => &[
                Unauthenticated,
                Forbidden,
                TooLarge,
                UnsupportedEncoding,
                SlowBody,
                Malformed,
                TooManyEvents,
                Unavailable,
                Internal,
            ],
            Api::OtlpHttp => &[
                Unauthenticated,
                Forbidden,
                TooLarge,
                UnsupportedMediaType,
                UnsupportedEncoding,
                SlowBody,
                Malformed,
                TooManySpans,
                TooManyAttributes,
                Unavailable,
                Internal,
            ],
            Api::OtlpGrpc => &[
                Unauthenticated,
                Forbidden,
                TooLarge,
                UnsupportedEncoding,
                Malformed,
                TooManySpans,
                TooManyAttributes,
                Unavailable,
                Internal,
            ],
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::Forbidden => "forbidden",
            Refusal::TooLarge => "too_large",
            Refusal::UnsupportedMediaType => "unsupported_media_type",
            Refusal::UnsupportedEncoding => "unsupported_encoding",
            Refusal::SlowBody => "slow_body",
            Refusal::Malformed => "malformed",
            Refusal::TooManyEvents => "too_many_events",
            Refusal::TooManySpans => "too_many_spans",
            Refusal::TooManyAttributes => "too_many_attributes",
            Refusal::Unavailable => "unavailable",
            Refusal::Internal => "internal",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FieldLabels {
    pub api: &'static str,
    pub field: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub api: &'static str,
    pub reason: &'static str,
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
    /// Rejected events (JSON items, OTLP model-call spans) by API and the
    /// field their rejection names.
    rejected: Family<FieldLabels, Counter>,
    /// Requests refused whole, by API and reason.
    rejected_requests: Family<RequestLabels, Counter>,
    /// The `field` values seen so far (bounded by [`MAX_FIELDS`]).
    fields: Mutex<HashSet<String>>,
}

impl IngestMetrics {
    /// Register every metric in `registry` (the binary passes the one it
    /// serves, prefixed `tollgate_ingest`).
    pub fn register(&self, registry: &mut Registry) {
        // Every bounded series at zero (see [`Refusal::of`]); the `field`
        // of rejected events is open-ended and appears when first counted.
        for outcome in ["accepted", "rejected", "failed"] {
            let _ = self.events.get_or_create(&OutcomeLabels { outcome });
        }
        for api in [Api::Events, Api::OtlpHttp, Api::OtlpGrpc] {
            for reason in Refusal::of(api) {
                let _ = self.rejected_requests.get_or_create(&RequestLabels {
                    api: api.label(),
                    reason: reason.label(),
                });
            }
        }
        registry.register(
            "events",
            "Events sent to the ingest API, by outcome (accepted, rejected, failed)",
            self.events.clone(),
        );
        registry.register(
            "rejected_events",
            "Events rejected as invalid (items of POST /v1/events, model-call spans refused in an OTLP partial success), by api and the field the rejection names (tags.* for any tag, [] for any index)",
            self.rejected.clone(),
        );
        registry.register(
            "rejected_requests",
            "Requests refused whole (no event or span of them taken), by api (events, otlp_http, otlp_grpc) and reason",
            self.rejected_requests.clone(),
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

    /// Count one rejected event (or span) of `api` by the field its
    /// rejection names.
    pub fn rejected(&self, api: Api, field: &str) {
        let field = self.bounded(field_label(field));
        self.rejected
            .get_or_create(&FieldLabels {
                api: api.label(),
                field,
            })
            .inc();
    }

    /// Count one request of `api` refused whole, for `reason`.
    pub fn refused(&self, api: Api, reason: Refusal) {
        self.rejected_requests
            .get_or_create(&RequestLabels {
                api: api.label(),
                reason: reason.label(),
            })
            .inc();
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
        m.rejected(Api::Events, "call.usage.input_tokens");
        m.rejected(Api::Events, "call.usage.input_tokens");
        m.rejected(Api::Events, "tags.customer-7");
        m.rejected(Api::Events, "tags.customer-8");
        m.rejected(Api::Events, "matchers[3].value");
        m.rejected(Api::OtlpGrpc, "gen_ai.request.model");
        m.events(5, 5, 0);
        let text = exposition(&m);
        for line in [
            "# TYPE tollgate_ingest_events_total counter",
            "tollgate_ingest_events_total{outcome=\"accepted\"} 5",
            "tollgate_ingest_events_total{outcome=\"rejected\"} 5",
            "# TYPE tollgate_ingest_rejected_events_total counter",
            "tollgate_ingest_rejected_events_total{api=\"events\",field=\"call.usage.input_tokens\"} 2",
            "tollgate_ingest_rejected_events_total{api=\"events\",field=\"tags.*\"} 2",
            "tollgate_ingest_rejected_events_total{api=\"events\",field=\"matchers[].value\"} 1",
            "tollgate_ingest_rejected_events_total{api=\"otlp_grpc\",field=\"gen_ai.request.model\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // Failed events are exposed at zero before the first one.
        assert!(
            text.lines()
                .any(|l| l == "tollgate_ingest_events_total{outcome=\"failed\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn field_values_are_bounded() {
        let m = IngestMetrics::default();
        for i in 0..MAX_FIELDS + 10 {
            m.rejected(Api::Events, &format!("field_{i}"));
        }
        m.rejected(Api::Events, "field_0");
        let text = exposition(&m);
        let series = text
            .lines()
            .filter(|l| l.starts_with("tollgate_ingest_rejected_events_total{"))
            .count();
        assert_eq!(series, MAX_FIELDS + 1, "{text}");
        assert!(text
            .contains("tollgate_ingest_rejected_events_total{api=\"events\",field=\"other\"} 10"));
        assert!(text
            .contains("tollgate_ingest_rejected_events_total{api=\"events\",field=\"field_0\"} 2"));
    }

    #[test]
    fn every_refusal_reason_is_exposed_at_zero_before_its_first() {
        // A trial's Prometheus saw no increase for the first refusals of
        // each kind: their series were born at 1.
        let text = exposition(&IngestMetrics::default());
        for line in [
            "tollgate_ingest_rejected_requests_total{api=\"otlp_http\",reason=\"too_large\"} 0",
            "tollgate_ingest_rejected_requests_total{api=\"otlp_http\",reason=\"unsupported_media_type\"} 0",
            "tollgate_ingest_rejected_requests_total{api=\"otlp_grpc\",reason=\"too_many_spans\"} 0",
            "tollgate_ingest_rejected_requests_total{api=\"events\",reason=\"unauthenticated\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        let series = text
            .lines()
            .filter(|l| l.starts_with("tollgate_ingest_rejected_requests_total{"))
            .count();
        assert_eq!(series, 9 + 11 + 9, "{text}");
    }

    #[test]
    fn refused_requests_are_counted_by_api_and_reason() {
        let m = IngestMetrics::default();
        m.refused(Api::Events, Refusal::Unauthenticated);
        m.refused(Api::Events, Refusal::Unauthenticated);
        m.refused(Api::OtlpHttp, Refusal::UnsupportedMediaType);
        m.refused(Api::OtlpGrpc, Refusal::TooManySpans);
        let text = exposition(&m);
        for line in [
            "# TYPE tollgate_ingest_rejected_requests_total counter",
            "tollgate_ingest_rejected_requests_total{api=\"events\",reason=\"unauthenticated\"} 2",
            "tollgate_ingest_rejected_requests_total{api=\"otlp_http\",reason=\"unsupported_media_type\"} 1",
            "tollgate_ingest_rejected_requests_total{api=\"otlp_grpc\",reason=\"too_many_spans\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // The others stay at zero.
        assert_eq!(
            text.lines()
                .filter(
                    |l| l.starts_with("tollgate_ingest_rejected_requests_total{")
                        && !l.ends_with(" 0")
                )
                .count(),
            3,
            "{text}"
        );
    }
}
