//! The Alerts page (`GET /sre/alerts`): what fires and what is pending now
//! (the evaluator's state), a timeline of every transition in the window
//! (strips per rule and the table), who silenced what (with the forms to
//! silence and to expire), and the notifications no receiver took (dead
//! letters). Each table has its CSV (`/sre/alerts/*.csv`, the same rows as
//! `GET /api/v1/alerts...?format=csv`, built from the same `Table`s).
//! Signing in and the role rules are in `alert_access`.

// A refused request is answered with the page that says why; these helpers
// hand that response back in `Err` (once per request, so its size does not
// matter).
#![allow(clippy::result_large_err)]

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::json;
use tollgate_access::Identity;
use tollgate_contract::alerts::{Matcher, SilenceSpec};
use tollgate_control::alert_deliveries::{list_dead_letters, DeadLetter};
use tollgate_control::alerts::{AlertStore, SilenceFilter};
use tollgate_queries::alert_lists::{silences_table, SilenceView};
use tollgate_queries::alert_timeline::{
    current_alerts, current_table, dead_letters_table, labels_text, timeline_table, CurrentAlert,
    Timeline, TimelineQuery, MAX_DEAD_LETTERS,
};
use tollgate_queries::params::{Expected, QueryParams};
use tollgate_queries::InvalidParameter;

use crate::alert_access::{
    bad_request, field, message, signed_in, signed_in_store, signed_in_writer, store, store_failed,
    Caller, AREA,
};
use crate::display::{Figure, Instant, Measure, Parts, Period};
use crate::finance::csv_download;
use crate::layout::{render, Section};
use crate::sre_form::{choices, form_time, parse_form_time, percent_encode, range_asked, window};
use crate::sre_form::{Choice, RANGES};
use crate::svg::{strips, Strip};
use crate::DashboardState;

type Pairs = Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// One row of "firing and pending now".
pub struct AlertRow {
    pub state: &'static str,
    pub rule_id: i64,
    pub rule: String,
    pub org: String,
    pub severity: &'static str,
    pub labels: String,
    pub since: Instant,
    pub fired_at: Figure,
    pub value: Figure,
    pub link: String,
}

impl AlertRow {
    fn from(a: &CurrentAlert) -> Self {
        Self {
            state: a.state,
            rule_id: a.rule_id,
            rule: a.rule_name.clone(),
            org: a.org_id.clone(),
            severity: a.severity,
            labels: labels_text(&a.labels),
            since: Instant::seconds(a.since),
            fired_at: a
                .fired_at
                .map_or(Figure::Blank, |t| Instant::seconds(t).into()),
            value: a
                .value
                .as_deref()
                .map_or(Figure::Blank, |v| Measure::new(v, a.unit).into()),
            link: a.link.clone(),
        }
    }
}

/// One row of the timeline table.
pub struct TransitionRow {
    pub at: Instant,
    pub rule_id: i64,
    pub rule: String,
    pub org: String,
    pub from_state: String,
    pub to_state: String,
    /// Without its unit (the timeline does not carry it).
    pub value: Measure,
    pub since: Instant,
    pub silenced: bool,
    pub notification_id: String,
}

/// The timeline's rows, newest first.
pub fn transition_rows(timeline: &Timeline) -> Vec<TransitionRow> {
    timeline
        .transitions
        .iter()
        .map(|t| TransitionRow {
            at: Instant::seconds(t.at),
            rule_id: t.rule_id,
            rule: t.rule_name.clone(),
            org: t.org_id.clone(),
            from_state: t.from_state.clone(),
            to_state: t.to_state.clone(),
            value: Measure::new(t.value.clone(), ""),
            since: Instant::seconds(t.since),
            silenced: t.silenced,
            notification_id: t.notification_id.clone().unwrap_or_default(),
        })
        .collect()
}

/// Strips per rule over the window, coloured by state.
pub fn timeline_svg(timeline: &Timeline) -> String {
    let mut rows: Vec<Strip> = Vec::new();
    for t in timeline.transitions.iter().rev() {
        let name = format!("{} (#{})", t.rule_name, t.rule_id);
        let step = (t.at, t.to_state.as_str());
        match rows.iter_mut().find(|r| r.name == name) {
            Some(row) => row.steps.push(step),
            None => rows.push(Strip {
                name,
                first: t.from_state.as_str(),
                steps: vec![step],
            }),
        }
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    strips(
        "alert-timeline",
        "Alert states over the window",
        (timeline.from, timeline.to),
        &rows,
        |state| match state {
            "firing" => "#e15759",
            "pending" => "#edc948",
            _ => "#d5dbe3",
        },
    )
}

/// One row of the silences table.
pub struct SilenceRow {
    pub id: i64,
    pub org: String,
    pub state: &'static str,
    pub matchers: String,
    pub starts_at: Instant,
    pub ends_at: Instant,
    pub created_by: String,
    pub expired_by: String,
    pub comment: String,
}

/// One row of the dead letters table.
pub struct DeadLetterRow {
    pub failed_at: Instant,
    pub org: String,
    pub receiver: String,
    pub delivery_id: String,
    pub notifications: usize,
    pub attempts: i32,
    pub last_error: String,
}

#[derive(Template)]
#[template(path = "sre_alerts.html")]
pub struct AlertsPage {
    pub section: Section,
    pub who: String,
    pub logout: String,
    pub csrf: String,
    pub writes: bool,
    pub summary: Parts,
    pub ranges: Vec<Choice>,
    pub form: WindowForm,
    pub error: Option<String>,
    pub alerts: Vec<AlertRow>,
    pub transitions: Vec<TransitionRow>,
    pub truncated: bool,
    pub timeline: String,
    pub silences: Vec<SilenceRow>,
    pub dead_letters: Vec<DeadLetterRow>,
    pub alerts_csv: String,
    pub transitions_csv: String,
    pub silences_csv: String,
    pub dead_letters_csv: String,
    pub json_url: String,
    pub silence_form: SilenceForm,
}

/// The window (and org) of the page's query string.
#[derive(Debug, Clone, Default)]
pub struct WindowForm {
    pub range: String,
    pub from: String,
    pub to: String,
    pub org: String,
}

/// The silence form's values (shown again after a refusal).
#[derive(Debug, Clone, Default)]
pub struct SilenceForm {
    pub org: String,
    pub matchers: String,
    pub starts_at: String,
    pub ends_at: String,
    pub comment: String,
    pub error: Option<String>,
}

impl SilenceForm {
    fn fresh(caller: &Caller, now: DateTime<Utc>) -> Self {
        Self {
            org: caller.scope().unwrap_or_default().to_string(),
            starts_at: form_time(now),
            ends_at: form_time(now + Duration::hours(2)),
            ..Self::default()
        }
    }
}

const PAGE_PARAMS: [&str; 4] = ["range", "from", "to", "org"];

/// The page's window and org filter from its query string.
fn window_of(
    pairs: &[(String, String)],
    caller: &Caller,
    now: DateTime<Utc>,
) -> Result<(WindowForm, TimelineQuery), InvalidParameter> {
    let params = QueryParams::parse(pairs, &Expected::names(&PAGE_PARAMS))?;
    let text = |name: &str| params.text(name).unwrap_or("").to_string();
    let mut form = WindowForm {
        range: range_asked(params.text("range"), &text("from"), &text("to"), "24h"),
        from: text("from"),
        to: text("to"),
        org: text("org"),
    };
    let org = caller.org_filter(&form.org)?;
    form.org = org.clone().unwrap_or_default();
    let (from, to) = window(&form.range, &form.from, &form.to, now)?;
    let query = TimelineQuery::new(from, to, org, None)?;
    form.from = form_time(from);
    form.to = form_time(to);
    Ok((form, query))
}

fn query_string(q: &TimelineQuery) -> String {
    let mut s = format!("from={}&to={}", rfc3339(q.from), rfc3339(q.to));
    if let Some(org) = &q.org {
        s.push_str(&format!("&org={}", percent_encode(org)));
    }
    s
}

fn org_query(org: Option<&str>) -> String {
    org.map(|o| format!("?org={}", percent_encode(o)))
        .unwrap_or_default()
}

/// `GET /sre/alerts?range=&from=&to=&org=`
pub async fn page(
    State(state): State<DashboardState>,
    identity: Identity,
    query: Pairs,
) -> Response {
    let caller = match signed_in(&state, &identity, AREA.home).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let now = Utc::now();
    let form = SilenceForm::fresh(&caller, now);
    alerts_page(&state, &caller, query, form, now).await
}

async fn alerts_page(
    state: &DashboardState,
    caller: &Caller,
    query: Pairs,
    silence_form: SilenceForm,
    now: DateTime<Utc>,
) -> Response {
    let pairs = query.map(|Query(p)| p).unwrap_or_default();
    let (form, q) = match window_of(&pairs, caller, now) {
        Ok(v) => v,
        Err(err) => return bad_request(err),
    };
    let store = match store(state) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let org = q.org.as_deref();
    let (states, timeline, silences, letters) = futures::join!(
        store.states(org),
        state.read_models.alert_timeline(&q),
        store.silences(org, SilenceFilter::All, now),
        list_dead_letters(store.pool(), org, MAX_DEAD_LETTERS),
    );
    let states = match states {
        Ok(s) => s,
        Err(err) => return store_failed(err),
    };
    let silences = match silences {
        Ok(s) => s,
        Err(err) => return store_failed(err),
    };
    let mut errors = Vec::new();
    let timeline = timeline.unwrap_or_else(|err| {
        errors.push(format!("The timeline could not be read: {err}"));
        Timeline {
            from: q.from,
            to: q.to,
            transitions: Vec::new(),
            truncated: false,
        }
    });
    let letters = letters.unwrap_or_else(|err| {
        errors.push(format!("The dead letters could not be read: {err}"));
        Vec::new()
    });
    let alerts = current_alerts(&states);
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let qs = query_string(&q);
    let page = AlertsPage {
        section: Section::Sre,
        who: caller.who(),
        logout: "/logout".to_string(),
        csrf: caller.csrf.clone(),
        writes: caller.writes(),
        summary: Parts(vec![
            Figure::Text(format!("{} firing or pending", alerts.len())),
            Figure::Text(format!("{} transitions", timeline.transitions.len())),
            Period::new(q.from, q.to).into(),
        ]),
        ranges: choices(RANGES.iter().map(|(v, l, _)| (*v, *l)), &form.range),
        error: (!errors.is_empty()).then(|| errors.join(" ")),
        alerts: alerts.iter().map(AlertRow::from).collect(),
        transitions: transition_rows(&timeline),
        truncated: timeline.truncated,
        timeline: timeline_svg(&timeline),
        silences: silences
            .into_iter()
            .map(|s| silence_row(SilenceView::at(s, now)))
            .collect(),
        dead_letters: letters.iter().map(dead_letter_row).collect(),
        alerts_csv: format!("/sre/alerts/alerts.csv{}", org_query(org)),
        transitions_csv: format!("/sre/alerts/transitions.csv?{qs}"),
        silences_csv: format!("/sre/alerts/silences.csv{}", org_query(org)),
        dead_letters_csv: format!("/sre/alerts/dead-letters.csv{}", org_query(org)),
        json_url: format!("/api/v1/alerts{}", org_query(org)),
        form,
        silence_form,
    };
    render(status, &page)
}

fn silence_row(v: SilenceView) -> SilenceRow {
    let s = v.silence;
    SilenceRow {
        id: s.id,
        org: s.spec.org_id.clone(),
        state: v.state,
        matchers: s
            .spec
            .matchers
            .iter()
            .map(|m| format!("{}{}\"{}\"", m.name, m.op.symbol(), m.value))
            .collect::<Vec<_>>()
            .join(", "),
        starts_at: Instant::new(s.spec.starts_at),
        ends_at: Instant::new(s.spec.ends_at),
        created_by: s.created_by,
        expired_by: s.expired_by.unwrap_or_default(),
        comment: s.spec.comment,
    }
}

fn dead_letter_row(d: &DeadLetter) -> DeadLetterRow {
    DeadLetterRow {
        failed_at: Instant::seconds(d.failed_at),
        org: d.org_id.clone(),
        receiver: format!("{} {}", d.receiver_kind, d.receiver_id),
        delivery_id: d.delivery_id.to_string(),
        notifications: d.notification_ids.len(),
        attempts: d.attempts,
        last_error: d.last_error.clone(),
    }
}

// ------------------------------------------------------------------ CSV

/// What a CSV download needs: its query string, the org it may read
/// (`org=` within the key's scope) and the store.
async fn csv_scope<'a>(
    state: &'a DashboardState,
    identity: &Identity,
    query: Pairs,
    extra: &[&str],
) -> Result<(Vec<(String, String)>, Option<String>, &'a AlertStore), Response> {
    let (caller, store) = signed_in_store(state, identity, AREA.home).await?;
    let pairs = query.map(|Query(p)| p).unwrap_or_default();
    let names: Vec<&str> = ["org"].into_iter().chain(extra.iter().copied()).collect();
    let params = QueryParams::parse(&pairs, &Expected::names(&names)).map_err(bad_request)?;
    let org = match (caller.scope(), params.text("org")) {
        (Some(scope), Some(org)) if org != scope => {
            return Err(message(
                StatusCode::NOT_FOUND,
                "Not found",
                format!("no org {org}"),
            ))
        }
        (Some(scope), _) => Some(scope.to_string()),
        (None, org) => org.map(str::to_string),
    };
    Ok((pairs, org, store))
}

/// `GET /sre/alerts/alerts.csv?org=`
pub async fn alerts_csv(
    State(state): State<DashboardState>,
    identity: Identity,
    query: Pairs,
) -> Response {
    let (_, org, store) = match csv_scope(&state, &identity, query, &[]).await {
        Ok(scope) => scope,
        Err(r) => return r,
    };
    match store.states(org.as_deref()).await {
        Ok(states) => csv_download(&current_table(&current_alerts(&states)), "alerts.csv"),
        Err(err) => store_failed(err),
    }
}

/// `GET /sre/alerts/transitions.csv?from=&to=&rule_id=&org=`
pub async fn transitions_csv(
    State(state): State<DashboardState>,
    identity: Identity,
    query: Pairs,
) -> Response {
    let extra = tollgate_queries::alert_timeline::TIMELINE_PARAMS;
    let (pairs, org, _) = match csv_scope(&state, &identity, query, &extra).await {
        Ok(scope) => scope,
        Err(r) => return r,
    };
    let names = ["org", "from", "to", "rule_id"];
    let q = match QueryParams::parse(&pairs, &Expected::names(&names))
        .and_then(|p| TimelineQuery::from_params(&p, org, Utc::now()))
    {
        Ok(q) => q,
        Err(e) => return bad_request(e),
    };
    match state.read_models.alert_timeline(&q).await {
        Ok(t) => csv_download(&timeline_table(&t), "alert-transitions.csv"),
        Err(err) => message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            format!("The timeline could not be read: {err}"),
        ),
    }
}

/// `GET /sre/alerts/silences.csv?org=` (every state).
pub async fn silences_csv(
    State(state): State<DashboardState>,
    identity: Identity,
    query: Pairs,
) -> Response {
    let (_, org, store) = match csv_scope(&state, &identity, query, &[]).await {
        Ok(scope) => scope,
        Err(r) => return r,
    };
    let now = Utc::now();
    match store
        .silences(org.as_deref(), SilenceFilter::All, now)
        .await
    {
        Ok(list) => {
            let views: Vec<SilenceView> =
                list.into_iter().map(|s| SilenceView::at(s, now)).collect();
            csv_download(&silences_table(&views), "silences.csv")
        }
        Err(err) => store_failed(err),
    }
}

/// `GET /sre/alerts/dead-letters.csv?org=`
pub async fn dead_letters_csv(
    State(state): State<DashboardState>,
    identity: Identity,
    query: Pairs,
) -> Response {
    let (_, org, store) = match csv_scope(&state, &identity, query, &[]).await {
        Ok(scope) => scope,
        Err(r) => return r,
    };
    match list_dead_letters(store.pool(), org.as_deref(), MAX_DEAD_LETTERS).await {
        Ok(letters) => csv_download(&dead_letters_table(&letters), "alert-dead-letters.csv"),
        Err(err) => message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            format!("dead letters: {err}"),
        ),
    }
}

// ------------------------------------------------------------ silences

/// The silence form as the store's JSON body: matchers one per line
/// (`team=search`, `severity=~warning|critical`), times from
/// `datetime-local` inputs (UTC).
fn silence_body(form: &SilenceForm) -> Result<Vec<u8>, (String, String)> {
    let mut matchers = Vec::new();
    for (i, line) in form
        .matchers
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let m = Matcher::parse(line).ok_or_else(|| {
            (
                format!("matchers[{i}]"),
                format!("`{line}`: expected name=value, name!=value, name=~regex or name!~regex"),
            )
        })?;
        matchers.push(m);
    }
    let time = |name: &'static str, text: &str| {
        parse_form_time(name, text).map_err(|e| (e.field, e.reason))
    };
    let body = json!({
        "org_id": form.org.trim(),
        "matchers": matchers,
        "starts_at": rfc3339(time("starts_at", &form.starts_at)?),
        "ends_at": rfc3339(time("ends_at", &form.ends_at)?),
        "comment": form.comment,
    });
    serde_json::to_vec(&body).map_err(|e| ("body".into(), e.to_string()))
}

/// `POST /sre/alerts/silences`: create one (role `sre` or `admin`), then
/// back to the page.
pub async fn create_silence(
    State(state): State<DashboardState>,
    identity: Identity,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let token = field(&pairs, "csrf");
    let (caller, store) = match signed_in_writer(&state, &identity, token, "create silences").await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let text = |name: &str| field(&pairs, name).unwrap_or("").to_string();
    let mut form = SilenceForm {
        org: text("org_id"),
        matchers: text("matchers"),
        starts_at: text("starts_at"),
        ends_at: text("ends_at"),
        comment: text("comment"),
        error: None,
    };
    if let Err(r) = caller.check_org(form.org.trim()) {
        return r;
    }
    let now = Utc::now();
    let spec = silence_body(&form)
        .and_then(|body| SilenceSpec::from_json(&body, now).map_err(|r| (r.field, r.reason)));
    let refused = match spec {
        Ok(spec) => match store
            .create_silence(&spec, &caller.identity.actor.clone())
            .await
        {
            Ok(_) => return Redirect::to(&format!("{}#silences", AREA.home)).into_response(),
            Err(err) => err.to_string(),
        },
        Err((field, reason)) => format!("Invalid {field}: {reason}"),
    };
    form.error = Some(refused);
    let mut response = alerts_page(&state, &caller, Ok(Query(Vec::new())), form, now).await;
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

/// `POST /sre/alerts/silences/{id}/expire`: end it now.
pub async fn expire_silence(
    State(state): State<DashboardState>,
    identity: Identity,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let token = field(&pairs, "csrf");
    let (caller, store) = match signed_in_writer(&state, &identity, token, "expire silences").await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(id) = id.parse::<i64>().ok().filter(|id| *id > 0) else {
        return message(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("no silence {id}"),
        );
    };
    match store
        .expire_silence(
            caller.scope(),
            id,
            Utc::now(),
            &caller.identity.actor.clone(),
        )
        .await
    {
        Ok(_) => Redirect::to(&format!("{}#silences", AREA.home)).into_response(),
        Err(err) => store_failed(err),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn silence_form_lines_become_matchers() {
        let form = SilenceForm {
            org: "acme".into(),
            matchers: "team=search\n\n severity=~warning|critical \n".into(),
            starts_at: "2026-12-02T00:00".into(),
            ends_at: "2026-12-02T02:00".into(),
            comment: "db".into(),
            error: None,
        };
        let body: serde_json::Value =
            serde_json::from_slice(&silence_body(&form).unwrap()).unwrap();
        assert_eq!(body["matchers"][1]["op"], "=~");
        assert_eq!(body["ends_at"], "2026-12-02T02:00:00Z");
        let bad = SilenceForm {
            matchers: "team".into(),
            ..form
        };
        assert_eq!(silence_body(&bad).unwrap_err().0, "matchers[0]");
    }
}
