//! What alert delivery sends and where (docs/alerting-delivery.md): one
//! [`Notification`] per alert transition (firing or resolved), and the
//! delivery-side view of a receiver ([`ReceiverTarget`]).
//!
//! The evaluator builds notifications; the senders in the processors crate
//! turn them into a signed webhook, a Slack message or Alertmanager alerts.
//! Receivers deduplicate on [`Notification::id`], so the id is computed, not
//! drawn: the same transition of the same alert always has the same id,
//! including when an evaluator re-sends it after a crash.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Whether the alert is firing or has resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationStatus {
    Firing,
    Resolved,
}

impl NotificationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// One alert transition, as every receiver kind is sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable: [`notification_id`] over rule, fingerprint, status and
    /// episode start. Receivers deduplicate on it.
    pub id: Uuid,
    pub rule_id: Uuid,
    pub rule_name: String,
    pub org_id: String,
    pub status: NotificationStatus,
    /// The alert's identity: the rule's labels and the series' labels.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub severity: String,
    /// When this firing episode began (the pending -> firing transition).
    pub starts_at: DateTime<Utc>,
    /// When it resolved; `None` while firing.
    pub ends_at: Option<DateTime<Utc>>,
    /// The Tollgate page and time range that explain the alert.
    pub generator_url: String,
    /// The observed value that crossed the threshold, as the evaluator
    /// printed it (exact decimals stay exact).
    pub value: String,
    /// The unit of `value` (`%`, `ms`, `USD`, `USD/h`; empty for a count
    /// or an event), so a person reads `12.5 %`, not `12.5`.
    #[serde(default)]
    pub unit: String,
    /// [`fingerprint`] of `labels`.
    pub fingerprint: String,
}

impl Notification {
    /// A notification with its id and fingerprint computed from the rest.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rule_id: Uuid,
        rule_name: impl Into<String>,
        org_id: impl Into<String>,
        status: NotificationStatus,
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
        severity: impl Into<String>,
        starts_at: DateTime<Utc>,
        ends_at: Option<DateTime<Utc>>,
        generator_url: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        let fingerprint = fingerprint(&labels);
        let id = notification_id(rule_id, &fingerprint, status, starts_at);
        Self {
            id,
            rule_id,
            rule_name: rule_name.into(),
            org_id: org_id.into(),
            status,
            labels,
            annotations,
            severity: severity.into(),
            starts_at,
            ends_at,
            generator_url: generator_url.into(),
            value: value.into(),
            unit: String::new(),
            fingerprint,
        }
    }

    /// The same notification with `value` in `unit`.
    pub fn with_unit(mut self, unit: impl Into<String>) -> Self {
        self.unit = unit.into();
        self
    }

    /// `value` as a person reads it: with its unit when it has one.
    pub fn value_with_unit(&self) -> String {
        if self.unit.is_empty() {
            self.value.clone()
        } else {
            format!("{} {}", self.value, self.unit)
        }
    }
}

/// Stable hash of a label set: hex SHA-256 over `name=<len>:value\n` for
/// each label in name order (a `BTreeMap` is already sorted). The value's
/// byte length comes first, so a value holding `\n` or `=` cannot make two
/// label sets hash the same input.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut hash = Sha256::new();
    for (name, value) in labels {
        hash.update(name.as_bytes());
        hash.update(b"=");
        hash.update(value.len().to_string().as_bytes());
        hash.update(b":");
        hash.update(value.as_bytes());
        hash.update(b"\n");
    }
    hex::encode(hash.finalize())
}

/// The id of one transition: the first 16 bytes of SHA-256 over rule id,
/// fingerprint, status and episode start (milliseconds), as a UUIDv8 (RFC
/// 9562 names SHA-256 name-based ids as a v8 use). Neither the clock of the
/// sender nor the attempt enters it, so a re-send has the same id.
pub fn notification_id(
    rule_id: Uuid,
    fingerprint: &str,
    status: NotificationStatus,
    starts_at: DateTime<Utc>,
) -> Uuid {
    let mut hash = Sha256::new();
    hash.update(b"tollgate.notification.v1\n");
    hash.update(rule_id.as_bytes());
    hash.update(b"\n");
    hash.update(fingerprint.as_bytes());
    hash.update(b"\n");
    hash.update(status.as_str().as_bytes());
    hash.update(b"\n");
    hash.update(starts_at.timestamp_millis().to_be_bytes());
    uuid_v8(&hash.finalize())
}

/// The id of one request carrying several notifications: the same
/// construction over their sorted ids, so a retried or re-sent batch keeps
/// its id; a batch of one has the notification's own id.
pub fn batch_id(ids: &[Uuid]) -> Uuid {
    if let [only] = ids {
        return *only;
    }
    let mut sorted = ids.to_vec();
    sorted.sort();
    let mut hash = Sha256::new();
    hash.update(b"tollgate.notification-batch.v1\n");
    for id in sorted {
        hash.update(id.as_bytes());
    }
    uuid_v8(&hash.finalize())
}

fn uuid_v8(digest: &[u8]) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 9562 variant
    Uuid::from_bytes(bytes)
}

/// Which wire format a receiver speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiverKind {
    /// Tollgate's signed JSON (docs/alerting-delivery.md).
    Webhook,
    /// A Slack-compatible incoming webhook.
    Slack,
    /// A Prometheus Alertmanager; `url` is its base (`http://am:9093`).
    Alertmanager,
}

impl ReceiverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Slack => "slack",
            Self::Alertmanager => "alertmanager",
        }
    }
}

/// What delivery needs to know about a receiver; the stored receiver has
/// more (name, grouping, owner) and the evaluator maps it to this.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiverTarget {
    pub id: Uuid,
    pub kind: ReceiverKind,
    pub url: String,
    /// The webhook's HMAC key; unused by the other kinds.
    pub secret: Option<String>,
}

// The secret never reaches a log line.
impl std::fmt::Debug for ReceiverTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverTarget")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
    }

    #[test]
    fn fingerprint_is_stable_and_order_free() {
        let a = labels(&[("a", "1"), ("b", "2")]);
        let b = labels(&[("b", "2"), ("a", "1")]);
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a).len(), 64);
        // A value that smuggles a separator is not another label set.
        let c = labels(&[("a", "1\nb=2")]);
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }

    #[test]
    fn id_depends_on_transition_not_on_time_of_sending() {
        let rule = Uuid::from_u128(7);
        let fp = fingerprint(&labels(&[("model", "m")]));
        let firing = notification_id(rule, &fp, NotificationStatus::Firing, at(100));
        assert_eq!(
            firing,
            notification_id(rule, &fp, NotificationStatus::Firing, at(100))
        );
        assert_ne!(
            firing,
            notification_id(rule, &fp, NotificationStatus::Resolved, at(100))
        );
        assert_ne!(
            firing,
            notification_id(rule, &fp, NotificationStatus::Firing, at(160))
        );
        assert_ne!(
            firing,
            notification_id(Uuid::from_u128(8), &fp, NotificationStatus::Firing, at(100))
        );
        assert_eq!(firing.get_version_num(), 8);
    }

    #[test]
    fn batch_id_is_order_free_and_single_is_itself() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(batch_id(&[a, b]), batch_id(&[b, a]));
        assert_eq!(batch_id(&[a]), a);
        assert_ne!(batch_id(&[a, b]), a);
    }

    #[test]
    fn secret_is_not_debug_printed() {
        let target = ReceiverTarget {
            id: Uuid::nil(),
            kind: ReceiverKind::Webhook,
            url: "http://x".into(),
            secret: Some("hunter2".into()),
        };
        assert!(!format!("{target:?}").contains("hunter2"));
    }
}
