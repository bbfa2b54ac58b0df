//! The SRE Breakers page (`GET /sre/breakers`): every circuit breaker's
//! state at the end of the window (its last transition), a timeline strip
//! per breaker coloured by state (inline SVG), and the table of
//! transitions in the window, from the read side's breakers report (the
//! one `GET /api/v1/reports/breakers` serves, linked as JSON and CSV).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use tollgate_queries::breakers::{self, BreakersQuery, BreakersReport};
use tollgate_queries::params::{Expected, QueryParams};
use tollgate_queries::{InvalidParameter, ReadModelError};

use crate::layout::{render, Section};
use crate::sre_errors::percent;
use crate::sre_form::{
    api_pairs, choices, form_time, percent_encode, sre_nav, thousands, Choice, NavLink, RANGES,
};
use crate::DashboardState;

pub const FIELDS: [&str; 5] = ["range", "from", "to", "provider", "model"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BreakersForm {
    pub range: String,
    pub from: String,
    pub to: String,
    pub provider: String,
    pub model: String,
}

/// Read the page's query string into the form and the report query.
pub fn parse_form(
    pairs: &[(String, String)],
    now: DateTime<Utc>,
) -> (BreakersForm, Result<BreakersQuery, InvalidParameter>) {
    let params = match QueryParams::parse(pairs, &Expected::names(&FIELDS)) {
        Ok(params) => params,
        Err(err) => {
            let form = BreakersForm {
                range: "1h".into(),
                ..BreakersForm::default()
            };
            return (form, Err(err));
        }
    };
    let text = |name: &str| params.text(name).unwrap_or("").to_string();
    let mut form = BreakersForm {
        range: params.text("range").unwrap_or("1h").to_string(),
        from: text("from"),
        to: text("to"),
        provider: text("provider"),
        model: text("model"),
    };
    let filters = [
        ("provider", form.provider.as_str()),
        ("model", form.model.as_str()),
    ];
    let query = api_pairs(&form.range, &form.from, &form.to, &filters, now)
        .and_then(|pairs| breakers::parse_params(&pairs, now, &[]).map(|(q, _)| q));
    if let Ok(q) = &query {
        form.from = form_time(q.from);
        form.to = form_time(q.to);
    }
    (form, query)
}

#[derive(Debug, Clone)]
pub struct StateRow {
    pub breaker: String,
    pub state: String,
    pub since: String,
    pub generation: String,
    pub transitions: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct TransitionRow {
    pub at: String,
    pub breaker: String,
    pub from_state: String,
    pub to_state: String,
    pub generation: String,
    pub calls: String,
    pub failures: String,
    pub failure_rate: String,
    pub slow: String,
    pub signature: String,
    pub reason: String,
}

#[derive(Template)]
#[template(path = "sre_breakers.html")]
pub struct BreakersPage {
    pub section: Section,
    pub nav: Vec<NavLink>,
    pub form: BreakersForm,
    pub ranges: Vec<Choice>,
    pub summary: String,
    pub json_url: String,
    pub states_csv_url: String,
    pub transitions_csv_url: String,
    pub error: Option<String>,
    pub states: Vec<StateRow>,
    pub timeline: String,
    pub transitions: Vec<TransitionRow>,
    pub truncated: bool,
}

/// `openai / gpt-4o`, or `anthropic (provider)` for a provider's breaker.
fn breaker(provider: &str, model: &str) -> String {
    if model.is_empty() {
        format!("{provider} (provider)")
    } else {
        format!("{provider} / {model}")
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// A transition on a strip: when, the state left, the state entered.
type Step<'a> = (DateTime<Utc>, &'a str, &'a str);

/// One strip per breaker: segments from each transition to the next,
/// coloured by the state entered; before the first, the state it left.
fn timeline(report: &BreakersReport) -> String {
    let (w, row_h, label_w) = (900.0, 22.0, 220.0);
    let span = (report.to - report.from).num_milliseconds().max(1) as f64;
    let x = |t: DateTime<Utc>| {
        label_w
            + ((t - report.from).num_milliseconds() as f64 / span).clamp(0.0, 1.0) * (w - label_w)
    };
    // (name, state at the start of the window, transitions in it): every
    // breaker known at the end of the window, so one open all along has a
    // strip too; its state at the start is the one its first transition in
    // the window left, or, without one, the state it is in.
    let mut rows: Vec<(String, &str, Vec<Step>)> = report
        .breakers
        .iter()
        .map(|b| (breaker(&b.provider, &b.model), b.state.as_str(), Vec::new()))
        .collect();
    for t in &report.transitions {
        let name = breaker(&t.provider, &t.model);
        let step = (t.at, t.from_state.as_str(), t.to_state.as_str());
        match rows.iter_mut().find(|(n, _, _)| *n == name) {
            Some((_, start, list)) => {
                if list.is_empty() {
                    *start = step.1;
                }
                list.push(step);
            }
            None => rows.push((name, step.1, vec![step])),
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let height = rows.len() as f64 * row_h + 20.0;
    let mut out = format!(
        "<svg class=\"timeline\" id=\"breaker-timeline\" viewBox=\"0 0 {w} {height}\" width=\"100%\" \
         height=\"{height}\" role=\"img\" aria-label=\"Breaker states over the window\" data-rows=\"{}\">",
        rows.len()
    );
    let color = |state: &str| match state {
        "open" => "#e15759",
        "half_open" => "#edc948",
        _ => "#59a14f",
    };
    for (i, (name, first, list)) in rows.iter().enumerate() {
        let y = i as f64 * row_h;
        out.push_str(&format!(
            "<text x=\"0\" y=\"{:.1}\" font-size=\"12\">{}</text>",
            y + 15.0,
            escape(name)
        ));
        let mut start = report.from;
        let mut state = *first;
        for (at, _, to) in list
            .iter()
            .copied()
            .chain(std::iter::once((report.to, "", "")))
        {
            out.push_str(&format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {state} from {}</title></rect>",
                x(start),
                y + 3.0,
                (x(at) - x(start)).max(0.0),
                row_h - 6.0,
                color(state),
                escape(name),
                stamp(start)
            ));
            start = at;
            state = to;
        }
    }
    for (t, anchor) in [(report.from, "start"), (report.to, "end")] {
        out.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"{anchor}\">{}</text>",
            x(t),
            height - 4.0,
            t.format("%m-%d %H:%M")
        ));
    }
    out.push_str("</svg>");
    out
}

/// Text for SVG built by hand (names come from events).
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page's view model. Pure.
pub fn view(
    form: BreakersForm,
    query: Option<&BreakersQuery>,
    report: Option<&BreakersReport>,
    error: Option<String>,
) -> BreakersPage {
    let json_url = match query {
        Some(q) => {
            let mut url = format!(
                "/api/v1/reports/breakers?from={}&to={}",
                q.from.to_rfc3339_opts(SecondsFormat::Secs, true),
                q.to.to_rfc3339_opts(SecondsFormat::Secs, true)
            );
            for (name, value) in [("provider", &form.provider), ("model", &form.model)] {
                if !value.is_empty() {
                    url.push_str(&format!("&{name}={}", percent_encode(value)));
                }
            }
            url
        }
        None => "/api/v1/reports/breakers?".to_string(),
    };
    let (states, transitions, summary, truncated, strip) = match report {
        Some(r) => (
            r.breakers
                .iter()
                .map(|b| StateRow {
                    breaker: breaker(&b.provider, &b.model),
                    state: b.state.clone(),
                    since: stamp(b.since),
                    generation: b.generation.to_string(),
                    transitions: thousands(b.transitions),
                    reason: b.reason.clone(),
                })
                .collect(),
            r.transitions
                .iter()
                .map(|t| TransitionRow {
                    at: stamp(t.at),
                    breaker: breaker(&t.provider, &t.model),
                    from_state: t.from_state.clone(),
                    to_state: t.to_state.clone(),
                    generation: t.generation.to_string(),
                    calls: thousands(t.calls),
                    failures: thousands(t.failures),
                    failure_rate: percent(t.failure_rate),
                    slow: thousands(t.slow),
                    signature: t.signature.map(|s| s.to_string()).unwrap_or_default(),
                    reason: t.reason.clone(),
                })
                .collect(),
            format!(
                "{} to {} UTC · {} breakers · {} transitions",
                r.from.format("%Y-%m-%d %H:%M"),
                r.to.format("%Y-%m-%d %H:%M"),
                r.breakers.len(),
                r.transitions.len()
            ),
            r.truncated,
            timeline(r),
        ),
        None => (Vec::new(), Vec::new(), String::new(), false, String::new()),
    };
    BreakersPage {
        section: Section::Sre,
        nav: sre_nav("/sre/breakers"),
        ranges: choices(RANGES.iter().map(|(v, l, _)| (*v, *l)), &form.range),
        states_csv_url: format!("{json_url}&format=csv&table=states"),
        transitions_csv_url: format!("{json_url}&format=csv&table=transitions"),
        json_url,
        form,
        summary,
        error,
        states,
        timeline: strip,
        transitions,
        truncated,
    }
}

/// `GET /sre/breakers`.
pub async fn page(
    State(state): State<DashboardState>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let pairs = query.map(|Query(p)| p).unwrap_or_default();
    let (form, query) = parse_form(&pairs, Utc::now());
    let query = match query {
        Ok(q) => q,
        Err(err) => {
            let message = format!("Invalid {}: {}", err.field, err.reason);
            return render(
                StatusCode::BAD_REQUEST,
                &view(form, None, None, Some(message)),
            );
        }
    };
    match state.read_models.breakers(&query).await {
        Ok(report) => render(
            StatusCode::OK,
            &view(form, Some(&query), Some(&report), None),
        ),
        Err(err) => {
            let status = if err.is_retryable() || matches!(err, ReadModelError::NotMigrated { .. })
            {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                tracing::error!(%err, "breakers page query failed");
                StatusCode::INTERNAL_SERVER_ERROR
            };
            let message = format!("The report could not be read: {err}");
            render(status, &view(form, Some(&query), None, Some(message)))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn page_snapshot() {
        let report = tollgate_queries::samples::breakers_report();
        let query = BreakersQuery {
            from: report.from,
            to: report.to,
            provider: None,
            model: None,
        };
        let form = BreakersForm {
            range: "custom".into(),
            from: "2026-03-10T10:00".into(),
            to: "2026-03-10T10:15".into(),
            ..BreakersForm::default()
        };
        let html = view(form, Some(&query), Some(&report), None)
            .render()
            .unwrap();
        assert!(html.contains("data-rows=\"2\""), "one strip per breaker");
        insta::assert_snapshot!(html);
    }

    #[test]
    fn bad_fields_are_named() {
        let now = Utc::now();
        let pairs = vec![("team".to_string(), "a".to_string())];
        assert_eq!(parse_form(&pairs, now).1.unwrap_err().field, "team");
    }
}
