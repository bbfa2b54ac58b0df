//! Which events a breaker counts, and as what. Pure.
//!
//! A call counts when it reached the provider and the answer says something
//! about the provider's health: `ai.call.completed` (a success) and
//! `ai.call.failed` with 429, a 5xx, or no answer at all (HTTP status 0:
//! timeouts, connect errors, disconnects) — those are failures. A failed
//! call with any other status (400, 401, 403, 404, 413, ...) is the caller's
//! mistake: it is neither a failure nor a call, so a client sending bad
//! requests can neither open a breaker nor dilute a real outage. A call the
//! client cancelled says nothing about the provider either. `ai.call.blocked`
//! never reached a provider (a gate, possibly this breaker, refused it),
//! and lifecycle and admin events are not outcomes.
//!
//! The breakers read every event of the topic, so they read only the fields
//! they judge by ([`CallReport`]), borrowing the strings from the message,
//! instead of the whole [`tollgate_contract::Event`]: the events on the
//! topic were validated against the contract when they were accepted.

use std::borrow::Cow;

use chrono::{DateTime, Duration, Utc};
use rdkafka::message::Headers;
use serde::Deserialize;
use tollgate_contract::signature::{signature, ErrorInput};
use tollgate_contract::{EventKind, Outcome, ProviderError};
use tollgate_control::kafka::{ORIGIN_HEADER, ORIGIN_REPORTED};
use uuid::Uuid;

use super::config::BreakersConfig;
use super::machine::CallOutcome;

/// Whether a message carries an event the ingest API accepted from a
/// client ([`ORIGIN_HEADER`] = [`ORIGIN_REPORTED`]): a call reported after
/// the fact, by any holder of an ingest key of any org. The breakers judge
/// a provider by what the proxies saw: a report could otherwise open a
/// provider for every tenant (a trial did it with 20 posted events). A
/// message without the header (the proxy's, or produced to Kafka directly)
/// counts.
pub fn reported<H: Headers>(headers: Option<&H>) -> bool {
    headers.is_some_and(|h| {
        h.iter()
            .any(|h| h.key == ORIGIN_HEADER && h.value == Some(ORIGIN_REPORTED.as_bytes()))
    })
}

/// The fields of an event (`docs/event-contract.md`) the breakers read;
/// every other field is skipped unread.
#[derive(Debug, Deserialize)]
pub struct CallReport<'m> {
    pub event_id: Uuid,
    pub kind: EventKind,
    pub occurred_at: DateTime<Utc>,
    #[serde(default, borrow)]
    pub call: Option<CallFacts<'m>>,
}

/// The fields of an event's `call` the breakers read.
#[derive(Debug, Deserialize)]
pub struct CallFacts<'m> {
    #[serde(borrow)]
    pub provider: Cow<'m, str>,
    #[serde(borrow)]
    pub model: Cow<'m, str>,
    pub duration_ms: u32,
    pub outcome: Outcome,
    #[serde(default)]
    pub http_status: u16,
    #[serde(default)]
    pub error: Option<ProviderError>,
}

impl<'m> CallReport<'m> {
    /// The report in an event message's payload (JSON).
    pub fn parse(payload: &'m [u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(payload)
    }
}

/// Whether an HTTP status of a failed call is the provider's failure.
pub fn is_provider_failure(http_status: u16) -> bool {
    http_status == 0 || http_status == 429 || http_status >= 500
}

/// The provider, model and outcome of a call event the breakers count.
pub fn call_outcome<'e>(
    event: &'e CallReport<'_>,
    config: &BreakersConfig,
) -> Option<(&'e str, &'e str, CallOutcome)> {
    let call = event.call.as_ref()?;
    let failed = match event.kind {
        EventKind::CallCompleted => false,
        EventKind::CallFailed => {
            if call.outcome == Outcome::Cancelled || !is_provider_failure(call.http_status) {
                return None;
            }
            true
        }
        _ => return None,
    };
    if call.provider.is_empty() {
        return None;
    }
    let signature = match (&call.error, failed) {
        (Some(error), true) => Some(error.signature.unwrap_or_else(|| {
            signature(&ErrorInput::from_call(
                &call.provider,
                call.http_status,
                error,
            ))
            .id
        })),
        _ => None,
    };
    let outcome = CallOutcome {
        failed,
        slow: u64::from(call.duration_ms) > config.slow_call_ms,
        signature,
        started_at: event.occurred_at - Duration::milliseconds(i64::from(call.duration_ms)),
    };
    Some((&call.provider, &call.model, outcome))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;
    use tollgate_contract::signature::SignatureId;

    use super::*;

    /// A call report of `kind` on openai/gpt-4o that took 1.5 s.
    fn event(
        kind: EventKind,
        outcome: Outcome,
        status: u16,
        error: Option<ProviderError>,
    ) -> CallReport<'static> {
        CallReport {
            event_id: Uuid::from_u128(1),
            kind,
            occurred_at: "2026-12-01T12:00:00.000Z".parse().unwrap(),
            call: Some(CallFacts {
                provider: "openai".into(),
                model: "gpt-4o".into(),
                duration_ms: 1500,
                outcome,
                http_status: status,
                error,
            }),
        }
    }

    #[test]
    fn a_whole_contract_event_is_read_for_the_fields_the_breakers_judge_by() {
        // Every field of the contract the report does not name is skipped,
        // and an escaped string is read (owned) as well as a plain one.
        let payload = br#"{
            "schema_version": 1,
            "event_id": "0190b3c4-0000-7000-8000-000000000001",
            "kind": "ai.call.failed",
            "occurred_at": "2026-12-01T12:00:00.250Z",
            "org_id": "o", "team_id": "t", "user_id": "u", "api_key_id": "k",
            "tags": {"feature": "chat"},
            "reported_cost": "0.001",
            "call": {"call_id": "c", "trace_id": "tr", "provider": "open\u0061i",
                     "model": "gpt-4o", "requested_model": "gpt-4o",
                     "attempt": 2, "fallback_of": "c0", "operation": "chat",
                     "stream": true, "duration_ms": 900, "ttft_ms": 120,
                     "usage": {"input_tokens": 10, "output_tokens": 5},
                     "outcome": "error", "http_status": 503,
                     "error": {"type": "server_error", "message": "overloaded"},
                     "cache_hit": false,
                     "recovery": {"sequence": 2, "strategy": "retry"}}
        }"#;
        let report = CallReport::parse(payload).unwrap();
        assert_eq!(
            report.event_id.to_string(),
            "0190b3c4-0000-7000-8000-000000000001"
        );
        assert_eq!(report.kind, EventKind::CallFailed);
        let (provider, model, o) = call_outcome(&report, &BreakersConfig::default()).unwrap();
        assert_eq!((provider, model, o.failed), ("openai", "gpt-4o", true));
        assert_eq!(
            o.started_at,
            "2026-12-01T12:00:00.250Z".parse::<DateTime<Utc>>().unwrap()
                - Duration::milliseconds(900)
        );
        let admin = serde_json::to_vec(&json!({
            "schema_version": 1,
            "event_id": "0190b3c4-0000-7000-8000-000000000002",
            "kind": "admin.price.added",
            "occurred_at": "2026-12-01T12:00:00.000Z",
            "org_id": "o", "team_id": "t",
            "admin": {"model": "gpt-4o", "call": {"provider": 1}}
        }))
        .unwrap();
        let report = CallReport::parse(&admin).unwrap();
        assert!(report.call.is_none());
        assert!(call_outcome(&report, &BreakersConfig::default()).is_none());
        // What is not an event at all is an error, not a report.
        assert!(CallReport::parse(b"{\"kind\": \"ai.call.failed\"}").is_err());
        assert!(CallReport::parse(b"not json").is_err());
    }

    fn error(kind: &str, message: &str) -> Option<ProviderError> {
        Some(ProviderError {
            error_type: kind.into(),
            message: message.into(),
            signature: None,
        })
    }

    #[test]
    fn successes_and_provider_failures_are_calls() {
        let c = BreakersConfig::default();
        let e = event(EventKind::CallCompleted, Outcome::Success, 200, None);
        let (provider, model, o) = call_outcome(&e, &c).unwrap();
        assert_eq!(
            (provider, model, o.failed, o.slow),
            ("openai", "gpt-4o", false, false)
        );
        assert_eq!(o.signature, None);
        // Sent 1.5 s before it ended.
        assert_eq!(o.started_at, e.occurred_at - Duration::milliseconds(1500));
        for (status, outcome) in [
            (429, Outcome::RateLimited),
            (500, Outcome::Error),
            (503, Outcome::Error),
            (529, Outcome::Error),
            (0, Outcome::Timeout),
            (0, Outcome::Error),
        ] {
            let e = event(
                EventKind::CallFailed,
                outcome,
                status,
                error("server_error", "boom"),
            );
            let (_, _, o) = call_outcome(&e, &c).unwrap();
            assert!(o.failed, "{status}");
            assert!(o.signature.is_some(), "{status}");
        }
    }

    #[test]
    fn client_errors_cancellations_blocks_and_lifecycle_are_not_calls() {
        let c = BreakersConfig::default();
        for status in [400, 401, 403, 404, 408, 413, 422] {
            let e = event(
                EventKind::CallFailed,
                Outcome::Error,
                status,
                error("invalid_request_error", "bad"),
            );
            assert!(call_outcome(&e, &c).is_none(), "{status}");
        }
        let cancelled = event(
            EventKind::CallFailed,
            Outcome::Cancelled,
            0,
            error("cancelled", ""),
        );
        assert!(call_outcome(&cancelled, &c).is_none());
        for kind in [
            EventKind::CallBlocked,
            EventKind::CallStarted,
            EventKind::CallFirstToken,
        ] {
            let e = event(kind, Outcome::Blocked, 503, None);
            assert!(call_outcome(&e, &c).is_none());
        }
        let mut admin = event(
            EventKind::admin("admin.price.added"),
            Outcome::Success,
            0,
            None,
        );
        admin.call = None;
        assert!(call_outcome(&admin, &c).is_none());
    }

    #[test]
    fn the_signature_is_the_events_own_or_computed_the_same_way() {
        let c = BreakersConfig::default();
        let message = "Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used 29794, Requested 1165";
        let e = event(
            EventKind::CallFailed,
            Outcome::RateLimited,
            429,
            error("rate_limit_error", message),
        );
        let computed = call_outcome(&e, &c).unwrap().2.signature.unwrap();
        let other = message.replace("29794", "29001").replace("1165", "2048");
        let e2 = event(
            EventKind::CallFailed,
            Outcome::RateLimited,
            429,
            error("rate_limit_error", &other),
        );
        assert_eq!(call_outcome(&e2, &c).unwrap().2.signature, Some(computed));
        let mut given = error("rate_limit_error", message).unwrap();
        given.signature = Some(SignatureId(42));
        let e3 = event(
            EventKind::CallFailed,
            Outcome::RateLimited,
            429,
            Some(given),
        );
        assert_eq!(
            call_outcome(&e3, &c).unwrap().2.signature,
            Some(SignatureId(42))
        );
        // A failure without an error body has no signature, as in `calls`.
        let bare = event(EventKind::CallFailed, Outcome::Error, 502, None);
        assert_eq!(call_outcome(&bare, &c).unwrap().2.signature, None);
    }

    #[test]
    fn slow_is_longer_than_the_threshold() {
        let c = BreakersConfig {
            slow_call_ms: 1500,
            ..Default::default()
        };
        let e = event(EventKind::CallCompleted, Outcome::Success, 200, None);
        assert!(!call_outcome(&e, &c).unwrap().2.slow);
        let c = BreakersConfig {
            slow_call_ms: 1499,
            ..Default::default()
        };
        assert!(call_outcome(&e, &c).unwrap().2.slow);
    }

    #[test]
    fn reported_calls_are_told_by_their_origin_header() {
        use rdkafka::message::{Header, OwnedHeaders};
        let with = |key: &str, value: &str| {
            OwnedHeaders::new().insert(Header {
                key,
                value: Some(value),
            })
        };
        assert!(reported(Some(&with(ORIGIN_HEADER, ORIGIN_REPORTED))));
        assert!(!reported(Some(&with(ORIGIN_HEADER, "proxy"))));
        assert!(!reported(Some(&with("other", ORIGIN_REPORTED))));
        assert!(!reported::<OwnedHeaders>(None));
    }
}
