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
use tollgate_queries::InvalidParameter;

use crate::display::{Count, Figure, Instant, Parts, Percent, Period};
use crate::layout::{render, Section};
use crate::sre_form::{api_pairs, choices, form_time, percent_encode, range_asked, Choice, RANGES};
use crate::svg::{strips, Strip};
use crate::DashboardState;

/// `org` is read only to be kept: breakers are per provider and model, of
/// no one org, and the page shows the same to every org; the navigation
/// and the filter form carry it on so the org chosen in the switcher
/// holds on the next page.
pub const FIELDS: [&str; 6] = ["range", "from", "to", "provider", "model", "org"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BreakersForm {
    pub range: String,
    pub from: String,
    pub to: String,
    pub provider: String,
    pub model: String,
    /// Kept, not read (see [`FIELDS`]).
    pub org: String,
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
        range: range_asked(params.text("range"), &text("from"), &text("to"), "1h"),
        from: text("from"),
        to: text("to"),
        provider: text("provider"),
        model: text("model"),
        org: text("org"),
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
    pub since: Instant,
    pub generation: String,
    pub transitions: Count,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct TransitionRow {
    pub at: Instant,
    pub breaker: String,
    pub from_state: String,
    pub to_state: String,
    pub generation: String,
    pub calls: Count,
    pub failures: Count,
    pub failure_rate: Percent,
    pub slow: Count,
    pub signature: String,
    pub reason: String,
}

#[derive(Template)]
#[template(path = "sre_breakers.html")]
pub struct BreakersPage {
    pub section: Section,
    pub form: BreakersForm,
    pub ranges: Vec<Choice>,
    pub summary: Parts,
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

/// One strip per breaker: segments from each transition to the next,
/// coloured by the state entered; before the first, the state it left.
fn timeline(report: &BreakersReport) -> String {
    // Every breaker known at the end of the window, so one open all along
    // has a strip too; its state at the start is the one its first
    // transition in the window left, or, without one, the state it is in.
    let mut rows: Vec<Strip> = report
        .breakers
        .iter()
        .map(|b| Strip {
            name: breaker(&b.provider, &b.model),
            first: b.state.as_str(),
            steps: Vec::new(),
        })
        .collect();
    for t in &report.transitions {
        let name = breaker(&t.provider, &t.model);
        let step = (t.at, t.to_state.as_str());
        match rows.iter_mut().find(|r| r.name == name) {
            Some(row) => {
                if row.steps.is_empty() {
                    row.first = t.from_state.as_str();
                }
                row.steps.push(step);
            }
            None => rows.push(Strip {
                name,
                first: t.from_state.as_str(),
                steps: vec![step],
            }),
        }
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    strips(
        "breaker-timeline",
        "Breaker states over the window",
        (report.from, report.to),
        &rows,
        |state| match state {
            "open" => "#e15759",
            "half_open" => "#edc948",
            _ => "#59a14f",
        },
    )
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
                    since: Instant::millis(b.since),
                    generation: b.generation.to_string(),
                    transitions: Count(b.transitions.into()),
                    reason: b.reason.clone(),
                })
                .collect(),
            r.transitions
                .iter()
                .map(|t| TransitionRow {
                    at: Instant::millis(t.at),
                    breaker: breaker(&t.provider, &t.model),
                    from_state: t.from_state.clone(),
                    to_state: t.to_state.clone(),
                    generation: t.generation.to_string(),
                    calls: Count(t.calls.into()),
                    failures: Count(t.failures.into()),
                    failure_rate: Percent::of_ratio(t.failure_rate),
                    slow: Count(t.slow.into()),
                    signature: t.signature.map(|s| s.to_string()).unwrap_or_default(),
                    reason: t.reason.clone(),
                })
                .collect(),
            Parts(vec![
                Period::new(r.from, r.to).into(),
                Figure::Text(format!("{} breakers", r.breakers.len())),
                Figure::Text(format!("{} transitions", r.transitions.len())),
            ]),
            r.truncated,
            timeline(r),
        ),
        None => (
            Vec::new(),
            Vec::new(),
            Parts::default(),
            false,
            String::new(),
        ),
    };
    BreakersPage {
        section: Section::Sre,
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
            let status = crate::read_failure::status(&err, "breakers page");
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
