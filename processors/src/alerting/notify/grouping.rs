//! When to send what to one direct receiver (webhook, Slack): Alertmanager's
//! grouping, as a pure state machine the evaluator drives with its clock.
//!
//! - Notifications whose `group_by` label values (and org) are equal form a
//!   group; `group_by = ["..."]` groups by every label (one alert a group).
//! - A new group waits `group_wait` before its first message, so alerts
//!   that fire together arrive together.
//! - After a message, a group that changed (a new alert, a new transition
//!   of one, a silence that expired) sends again once `group_interval` has
//!   passed since the last message; one that did not change repeats its
//!   firing alerts after `repeat_interval`.
//! - A message carries every alert of the group that is not silenced at
//!   that moment, firing and resolved; resolved alerts then leave the group,
//!   and an empty group is forgotten (the next alert starts a new one and
//!   waits `group_wait` again).
//!
//! Silences are applied when a group is flushed, not when an alert arrives
//! (Alertmanager's order): an alert silenced at flush time is not marked as
//! sent, so when the silence expires the group has changed and the alert
//! goes out at the next `group_interval`.
//!
//! A reminder (`repeat_interval`) repeats the same notification ids: the id
//! names a transition, not a message. The state serializes, so the
//! evaluator can keep it across a restart.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tollgate_contract::notification::{Notification, NotificationStatus};
use uuid::Uuid;

use tollgate_contract::alerts::SilenceSpec;

/// `group_by` value that means "every label".
pub const GROUP_BY_ALL: &str = "...";

/// A receiver's grouping settings (Alertmanager's names and defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupingPolicy {
    pub group_by: Vec<String>,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
}

impl Default for GroupingPolicy {
    /// Alertmanager's defaults: 30 s, 5 min, 4 h, grouped by rule.
    fn default() -> Self {
        Self {
            group_by: vec!["alertname".into()],
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(4 * 3600),
        }
    }
}

/// One message to send: a group's alerts at a flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupFlush {
    /// Stable text key of the group (org and the `group_by` values).
    pub group_key: String,
    pub group_labels: BTreeMap<String, String>,
    /// Sorted by fingerprint.
    pub notifications: Vec<Notification>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Group {
    org_id: String,
    labels: BTreeMap<String, String>,
    created_at: DateTime<Utc>,
    last_flush: Option<DateTime<Utc>>,
    /// When a message last went out (a flush may send nothing).
    last_sent: Option<DateTime<Utc>>,
    /// Latest notification per alert fingerprint.
    alerts: BTreeMap<String, Notification>,
    /// Id of the notification last sent per fingerprint.
    sent: BTreeMap<String, Uuid>,
}

impl Group {
    fn changed(&self) -> bool {
        self.alerts
            .iter()
            .any(|(fp, n)| self.sent.get(fp) != Some(&n.id))
    }

    fn next_due(&self, policy: &GroupingPolicy) -> Option<DateTime<Utc>> {
        let Some(last) = self.last_flush else {
            return Some(self.created_at + to_chrono(policy.group_wait));
        };
        if self.changed() {
            Some(last + to_chrono(policy.group_interval))
        } else if self
            .alerts
            .values()
            .any(|n| n.status == NotificationStatus::Firing)
        {
            Some(self.last_sent.unwrap_or(last) + to_chrono(policy.repeat_interval))
        } else {
            None
        }
    }
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The grouping state of one receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grouper {
    policy: GroupingPolicy,
    groups: BTreeMap<String, Group>,
}

impl Grouper {
    pub fn new(policy: GroupingPolicy) -> Self {
        Self {
            policy,
            groups: BTreeMap::new(),
        }
    }

    pub fn policy(&self) -> &GroupingPolicy {
        &self.policy
    }

    /// The group a notification belongs to: its org and `group_by` labels.
    pub fn group_labels(&self, n: &Notification) -> BTreeMap<String, String> {
        if self.policy.group_by.iter().any(|l| l == GROUP_BY_ALL) {
            return n.labels.clone();
        }
        self.policy
            .group_by
            .iter()
            .map(|name| {
                let value = match n.labels.get(name) {
                    Some(value) => value.clone(),
                    // Alertmanager's own name for the rule, so a policy
                    // written for it works here too.
                    None if name == "alertname" => n.rule_name.clone(),
                    // A missing label groups as the empty value.
                    None => String::new(),
                };
                (name.clone(), value)
            })
            .collect()
    }

    fn key(org_id: &str, labels: &BTreeMap<String, String>) -> String {
        // serde_json of a BTreeMap is stable and unambiguous.
        format!(
            "{org_id}/{}",
            serde_json::to_string(labels).unwrap_or_default()
        )
    }

    /// Take in a transition (the latest one of an alert replaces earlier).
    pub fn observe(&mut self, n: Notification, now: DateTime<Utc>) {
        let labels = self.group_labels(&n);
        let key = Self::key(&n.org_id, &labels);
        let group = self.groups.entry(key).or_insert_with(|| Group {
            org_id: n.org_id.clone(),
            labels,
            created_at: now,
            last_flush: None,
            last_sent: None,
            alerts: BTreeMap::new(),
            sent: BTreeMap::new(),
        });
        group.alerts.insert(n.fingerprint.clone(), n);
    }

    /// Whether notification `id` is in one of the groups (waiting to be
    /// sent, or firing and sent, kept for its reminders).
    pub fn holds(&self, id: Uuid) -> bool {
        self.groups
            .values()
            .any(|g| g.alerts.values().any(|n| n.id == id))
    }

    /// The earliest moment a group may be due (for the evaluator's timer).
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.groups
            .values()
            .filter_map(|g| g.next_due(&self.policy))
            .min()
    }

    /// The messages due at `now`, with alerts muted by `silences` left out.
    pub fn flush_due(&mut self, now: DateTime<Utc>, silences: &[SilenceSpec]) -> Vec<GroupFlush> {
        let mut out = Vec::new();
        let policy = self.policy.clone();
        self.groups.retain(|key, group| {
            if group.next_due(&policy).is_some_and(|due| due <= now) {
                let notifications: Vec<Notification> = group
                    .alerts
                    .values()
                    .filter(|n| !silences.iter().any(|s| s.mutes(&n.org_id, &n.labels, now)))
                    .cloned()
                    .collect();
                // Alertmanager's dedup: send when what is visible changed
                // since the last message, or when the reminder is due.
                let news = notifications
                    .iter()
                    .any(|n| group.sent.get(&n.fingerprint) != Some(&n.id));
                let reminder = notifications
                    .iter()
                    .any(|n| n.status == NotificationStatus::Firing)
                    && group
                        .last_sent
                        .is_none_or(|sent| sent + to_chrono(policy.repeat_interval) <= now);
                let send = !notifications.is_empty() && (news || reminder);
                if send {
                    for n in &notifications {
                        group.sent.insert(n.fingerprint.clone(), n.id);
                    }
                    group.last_sent = Some(now);
                }
                group.last_flush = Some(now);
                // Resolved alerts leave once sent, or muted when the
                // receiver never heard they fired. One muted after its
                // firing was sent stays until a silence no longer mutes it,
                // so the receiver is not left holding a firing alert
                // (Alertmanager sends such a resolve after the silence).
                let resolved: Vec<String> = group
                    .alerts
                    .iter()
                    .filter(|(fp, n)| {
                        n.status == NotificationStatus::Resolved
                            && group.sent.get(*fp).is_none_or(|id| *id == n.id)
                    })
                    .map(|(fp, _)| fp.clone())
                    .collect();
                for fp in resolved {
                    group.alerts.remove(&fp);
                    group.sent.remove(&fp);
                }
                if send {
                    out.push(GroupFlush {
                        group_key: key.clone(),
                        group_labels: group.labels.clone(),
                        notifications,
                    });
                }
            }
            !group.alerts.is_empty()
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use tollgate_contract::alerts::{MatchOp, Matcher};

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0)
            .single()
            .unwrap_or_default()
    }

    fn alert(model: &str, status: NotificationStatus, started: i64) -> Notification {
        let labels = [("model", model), ("provider", "openai")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Notification::new(
            Uuid::from_u128(1),
            "errors",
            "acme",
            status,
            labels,
            BTreeMap::new(),
            "critical",
            at(started),
            (status == NotificationStatus::Resolved).then(|| at(started + 1000)),
            "http://t/sre",
            "1",
        )
    }

    fn matcher(name: &str, op: MatchOp, value: &str) -> Matcher {
        Matcher {
            name: name.into(),
            op,
            value: value.into(),
        }
    }

    /// A silence of org `acme` from 0 to `until` seconds.
    fn silence(matcher: Matcher, until: i64) -> SilenceSpec {
        SilenceSpec {
            org_id: "acme".into(),
            matchers: vec![matcher],
            starts_at: at(0),
            ends_at: at(until),
            comment: String::new(),
        }
    }

    #[test]
    fn a_silence_of_another_org_mutes_nothing() {
        let mut other = silence(matcher("model", MatchOp::Equal, "a"), 1000);
        other.org_id = "globex".into();
        let mut g = Grouper::new(policy(&["alertname"]));
        g.observe(alert("a", Firing, 0), at(0));
        assert_eq!(
            models(&g.flush_due(at(30), &[other])),
            vec![vec![("a".into(), Firing)]]
        );
    }

    fn policy(group_by: &[&str]) -> GroupingPolicy {
        GroupingPolicy {
            group_by: group_by.iter().map(|s| s.to_string()).collect(),
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(3600),
        }
    }

    fn models(flushes: &[GroupFlush]) -> Vec<Vec<(String, NotificationStatus)>> {
        flushes
            .iter()
            .map(|f| {
                f.notifications
                    .iter()
                    .map(|n| (n.labels["model"].clone(), n.status))
                    .collect()
            })
            .collect()
    }

    use NotificationStatus::{Firing, Resolved};

    #[test]
    fn group_wait_collects_alerts_that_fire_together() {
        let mut g = Grouper::new(policy(&["alertname"]));
        g.observe(alert("a", Firing, 0), at(0));
        assert_eq!(g.next_due(), Some(at(30)));
        g.observe(alert("b", Firing, 10), at(10));
        assert!(g.flush_due(at(29), &[]).is_empty());
        let sent = g.flush_due(at(30), &[]);
        assert_eq!(
            models(&sent),
            vec![vec![("a".into(), Firing), ("b".into(), Firing)]]
        );
        assert_eq!(sent[0].group_labels["alertname"], "errors");
        // Nothing changed: the next message is the reminder.
        assert_eq!(g.next_due(), Some(at(30 + 3600)));
        assert!(g.flush_due(at(400), &[]).is_empty());
    }

    #[test]
    fn changes_wait_for_group_interval_then_repeat_interval_reminds() {
        let mut g = Grouper::new(policy(&["alertname"]));
        g.observe(alert("a", Firing, 0), at(0));
        let first = g.flush_due(at(30), &[]);
        g.observe(alert("b", Firing, 40), at(40));
        assert_eq!(g.next_due(), Some(at(330)));
        assert!(g.flush_due(at(329), &[]).is_empty());
        assert_eq!(
            models(&g.flush_due(at(330), &[])),
            vec![vec![("a".into(), Firing), ("b".into(), Firing)]]
        );
        let reminder = g.flush_due(at(330 + 3600), &[]);
        assert_eq!(reminder.len(), 1);
        // A reminder repeats the transition's id.
        assert_eq!(
            reminder[0].notifications[0].id,
            first[0].notifications[0].id
        );
    }

    #[test]
    fn resolved_alerts_are_sent_once_then_the_group_is_forgotten() {
        let mut g = Grouper::new(policy(&["alertname"]));
        g.observe(alert("a", Firing, 0), at(0));
        g.flush_due(at(30), &[]);
        g.observe(alert("a", Resolved, 0), at(100));
        assert_eq!(
            models(&g.flush_due(at(330), &[])),
            vec![vec![("a".into(), Resolved)]]
        );
        assert_eq!(g.next_due(), None);
        // A new episode is a new group: group_wait again.
        g.observe(alert("a", Firing, 500), at(500));
        assert_eq!(g.next_due(), Some(at(530)));
    }

    #[test]
    fn group_by_splits_groups_and_the_org_always_does() {
        let mut g = Grouper::new(policy(&["model"]));
        g.observe(alert("a", Firing, 0), at(0));
        g.observe(alert("b", Firing, 0), at(0));
        let mut other_org = alert("a", Firing, 0);
        other_org.org_id = "globex".into();
        g.observe(other_org, at(0));
        assert_eq!(g.flush_due(at(30), &[]).len(), 3);

        let mut all = Grouper::new(policy(&[GROUP_BY_ALL]));
        all.observe(alert("a", Firing, 0), at(0));
        all.observe(alert("b", Firing, 0), at(0));
        assert_eq!(all.flush_due(at(30), &[]).len(), 2);

        let mut missing = Grouper::new(policy(&["team"]));
        missing.observe(alert("a", Firing, 0), at(0));
        missing.observe(alert("b", Firing, 0), at(0));
        let flushes = missing.flush_due(at(30), &[]);
        assert_eq!(flushes.len(), 1);
        assert_eq!(flushes[0].group_labels["team"], "");
    }

    #[test]
    fn a_silence_suppresses_and_its_expiry_resumes() {
        let silence = silence(matcher("model", MatchOp::Equal, "b"), 1000);
        let silences = [silence];
        let mut g = Grouper::new(policy(&["alertname"]));
        g.observe(alert("a", Firing, 0), at(0));
        g.observe(alert("b", Firing, 0), at(0));
        assert_eq!(
            models(&g.flush_due(at(30), &silences)),
            vec![vec![("a".into(), Firing)]]
        );
        // b was not sent, so the group counts as changed, but while the
        // silence holds every flush leaves it out (and sends nothing new).
        assert!(g.flush_due(at(330), &silences).is_empty());
        assert!(g.flush_due(at(630), &silences).is_empty());
        assert!(g.flush_due(at(930), &silences).is_empty());
        // Expired at 1000: the next group_interval sends it.
        assert_eq!(
            models(&g.flush_due(at(1230), &silences)),
            vec![vec![("a".into(), Firing), ("b".into(), Firing)]]
        );
    }

    #[test]
    fn a_resolve_muted_after_its_firing_was_sent_goes_out_when_the_silence_ends() {
        let silences = [silence(matcher("model", MatchOp::Equal, "a"), 1000)];
        let mut g = Grouper::new(policy(&["alertname"]));
        g.observe(alert("a", Firing, 0), at(0));
        assert_eq!(
            models(&g.flush_due(at(30), &[])),
            vec![vec![("a".into(), Firing)]]
        );
        g.observe(alert("a", Resolved, 0), at(100));
        assert!(g.flush_due(at(330), &silences).is_empty());
        assert!(g.flush_due(at(630), &silences).is_empty());
        // Expired at 1000: the resolve goes out, then the group is done.
        let due = g.next_due().unwrap();
        assert!(due <= at(1230), "{due}");
        assert_eq!(
            models(&g.flush_due(at(1230), &silences)),
            vec![vec![("a".into(), Resolved)]]
        );
        assert_eq!(g.next_due(), None);

        // Muted from its firing to its resolve: the receiver never heard
        // of it, and hears nothing.
        let silences = [silence(matcher("model", MatchOp::Equal, "b"), 1000)];
        let mut g = Grouper::new(policy(&["alertname"]));
        g.observe(alert("b", Firing, 0), at(0));
        assert!(g.flush_due(at(30), &silences).is_empty());
        g.observe(alert("b", Resolved, 0), at(100));
        assert!(g.flush_due(at(330), &silences).is_empty());
        assert_eq!(g.next_due(), None);
    }

    #[test]
    fn fully_silenced_group_sends_nothing() {
        let silence = silence(matcher("provider", MatchOp::Regex, "open.*"), 10_000);
        let mut g = Grouper::new(policy(&["alertname"]));
        g.observe(alert("a", Firing, 0), at(0));
        assert!(g.flush_due(at(30), &[silence]).is_empty());
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut g = Grouper::new(policy(&["alertname"]));
        g.observe(alert("a", Firing, 0), at(0));
        g.flush_due(at(30), &[]);
        let json = serde_json::to_string(&g).unwrap_or_default();
        let back: Result<Grouper, _> = serde_json::from_str(&json);
        assert_eq!(back.ok(), Some(g));
    }
}
