//! What the Alerts page and `GET /api/v1/alerts...` read: the alerts
//! firing and pending now (the evaluator's `alert_state` in PostgreSQL,
//! through `tollgate_control::alerts::AlertStore::states`), every
//! transition over a range (ClickHouse `alert_transitions`, migration
//! 0032), and the delivery dead letters; each with the one `Table` its CSV
//! and its page are rendered from.
//!
//! The timeline table is a ReplacingMergeTree written at least once by the
//! evaluator's outbox: a re-publish after a crash repeats a row with the
//! same `event_id` until a merge folds it away, so every read groups by
//! `event_id` (a repeat is the same row, so `any` of each column is it).
//! `FINAL` would do the same but reads whole parts on 18.16.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use tollgate_contract::alert_lifecycle::Phase;
use tollgate_control::alert_deliveries::DeadLetter;
use tollgate_control::alerts::state::AlertState;

use crate::alert_signals::{explain_url, unit};
use crate::params::QueryParams;
use crate::table::Table;
use crate::{BoundSql, InvalidParameter, ReadModelError, ReadModels, SqlValue};

/// Most transitions one read returns (newest first); the answer says when
/// there were more.
pub const MAX_TRANSITIONS: usize = 1_000;
/// Longest range of one timeline read.
pub const MAX_RANGE_DAYS: i64 = 31;
/// Most dead letters listed.
pub const MAX_DEAD_LETTERS: i64 = 500;

/// Which transitions to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineQuery {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// One org (a scoped key's own), or every org.
    pub org: Option<String>,
    pub rule_id: Option<i64>,
}

impl TimelineQuery {
    /// `from`, `to` (RFC 3339; default the 24 hours before now) and
    /// `rule_id` of an already parsed query string; the org is the
    /// caller's to decide.
    pub fn from_params(
        params: &QueryParams,
        org: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Self, InvalidParameter> {
        let to = params.time("to")?.unwrap_or(now);
        let from = params
            .time("from")?
            .unwrap_or_else(|| to - Duration::hours(24));
        let rule_id = params
            .text("rule_id")
            .map(|v| {
                v.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
                    InvalidParameter::new(
                        "rule_id",
                        format!("`{v}` is not a rule id (a positive integer)"),
                    )
                })
            })
            .transpose()?;
        Self::new(from, to, org, rule_id)
    }

    pub fn new(
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        org: Option<String>,
        rule_id: Option<i64>,
    ) -> Result<Self, InvalidParameter> {
        if from >= to {
            return Err(InvalidParameter::new(
                "from",
                format!("must be earlier than `to` ({from} is not before {to})"),
            ));
        }
        if to - from > Duration::days(MAX_RANGE_DAYS) {
            return Err(InvalidParameter::new(
                "from",
                format!("the range is longer than {MAX_RANGE_DAYS} days"),
            ));
        }
        Ok(Self {
            from,
            to,
            org,
            rule_id,
        })
    }
}

/// The query string names a timeline request takes, besides `org` and
/// `format`.
pub const TIMELINE_PARAMS: [&str; 3] = ["from", "to", "rule_id"];

/// One transition of one alert, as the evaluator recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertTransition {
    pub at: DateTime<Utc>,
    pub org_id: String,
    pub rule_id: i64,
    pub rule_name: String,
    pub from_state: String,
    /// `pending`, `inactive` (a pending episode that cleared), `firing`,
    /// `resolved`.
    pub to_state: String,
    /// The measured value, as text (exact decimals stay exact).
    pub value: String,
    /// When the episode began (its pending start).
    pub since: DateTime<Utc>,
    /// The notification's stable id, for firing and resolved.
    pub notification_id: Option<String>,
    /// Muted by a silence for the direct receivers.
    pub silenced: bool,
    pub event_id: String,
}

/// Transitions of a range, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timeline {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub transitions: Vec<AlertTransition>,
    /// More than [`MAX_TRANSITIONS`] were in the range: the oldest are
    /// left out.
    pub truncated: bool,
}

/// One row of the timeline statement; fields in SELECT order, names unlike
/// the columns (ClickHouse aliases are global: `any(at_ms) AS at_ms` would
/// refer to itself).
#[derive(Debug, Row, Deserialize)]
struct TransitionRow {
    e_event_id: String,
    e_at_ms: u64,
    e_org_id: String,
    e_rule_id: i64,
    e_rule_name: String,
    e_from_state: String,
    e_to_state: String,
    e_value: String,
    e_since: u32,
    e_notification_id: String,
    e_silenced: u8,
}

fn epoch(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp()).unwrap_or(0)
}

fn transitions_sql(q: &TimelineQuery) -> BoundSql {
    let mut template = "SELECT event_id AS e_event_id, any(at_ms) AS e_at_ms, \
         any(org_id) AS e_org_id, any(rule_id) AS e_rule_id, any(rule_name) AS e_rule_name, \
         any(from_state) AS e_from_state, any(to_state) AS e_to_state, any(value) AS e_value, \
         toUInt32(any(since)) AS e_since, any(notification_id) AS e_notification_id, \
         any(silenced) AS e_silenced \
         FROM alert_transitions WHERE at >= toDateTime(?) AND at < toDateTime(?)"
        .to_string();
    let mut binds = vec![SqlValue::UInt(epoch(q.from)), SqlValue::UInt(epoch(q.to))];
    if let Some(org) = &q.org {
        template.push_str(" AND org_id = ?");
        binds.push(SqlValue::Str(org.clone()));
    }
    if let Some(id) = q.rule_id {
        // Rule ids are positive (`TimelineQuery`), bound as unsigned.
        template.push_str(" AND rule_id = ?");
        binds.push(SqlValue::UInt(u64::try_from(id).unwrap_or(0)));
    }
    template.push_str(&format!(
        " GROUP BY event_id ORDER BY e_at_ms DESC, e_event_id LIMIT {}",
        MAX_TRANSITIONS + 1
    ));
    BoundSql {
        name: "alert_timeline.transitions",
        template,
        binds,
    }
}

/// Sample statements for the SQL compatibility check.
pub(crate) fn catalog() -> Vec<BoundSql> {
    let to = DateTime::from_timestamp(1_767_229_200, 0).unwrap_or_default();
    let from = to - Duration::hours(24);
    vec![
        transitions_sql(&TimelineQuery {
            from,
            to,
            org: None,
            rule_id: None,
        }),
        transitions_sql(&TimelineQuery {
            from,
            to,
            org: Some("org-1".into()),
            rule_id: Some(7),
        }),
    ]
}

fn from_epoch(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

impl ReadModels {
    /// The transitions of `q`, newest first, each once.
    pub async fn alert_timeline(&self, q: &TimelineQuery) -> Result<Timeline, ReadModelError> {
        let sql = transitions_sql(q);
        let rows: Vec<TransitionRow> = self
            .bounded(sql.query(self.client()).fetch_all::<TransitionRow>())
            .await
            .map_err(|e| self.classify(sql.name, e))?;
        let truncated = rows.len() > MAX_TRANSITIONS;
        let transitions = rows
            .into_iter()
            .take(MAX_TRANSITIONS)
            .map(|r| AlertTransition {
                at: DateTime::from_timestamp_millis(i64::try_from(r.e_at_ms).unwrap_or(0))
                    .unwrap_or_default(),
                org_id: r.e_org_id,
                rule_id: r.e_rule_id,
                rule_name: r.e_rule_name,
                from_state: r.e_from_state,
                to_state: r.e_to_state,
                value: r.e_value,
                since: from_epoch(i64::from(r.e_since)),
                notification_id: Some(r.e_notification_id).filter(|n| !n.is_empty()),
                silenced: r.e_silenced != 0,
                event_id: r.e_event_id,
            })
            .collect();
        Ok(Timeline {
            from: q.from,
            to: q.to,
            transitions,
            truncated,
        })
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The timeline's CSV: the JSON's transitions, one row each.
pub fn timeline_table(timeline: &Timeline) -> Table {
    let mut t = Table::new([
        "at",
        "org_id",
        "rule_id",
        "rule_name",
        "from_state",
        "to_state",
        "value",
        "since",
        "notification_id",
        "silenced",
        "event_id",
    ]);
    for x in &timeline.transitions {
        t.push([
            stamp(x.at),
            x.org_id.clone(),
            x.rule_id.to_string(),
            x.rule_name.clone(),
            x.from_state.clone(),
            x.to_state.clone(),
            x.value.clone(),
            stamp(x.since),
            x.notification_id.clone().unwrap_or_default(),
            x.silenced.to_string(),
            x.event_id.clone(),
        ]);
    }
    t
}

/// An alert firing or pending now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CurrentAlert {
    pub rule_id: i64,
    pub rule_name: String,
    pub org_id: String,
    /// `firing` or `pending`.
    pub state: &'static str,
    pub severity: &'static str,
    /// The alert's labels (the rule's, with `alertname`, `severity` and
    /// `org`, as notifications carry them).
    pub labels: BTreeMap<String, String>,
    /// When the episode began (pending since).
    pub since: DateTime<Utc>,
    /// When it fired; `None` while pending.
    pub fired_at: Option<DateTime<Utc>>,
    /// The value at the last evaluation, as text.
    pub value: Option<String>,
    /// The value's unit (`%`, `ms`, `USD`, `USD/h`, or empty for counts).
    pub unit: &'static str,
    pub evaluated_at: DateTime<Utc>,
    /// The page and time range that explain it
    /// (`alert_signals::explain_url` at the last evaluation).
    pub link: String,
}

/// The alerts firing or pending among `states`: firing first, then
/// pending, each oldest episode first.
pub fn current_alerts(states: &[AlertState]) -> Vec<CurrentAlert> {
    let mut out: Vec<CurrentAlert> = states
        .iter()
        .filter_map(|s| {
            let (state, since, fired_at) = match s.phase {
                Phase::Inactive => return None,
                Phase::Pending { since } => ("pending", since, None),
                Phase::Firing { since, fired_at } => ("firing", since, Some(fired_at)),
            };
            let spec = &s.rule.spec;
            Some(CurrentAlert {
                rule_id: s.rule.id,
                rule_name: spec.name.clone(),
                org_id: spec.org_id.clone(),
                state,
                severity: spec.severity.name(),
                labels: spec.alert_labels(),
                since,
                fired_at,
                value: s.value.clone(),
                unit: unit(&spec.signal),
                evaluated_at: s.evaluated_at,
                link: explain_url(&spec.signal, &spec.org_id, s.evaluated_at),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (a.state != "firing", a.since, a.rule_id).cmp(&(b.state != "firing", b.since, b.rule_id))
    });
    out
}

/// The CSV of the current alerts: the JSON's rows.
pub fn current_table(alerts: &Vec<CurrentAlert>) -> Table {
    let mut t = Table::new([
        "rule_id",
        "rule_name",
        "org_id",
        "state",
        "severity",
        "labels",
        "since",
        "fired_at",
        "value",
        "unit",
        "evaluated_at",
        "link",
    ]);
    for a in alerts {
        t.push([
            a.rule_id.to_string(),
            a.rule_name.clone(),
            a.org_id.clone(),
            a.state.to_string(),
            a.severity.to_string(),
            labels_text(&a.labels),
            stamp(a.since),
            a.fired_at.map(stamp).unwrap_or_default(),
            a.value.clone().unwrap_or_default(),
            a.unit.to_string(),
            stamp(a.evaluated_at),
            a.link.clone(),
        ]);
    }
    t
}

/// `name=value` pairs separated by spaces, in name order.
pub fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The CSV of the dead letters (the payload too: it is what an operator
/// re-sends by hand).
pub fn dead_letters_table(letters: &Vec<DeadLetter>) -> Table {
    let mut t = Table::new([
        "failed_at",
        "org_id",
        "receiver_id",
        "receiver_kind",
        "delivery_id",
        "notification_ids",
        "attempts",
        "last_error",
        "payload",
    ]);
    for d in letters {
        t.push([
            stamp(d.failed_at),
            d.org_id.clone(),
            d.receiver_id.to_string(),
            d.receiver_kind.clone(),
            d.delivery_id.to_string(),
            d.notification_ids
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" "),
            d.attempts.to_string(),
            d.last_error.clone(),
            d.payload.clone(),
        ]);
    }
    t
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::params::Expected;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_are_checked_and_named() {
        let now = t("2026-12-02T10:00:00Z");
        let q = TimelineQuery::from_params(
            &QueryParams::parse(&[], &Expected::names(&TIMELINE_PARAMS)).unwrap(),
            None,
            now,
        )
        .unwrap();
        assert_eq!((q.from, q.to), (now - Duration::hours(24), now));
        let bad = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            let params = QueryParams::parse(&pairs, &Expected::names(&TIMELINE_PARAMS)).unwrap();
            TimelineQuery::from_params(&params, None, now)
                .unwrap_err()
                .field
        };
        assert_eq!(bad(&[("rule_id", "x")]), "rule_id");
        assert_eq!(bad(&[("from", "2026-12-03T00:00:00Z")]), "from");
        assert_eq!(bad(&[("from", "2026-10-01T00:00:00Z")]), "from");
    }

    #[test]
    fn the_statement_groups_by_event_id() {
        for sql in catalog() {
            assert!(sql.template.contains("GROUP BY event_id"), "{sql:?}");
        }
    }
}
