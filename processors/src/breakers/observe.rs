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

use chrono::Duration;
use tollgate_contract::signature::{signature, ErrorInput};
use tollgate_contract::{Event, EventKind, Outcome};

use super::config::BreakersConfig;
use super::machine::CallOutcome;

/// Whether an HTTP status of a failed call is the provider's failure.
pub fn is_provider_failure(http_status: u16) -> bool {
    http_status == 0 || http_status == 429 || http_status >= 500
}

/// The provider, model and outcome of a call event the breakers count.
pub fn call_outcome<'e>(
    event: &'e Event,
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
    use tollgate_contract::ProviderError;

    use super::*;

    /// A call event of `kind` on openai/gpt-4o that took 1.5 s.
    fn event(
        kind: EventKind,
        outcome: Outcome,
        status: u16,
        error: Option<ProviderError>,
    ) -> Event {
        let mut event: Event = serde_json::from_value(json!({
            "schema_version": 1,
            "event_id": "0190b3c4-0000-7000-8000-000000000001",
            "kind": "ai.call.completed",
            "occurred_at": "2026-12-01T12:00:00.000Z",
            "org_id": "o", "team_id": "t",
            "call": {"call_id": "c", "provider": "openai", "model": "gpt-4o",
                     "operation": "chat", "duration_ms": 1500, "outcome": "success"}
        }))
        .unwrap();
        event.kind = kind;
        let call = event.call.as_mut().unwrap();
        (call.outcome, call.http_status, call.error) = (outcome, status, error);
        event
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
}
