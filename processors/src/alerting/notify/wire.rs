//! The three request bodies, built from notifications without I/O so their
//! shape is unit-tested: Tollgate's webhook JSON, a Slack incoming-webhook
//! message, and Alertmanager's `postableAlerts` (api/v2/openapi.yaml).

use std::collections::BTreeMap;

use serde::Serialize;
use tollgate_contract::notification::{Notification, NotificationStatus};
use uuid::Uuid;

/// Version of the webhook body; a receiver checks it before reading on.
pub const WEBHOOK_VERSION: &str = "1";

/// The generic webhook's body (schema in docs/alerting-delivery.md). It holds
/// nothing that changes between attempts, so a retry sends the same bytes;
/// only the timestamp header and the signature over it are new.
#[derive(Debug, Serialize)]
pub struct WebhookBody<'a> {
    pub version: &'static str,
    /// Also the `X-Tollgate-Notification-Id` header.
    pub delivery_id: Uuid,
    pub receiver_id: Uuid,
    /// `firing` if any notification in it is firing.
    pub status: NotificationStatus,
    pub notifications: &'a [Notification],
}

pub fn overall_status(notifications: &[Notification]) -> NotificationStatus {
    if notifications
        .iter()
        .any(|n| n.status == NotificationStatus::Firing)
    {
        NotificationStatus::Firing
    } else {
        NotificationStatus::Resolved
    }
}

/// At most this many alerts are listed in one Slack message (Slack allows
/// 50 blocks); the rest are counted in the last line.
pub const SLACK_MAX_LISTED: usize = 20;

/// Slack's mrkdwn treats `&`, `<` and `>` as control characters; anything
/// from labels or annotations is escaped so it cannot forge a link.
pub fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Slack-compatible incoming-webhook message: `text` (the notification
/// preview and the fallback for clients without blocks) and `blocks`: a
/// header line, one section per alert with its value, labels and a link to
/// the Tollgate page that explains it.
pub fn slack_body(notifications: &[Notification]) -> serde_json::Value {
    let status = overall_status(notifications);
    let firing = notifications
        .iter()
        .filter(|n| n.status == NotificationStatus::Firing)
        .count();
    let resolved = notifications.len() - firing;
    let mut names: Vec<&str> = notifications.iter().map(|n| n.rule_name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let title = format!(
        "[{}{}] {}",
        status.as_str().to_uppercase(),
        if notifications.len() > 1 {
            format!(":{}", notifications.len())
        } else {
            String::new()
        },
        names.join(", ")
    );
    let mut summary = format!("{title} ({firing} firing, {resolved} resolved)");
    if let Some(first) = notifications.first() {
        summary.push_str(&format!(" {}", first.generator_url));
    }
    let mut blocks = vec![serde_json::json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": format!("*{}*", slack_escape(&title))},
    })];
    for n in notifications.iter().take(SLACK_MAX_LISTED) {
        let labels = n
            .labels
            .iter()
            .map(|(k, v)| format!("`{}={}`", slack_escape(k), slack_escape(v)))
            .collect::<Vec<_>>()
            .join(" ");
        let mut text = format!(
            "{} *{}* ({}) value *{}*\n{}",
            if n.status == NotificationStatus::Firing {
                ":red_circle:"
            } else {
                ":large_green_circle:"
            },
            slack_escape(&n.rule_name),
            slack_escape(&n.severity),
            slack_escape(&n.value_with_unit()),
            labels
        );
        if let Some(summary) = n.annotations.get("summary") {
            text.push_str(&format!("\n{}", slack_escape(summary)));
        }
        // The URL is ours (built by the evaluator); `|` and `>` would end
        // Slack's link syntax early, so they are percent-encoded.
        let url = n.generator_url.replace('|', "%7C").replace('>', "%3E");
        text.push_str(&format!("\n<{url}|Open in Tollgate>"));
        blocks.push(serde_json::json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": text},
        }));
    }
    if notifications.len() > SLACK_MAX_LISTED {
        blocks.push(serde_json::json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!("and {} more", notifications.len() - SLACK_MAX_LISTED)}],
        }));
    }
    serde_json::json!({"text": summary, "blocks": blocks})
}

/// One element of Alertmanager's `POST /api/v2/alerts` body
/// (`postableAlert`: `labels` required; `annotations`, `startsAt`,
/// `endsAt`, `generatorURL` optional).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PostableAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    /// Absent while firing: Alertmanager then resolves the alert by itself
    /// after its `resolve_timeout` unless it is sent again, so the evaluator
    /// re-sends firing alerts more often than that.
    #[serde(rename = "endsAt", skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// Alertmanager 0.25 accepts label names matching `[a-zA-Z_][a-zA-Z0-9_]*`
/// only; other characters become `_` (as Prometheus does) rather than have
/// the whole request refused.
fn label_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Alertmanager's alert for a notification: its labels plus `alertname`
/// (the rule name), `severity`, `tollgate_rule_id` and `org`, which win
/// over a rule label of the same name so routing can rely on them; the
/// annotations plus `value` (the number), `unit`, `value_text` (`12.5 %`)
/// and `tollgate_notification_id`. Empty label
/// values are left out (Alertmanager treats them as absent).
pub fn alertmanager_alert(n: &Notification) -> PostableAlert {
    let mut labels: BTreeMap<String, String> = n
        .labels
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (label_name(k), v.clone()))
        .collect();
    labels.insert("alertname".into(), n.rule_name.clone());
    labels.insert("severity".into(), n.severity.clone());
    labels.insert("tollgate_rule_id".into(), n.rule_id.to_string());
    labels.insert("org".into(), n.org_id.clone());
    labels.retain(|_, v| !v.is_empty());
    let mut annotations = n.annotations.clone();
    // `value` keeps its one meaning, the number (as the webhook's); the
    // unit beside it, and the two together for a person.
    annotations.insert("value".into(), n.value.clone());
    if !n.unit.is_empty() {
        annotations.insert("unit".into(), n.unit.clone());
        annotations.insert("value_text".into(), n.value_with_unit());
    }
    annotations.insert("tollgate_notification_id".into(), n.id.to_string());
    let rfc3339 =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    PostableAlert {
        labels,
        annotations,
        starts_at: rfc3339(n.starts_at),
        ends_at: match n.status {
            NotificationStatus::Firing => None,
            // A resolved notification always ends; if the evaluator left the
            // end out, its start keeps Alertmanager from treating it as new.
            NotificationStatus::Resolved => Some(rfc3339(n.ends_at.unwrap_or(n.starts_at))),
        },
        generator_url: n.generator_url.clone(),
    }
}

pub fn alertmanager_body(notifications: &[Notification]) -> Vec<PostableAlert> {
    notifications.iter().map(alertmanager_alert).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn notification(status: NotificationStatus, rule: &str) -> Notification {
        let labels = [
            ("model", "gpt-4o"),
            ("provider", "openai"),
            ("bad-name", "x"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let annotations = [("summary", "error rate <b>high</b> & rising")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let start = Utc
            .timestamp_opt(1_700_000_000, 0)
            .single()
            .unwrap_or_default();
        Notification::new(
            Uuid::from_u128(42),
            rule,
            "acme",
            status,
            labels,
            annotations,
            "critical",
            start,
            (status == NotificationStatus::Resolved).then(|| start + chrono::Duration::minutes(5)),
            "http://tollgate.local/sre/errors?from=1&to=2|x",
            "12.5",
        )
        .with_unit("%")
    }

    #[test]
    fn slack_body_has_text_blocks_and_a_link() {
        let body = slack_body(&[
            notification(NotificationStatus::Firing, "errors"),
            notification(NotificationStatus::Resolved, "errors"),
        ]);
        let text = body["text"].as_str().unwrap_or_default();
        assert!(
            text.starts_with("[FIRING:2] errors (1 firing, 1 resolved)"),
            "{text}"
        );
        let blocks = body["blocks"].as_array().cloned().unwrap_or_default();
        assert_eq!(blocks.len(), 3);
        for block in &blocks {
            assert_eq!(block["type"], "section");
            assert_eq!(block["text"]["type"], "mrkdwn");
        }
        let first = blocks[1]["text"]["text"].as_str().unwrap_or_default();
        assert!(
            first.contains(":red_circle: *errors* (critical) value *12.5 %*"),
            "{first}"
        );
        assert!(first.contains("`model=gpt-4o`"), "{first}");
        // Label text cannot open a link; the link is ours, with `|` encoded.
        assert!(
            first.contains("error rate &lt;b&gt;high&lt;/b&gt; &amp; rising"),
            "{first}"
        );
        assert!(
            first.ends_with("<http://tollgate.local/sre/errors?from=1&to=2%7Cx|Open in Tollgate>"),
            "{first}"
        );
        assert!(blocks[2]["text"]["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with(":large_green_circle:"));
    }

    #[test]
    fn slack_lists_at_most_twenty_alerts() {
        let many: Vec<_> = (0..25)
            .map(|_| notification(NotificationStatus::Firing, "r"))
            .collect();
        let body = slack_body(&many);
        let blocks = body["blocks"].as_array().cloned().unwrap_or_default();
        assert_eq!(blocks.len(), 1 + SLACK_MAX_LISTED + 1);
        assert_eq!(blocks[21]["elements"][0]["text"], "and 5 more");
    }

    #[test]
    fn alertmanager_alert_matches_the_openapi_shape() {
        let firing = serde_json::to_value(alertmanager_alert(&notification(
            NotificationStatus::Firing,
            "errors",
        )))
        .unwrap_or_default();
        assert_eq!(firing["labels"]["alertname"], "errors");
        assert_eq!(firing["labels"]["severity"], "critical");
        assert_eq!(firing["labels"]["org"], "acme");
        assert_eq!(
            firing["labels"]["tollgate_rule_id"],
            Uuid::from_u128(42).to_string()
        );
        assert_eq!(firing["labels"]["bad_name"], "x");
        // The number keeps its meaning (as the webhook's `value`); its
        // unit beside it, and both together for a person.
        assert_eq!(firing["annotations"]["value"], "12.5");
        assert_eq!(firing["annotations"]["unit"], "%");
        assert_eq!(firing["annotations"]["value_text"], "12.5 %");
        assert_eq!(firing["startsAt"], "2023-11-14T22:13:20.000Z");
        assert!(firing.get("endsAt").is_none());
        assert_eq!(
            firing["generatorURL"],
            "http://tollgate.local/sre/errors?from=1&to=2|x"
        );
        let resolved = alertmanager_alert(&notification(NotificationStatus::Resolved, "errors"));
        assert_eq!(
            resolved.ends_at.as_deref(),
            Some("2023-11-14T22:18:20.000Z")
        );
    }

    #[test]
    fn label_names_become_valid() {
        assert_eq!(label_name("a.b-c"), "a_b_c");
        assert_eq!(label_name("9x"), "_9x");
        assert_eq!(label_name(""), "_");
    }
}
