//! Finance pages: `/finance/cost` (cost by any dimension and period, with
//! drill-down links and a bar chart of the largest groups) and
//! `/finance/cost.csv` (the same table as CSV: the page and the file show
//! the very same strings, both from `read_models::cost`).

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use tollgate_processors::read_models::cost::{
    parse_params, to_csv, CostDimension, CostQuery, CostReport, CostTotals,
};
use tollgate_processors::read_models::ReadModelError;

use crate::layout::{render, Section};
use crate::DashboardState;

/// Where a click on a group's key leads: filter on it and group by the
/// next finer dimension.
fn finer(d: CostDimension) -> Option<CostDimension> {
    match d {
        CostDimension::Month => Some(CostDimension::Day),
        CostDimension::Org => Some(CostDimension::Team),
        CostDimension::Team => Some(CostDimension::User),
        CostDimension::User => Some(CostDimension::Key),
        CostDimension::Provider => Some(CostDimension::Model),
        CostDimension::Model => Some(CostDimension::PriceVersion),
        _ => None,
    }
}

pub struct Cell {
    pub text: String,
    pub href: Option<String>,
}

pub struct TableRow {
    pub keys: Vec<Cell>,
    pub numbers: Vec<String>,
    pub cost: String,
    pub unpriced: bool,
}

#[derive(Template)]
#[template(path = "finance_cost.html")]
pub struct CostPage {
    pub section: Section,
    pub from: String,
    pub to: String,
    pub group_by: String,
    pub filters: Vec<(String, String)>,
    pub headers: Vec<String>,
    pub rows: Vec<TableRow>,
    pub total: Option<TableRow>,
    pub csv_url: String,
    pub json_url: String,
    pub chart_json: String,
    pub error: Option<String>,
    pub group_choices: Vec<(String, bool)>,
}

const NUMBER_HEADERS: [&str; 7] = [
    "calls",
    "unpriced calls",
    "input tokens",
    "cached input",
    "cache writes",
    "output tokens",
    "reasoning",
];

fn numbers(t: &CostTotals) -> Vec<String> {
    vec![
        t.calls.to_string(),
        t.unpriced_calls.to_string(),
        t.input_tokens.to_string(),
        t.cached_input_tokens.to_string(),
        t.cache_write_tokens.to_string(),
        t.output_tokens.to_string(),
        t.reasoning_tokens.to_string(),
    ]
}

fn query_string(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn base_pairs(q: &CostQuery) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("from".to_string(), q.from.to_string()),
        ("to".to_string(), q.to.to_string()),
        (
            "group_by".to_string(),
            q.group_by
                .iter()
                .map(|d| d.name())
                .collect::<Vec<_>>()
                .join(","),
        ),
    ];
    for (d, v) in &q.filters {
        pairs.push((d.name().to_string(), v.clone()));
    }
    pairs
}

fn view(q: &CostQuery, report: Option<&CostReport>, error: Option<String>) -> CostPage {
    let pairs = base_pairs(q);
    let qs = query_string(&pairs);
    let mut headers: Vec<String> = q
        .group_by
        .iter()
        .map(|d| d.name().replace('_', " "))
        .collect();
    headers.extend(NUMBER_HEADERS.iter().map(|s| s.to_string()));
    headers.push("cost (USD)".into());
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    let mut values = Vec::new();
    let mut total = None;
    if let Some(report) = report {
        for g in &report.groups {
            let keys = q
                .group_by
                .iter()
                .map(|d| {
                    let text = g.key.get(d.name()).cloned().unwrap_or_default();
                    let href = finer(*d).map(|next| {
                        let mut p: Vec<(String, String)> = pairs
                            .iter()
                            .filter(|(k, _)| k != "group_by")
                            .cloned()
                            .collect();
                        p.push((d.name().to_string(), text.clone()));
                        p.push(("group_by".into(), next.name().into()));
                        format!("/finance/cost?{}", query_string(&p))
                    });
                    Cell { text, href }
                })
                .collect();
            if let Some(cost) = g.totals.cost {
                if labels.len() < 20 {
                    labels.push(
                        q.group_by
                            .iter()
                            .map(|d| g.key.get(d.name()).cloned().unwrap_or_default())
                            .collect::<Vec<_>>()
                            .join(" / "),
                    );
                    values.push(cost.to_string());
                }
            }
            rows.push(TableRow {
                keys,
                numbers: numbers(&g.totals),
                cost: g.totals.cost_label(),
                unpriced: g.totals.cost.is_none(),
            });
        }
        total = Some(TableRow {
            keys: q
                .group_by
                .iter()
                .enumerate()
                .map(|(i, _)| Cell {
                    text: if i == 0 {
                        "total".into()
                    } else {
                        String::new()
                    },
                    href: None,
                })
                .collect(),
            numbers: numbers(&report.total),
            cost: report.total.cost_label(),
            unpriced: report.total.cost.is_none(),
        });
    }
    let chart = serde_json::json!({ "labels": labels, "values": values });
    CostPage {
        section: Section::Finance,
        from: q.from.to_string(),
        to: q.to.to_string(),
        group_by: q
            .group_by
            .iter()
            .map(|d| d.name())
            .collect::<Vec<_>>()
            .join(","),
        filters: q
            .filters
            .iter()
            .map(|(d, v)| (d.name().to_string(), v.clone()))
            .collect(),
        headers,
        rows,
        total,
        csv_url: format!("/finance/cost.csv?{qs}"),
        json_url: format!("/api/v1/reports/cost?{qs}"),
        // `</` cannot end the script element early once escaped.
        chart_json: chart.to_string().replace("</", "<\\/"),
        error,
        group_choices: [
            "team",
            "org",
            "user",
            "key",
            "provider",
            "model",
            "day",
            "month",
            "team,model",
            "provider,model,price_version",
        ]
        .iter()
        .map(|g| {
            (
                g.to_string(),
                *g == q
                    .group_by
                    .iter()
                    .map(|d| d.name())
                    .collect::<Vec<_>>()
                    .join(","),
            )
        })
        .collect(),
    }
}

fn status_of(err: &ReadModelError) -> StatusCode {
    if err.is_retryable() || matches!(err, ReadModelError::NotMigrated { .. }) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        tracing::error!(%err, "cost page query failed");
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// `GET /finance/cost`
pub async fn cost_page(
    State(state): State<DashboardState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let pairs = query.map(|Query(p)| p).unwrap_or_default();
    let today = Utc::now().date_naive();
    let q = match parse_params(&pairs, today, &[]) {
        Ok((q, _)) => q,
        Err(err) => {
            let fallback = parse_params(&[], today, &[]).map(|(q, _)| q);
            return match fallback {
                Ok(q) => render(
                    StatusCode::BAD_REQUEST,
                    &view(
                        &q,
                        None,
                        Some(format!("Invalid {}: {}", err.parameter, err.reason)),
                    ),
                ),
                Err(_) => (StatusCode::BAD_REQUEST, err.reason).into_response(),
            };
        }
    };
    match state.read_models.cost(&q).await {
        Ok(report) => render(StatusCode::OK, &view(&q, Some(&report), None)),
        Err(err) => render(status_of(&err), &view(&q, None, Some(err.to_string()))),
    }
}

/// `GET /finance/cost.csv`: the page's table as CSV.
pub async fn cost_csv(
    State(state): State<DashboardState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let pairs = query.map(|Query(p)| p).unwrap_or_default();
    let q = match parse_params(&pairs, Utc::now().date_naive(), &[]) {
        Ok((q, _)) => q,
        Err(err) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("invalid {}: {}\n", err.parameter, err.reason),
            )
                .into_response()
        }
    };
    match state.read_models.cost(&q).await {
        Ok(report) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"cost.csv\"",
                ),
            ],
            to_csv(&report),
        )
            .into_response(),
        Err(err) => (status_of(&err), format!("{err}\n")).into_response(),
    }
}
