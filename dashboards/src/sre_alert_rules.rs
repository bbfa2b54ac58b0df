//! The Rules pages under `/sre/alerts/rules`: the list (with each rule's
//! state now), one rule with its backtest over the last 24 hours drawn on
//! the metric's chart (value line, threshold, shaded pending and firing
//! spans) and its transitions, and the form that creates a rule, with a
//! Backtest button that draws the same chart before anything is saved
//! (`tollgate_queries::alert_signals::backtest`, the function the API's
//! backtest and the evaluator's measurements share).

// A refused request is answered with the page that says why; these helpers
// hand that response back in `Err` (once per request, so its size does not
// matter).
#![allow(clippy::result_large_err)]

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::{DateTime, Duration, Utc};
use rust_decimal::prelude::ToPrimitive;
use serde_json::{json, Value};
use tollgate_access::Identity;
use tollgate_contract::alert_lifecycle::{Phase, Transition};
use tollgate_contract::alerts::{
    BudgetForecastSignal, BudgetUsedSignal, ErrorRateSignal, LatencySignal, PipelineHealthSignal,
    RuleSpec, Signal, SpendSignal,
};
use tollgate_control::alerts::state::AlertState;
use tollgate_control::alerts::{AlertRule, Receiver};
use tollgate_queries::alert_lists::rules_table;
use tollgate_queries::alert_signals::{
    self, explain_url, threshold, unit, Backtest, SignalSources, DEFAULT_STEP_SECS,
};
use tollgate_queries::alert_timeline::{labels_text, Timeline, TimelineQuery};
use tollgate_queries::params::{Expected, QueryParams};
use tollgate_queries::InvalidParameter;

use crate::alert_access::{
    bad_request, field, message, signed_in, signed_in_form, signed_in_store, store, store_failed,
    Caller, AREA,
};
use crate::display::{Figure, Instant, Measure};
use crate::finance::{csv_data_url, csv_download};
use crate::layout::{render, Section};
use crate::sre_alerts::{transition_rows, TransitionRow};
use crate::svg::{StateSpan, ValueChart};
use crate::DashboardState;

type Pairs = Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

/// How far back the rule page and the form backtest.
const BACKTEST_HOURS: i64 = 24;

fn name_of<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn duration(secs: u32) -> String {
    match secs {
        s if s % 3_600 == 0 && s > 0 => format!("{} h", s / 3_600),
        s if s % 60 == 0 && s > 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

fn filters(pairs: &[(&str, &Option<String>)]) -> String {
    let given: Vec<String> = pairs
        .iter()
        .filter_map(|(n, v)| v.as_ref().map(|v| format!("{n} {v}")))
        .collect();
    if given.is_empty() {
        String::new()
    } else {
        format!(" of {}", given.join(", "))
    }
}

/// What a signal watches, in words.
pub fn describe(signal: &Signal) -> String {
    match signal {
        Signal::ErrorRate(ErrorRateSignal {
            provider,
            model,
            team,
            above_percent,
            window_secs,
        }) => format!(
            "error rate{} above {above_percent} % over {}",
            filters(&[("provider", provider), ("model", model), ("team", team)]),
            duration(*window_secs)
        ),
        Signal::Latency(LatencySignal {
            metric,
            percentile,
            provider,
            model,
            team,
            above_ms,
            window_secs,
        }) => format!(
            "p{percentile} {}{} above {above_ms} ms over {}",
            name_of(metric),
            filters(&[("provider", provider), ("model", model), ("team", team)]),
            duration(*window_secs)
        ),
        Signal::Spend(SpendSignal {
            subject_kind,
            subject_id,
            window_secs,
            above_usd,
            per_hour_above_usd,
        }) => match (above_usd, per_hour_above_usd) {
            (_, Some(rate)) => format!(
                "spend of {} {subject_id} at more than {} over {}",
                name_of(subject_kind),
                Measure::new(rate.to_string(), "USD/h").text(),
                duration(*window_secs)
            ),
            (limit, None) => format!(
                "spend of {} {subject_id} above {} over {}",
                name_of(subject_kind),
                Measure::new(limit.unwrap_or_default().to_string(), "USD").text(),
                duration(*window_secs)
            ),
        },
        Signal::BudgetUsed(BudgetUsedSignal {
            budget_id,
            above_percent,
        }) => format!("budget {budget_id} used at or above {above_percent} %"),
        Signal::BudgetForecast(BudgetForecastSignal { budget_id }) => {
            format!("budget {budget_id} forecast above its limit")
        }
        Signal::NewErrorPattern(p) => format!(
            "a new error pattern{}",
            filters(&[("provider", &p.provider)])
        ),
        Signal::BreakerOpened(b) => format!(
            "a circuit breaker opened{}",
            filters(&[("provider", &b.provider), ("model", &b.model)])
        ),
        Signal::PipelineHealth(PipelineHealthSignal {
            metric,
            above,
            window_secs,
        }) => format!(
            "{} above {above} over {}",
            name_of(metric),
            duration(*window_secs)
        ),
    }
}

/// The spans a backtest spent pending and firing, in time order; a span
/// still open at the end runs to `to`.
pub fn spans(backtest: &Backtest) -> Vec<StateSpan> {
    let mut out = Vec::new();
    let mut open: Option<(&'static str, DateTime<Utc>)> = None;
    for (at, t) in &backtest.transitions {
        if let Some((state, from)) = open.take() {
            out.push(StateSpan {
                state,
                from,
                to: *at,
            });
        }
        open = match t {
            Transition::Pending { .. } => Some(("pending", *at)),
            Transition::Firing { .. } => Some(("firing", *at)),
            Transition::Cleared { .. } | Transition::Resolved { .. } => None,
        };
    }
    if let Some((state, from)) = open {
        out.push(StateSpan {
            state,
            from,
            to: backtest.to,
        });
    }
    out
}

/// The backtest drawn on the metric's chart.
pub fn backtest_chart(signal: &Signal, backtest: &Backtest) -> String {
    let points: Vec<(DateTime<Utc>, Option<f64>)> = backtest
        .series
        .iter()
        .map(|p| (p.at, p.measurement.value.and_then(|v| v.to_f64())))
        .collect();
    let label = format!("Backtest: {}", describe(signal));
    ValueChart {
        id: "backtest-chart",
        label: &label,
        from: backtest.from,
        to: backtest.to,
        points: &points,
        threshold: threshold(signal).and_then(|t| t.to_f64()),
        unit: unit(signal),
        spans: &spans(backtest),
    }
    .svg()
}

/// One transition of a backtest, for its table.
pub struct BacktestRow {
    pub at: Instant,
    pub to_state: &'static str,
    pub value: Figure,
}

fn backtest_rows(backtest: &Backtest, unit: &str) -> Vec<BacktestRow> {
    backtest
        .transitions
        .iter()
        .map(|(at, t)| BacktestRow {
            at: Instant::seconds(*at),
            to_state: t.to_state(),
            value: backtest
                .series
                .iter()
                .find(|p| p.at == *at)
                .and_then(|p| p.measurement.value)
                .map_or(Figure::Blank, |v| Measure::new(v.to_string(), unit).into()),
        })
        .collect()
}

/// The backtest's window: the last day, to the current whole minute.
fn backtest_window(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let secs = now.timestamp();
    let to = DateTime::from_timestamp(secs - secs.rem_euclid(60), 0).unwrap_or(now);
    (to - Duration::hours(BACKTEST_HOURS), to)
}

async fn run_backtest(state: &DashboardState, spec: &RuleSpec) -> Result<Backtest, String> {
    let (from, to) = backtest_window(Utc::now());
    let sources = SignalSources {
        read: &state.read_models,
        budgets: state.budgets.as_ref(),
    };
    match alert_signals::backtest(sources, spec, from, to, DEFAULT_STEP_SECS).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("the backtest could not read its data: {e}")),
    }
}

// ---------------------------------------------------------------- list

pub struct RuleRow {
    pub id: i64,
    pub name: String,
    pub org: String,
    pub enabled: bool,
    pub severity: &'static str,
    pub signal: String,
    pub for_text: String,
    pub labels: String,
    pub state: &'static str,
}

fn phase_name(p: Option<&Phase>) -> &'static str {
    match p {
        Some(Phase::Pending { .. }) => "pending",
        Some(Phase::Firing { .. }) => "firing",
        _ => "inactive",
    }
}

#[derive(Template)]
#[template(path = "sre_alert_rules.html")]
pub struct RulesPage {
    pub section: Section,
    pub who: String,
    pub logout: String,
    pub writes: bool,
    pub rules: Vec<RuleRow>,
    pub csv_url: String,
    /// The org the list is filtered to (empty: every org the caller sees);
    /// the tabs carry it.
    pub org: String,
}

/// The org of the Rules list's query string (`org`, [`Caller::org_filter`]).
fn rules_org(query: Pairs, caller: &Caller) -> Result<Option<String>, InvalidParameter> {
    let pairs = query.map(|Query(p)| p).unwrap_or_default();
    let params = QueryParams::parse(&pairs, &Expected::names(&["org"]))?;
    caller.org_filter(params.text("org").unwrap_or(""))
}

/// `GET /sre/alerts/rules?org=`
pub async fn rules_page(
    State(state): State<DashboardState>,
    identity: Identity,
    query: Pairs,
) -> Response {
    let (caller, store) = match signed_in_store(&state, &identity, "/sre/alerts/rules").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let org = match rules_org(query, &caller) {
        Ok(org) => org,
        Err(e) => return bad_request(e),
    };
    let (rules, states) = futures::join!(store.rules(org.as_deref()), store.states(org.as_deref()));
    let (rules, states) = match (rules, states) {
        (Ok(r), Ok(s)) => (r, s),
        (Err(e), _) | (_, Err(e)) => return store_failed(e),
    };
    let state_of = |id: i64| states.iter().find(|s| s.rule.id == id).map(|s| &s.phase);
    let page = RulesPage {
        section: Section::Sre,
        who: caller.who(),
        logout: "/logout".to_string(),
        writes: caller.writes(),
        rules: rules
            .iter()
            .map(|r| RuleRow {
                id: r.id,
                name: r.spec.name.clone(),
                org: r.spec.org_id.clone(),
                enabled: r.spec.enabled,
                severity: r.spec.severity.name(),
                signal: describe(&r.spec.signal),
                for_text: duration(r.spec.for_secs),
                labels: labels_text(&r.spec.labels),
                state: phase_name(state_of(r.id)),
            })
            .collect(),
        csv_url: format!(
            "/sre/alerts/rules.csv{}",
            org.as_deref()
                .map(|o| format!("?org={}", crate::sre_form::percent_encode(o)))
                .unwrap_or_default()
        ),
        org: org.unwrap_or_default(),
    };
    render(StatusCode::OK, &page)
}

/// `GET /sre/alerts/rules.csv?org=`: the API's rule CSV, filtered as the
/// list.
pub async fn rules_csv(
    State(state): State<DashboardState>,
    identity: Identity,
    query: Pairs,
) -> Response {
    let (caller, store) = match signed_in_store(&state, &identity, "/sre/alerts/rules").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let org = match rules_org(query, &caller) {
        Ok(org) => org,
        Err(e) => return bad_request(e),
    };
    match store.rules(org.as_deref()).await {
        Ok(rules) => csv_download(&rules_table(&rules), "alert-rules.csv"),
        Err(e) => store_failed(e),
    }
}

// ---------------------------------------------------------------- one rule

#[derive(Template)]
#[template(path = "sre_alert_rule.html")]
pub struct RulePage {
    pub section: Section,
    pub who: String,
    pub logout: String,
    /// The caller may change rules: Edit and Delete are shown.
    pub writes: bool,
    pub csrf: String,
    pub rule: RuleRow,
    pub description: String,
    pub summary: String,
    pub receivers: Vec<ReceiverLink>,
    /// The rule's org's receivers (JSON).
    pub receivers_url: String,
    pub version: i64,
    pub json: String,
    pub since: Option<Instant>,
    pub value: Option<Measure>,
    pub explain: String,
    pub chart: String,
    pub backtest_error: Option<String>,
    pub backtest: Vec<BacktestRow>,
    pub backtest_csv: String,
    pub transitions: Vec<TransitionRow>,
    pub transitions_csv: String,
}

/// One of a rule's receivers as its page names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverLink {
    pub id: i64,
    /// Its name (`None`: not known, see `missing`).
    pub name: Option<String>,
    /// The rule's org has no receiver with this id (deleted); `false`
    /// when the receivers could not be read.
    pub missing: bool,
    /// The receiver (JSON).
    pub href: String,
}

/// The receivers `ids` of a rule by name, from `receivers` (the rule's
/// org's, `None` when they could not be read): an id the org has no
/// receiver with is shown as the id, as missing.
fn receiver_links(ids: &[i64], receivers: Option<&[Receiver]>) -> Vec<ReceiverLink> {
    ids.iter()
        .map(|id| {
            let found = receivers.and_then(|all| all.iter().find(|r| r.id == *id));
            ReceiverLink {
                id: *id,
                name: found.map(|r| r.name.clone()),
                missing: receivers.is_some() && found.is_none(),
                href: format!("/api/v1/alerts/receivers/{id}"),
            }
        })
        .collect()
}

async fn load_rule(
    state: &DashboardState,
    caller: &Caller,
    id: &str,
) -> Result<(AlertRule, Option<AlertState>), Response> {
    let Some(id) = id.parse::<i64>().ok().filter(|id| *id > 0) else {
        return Err(message(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("no rule {id}"),
        ));
    };
    let store = store(state)?;
    let rule = store.rule(caller.scope(), id).await.map_err(store_failed)?;
    let states = store
        .states(Some(&rule.spec.org_id))
        .await
        .map_err(store_failed)?;
    let current = states.into_iter().find(|s| s.rule.id == id);
    Ok((rule, current))
}

/// `GET /sre/alerts/rules/{id}`
pub async fn rule_page(
    State(state): State<DashboardState>,
    identity: Identity,
    Path(id): Path<String>,
) -> Response {
    let here = format!("/sre/alerts/rules/{}", crate::sre_form::percent_encode(&id));
    let caller = match signed_in(&state, &identity, &here).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (rule, current) = match load_rule(&state, &caller, &id).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let spec = &rule.spec;
    let (from, to) = backtest_window(Utc::now());
    let timeline_query = TimelineQuery {
        from,
        to: to + Duration::minutes(1),
        org: Some(spec.org_id.clone()),
        rule_id: Some(rule.id),
    };
    // The receivers of the rule's org only: a rule names no other org's.
    let read_receivers = async {
        match store(&state) {
            Ok(store) => match store.receivers(Some(&spec.org_id)).await {
                Ok(all) => Some(all),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read the receivers; the rule page shows their ids");
                    None
                }
            },
            Err(_) => None,
        }
    };
    let (backtest, timeline, receivers) = futures::join!(
        run_backtest(&state, spec),
        state.read_models.alert_timeline(&timeline_query),
        read_receivers
    );
    let mut backtest_error = None;
    let (chart, rows) = match &backtest {
        Ok(b) => (
            backtest_chart(&spec.signal, b),
            backtest_rows(b, unit(&spec.signal)),
        ),
        Err(e) => {
            backtest_error = Some(e.clone());
            (String::new(), Vec::new())
        }
    };
    let timeline = timeline.unwrap_or_else(|e| {
        backtest_error.get_or_insert(format!("The timeline could not be read: {e}"));
        Timeline {
            from,
            to,
            transitions: Vec::new(),
            truncated: false,
        }
    });
    let phase = current.as_ref().map(|s| &s.phase);
    let since = match phase {
        Some(Phase::Pending { since }) | Some(Phase::Firing { since, .. }) => {
            Some(Instant::seconds(*since))
        }
        _ => None,
    };
    let page = RulePage {
        section: Section::Sre,
        who: caller.who(),
        writes: caller.writes(),
        csrf: caller.csrf.clone(),
        logout: "/logout".to_string(),
        description: spec.description.clone(),
        summary: spec.annotations.summary.clone(),
        receivers: receiver_links(&spec.receivers, receivers.as_deref()),
        receivers_url: format!(
            "/api/v1/alerts/receivers?org={}",
            crate::sre_form::percent_encode(&spec.org_id)
        ),
        version: rule.version,
        json: serde_json::to_string_pretty(spec).unwrap_or_default(),
        since,
        value: current
            .as_ref()
            .and_then(|s| s.value.as_deref())
            .map(|v| Measure::new(v, unit(&spec.signal))),
        explain: explain_url(
            &spec.signal,
            &spec.org_id,
            current.as_ref().map(|s| s.evaluated_at).unwrap_or(to),
        ),
        chart,
        backtest_error,
        backtest: rows,
        backtest_csv: format!("/sre/alerts/rules/{}/backtest.csv", rule.id),
        transitions: transition_rows(&timeline),
        transitions_csv: format!(
            "/sre/alerts/transitions.csv?rule_id={}&from={}&to={}",
            rule.id,
            timeline_query.from.format("%Y-%m-%dT%H:%M:%SZ"),
            timeline_query.to.format("%Y-%m-%dT%H:%M:%SZ")
        ),
        rule: RuleRow {
            id: rule.id,
            name: spec.name.clone(),
            org: spec.org_id.clone(),
            enabled: spec.enabled,
            severity: spec.severity.name(),
            signal: describe(&spec.signal),
            for_text: duration(spec.for_secs),
            labels: labels_text(&spec.labels),
            state: phase_name(phase),
        },
    };
    render(StatusCode::OK, &page)
}

/// `GET /sre/alerts/rules/{id}/backtest.csv`: the rule page's backtest,
/// one row per step (the API's backtest CSV).
pub async fn backtest_csv(
    State(state): State<DashboardState>,
    identity: Identity,
    Path(id): Path<String>,
) -> Response {
    let caller = match signed_in(&state, &identity, AREA.home).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (rule, _) = match load_rule(&state, &caller, &id).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match run_backtest(&state, &rule.spec).await {
        Ok(b) => csv_download(&alert_signals::table(&b), "alert-backtest.csv"),
        Err(e) => message(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", e),
    }
}

// ---------------------------------------------------------------- new rule

/// The new-rule form's fields, as typed.
#[derive(Debug, Clone)]
pub struct RuleForm {
    pub org: String,
    pub name: String,
    pub severity: String,
    pub for_secs: String,
    pub signal: String,
    pub labels: String,
    pub summary: String,
    /// The annotation `description` (in notifications).
    pub description: String,
    /// The rule's own description (what it is for, on the rule's page).
    pub about: String,
    /// The annotation `runbook_url`.
    pub runbook_url: String,
    pub receivers: String,
    pub enabled: bool,
}

impl RuleForm {
    /// The form of a stored rule, for editing.
    fn of_rule(rule: &AlertRule) -> Self {
        let spec = &rule.spec;
        Self {
            org: spec.org_id.clone(),
            name: spec.name.clone(),
            severity: spec.severity.name().into(),
            for_secs: spec.for_secs.to_string(),
            signal: serde_json::to_string(&spec.signal).unwrap_or_default(),
            labels: spec
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("\n"),
            summary: spec.annotations.summary.clone(),
            description: spec.annotations.description.clone(),
            about: spec.description.clone(),
            runbook_url: spec.annotations.runbook_url.clone(),
            receivers: spec
                .receivers
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            enabled: spec.enabled,
        }
    }

    fn fresh(caller: &Caller) -> Self {
        Self {
            org: caller.scope().unwrap_or_default().to_string(),
            name: String::new(),
            severity: "warning".into(),
            for_secs: "120".into(),
            signal: r#"{"kind": "error_rate", "provider": "openai", "above_percent": "5", "window_secs": 300}"#
                .into(),
            labels: String::new(),
            summary: String::new(),
            description: String::new(),
            about: String::new(),
            runbook_url: String::new(),
            receivers: String::new(),
            enabled: true,
        }
    }

    fn from_pairs(pairs: &[(String, String)]) -> Self {
        let text = |name: &str| field(pairs, name).unwrap_or("").to_string();
        Self {
            org: text("org_id"),
            name: text("name"),
            severity: text("severity"),
            for_secs: text("for_secs"),
            signal: text("signal"),
            labels: text("labels"),
            summary: text("summary"),
            description: text("description"),
            about: text("about"),
            runbook_url: text("runbook_url"),
            receivers: text("receivers"),
            enabled: field(pairs, "enabled").is_some(),
        }
    }

    /// The rule as the API's JSON body; a field that cannot be read is
    /// named as the API would name it.
    fn body(&self) -> Result<Vec<u8>, (String, String)> {
        let signal: Value = serde_json::from_str(&self.signal)
            .map_err(|e| ("signal".to_string(), format!("not JSON: {e}")))?;
        let for_secs: u64 = match self.for_secs.trim() {
            "" => 0,
            v => v.parse().map_err(|_| {
                (
                    "for_secs".to_string(),
                    format!("`{v}` is not a number of seconds"),
                )
            })?,
        };
        let mut labels = serde_json::Map::new();
        for (i, line) in self
            .labels
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let (k, v) = line.split_once('=').ok_or_else(|| {
                (
                    format!("labels[{i}]"),
                    format!("`{line}` is not name=value"),
                )
            })?;
            labels.insert(k.trim().to_string(), json!(v.trim()));
        }
        let mut receivers = Vec::new();
        for (i, id) in self
            .receivers
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .enumerate()
        {
            receivers.push(id.parse::<i64>().map_err(|_| {
                (
                    format!("receivers[{i}]"),
                    format!("`{id}` is not a receiver id"),
                )
            })?);
        }
        let body = json!({
            "org_id": self.org.trim(),
            "name": self.name.trim(),
            "description": self.about,
            "signal": signal,
            "for_secs": for_secs,
            "labels": labels,
            "annotations": {"summary": self.summary, "description": self.description, "runbook_url": self.runbook_url},
            "severity": self.severity,
            "receivers": receivers,
            "enabled": self.enabled,
        });
        serde_json::to_vec(&body).map_err(|e| ("body".into(), e.to_string()))
    }
}

#[derive(Template)]
#[template(path = "sre_alert_rule_form.html")]
pub struct RuleFormPage {
    pub section: Section,
    pub who: String,
    pub logout: String,
    pub csrf: String,
    pub writes: bool,
    /// `None`: a new rule; `Some((id, version))`: editing that version.
    pub editing: Option<(i64, i64)>,
    pub form: RuleForm,
    pub severities: Vec<(&'static str, bool)>,
    pub error: Option<String>,
    pub chart: String,
    pub backtest: Vec<BacktestRow>,
    pub backtested: bool,
    /// The backtest's CSV (one row per step, as the saved rule's
    /// `backtest.csv`) as a `data:` URL: the draft is not stored, so the
    /// file comes with the page that computed it.
    pub backtest_csv: String,
}

fn form_page(caller: &Caller, form: RuleForm, editing: Option<(i64, i64)>) -> RuleFormPage {
    let severities = ["info", "warning", "critical"]
        .into_iter()
        .map(|s| (s, s == form.severity))
        .collect();
    RuleFormPage {
        section: Section::Sre,
        who: caller.who(),
        logout: "/logout".to_string(),
        csrf: caller.csrf.clone(),
        writes: caller.writes(),
        editing,
        form,
        severities,
        error: None,
        chart: String::new(),
        backtest: Vec::new(),
        backtested: false,
        backtest_csv: String::new(),
    }
}

/// `GET /sre/alerts/rules/new`
pub async fn new_rule_page(
    State(state): State<DashboardState>,
    identity: Identity,
    _q: Pairs,
) -> Response {
    let caller = match signed_in(&state, &identity, "/sre/alerts/rules/new").await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let form = RuleForm::fresh(&caller);
    render(StatusCode::OK, &form_page(&caller, form, None))
}

/// `POST /sre/alerts/rules/new` with `action=backtest` (draw the chart,
/// save nothing; any role that reads) or `action=save` (create it; `sre`
/// or `admin`, then to the rule's page).
pub async fn new_rule_submit(
    State(state): State<DashboardState>,
    identity: Identity,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    submit(&state, &identity, &pairs, None).await
}

/// `GET /sre/alerts/rules/{id}/edit`: the rule's form, filled in.
pub async fn edit_rule_page(
    State(state): State<DashboardState>,
    identity: Identity,
    Path(id): Path<String>,
) -> Response {
    let here = format!(
        "/sre/alerts/rules/{}/edit",
        crate::sre_form::percent_encode(&id)
    );
    let caller = match signed_in(&state, &identity, &here).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (rule, _) = match load_rule(&state, &caller, &id).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let form = RuleForm::of_rule(&rule);
    render(
        StatusCode::OK,
        &form_page(&caller, form, Some((rule.id, rule.version))),
    )
}

/// `POST /sre/alerts/rules/{id}/edit`: backtest or save the edited rule
/// (save replaces the version the form was read from: 409 when it changed
/// since).
pub async fn edit_rule_submit(
    State(state): State<DashboardState>,
    identity: Identity,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let Some(id) = id.parse::<i64>().ok().filter(|id| *id > 0) else {
        return message(StatusCode::NOT_FOUND, "Not found", format!("no rule {id}"));
    };
    submit(&state, &identity, &pairs, Some(id)).await
}

/// `POST /sre/alerts/rules/{id}/delete` (`version`, `csrf`): delete it,
/// then to the rules list; 409 when it changed since the page was read.
pub async fn delete_rule_submit(
    State(state): State<DashboardState>,
    identity: Identity,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let caller = match signed_in_form(&state, &identity, field(&pairs, "csrf")).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = caller.may_write("delete alert rules") {
        return r;
    }
    let (rule, _) = match load_rule(&state, &caller, &id).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let version = field(&pairs, "version").and_then(|v| v.parse::<i64>().ok());
    let store = match store(&state) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match store
        .delete_rule(
            Some(&rule.spec.org_id),
            rule.id,
            version,
            &caller.identity.actor.clone(),
        )
        .await
    {
        Ok(_) => Redirect::to("/sre/alerts/rules").into_response(),
        Err(err) => message(StatusCode::CONFLICT, "Not deleted", err.to_string()),
    }
}

async fn submit(
    state: &DashboardState,
    identity: &Identity,
    pairs: &[(String, String)],
    editing: Option<i64>,
) -> Response {
    let caller = match signed_in_form(state, identity, field(pairs, "csrf")).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let saving = field(pairs, "action") == Some("save");
    if saving {
        if let Err(r) = caller.may_write("create or change alert rules") {
            return r;
        }
    }
    // Another org's rule (or none) is a 404 whatever the form holds, as
    // on its page: the form is not even read.
    if let Some(id) = editing {
        if let Err(r) = load_rule(state, &caller, &id.to_string()).await {
            return r;
        }
    }
    let version = field(pairs, "version").and_then(|v| v.parse::<i64>().ok());
    let form = RuleForm::from_pairs(pairs);
    let mut page = form_page(
        &caller,
        form.clone(),
        editing.map(|id| (id, version.unwrap_or(0))),
    );
    let spec = form
        .body()
        .and_then(|b| RuleSpec::from_json(&b).map_err(|r| (r.field, r.reason)));
    let spec = match spec {
        Ok(spec) => spec,
        Err((field, reason)) => {
            page.error = Some(format!("Invalid {field}: {reason}"));
            return render(StatusCode::BAD_REQUEST, &page);
        }
    };
    if let Err(r) = caller.check_org(&spec.org_id) {
        return r;
    }
    if saving {
        let store = match store(state) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let actor = caller.identity.actor.clone();
        let saved = match editing {
            None => store.create_rule(&spec, &actor).await,
            Some(id) => match version {
                Some(v) => store.update_rule(&spec.org_id, id, v, &spec, &actor).await,
                None => {
                    page.error = Some("Invalid version: missing".into());
                    return render(StatusCode::BAD_REQUEST, &page);
                }
            },
        };
        return match saved {
            Ok(saved) => {
                Redirect::to(&format!("/sre/alerts/rules/{}", saved.value.id)).into_response()
            }
            Err(err) => {
                page.error = Some(err.to_string());
                render(StatusCode::CONFLICT, &page)
            }
        };
    }
    match run_backtest(state, &spec).await {
        Ok(b) => {
            page.chart = backtest_chart(&spec.signal, &b);
            page.backtest = backtest_rows(&b, unit(&spec.signal));
            page.backtested = true;
            page.backtest_csv = csv_data_url(&alert_signals::table(&b));
            render(StatusCode::OK, &page)
        }
        Err(e) => {
            page.error = Some(e);
            render(StatusCode::SERVICE_UNAVAILABLE, &page)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tollgate_queries::alert_signals::{BacktestPoint, Measurement};

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn spans_follow_the_transitions() {
        let at = |m: i64| t("2026-12-01T10:00:00Z") + Duration::minutes(m);
        let b = Backtest {
            from: at(0),
            to: at(10),
            step_secs: 60,
            for_secs: 120,
            unit: "",
            series: vec![BacktestPoint {
                at: at(0),
                measurement: Measurement {
                    value: None,
                    observation: tollgate_contract::alert_lifecycle::Observation::Unknown,
                    detail: String::new(),
                },
            }],
            transitions: vec![
                (at(1), Transition::Pending { since: at(1) }),
                (
                    at(3),
                    Transition::Firing {
                        since: at(1),
                        fired_at: at(3),
                    },
                ),
                (
                    at(5),
                    Transition::Resolved {
                        since: at(1),
                        fired_at: at(3),
                        resolved_at: at(5),
                    },
                ),
                (at(8), Transition::Pending { since: at(8) }),
            ],
        };
        let s = spans(&b);
        let got: Vec<(&str, DateTime<Utc>, DateTime<Utc>)> =
            s.iter().map(|s| (s.state, s.from, s.to)).collect();
        assert_eq!(
            got,
            vec![
                ("pending", at(1), at(3)),
                ("firing", at(3), at(5)),
                ("pending", at(8), at(10)),
            ]
        );
    }

    /// A rule's receivers by name, linked; an id its org has no receiver
    /// with (another org's, or deleted) is the id, said to be missing;
    /// unread receivers are ids.
    #[test]
    fn receivers_are_named_in_the_rules_org() {
        let receiver = |id: i64, name: &str| Receiver {
            id,
            org_id: "acme".into(),
            name: name.into(),
            kind: tollgate_contract::alerts::receiver::ReceiverKind::Webhook,
            url: "https://hooks.example.com/x".into(),
            has_signing_secret: false,
            group_by: Vec::new(),
            group_wait_secs: 30,
            group_interval_secs: 300,
            repeat_interval_secs: 3600,
            version: 1,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let acme = [receiver(13, "oncall-pager"), receiver(14, "other")];
        let links = receiver_links(&[13, 99], Some(&acme));
        assert_eq!(links[0].name.as_deref(), Some("oncall-pager"));
        assert_eq!(links[0].href, "/api/v1/alerts/receivers/13");
        assert!(!links[0].missing);
        assert_eq!(
            (links[1].id, links[1].name.as_ref(), links[1].missing),
            (99, None, true)
        );
        let unread = receiver_links(&[13], None);
        assert_eq!((unread[0].name.as_ref(), unread[0].missing), (None, false));
    }

    #[test]
    fn signals_read_as_words() {
        let s: Signal = serde_json::from_value(json!({
            "kind": "spend", "subject_kind": "team", "subject_id": "search",
            "window_secs": 3600, "per_hour_above_usd": "1250.5"
        }))
        .unwrap();
        assert_eq!(
            describe(&s),
            "spend of team search at more than $1,250.50/h over 1 h"
        );
    }

    #[test]
    fn form_fields_are_named_like_the_api() {
        let caller_form = RuleForm {
            org: "acme".into(),
            name: "x".into(),
            severity: "warning".into(),
            for_secs: "soon".into(),
            signal: "{}".into(),
            labels: String::new(),
            summary: String::new(),
            description: String::new(),
            about: String::new(),
            runbook_url: String::new(),
            receivers: String::new(),
            enabled: true,
        };
        assert_eq!(caller_form.body().unwrap_err().0, "for_secs");
        let bad_labels = RuleForm {
            for_secs: "60".into(),
            labels: "team".into(),
            ..caller_form.clone()
        };
        assert_eq!(bad_labels.body().unwrap_err().0, "labels[0]");
    }

    #[test]
    fn an_edited_rule_saved_unchanged_is_the_same_rule() {
        let spec = RuleSpec::from_json(
            br#"{"org_id": "acme", "name": "errors", "description": "two\nlines",
                 "signal": {"kind": "latency", "metric": "ttft", "percentile": 99,
                            "team": "search", "above_ms": 900, "window_secs": 600},
                 "for_secs": 120, "labels": {"team": "search", "tier": "1"},
                 "annotations": {"summary": "slow", "description": "look"},
                 "severity": "critical", "receivers": [3, 4], "enabled": false}"#,
        )
        .unwrap();
        let stored = AlertRule {
            id: 7,
            version: 3,
            created_at: t("2026-12-01T00:00:00Z"),
            updated_at: t("2026-12-01T00:00:00Z"),
            spec: spec.clone(),
        };
        let form = RuleForm::of_rule(&stored);
        let saved = RuleSpec::from_json(&form.body().unwrap()).unwrap();
        assert_eq!(saved, spec);
    }
}
