//! Control-plane (`admin.*`) events: the kinds, the tenant they belong to and
//! the builders. A price, budget or rate-limit change, a repricing run and a
//! budget warning are each also an event on `tollgate.events`, so the audit
//! chain records who changed what and when. The control plane puts them in
//! its outbox; the budget watcher produces its warnings directly.

use std::collections::BTreeMap;

use chrono::{SubsecRound, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::catalog::PriceVersion;
use crate::event::{Event, SCHEMA_VERSION};
use crate::kind::EventKind;

/// Org and team of control-plane events that belong to no tenant.
pub const CONTROL_PLANE_TENANT: &str = "_tollgate";

/// Why an event sent by a client to an ingest edge (the events API, OTLP)
/// is refused though it keeps the contract: `admin.*` events are the
/// control plane's own record of its changes (written through its outbox,
/// `crate::audit::erasure` among them), and org or team
/// [`CONTROL_PLANE_TENANT`] is the control plane's trail (an org's
/// alerting changes sit in its chain of that team). A client able to send either could write
/// into the audit trail as the control plane, for instance a forged record
/// of an erasure that would excuse an entry erased without one.
pub fn refused_at_the_edge(event: &Event) -> Option<crate::Rejection> {
    if event.kind.is_admin() {
        return Some(crate::Rejection::new(
            "kind",
            format!(
                "{} is a control-plane event: clients send ai.call.* events; admin.* events \
                 are written by Tollgate itself when its configuration changes",
                event.kind
            ),
        ));
    }
    for (field, id) in [("org_id", &event.org_id), ("team_id", &event.team_id)] {
        // `_TOLLGATE` reads as the same tenant on a page.
        if id.eq_ignore_ascii_case(CONTROL_PLANE_TENANT) {
            return Some(crate::Rejection::new(
                field,
                format!(
                    "{CONTROL_PLANE_TENANT:?} is reserved for Tollgate's own control-plane trail \
                     (an org's alerting changes are chained as its team {CONTROL_PLANE_TENANT:?})"
                ),
            ));
        }
    }
    None
}

/// `admin.budget.set`: a budget created or changed.
pub const KIND_BUDGET_SET: &str = "admin.budget.set";
/// `admin.budget.deleted`: a budget removed.
pub const KIND_BUDGET_DELETED: &str = "admin.budget.deleted";
/// `admin.budget.threshold`: a budget crossed one of its warning thresholds.
pub const KIND_BUDGET_THRESHOLD: &str = "admin.budget.threshold";

/// `admin.rate_limit.set`: a rate-limit tier created or replaced (the
/// limit and `previous`, the one it replaced or null).
pub const KIND_RATE_LIMIT_SET: &str = "admin.rate_limit.set";
/// `admin.rate_limit.deleted`: a rate-limit tier removed.
pub const KIND_RATE_LIMIT_DELETED: &str = "admin.rate_limit.deleted";

/// `admin.price.added`: a first version for this `effective_from`.
pub const KIND_PRICE_ADDED: &str = "admin.price.added";
/// `admin.price.corrected`: a version superseding one with the same
/// `effective_from`.
pub const KIND_PRICE_CORRECTED: &str = "admin.price.corrected";
/// `admin.price.repriced`: a `tollgate reprice` run.
pub const KIND_PRICE_REPRICED: &str = "admin.price.repriced";

/// `admin.error_pattern.new`: a failure pattern (signature) seen for the
/// first time (`docs/error-patterns.md`).
pub const KIND_ERROR_PATTERN_NEW: &str = "admin.error_pattern.new";
/// `admin.breaker.transition`: a circuit breaker changed state
/// (`docs/breakers.md`).
pub const KIND_BREAKER_TRANSITION: &str = "admin.breaker.transition";

/// `admin.alert_rule.set`: an alert rule created or changed
/// (`docs/alerting.md`).
pub const KIND_ALERT_RULE_SET: &str = "admin.alert_rule.set";
/// `admin.alert_rule.deleted`: an alert rule removed.
pub const KIND_ALERT_RULE_DELETED: &str = "admin.alert_rule.deleted";
/// `admin.silence.set`: a silence created.
pub const KIND_SILENCE_SET: &str = "admin.silence.set";
/// `admin.silence.expired`: a silence ended early by a user.
pub const KIND_SILENCE_EXPIRED: &str = "admin.silence.expired";
/// `admin.receiver.set`: a notification receiver created or changed (its
/// signing secret and URL path never in the event).
pub const KIND_RECEIVER_SET: &str = "admin.receiver.set";
/// `admin.receiver.deleted`: a receiver removed.
pub const KIND_RECEIVER_DELETED: &str = "admin.receiver.deleted";
/// `admin.alert.transition`: an alert changed state (pending, inactive,
/// firing, resolved), published by the evaluator from its outbox
/// (`docs/alerting.md`, "The evaluator").
pub const KIND_ALERT_TRANSITION: &str = "admin.alert.transition";

/// `admin.provider_credential.set`: a provider's credential stored or
/// replaced (`provider`, `key_id`, `fingerprint`; never the credential).
pub const KIND_PROVIDER_CREDENTIAL_SET: &str = "admin.provider_credential.set";
/// `admin.provider_credential.removed`: a provider's credential removed.
pub const KIND_PROVIDER_CREDENTIAL_REMOVED: &str = "admin.provider_credential.removed";
/// `admin.provider_credential.rotated`: every stored credential
/// re-encrypted under a new master key (`providers`, `from_key_ids`,
/// `to_key_id`).
pub const KIND_PROVIDER_CREDENTIAL_ROTATED: &str = "admin.provider_credential.rotated";

/// A control-plane event with `payload` as its `admin` object.
pub fn admin_event(kind: &'static str, actor: &str, payload: serde_json::Value) -> Event {
    let mut admin = json!({ "actor": actor });
    if let (Some(obj), serde_json::Value::Object(extra)) = (admin.as_object_mut(), payload) {
        obj.extend(extra);
    }
    Event {
        schema_version: SCHEMA_VERSION,
        event_id: Uuid::now_v7(),
        kind: EventKind::admin(kind),
        // Milliseconds, as every event's `occurred_at` (docs/ingest-api.md).
        occurred_at: Utc::now().trunc_subsecs(3),
        org_id: CONTROL_PLANE_TENANT.into(),
        team_id: CONTROL_PLANE_TENANT.into(),
        user_id: String::new(),
        api_key_id: String::new(),
        call: None,
        admin: Some(admin),
        tags: BTreeMap::new(),
        reported_cost: None,
    }
}

/// The event for one stored version; `corrected` when it supersedes an
/// earlier version with the same `effective_from`.
pub fn price_event(version: &PriceVersion, corrected: bool, actor: &str) -> Event {
    let kind = if corrected {
        KIND_PRICE_CORRECTED
    } else {
        KIND_PRICE_ADDED
    };
    admin_event(kind, actor, json!({ "price_version": version }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::validate::{parse_event, Limits};
    use chrono::Utc;

    use super::*;

    #[test]
    fn price_events_pass_the_contract() {
        let v = PriceVersion {
            id: 3,
            provider: "openai".into(),
            model: "gpt-4o".into(),
            effective_from: Utc::now(),
            input_per_token: "0.0000025".parse().unwrap(),
            output_per_token: "0.00001".parse().unwrap(),
            cache_read_per_token: None,
            cache_write_per_token: None,
            reasoning_per_token: None,
            per_image: Default::default(),
            per_audio_second: Default::default(),
            per_request: Default::default(),
            tiers: Vec::new(),
            source: "t".into(),
            note: String::new(),
        };
        let event = price_event(&v, true, "key:abc");
        assert_eq!(event.kind, KIND_PRICE_CORRECTED);
        let value = serde_json::to_value(&event).unwrap();
        let parsed = parse_event(value, Utc::now(), &Limits::default()).unwrap();
        let admin = parsed.admin.unwrap();
        assert_eq!(admin["actor"], "key:abc");
        // Prices travel as exact decimal strings.
        assert_eq!(admin["price_version"]["input_per_token"], "0.0000025");
        // `occurred_at` keeps milliseconds, as every event's does.
        assert_eq!(event.occurred_at.timestamp_subsec_nanos() % 1_000_000, 0);
        let text = value_of(&event);
        assert_eq!(text.len(), "2026-12-06T21:33:59.123Z".len(), "{text}");
    }

    fn value_of(event: &Event) -> String {
        serde_json::to_value(event).unwrap()["occurred_at"]
            .as_str()
            .unwrap()
            .to_string()
    }
}
