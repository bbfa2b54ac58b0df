//! The lists of alerting's stored things as tables: rules, silences (with
//! their state at the time of the request) and receivers. The API's CSV
//! (`/api/v1/alerts/...?format=csv`) and the Alerts and Rules pages are
//! rendered from the same [`Table`], so a page and its file agree.

use tollgate_control::alerts::{AlertRule, Receiver, Silence};

use crate::table::Table;

/// The CSV of a rule list: the same rows as the JSON.
pub fn rules_table(rules: &Vec<AlertRule>) -> Table {
    let mut t = Table::new([
        "id",
        "org_id",
        "name",
        "enabled",
        "severity",
        "signal_kind",
        "window_secs",
        "for_secs",
        "receivers",
        "labels",
        "signal",
        "version",
        "updated_at",
    ]);
    for r in rules {
        t.push([
            r.id.to_string(),
            r.spec.org_id.clone(),
            r.spec.name.clone(),
            r.spec.enabled.to_string(),
            r.spec.severity.name().to_string(),
            r.spec.signal.kind().to_string(),
            r.spec
                .signal
                .window_secs()
                .map(|w| w.to_string())
                .unwrap_or_default(),
            r.spec.for_secs.to_string(),
            r.spec
                .receivers
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            serde_json::to_string(&r.spec.labels).unwrap_or_default(),
            serde_json::to_string(&r.spec.signal).unwrap_or_default(),
            r.version.to_string(),
            r.updated_at.to_rfc3339(),
        ]);
    }
    t
}

/// The CSV of a silence list.
pub fn silences_table(silences: &Vec<SilenceView>) -> Table {
    let mut t = Table::new([
        "id",
        "org_id",
        "state",
        "matchers",
        "starts_at",
        "ends_at",
        "created_by",
        "expired_by",
        "comment",
        "version",
    ]);
    for v in silences {
        let s = &v.silence;
        t.push([
            s.id.to_string(),
            s.spec.org_id.clone(),
            v.state.to_string(),
            s.spec
                .matchers
                .iter()
                .map(|m| format!("{}{}{:?}", m.name, m.op.symbol(), m.value))
                .collect::<Vec<_>>()
                .join(" "),
            s.spec.starts_at.to_rfc3339(),
            s.spec.ends_at.to_rfc3339(),
            s.created_by.clone(),
            s.expired_by.clone().unwrap_or_default(),
            s.spec.comment.clone(),
            s.version.to_string(),
        ]);
    }
    t
}

/// A silence with its state at the time of the request.
#[derive(Debug, serde::Serialize)]
pub struct SilenceView {
    #[serde(flatten)]
    pub silence: Silence,
    pub state: &'static str,
}

impl SilenceView {
    /// `silence` with its state at `now`.
    pub fn at(silence: Silence, now: chrono::DateTime<chrono::Utc>) -> Self {
        Self {
            state: silence.state(now).name(),
            silence,
        }
    }
}

/// The CSV of a receiver list (never a secret: there is none to show).
pub fn receivers_table(receivers: &Vec<Receiver>) -> Table {
    let mut t = Table::new([
        "id",
        "org_id",
        "name",
        "kind",
        "url",
        "has_signing_secret",
        "group_by",
        "group_wait_secs",
        "group_interval_secs",
        "repeat_interval_secs",
        "version",
    ]);
    for r in receivers {
        t.push([
            r.id.to_string(),
            r.org_id.clone(),
            r.name.clone(),
            r.kind.name().to_string(),
            r.url.clone(),
            r.has_signing_secret.to_string(),
            r.group_by.join(" "),
            r.group_wait_secs.to_string(),
            r.group_interval_secs.to_string(),
            r.repeat_interval_secs.to_string(),
            r.version.to_string(),
        ]);
    }
    t
}
