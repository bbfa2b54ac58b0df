//! What a rule's alert looks like to the outside: its labels, the link
//! that explains it, and the notification of a firing or resolved
//! transition.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tollgate_contract::alert_lifecycle::{Phase, Transition};
use tollgate_contract::alerts::rule::Signal;
use tollgate_contract::notification::{Notification, NotificationStatus};
use tollgate_control::alerts::AlertRule;
use tollgate_queries::alert_signals;
use uuid::Uuid;

/// The notification side's id for a stored id (receivers and rules are
/// bigint ids in PostgreSQL, UUIDs in notifications and delivery records).
pub fn stored_uuid(id: i64) -> Uuid {
    Uuid::from_u64_pair(0, id as u64)
}

/// The stored id back from [`stored_uuid`].
pub fn stored_id(uuid: Uuid) -> i64 {
    uuid.as_u64_pair().1 as i64
}

/// The state name a phase is in, as the transitions name them.
pub fn phase_name(p: &Phase) -> &'static str {
    match p {
        Phase::Inactive => "inactive",
        Phase::Pending { .. } => "pending",
        Phase::Firing { .. } => "firing",
    }
}

/// When the episode of a transition began (it went pending).
pub fn since_of(t: &Transition) -> DateTime<Utc> {
    match t {
        Transition::Pending { since }
        | Transition::Cleared { since }
        | Transition::Firing { since, .. }
        | Transition::Resolved { since, .. } => *since,
    }
}

/// The alert's labels (`RuleSpec::alert_labels`).
pub fn alert_labels(rule: &AlertRule) -> BTreeMap<String, String> {
    rule.spec.alert_labels()
}

/// The Tollgate page and time range that explain the alert at `at`
/// (`alert_signals::explain_url`, the link the Alerts page shows too),
/// under `base`.
pub fn generator_url(base: &str, signal: &Signal, org: &str, at: DateTime<Utc>) -> String {
    format!(
        "{}{}",
        base.trim_end_matches('/'),
        alert_signals::explain_url(signal, org, at)
    )
}

/// The notification of a firing or resolved transition (none for pending
/// and cleared: they are on the timeline, not sent).
pub fn notification(
    rule: &AlertRule,
    transition: &Transition,
    value: &str,
    base_url: &str,
    at: DateTime<Utc>,
) -> Option<Notification> {
    let (status, starts_at, ends_at) = match transition {
        Transition::Firing { fired_at, .. } => (NotificationStatus::Firing, *fired_at, None),
        Transition::Resolved {
            fired_at,
            resolved_at,
            ..
        } => (NotificationStatus::Resolved, *fired_at, Some(*resolved_at)),
        _ => return None,
    };
    let mut annotations = BTreeMap::new();
    for (name, text) in [
        ("summary", &rule.spec.annotations.summary),
        ("description", &rule.spec.annotations.description),
        ("runbook_url", &rule.spec.annotations.runbook_url),
    ] {
        if !text.is_empty() {
            annotations.insert(name.to_string(), text.clone());
        }
    }
    Some(
        Notification::new(
            stored_uuid(rule.id),
            rule.spec.name.clone(),
            rule.spec.org_id.clone(),
            status,
            alert_labels(rule),
            annotations,
            rule.spec.severity.name(),
            starts_at,
            ends_at,
            generator_url(base_url, &rule.spec.signal, &rule.spec.org_id, at),
            value,
        )
        .with_unit(alert_signals::unit(&rule.spec.signal)),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_round_trip_through_uuids() {
        assert_eq!(stored_id(stored_uuid(42)), 42);
        assert_ne!(stored_uuid(42), stored_uuid(43));
    }

    #[test]
    fn a_notification_carries_the_rules_annotations_runbook_included() {
        let at = DateTime::parse_from_rfc3339("2026-12-02T10:07:42Z")
            .unwrap()
            .with_timezone(&Utc);
        let rule = AlertRule {
            id: 29,
            version: 1,
            created_at: at,
            updated_at: at,
            spec: serde_json::from_value(json!({
                "org_id": "acme", "name": "openai errors", "severity": "critical",
                "signal": {"kind": "error_rate", "above_percent": "5", "window_secs": 300},
                "annotations": {"summary": "errors above 5 %", "runbook_url": "https://wiki.example/rb"},
            }))
            .unwrap(),
        };
        let firing = Transition::Firing {
            since: at,
            fired_at: at,
        };
        let n = notification(&rule, &firing, "7.5", "https://t.example/", at).unwrap();
        assert_eq!(n.annotations["summary"], "errors above 5 %");
        assert_eq!(n.annotations["runbook_url"], "https://wiki.example/rb");
        assert!(!n.annotations.contains_key("description"));
    }

    #[test]
    fn generator_url_points_at_the_window() {
        let at = DateTime::parse_from_rfc3339("2026-12-02T10:07:42Z")
            .unwrap()
            .with_timezone(&Utc);
        let signal: Signal = serde_json::from_value(json!({
            "kind": "error_rate", "above_percent": "5", "window_secs": 300
        }))
        .unwrap();
        assert_eq!(
            generator_url("https://t.example/", &signal, "acme", at),
            "https://t.example/sre/errors?range=custom&from=2026-12-02T10:02:00Z&to=2026-12-02T10:07:00Z&org=acme"
        );
    }
}
