//! Finance pages: `/finance/cost` (cost by any dimension and period, with
//! summary cards and the top spenders of the period and filters from
//! `tollgate_queries::overview`, drill-down links and a bar chart of the
//! largest groups), `/finance/cost.csv` (the same report as CSV, both from
//! `tollgate_queries::cost`), `/finance/cost/top.csv` (the top spenders
//! table as CSV), `/finance/statement` and its `.csv` (a team's monthly
//! statement), `/finance/budgets` and its `.csv` (every budget's running
//! period) and `/finance/budgets/{id}` (one budget's burn-down: a line chart
//! and its table). Every table a page shows next to a CSV is rendered from
//! the report's `Table` (`tollgate_queries::table`), whose cells the CSV
//! holds; no page parses CSV back.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use tollgate_access::{Identity, COST_READERS};
use tollgate_contract::catalog::PriceCatalog;
use tollgate_contract::decisions::budget_subject_words;
use tollgate_queries::cost::{
    self, parse_params, CostDimension, CostQuery, CostReport, CostTotals,
};
use tollgate_queries::overview::{self, CostOverview};
use tollgate_queries::{statement, InvalidParameter, ReadModelError, Table};

use crate::carry;
use crate::display::{counted, Cost, Count, Figure, Instant, Millis, Money, Percent, TokenCount};
use crate::key_labels::{KeyLabels, KeyName};
use crate::last_day;
use crate::layout::{render, Section};
use crate::DashboardState;

/// Where a click on a group's key leads: filter on it and group by the
/// next finer dimension. A tag report has no user or key, so its teams
/// lead to providers.
fn finer(d: CostDimension, tagged: bool) -> Option<CostDimension> {
    match d {
        CostDimension::Month => Some(CostDimension::Day),
        CostDimension::Org => Some(CostDimension::Team),
        CostDimension::Tag => Some(CostDimension::Team),
        CostDimension::Team if tagged => Some(CostDimension::Provider),
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
    /// On hover: a key's id when `text` is its name.
    pub title: Option<String>,
}

pub struct TableRow {
    pub keys: Vec<Cell>,
    /// Under [`NUMBER_HEADERS`].
    pub numbers: Vec<Figure>,
    pub cost: Cost,
    pub unpriced: bool,
}

/// The counts of `t` under [`NUMBER_HEADERS`]: calls, then tokens.
fn count_figures(t: &CostTotals) -> Vec<Figure> {
    vec![
        Count(t.calls.into()).into(),
        Count(t.unpriced_calls.into()).into(),
        TokenCount(t.input_tokens).into(),
        TokenCount(t.cached_input_tokens).into(),
        TokenCount(t.cache_write_tokens).into(),
        TokenCount(t.output_tokens).into(),
        TokenCount(t.reasoning_tokens).into(),
        Count(t.images).into(),
        // Milliseconds of audio, as the CSV's `audio_ms`.
        Millis(t.audio_ms as f64).into(),
    ]
}

#[derive(Template)]
#[template(path = "finance_cost.html")]
pub struct CostPage {
    pub section: Section,
    /// The form's first and last day (the last day inclusive: `to` less
    /// a day), as read, or as typed when they were refused.
    pub from: String,
    pub through: String,
    /// The period read, in words (`None`: nothing was read).
    pub period: Option<String>,
    pub group_by: String,
    pub filters: Vec<(String, String)>,
    pub headers: Vec<String>,
    pub rows: Vec<TableRow>,
    pub total: Option<TableRow>,
    pub csv_url: String,
    pub json_url: String,
    /// The statement and budgets pages, with the filters they read.
    pub statement_url: String,
    pub budgets_url: String,
    pub chart_json: String,
    pub error: Option<String>,
    /// `group_by` without its tag, and whether it is the current one.
    pub group_choices: Vec<(String, bool)>,
    /// The tag key grouped by (the "group by tag" input), or empty.
    pub group_tag: String,
    /// What the report covers when it names a tag key.
    pub tag_note: Option<String>,
    /// Summary cards and top spenders (`None` on a bad request or when the
    /// overview could not be read: then `overview_error` says why).
    pub overview: Option<OverviewView>,
    pub overview_error: Option<String>,
}

/// The cost overview as the page shows it.
pub struct OverviewView {
    /// The period's total cost (`unpriced` when nothing is priced).
    pub total: Cost,
    pub calls: Count,
    /// `call` or `calls`, after [`OverviewView::calls`].
    pub calls_word: &'static str,
    /// The period's unpriced calls, which the total leaves out (`None`:
    /// none).
    pub unpriced_note: Option<String>,
    /// The savings from cached input, `None` when unknown.
    pub savings: Option<Money>,
    pub cached_tokens: TokenCount,
    /// The forecast of the running month, `None` when the period does
    /// not cover it.
    pub forecast: Option<Money>,
    pub forecast_note: String,
    /// Users, then keys; empty for a tag report (no user or key in the
    /// tag rollup).
    pub top_tables: Vec<TopTable>,
    pub csv_url: String,
}

/// The top spenders of one dimension.
pub struct TopTable {
    pub title: &'static str,
    /// `top-users` or `top-keys`.
    pub id: &'static str,
    pub rows: Vec<SpenderRow>,
}

/// One top spender: the top CSV's fields after `dimension` (rank, id,
/// calls, unpriced calls, cost) and the drill-down link of its id.
pub struct SpenderRow {
    pub rank: usize,
    pub id: String,
    /// The id as shown: a key's name and prefix (the id is then the
    /// hover title), a user's id.
    pub name: KeyName,
    pub calls: Count,
    pub unpriced_calls: Count,
    pub cost: Cost,
    pub href: String,
}

const NUMBER_HEADERS: [&str; 9] = [
    "calls",
    "unpriced calls",
    "input tokens",
    "cached input",
    "cache writes",
    "output tokens",
    "reasoning",
    "images",
    "audio",
];

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

fn group_by_param(q: &CostQuery) -> String {
    q.group_by
        .iter()
        .map(|d| q.label(*d))
        .collect::<Vec<_>>()
        .join(",")
}

fn base_pairs(q: &CostQuery) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("from".to_string(), q.from.to_string()),
        ("to".to_string(), q.to.to_string()),
        ("group_by".to_string(), group_by_param(q)),
    ];
    for (d, v) in &q.filters {
        pairs.push((q.filter_name(*d), v.clone()));
    }
    pairs
}

/// The period `[from, to)` as the cost page states it: its first and
/// last day, how many UTC days, and the instants read.
fn period_words(from: chrono::NaiveDate, to: chrono::NaiveDate) -> String {
    let last = last_day::through_of_to(to);
    let days = (to - from).num_days();
    let span = if last == from {
        from.to_string()
    } else {
        format!("{from} through {last}")
    };
    format!(
        "{span} · {days} UTC day{}: {from} 00:00 to {to} 00:00 UTC",
        if days == 1 { "" } else { "s" }
    )
}

/// The page's form names the period's last day (`through`, inclusive, as a
/// date picker is read: From = Through is one day); the report reads `to`,
/// the day after it (exclusive), as the API does. `through` becomes `to`
/// before the report parameters are parsed; `to` is still read as the
/// API reads it (every link the pages write uses it).
fn fold_through(pairs: &[(String, String)]) -> Result<Vec<(String, String)>, InvalidParameter> {
    let through = pairs
        .iter()
        .find(|(k, v)| k == "through" && !v.trim().is_empty())
        .map(|(_, v)| v.trim().to_string());
    let mut out: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "through")
        .cloned()
        .collect();
    let Some(through) = through else {
        return Ok(out);
    };
    if out.iter().any(|(k, v)| k == "to" && !v.trim().is_empty()) {
        return Err(InvalidParameter::new(
            "through",
            "name the period's last day (`through`) or the day after it (`to`), not both",
        ));
    }
    let shown: String = through.chars().take(40).collect();
    let last = chrono::NaiveDate::parse_from_str(&through, "%Y-%m-%d").map_err(|_| {
        InvalidParameter::new("through", format!("`{shown}` is not a date (YYYY-MM-DD)"))
    })?;
    let from = out
        .iter()
        .find(|(k, _)| k == "from")
        .and_then(|(_, v)| chrono::NaiveDate::parse_from_str(v.trim(), "%Y-%m-%d").ok());
    if let Some(from) = from.filter(|from| last < *from) {
        return Err(InvalidParameter::new(
            "through",
            format!("the last day ({last}) is before the first ({from})"),
        ));
    }
    let to = last_day::to_of_through(&through).ok_or_else(|| {
        InvalidParameter::new("through", format!("`{shown}` is the last day there is"))
    })?;
    out.retain(|(k, _)| k != "to");
    out.push(("to".into(), to.to_string()));
    Ok(out)
}

/// The query of a cost page or its CSVs: `group_tag` and `through` folded
/// into the report's parameters.
fn page_pairs(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Vec<(String, String)>, InvalidParameter> {
    fold_through(&fold_group_tag(
        &query.map(|Query(p)| p).unwrap_or_default(),
    ))
}

/// The page's form sends the "group by tag" input as `group_tag`; it joins
/// `group_by` as `tag:<key>` before the report parameters are parsed, so
/// the page accepts exactly what the API accepts.
fn fold_group_tag(pairs: &[(String, String)]) -> Vec<(String, String)> {
    let tag = pairs
        .iter()
        .find(|(k, _)| k == "group_tag")
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let mut out: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "group_tag")
        .cloned()
        .collect();
    if tag.is_empty() {
        return out;
    }
    match out.iter_mut().find(|(k, _)| k == "group_by") {
        Some((_, v)) if v.trim().is_empty() => *v = format!("tag:{tag}"),
        Some((_, v)) => *v = format!("{v},tag:{tag}"),
        None => out.push(("group_by".into(), format!("team,tag:{tag}"))),
    }
    out
}

/// Where a top spender leads: the same period and filters, this user or
/// key, grouped by model.
fn spender_link(q: &CostQuery, d: CostDimension, id: &str) -> String {
    let mut p: Vec<(String, String)> = base_pairs(q)
        .into_iter()
        .filter(|(k, _)| k != "group_by" && k != d.name())
        .collect();
    p.push((d.name().into(), id.to_string()));
    p.push(("group_by".into(), CostDimension::Model.name().into()));
    format!("/finance/cost?{}", query_string(&p))
}

/// A group's value `id` of dimension `d` as the page shows it: a key by
/// its name, anything else as it is.
fn shown(d: CostDimension, id: String, keys: &KeyLabels) -> KeyName {
    match d {
        CostDimension::Key => keys.name(&id),
        _ => KeyName {
            text: id,
            title: None,
        },
    }
}

/// The overview's cards and tables. The tables show the groups the top
/// spenders CSV (`overview::top_table`) is written from, in its order.
fn overview_view(q: &CostQuery, o: &CostOverview, keys: &KeyLabels) -> OverviewView {
    let mut top_tables = Vec::new();
    for (d, groups, title, id) in [
        (CostDimension::User, &o.top_users, "Users", "top-users"),
        (CostDimension::Key, &o.top_keys, "API keys", "top-keys"),
    ] {
        let Some(groups) = groups else { continue };
        let rows = groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let id = g.key.get(d.name()).cloned().unwrap_or_default();
                let name = shown(d, id.clone(), keys);
                SpenderRow {
                    rank: i + 1,
                    href: spender_link(q, d, &id),
                    id,
                    name,
                    calls: Count(g.totals.calls.into()),
                    unpriced_calls: Count(g.totals.unpriced_calls.into()),
                    cost: Cost(g.totals.cost),
                }
            })
            .collect();
        top_tables.push(TopTable { title, id, rows });
    }
    let (forecast, forecast_note) = match &o.forecast {
        Some(f) => (
            Some(Money(f.cost)),
            format!(
                "{}: {} so far, {} of {} days",
                f.month,
                Money(f.cost_so_far).text(),
                elapsed_days(f.elapsed_seconds),
                f.days_in_month
            ),
        ),
        None => (
            None,
            format!(
                "only for a period from the first of the running month ({}) through today",
                o.today.format("%Y-%m")
            ),
        ),
    };
    OverviewView {
        total: Cost(o.total.cost),
        calls: Count(o.total.calls.into()),
        calls_word: if o.total.calls == 1 { "call" } else { "calls" },
        unpriced_note: unpriced_note(o.total.unpriced_calls),
        savings: o.cache_savings.map(Money),
        cached_tokens: TokenCount(o.total.cached_input_tokens),
        forecast,
        forecast_note,
        top_tables,
        csv_url: format!("/finance/cost/top.csv?{}", query_string(&base_pairs(q))),
    }
}

fn view(
    q: &CostQuery,
    report: Option<&CostReport>,
    error: Option<String>,
    names: &KeyLabels,
) -> CostPage {
    let pairs = base_pairs(q);
    let qs = query_string(&pairs);
    let mut headers: Vec<String> = q
        .group_by
        .iter()
        .map(|d| match d {
            CostDimension::Tag => q.label(*d),
            _ => d.name().replace('_', " "),
        })
        .collect();
    headers.extend(NUMBER_HEADERS.iter().map(|s| s.to_string()));
    headers.push("cost".into());
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
                    let id = g.key.get(&q.label(*d)).cloned().unwrap_or_default();
                    let href = finer(*d, q.tag_key.is_some()).map(|next| {
                        let mut p: Vec<(String, String)> = pairs
                            .iter()
                            .filter(|(k, _)| k != "group_by")
                            .cloned()
                            .collect();
                        p.push((q.filter_name(*d), id.clone()));
                        p.push(("group_by".into(), next.name().into()));
                        format!("/finance/cost?{}", query_string(&p))
                    });
                    let KeyName { text, title } = shown(*d, id, names);
                    Cell { text, href, title }
                })
                .collect();
            if let Some(cost) = g.totals.cost {
                if labels.len() < 20 {
                    labels.push(
                        q.group_by
                            .iter()
                            .map(|d| {
                                let id = g.key.get(&q.label(*d)).cloned().unwrap_or_default();
                                shown(*d, id, names).text
                            })
                            .collect::<Vec<_>>()
                            .join(" / "),
                    );
                    values.push(cost.to_string());
                }
            }
            rows.push(TableRow {
                keys,
                numbers: count_figures(&g.totals),
                cost: Cost(g.totals.cost),
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
                    title: None,
                })
                .collect(),
            numbers: count_figures(&report.total),
            cost: Cost(report.total.cost),
            unpriced: report.total.cost.is_none(),
        });
    }
    let chart = serde_json::json!({ "labels": labels, "values": values });
    let untagged_group_by = q
        .group_by
        .iter()
        .filter(|d| **d != CostDimension::Tag)
        .map(|d| d.name())
        .collect::<Vec<_>>()
        .join(",");
    CostPage {
        section: Section::Finance,
        from: q.from.to_string(),
        through: last_day::through_of_to(q.to).to_string(),
        period: Some(period_words(q.from, q.to)),
        group_by: group_by_param(q),
        filters: q
            .filters
            .iter()
            .map(|(d, v)| (q.filter_name(*d), v.clone()))
            .collect(),
        headers,
        rows,
        total,
        csv_url: format!("/finance/cost.csv?{qs}"),
        json_url: format!("/api/v1/reports/cost?{qs}"),
        statement_url: carry::href("/finance/statement", "/finance/cost", &pairs, Utc::now()),
        budgets_url: carry::href("/finance/budgets", "/finance/cost", &pairs, Utc::now()),
        chart_json: crate::display::script_json(&chart),
        error,
        group_tag: if q.group_by.contains(&CostDimension::Tag) {
            q.tag_key.clone().unwrap_or_default()
        } else {
            String::new()
        },
        tag_note: q.tag_key.as_ref().map(|key| {
            format!(
                "Only calls tagged `{key}` are counted: each call is in the row of its \
                 `{key}` value, calls without that tag are in no row, so the total is the \
                 tagged spend, not the whole spend."
            )
        }),
        group_choices: [
            "",
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
        .map(|g| (g.to_string(), *g == untagged_group_by))
        .collect(),
        overview: None,
        overview_error: None,
    }
}

/// The price catalog for the overview's savings: `Ok(None)` when the
/// server runs without PostgreSQL.
async fn read_catalog(state: &DashboardState) -> Result<Option<PriceCatalog>, String> {
    match &state.prices {
        Some(store) => store
            .all()
            .await
            .map(|all| Some(PriceCatalog::new(all)))
            .map_err(|e| format!("cannot read the price catalog: {e}")),
        None => Ok(None),
    }
}

/// Seconds as days with one decimal, for the forecast's note (`21.6`).
fn elapsed_days(seconds: i64) -> String {
    let mut days =
        (rust_decimal::Decimal::from(seconds) / rust_decimal::Decimal::from(86_400)).round_dp(1);
    days.rescale(1);
    days.to_string()
}

/// The overview of `q` (catalog, then the read model).
async fn read_overview(
    state: &DashboardState,
    q: &CostQuery,
    now: chrono::DateTime<Utc>,
) -> Result<CostOverview, (StatusCode, String)> {
    let catalog = read_catalog(state)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e))?;
    state
        .read_models
        .cost_overview(q, catalog.as_ref(), now)
        .await
        .map_err(|e| (status_of(&e), e.to_string()))
}

pub(crate) fn status_of(err: &ReadModelError) -> StatusCode {
    crate::read_failure::status(err, "cost page")
}

/// `table` as a CSV file download named `filename`: every CSV these pages
/// offer goes through here.
pub(crate) fn csv_download(table: &Table, filename: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        table.to_csv(),
    )
        .into_response()
}

/// `table` as a `data:` URL of its CSV, for a download link in the page
/// that shows it.
pub(crate) fn csv_data_url(table: &Table) -> String {
    let mut out = String::from("data:text/csv;charset=utf-8,");
    for b in table.to_csv().bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /finance/cost`
pub async fn cost_page(
    State(state): State<DashboardState>,
    identity: Identity,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let raw = query.as_ref().map(|Query(p)| p.clone()).unwrap_or_default();
    let now = Utc::now();
    let today = now.date_naive();
    let parsed = page_pairs(query).and_then(|pairs| parse_params(&pairs, today, &[]));
    let q = match parsed {
        Ok((q, _)) => q,
        Err(err) => {
            let fallback = parse_params(&[], today, &[]).map(|(q, _)| q);
            return match fallback {
                Ok(q) => render(
                    StatusCode::BAD_REQUEST,
                    &refused_view(&q, &raw, format!("Invalid {}: {}", err.field, err.reason)),
                ),
                Err(_) => (StatusCode::BAD_REQUEST, err.reason).into_response(),
            };
        }
    };
    let (report, overview) =
        futures::join!(state.read_models.cost(&q), read_overview(&state, &q, now));
    // The keys the page shows, named in one read: the report's groups
    // (when grouped by key) and the top keys.
    let mut key_ids: Vec<&str> = Vec::new();
    if let (Ok(report), true) = (&report, q.group_by.contains(&CostDimension::Key)) {
        let label = q.label(CostDimension::Key);
        key_ids.extend(
            report
                .groups
                .iter()
                .filter_map(|g| g.key.get(&label).map(String::as_str)),
        );
    }
    if let Ok(Some(top)) = overview.as_ref().map(|o| o.top_keys.as_ref()) {
        key_ids.extend(
            top.iter()
                .filter_map(|g| g.key.get(CostDimension::Key.name()).map(String::as_str)),
        );
    }
    let keys = KeyLabels::read(&state, &identity, COST_READERS, key_ids).await;
    let (status, mut page) = match report {
        Ok(report) => (StatusCode::OK, view(&q, Some(&report), None, &keys)),
        Err(err) => (
            status_of(&err),
            view(&q, None, Some(err.to_string()), &keys),
        ),
    };
    match overview {
        Ok(o) => page.overview = Some(overview_view(&q, &o, &keys)),
        Err((_, message)) => page.overview_error = Some(message),
    }
    render(status, &page)
}

/// The cost page refusing the query `raw` with `error`: no period read,
/// the form as it was sent (`fallback` gives the rest of the page).
fn refused_view(fallback: &CostQuery, raw: &[(String, String)], error: String) -> CostPage {
    let mut page = view(fallback, None, Some(error), &KeyLabels::none());
    let value = |name: &str| {
        raw.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
    };
    page.period = None;
    // No CSV or JSON of a period nobody asked for.
    page.csv_url = String::new();
    page.json_url = String::new();
    page.from = value("from").unwrap_or_default();
    // The form's last day: as sent, or the day before a `to`.
    page.through = value("through")
        .filter(|t| !t.is_empty())
        .or_else(|| value("to").map(|to| last_day::through_of_sent_to(&to)))
        .unwrap_or_default();
    // The filters sent, kept by the form.
    page.filters = raw
        .iter()
        .filter(|(k, _)| CostDimension::parse(k).is_some() || k.starts_with("tag."))
        .cloned()
        .collect();
    page
}

/// `GET /finance/cost/top.csv`: the page's top spenders table as CSV.
pub async fn top_csv(
    State(state): State<DashboardState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let now = Utc::now();
    let today = now.date_naive();
    let q = match page_pairs(query).and_then(|pairs| parse_params(&pairs, today, &[])) {
        Ok((q, _)) => q,
        Err(err) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("invalid {}: {}\n", err.field, err.reason),
            )
                .into_response()
        }
    };
    match read_overview(&state, &q, now).await {
        Ok(o) => csv_download(&overview::top_table(&o), "cost-top-spenders.csv"),
        Err((status, message)) => (status, format!("{message}\n")).into_response(),
    }
}

/// `GET /finance/cost.csv`: the page's table as CSV.
pub async fn cost_csv(
    State(state): State<DashboardState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let q = match page_pairs(query)
        .and_then(|pairs| parse_params(&pairs, Utc::now().date_naive(), &[]))
    {
        Ok((q, _)) => q,
        Err(err) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("invalid {}: {}\n", err.field, err.reason),
            )
                .into_response()
        }
    };
    match state.read_models.cost(&q).await {
        Ok(report) => csv_download(&cost::table(&report), "cost.csv"),
        Err(err) => (status_of(&err), format!("{err}\n")).into_response(),
    }
}

/// Why a statement could not be shown: the answer's status and reason,
/// and when the team id has calls of several orgs, those orgs (the page
/// offers them in its org field).
struct StatementRefusal {
    status: StatusCode,
    message: String,
    orgs: Vec<String>,
}

impl From<(StatusCode, String)> for StatementRefusal {
    fn from((status, message): (StatusCode, String)) -> Self {
        Self {
            status,
            message,
            orgs: Vec::new(),
        }
    }
}

/// A statement and the org it is of: the one asked for, else the only
/// org with calls of the team that month (`None`: no org has any).
struct StatementRead {
    statement: statement::Statement,
    org: Option<String>,
}

/// Read one team's statement (report + catalog).
async fn read_statement(
    state: &DashboardState,
    parsed: Result<statement::StatementParams, InvalidParameter>,
    now: chrono::DateTime<Utc>,
) -> Result<StatementRead, StatementRefusal> {
    let invalid = |e: InvalidParameter| {
        StatementRefusal::from((
            StatusCode::BAD_REQUEST,
            format!("invalid {}: {}", e.field, e.reason),
        ))
    };
    let statement::StatementParams { team, month, org } = parsed.map_err(invalid)?;
    let query = statement::statement_query(&team, &month, org.as_deref()).map_err(invalid)?;
    let mut read_org = org.clone();
    if org.is_none() {
        let orgs = state
            .read_models
            .statement_orgs(&team, &month)
            .await
            .map_err(|e| (status_of(&e), e.to_string()))?;
        if let Err(e) = statement::one_org(&team, &month, None, &orgs) {
            return Err(StatementRefusal { orgs, ..invalid(e) });
        }
        read_org = orgs.into_iter().next();
    }
    let report = state
        .read_models
        .cost(&query)
        .await
        .map_err(|e| (status_of(&e), e.to_string()))?;
    let repricing = state
        .read_models
        .statement_repricing(&team, org.as_deref(), &month)
        .await
        .map_err(|e| (status_of(&e), e.to_string()))?;
    let catalog = read_catalog(state)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e))?
        .unwrap_or_default();
    let mut statement = statement::assemble(&team, &month, &report, &repricing, &catalog, now);
    statement.late = state
        .read_models
        .statement_late(&team, org.as_deref(), &month)
        .await
        .map_err(|e| (status_of(&e), e.to_string()))?;
    Ok(StatementRead {
        statement,
        org: read_org,
    })
}

/// A statement line (or the total): its provider, model and price
/// version, its unit prices, then its counts, savings and repricing, and
/// the cost apart. The page shows the unit prices in a table of their own
/// (the lines' table fits a desktop's width); the CSV has them on the
/// line.
pub struct StatementRow {
    pub key: Vec<Figure>,
    pub prices: Vec<Figure>,
    pub cells: Vec<Figure>,
    pub cost: Cost,
    pub unpriced: bool,
}

/// How the statement form asks for the org, by the orgs its reader sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgField {
    /// A reader of every org: a text field (empty: the team's only org),
    /// suggesting `suggested` (the orgs a team id has calls of).
    Any { suggested: Vec<String> },
    /// A reader of some orgs: one of them.
    Choose(Vec<(String, bool)>),
    /// A reader of one org: it, shown and kept.
    Fixed,
}

impl OrgField {
    /// The field for `identity` with `org` asked for (empty: none).
    fn of(identity: &Identity, org: &str) -> Self {
        match identity.org_scope(tollgate_access::COST_READERS) {
            Some(tollgate_access::OrgScope::Only(orgs)) if orgs.len() > 1 => Self::Choose(
                orgs.into_iter()
                    .map(|o| {
                        let on = o == org;
                        (o, on)
                    })
                    .collect(),
            ),
            Some(tollgate_access::OrgScope::Only(_)) => Self::Fixed,
            _ => Self::Any {
                suggested: Vec::new(),
            },
        }
    }

    fn is_any(&self) -> bool {
        matches!(self, Self::Any { .. })
    }

    fn suggested(&self) -> &[String] {
        match self {
            Self::Any { suggested } => suggested,
            _ => &[],
        }
    }

    fn choices(&self) -> &[(String, bool)] {
        match self {
            Self::Choose(choices) => choices,
            _ => &[],
        }
    }

    fn is_fixed(&self) -> bool {
        matches!(self, Self::Fixed)
    }
}

#[derive(Template)]
#[template(path = "finance_statement.html")]
pub struct StatementPage {
    pub section: Section,
    pub team: String,
    pub month: String,
    /// The org asked for (kept by the form and the links), or empty.
    pub org: String,
    /// How the form asks for the org.
    pub org_field: OrgField,
    /// The org the statement is of (asked for, or the team's only org
    /// that month), or empty.
    pub read_org: String,
    /// The cost page of the statement's team and month.
    pub cost_url: String,
    pub rows: Vec<StatementRow>,
    pub total: Option<StatementRow>,
    pub savings: Option<Money>,
    pub forecast: Option<Money>,
    /// Unpriced calls of the month, not in the total (`None`: none).
    pub unpriced_note: Option<String>,
    /// Said instead of a statement when the team has no call that month.
    pub no_calls: Option<String>,
    /// When the statement was read (`2026-12-07 17:12 UTC`).
    pub as_of: String,
    /// Calls of the month stored after it ended: how many, their cost, and
    /// when the last one was stored.
    pub late: Option<(String, Money, String)>,
    pub csv_url: String,
    pub error: Option<String>,
}

impl StatementPage {
    /// The form for `team`, `month` and `org` (empty: none), without a
    /// statement.
    fn empty(team: &str, month: &str, org: &str) -> Self {
        let mut pairs = vec![
            ("team".to_string(), team.to_string()),
            ("month".to_string(), month.to_string()),
        ];
        if !org.is_empty() {
            pairs.push(("org".into(), org.to_string()));
        }
        Self {
            section: Section::Finance,
            team: team.to_string(),
            month: month.to_string(),
            org: org.to_string(),
            org_field: OrgField::Any {
                suggested: Vec::new(),
            },
            read_org: org.to_string(),
            cost_url: carry::href("/finance/cost", "/finance/statement", &pairs, Utc::now()),
            rows: Vec::new(),
            total: None,
            savings: None,
            forecast: None,
            unpriced_note: None,
            no_calls: None,
            as_of: String::new(),
            late: None,
            csv_url: format!("/finance/statement.csv?{}", query_string(&pairs)),
            error: None,
        }
    }
}

/// "· 1 unpriced call not in the total" for `unpriced` of `calls` calls
/// (`None` when every call is priced).
fn unpriced_note(unpriced: i64) -> Option<String> {
    (unpriced > 0).then(|| format!("{} not in the total", counted(unpriced, "unpriced call")))
}

/// `page` showing statement `s`: the columns of its table (the CSV,
/// `statement::table`), each value formatted for reading with the CSV's
/// exact value on hover.
fn statement_view(mut page: StatementPage, s: &statement::Statement) -> StatementPage {
    let row = |key: [Figure; 3],
               prices: Vec<Figure>,
               totals: &CostTotals,
               savings: Option<rust_decimal::Decimal>,
               repricing: Option<rust_decimal::Decimal>| {
        let mut cells = count_figures(totals);
        cells.extend([Figure::money(savings), Figure::money(repricing)]);
        StatementRow {
            key: key.into(),
            prices,
            cells,
            cost: Cost(totals.cost),
            unpriced: totals.cost.is_none(),
        }
    };
    page.month = s.month.clone();
    page.rows = s
        .lines
        .iter()
        .map(|l| {
            let p = l.prices.as_ref();
            let price = |f: fn(
                &tollgate_contract::catalog::PriceVersion,
            ) -> Option<rust_decimal::Decimal>| {
                Figure::price(p.and_then(f))
            };
            row(
                [
                    l.provider.as_str().into(),
                    l.model.as_str().into(),
                    l.price_version.to_string().into(),
                ],
                vec![
                    price(|p| Some(p.input_per_token)),
                    price(|p| p.cache_read_per_token),
                    price(|p| p.cache_write_per_token),
                    price(|p| Some(p.output_per_token)),
                    price(|p| p.reasoning_per_token),
                    Figure::money(p.map(|p| p.per_image)),
                    Figure::money(p.map(|p| p.per_audio_second)),
                    Figure::money(p.map(|p| p.per_request)),
                ],
                &l.totals,
                l.cache_savings,
                l.repricing,
            )
        })
        .collect();
    page.total = Some(row(
        ["total".into(), Figure::Blank, Figure::Blank],
        Vec::new(),
        &s.total,
        Some(s.cache_savings),
        Some(s.repricing),
    ));
    page.savings = Some(Money(s.cache_savings));
    page.forecast = s.forecast.map(Money);
    page.unpriced_note = unpriced_note(s.total.unpriced_calls);
    let minute = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
    page.as_of = minute(s.as_of);
    page.late = s.late.as_ref().map(|late| {
        (
            counted(late.calls, "call"),
            Money(late.cost_when_stored),
            minute(late.last_stored_at),
        )
    });
    if s.total.calls == 0 {
        page.no_calls = Some(format!(
            "No calls for team {} in {} in {}: nothing to bill. Check the team id{}.",
            s.team,
            if page.read_org.is_empty() {
                "any org".to_string()
            } else {
                format!("org {}", page.read_org)
            },
            s.month,
            if page.read_org.is_empty() || page.org_field.is_fixed() {
                " and the month"
            } else {
                ", the org and the month"
            }
        ));
    }
    page
}

/// `GET /finance/statement?team=&month=YYYY-MM[&org=]`
pub async fn statement_page(
    State(state): State<DashboardState>,
    identity: Identity,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let pairs = query.map(|Query(p)| p).unwrap_or_default();
    let now = Utc::now();
    let today = now.date_naive();
    let parsed = statement::parse_params(&pairs, today, &[]);
    // The form shows what was asked for (no month: none).
    let (team, month) = match &parsed {
        Ok((request, params)) => (
            request.team.clone(),
            params.get("month").unwrap_or_default().to_string(),
        ),
        Err(_) => (String::new(), String::new()),
    };
    let org = pairs
        .iter()
        .find(|(k, _)| k == "org")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    let mut page = StatementPage::empty(&team, &month, org);
    page.org_field = OrgField::of(&identity, org);
    if team.is_empty() && parsed.is_ok() {
        page.error = Some("Choose a team.".into());
        return render(StatusCode::OK, &page);
    }
    match read_statement(&state, parsed.map(|(request, _)| request), now).await {
        Ok(read) => {
            page.read_org = read.org.unwrap_or_default();
            render(StatusCode::OK, &statement_view(page, &read.statement))
        }
        Err(refusal) => {
            if !refusal.orgs.is_empty() && page.org_field.is_any() {
                // The page's own words: it has an org field.
                page.error = Some(format!(
                    "Team {team} has calls of {} orgs in {month} ({}{}): choose one in the Org field.",
                    if refusal.orgs.len() > 10 {
                        "more than 10".to_string()
                    } else {
                        refusal.orgs.len().to_string()
                    },
                    refusal.orgs.iter().take(10).cloned().collect::<Vec<_>>().join(", "),
                    if refusal.orgs.len() > 10 { ", ..." } else { "" },
                ));
                page.org_field = OrgField::Any {
                    suggested: refusal.orgs,
                };
            } else {
                page.error = Some(refusal.message);
            }
            render(refusal.status, &page)
        }
    }
}

/// `GET /finance/statement.csv?team=&month=`
pub async fn statement_csv(
    State(state): State<DashboardState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let pairs = query.map(|Query(p)| p).unwrap_or_default();
    let now = Utc::now();
    let today = now.date_naive();
    let parsed = statement::parse_params(&pairs, today, &[]).map(|(request, _)| request);
    match read_statement(&state, parsed, now).await {
        Ok(read) => csv_download(&statement::table(&read.statement), "statement.csv"),
        Err(refusal) => (refusal.status, format!("{}\n", refusal.message)).into_response(),
    }
}

async fn read_budgets(
    state: &DashboardState,
    identity: &Identity,
) -> Result<Vec<tollgate_control::budgets::BudgetStatus>, (StatusCode, String)> {
    let store = state.budgets.as_ref().ok_or((
        StatusCode::SERVICE_UNAVAILABLE,
        "budgets need PostgreSQL; this server runs without it".to_string(),
    ))?;
    let budgets = store.in_org(identity.scope()).await.map_err(|e| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read budgets: {e}"),
        )
    })?;
    state
        .read_models
        .budget_status(&budgets, Utc::now())
        .await
        .map_err(|e| (status_of(&e), e.to_string()))
}

#[derive(Template)]
#[template(path = "finance_budgets.html")]
pub struct BudgetsPage {
    pub section: Section,
    pub rows: Vec<BudgetRow>,
    pub error: Option<String>,
    pub links: BudgetsLinks,
}

/// The budgets page's links, with the filters each target reads.
pub struct BudgetsLinks {
    pub csv: String,
    pub json: String,
    pub cost: String,
    pub statement: String,
}

impl BudgetsLinks {
    fn of(pairs: &[(String, String)]) -> Self {
        let link = |target| carry::href(target, "/finance/budgets", pairs, Utc::now());
        Self {
            csv: link("/finance/budgets.csv"),
            json: link("/api/v1/finance/budgets"),
            cost: link("/finance/cost"),
            statement: link("/finance/statement"),
        }
    }
}

/// One budget's running period: the columns of the budgets CSV
/// (`tollgate_queries::budgets::table`) for reading.
pub struct BudgetRow {
    pub id: i64,
    /// The org the budget belongs to; empty for one set without an org.
    pub org: String,
    /// As people read it (`team search of org acme`).
    pub subject: String,
    /// The decision subject, as the CSV has it (on hover).
    pub decision: String,
    pub period: &'static str,
    pub enforcement: &'static str,
    pub limit: Money,
    pub spent: Money,
    /// The limit less the spend (below zero once overspent).
    pub left: Money,
    pub percent: Percent,
    pub state: String,
    pub forecast: Money,
    pub from: String,
    pub until: String,
}

/// The budgets page of `statuses`.
fn budgets_view(
    statuses: &[tollgate_control::budgets::BudgetStatus],
    links: BudgetsLinks,
) -> BudgetsPage {
    let rows = statuses
        .iter()
        .map(|s| BudgetRow {
            id: s.budget.id,
            org: s.budget.org_id.clone().unwrap_or_default(),
            subject: budget_subject_words(&s.subject),
            decision: s.subject.clone(),
            period: s.budget.period.name(),
            enforcement: if s.budget.hard { "hard" } else { "soft" },
            limit: Money(s.budget.limit_usd),
            spent: Money(s.spend_usd),
            left: Money(s.remaining_usd),
            percent: Percent::of_percent(s.percent),
            state: s.state.to_string(),
            forecast: Money(s.forecast_usd),
            from: s.period_start.to_string(),
            until: s.period_end.to_string(),
        })
        .collect();
    BudgetsPage {
        section: Section::Finance,
        rows,
        error: None,
        links,
    }
}

/// `GET /finance/budgets`: every budget, spend of the running period, state.
pub async fn budgets_page(
    State(state): State<DashboardState>,
    identity: Identity,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let pairs = query.map(|Query(p)| p).unwrap_or_default();
    let links = BudgetsLinks::of(&pairs);
    match read_budgets(&state, &identity).await {
        Ok(statuses) => render(StatusCode::OK, &budgets_view(&statuses, links)),
        Err((status, message)) => render(
            status,
            &BudgetsPage {
                section: Section::Finance,
                rows: Vec::new(),
                error: Some(message),
                links,
            },
        ),
    }
}

/// `GET /finance/budgets.csv`
pub async fn budgets_csv(State(state): State<DashboardState>, identity: Identity) -> Response {
    match read_budgets(&state, &identity).await {
        Ok(statuses) => csv_download(&tollgate_queries::budgets::table(&statuses), "budgets.csv"),
        Err((status, message)) => (status, format!("{message}\n")).into_response(),
    }
}

#[derive(Template)]
#[template(path = "finance_budget.html")]
pub struct BurndownPage {
    pub section: Section,
    pub id: String,
    /// Label and value of the budget's summary.
    pub summary: Vec<(&'static str, Figure)>,
    pub as_of: Option<Instant>,
    pub step: &'static str,
    /// The CSV's columns and, per bucket, their values for reading.
    pub headers: Vec<String>,
    pub rows: Vec<Vec<Figure>>,
    pub csv_url: String,
    pub json_url: String,
    pub chart_json: String,
    pub error: Option<String>,
}

impl BurndownPage {
    fn empty(id: &str) -> Self {
        Self {
            section: Section::Finance,
            id: id.to_string(),
            summary: Vec::new(),
            as_of: None,
            step: "",
            headers: Vec::new(),
            rows: Vec::new(),
            csv_url: format!("/api/v1/finance/budgets/{}/burndown?format=csv", encode(id)),
            json_url: format!("/api/v1/finance/budgets/{}/burndown", encode(id)),
            chart_json: "{}".into(),
            error: None,
        }
    }
}

/// `GET /finance/budgets/{id}`: the burn-down of one budget's running
/// period: cumulative spend against the limit, the ideal line and the
/// forecast, and the table of the burn-down CSV.
pub async fn budget_page(
    State(state): State<DashboardState>,
    identity: Identity,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    use tollgate_queries::burndown;
    let mut page = BurndownPage::empty(&id);
    let Ok(budget_id) = id.parse::<i64>() else {
        page.error = Some(format!("`{id}` is not a budget id."));
        return render(StatusCode::NOT_FOUND, &page);
    };
    let Some(store) = state.budgets.as_ref() else {
        page.error = Some("budgets need PostgreSQL; this server runs without it".into());
        return render(StatusCode::SERVICE_UNAVAILABLE, &page);
    };
    let budget = match store.in_org(identity.scope()).await {
        Ok(all) => all.into_iter().find(|b| b.id == budget_id),
        Err(e) => {
            page.error = Some(format!("cannot read budgets: {e}"));
            return render(StatusCode::SERVICE_UNAVAILABLE, &page);
        }
    };
    let Some(budget) = budget else {
        page.error = Some(format!("There is no budget {budget_id}."));
        return render(StatusCode::NOT_FOUND, &page);
    };
    let now = burndown::clock(Utc::now());
    let report = match state.read_models.budget_burndown(&budget, now).await {
        Ok(r) => r,
        Err(e) => {
            page.error = Some(e.to_string());
            return render(status_of(&e), &page);
        }
    };
    render(StatusCode::OK, &burndown_view(page, &budget, &report))
}

/// `page` showing `budget`'s burn-down `report`: its summary, its table's
/// cells and the chart's points.
fn burndown_view(
    mut page: BurndownPage,
    budget: &tollgate_control::budgets::Budget,
    report: &tollgate_queries::burndown::Burndown,
) -> BurndownPage {
    use tollgate_queries::burndown;
    let status = &report.status;
    page.summary = vec![
        ("subject", budget_subject_words(&status.subject).into()),
        ("period", budget.period.name().into()),
        (
            "enforcement",
            if budget.hard { "hard" } else { "soft" }.into(),
        ),
        ("limit", Money(budget.limit_usd).into()),
        ("spent", Money(status.spend_usd).into()),
        ("used", Percent::of_percent(status.percent).into()),
        ("state", status.state.into()),
        ("forecast", Money(status.forecast_usd).into()),
        ("from", status.period_start.to_string().into()),
        ("until", status.period_end.to_string().into()),
    ];
    page.as_of = Some(Instant::new(report.as_of));
    page.step = match report.step {
        burndown::Step::Day => "day",
        burndown::Step::Hour => "hour",
    };
    // The table shows the CSV's columns (exact on hover).
    page.headers = burndown::table(report)
        .columns()
        .map(|c| c.trim_end_matches("_usd").replace('_', " "))
        .collect();
    page.rows = report
        .points
        .iter()
        .map(|p| {
            vec![
                Instant::new(p.start).into(),
                Instant::new(p.end).into(),
                Figure::money(p.spend_usd),
                Figure::money(p.cumulative_usd),
                Figure::money(p.remaining_usd),
                Money(p.ideal_usd).into(),
                Figure::money(p.forecast_usd),
            ]
        })
        .collect();
    // Numbers for plotting only: the chart gets the same decimal strings
    // (the script turns them into numbers); `null` where a line has no
    // point.
    // A point is the cumulative spend at the end of its bucket: label days
    // by date and hours by their span.
    let label = |p: &burndown::BurndownPoint| match report.step {
        burndown::Step::Day => p.start.format("%Y-%m-%d").to_string(),
        burndown::Step::Hour => format!("{}–{}", p.start.format("%H:%M"), p.end.format("%H:%M")),
    };
    let opt = |d: Option<rust_decimal::Decimal>| d.map(|d| d.to_string());
    let chart = serde_json::json!({
        "labels": report.points.iter().map(label).collect::<Vec<_>>(),
        "cumulative": report.points.iter().map(|p| opt(p.cumulative_usd)).collect::<Vec<_>>(),
        "limit": report.points.iter().map(|_| budget.limit_usd.to_string()).collect::<Vec<_>>(),
        "ideal": report.points.iter().map(|p| p.ideal_usd.to_string()).collect::<Vec<_>>(),
        "forecast": report.points.iter().map(|p| opt(p.forecast_usd)).collect::<Vec<_>>(),
    });
    page.chart_json = crate::display::script_json(&chart);
    page
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::NaiveDate;
    use tollgate_queries::cost::CostTotals;

    use super::*;
    use tollgate_queries::samples;

    /// The cost page of the sample report with its overview (summary
    /// cards, top spenders), as HTML.
    #[test]
    fn cost_page_snapshot() {
        let q = samples::cost_query();
        let mut page = view(&q, Some(&samples::cost_report()), None, &KeyLabels::none());
        page.overview = Some(overview_view(&q, &samples::overview(), &KeyLabels::none()));
        insta::assert_snapshot!(page.render().unwrap());
    }

    /// The sample statement's page: the statement table's cells.
    #[test]
    fn statement_page_snapshot() {
        let page = statement_view(
            StatementPage::empty("team-search", "2026-03", ""),
            &samples::statement(),
        );
        insta::assert_snapshot!(page.render().unwrap());
    }

    /// The budgets page of the sample budgets.
    #[test]
    fn budgets_page_snapshot() {
        insta::assert_snapshot!(budgets_view(&samples::budgets(), BudgetsLinks::of(&[]))
            .render()
            .unwrap());
    }

    /// The sample burn-down's page: summary, chart data and table.
    #[test]
    fn burndown_page_snapshot() {
        let page = burndown_view(
            BurndownPage::empty("2"),
            &samples::daily_key_budget(),
            &samples::burndown(),
        );
        insta::assert_snapshot!(page.render().unwrap());
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The form's From = Through is one day: `through` is the last day,
    /// read as `to` the day after (the API's exclusive end); the header
    /// states the day and the instants read.
    #[test]
    fn a_single_day_picked_in_the_form_is_one_day() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 9).unwrap();
        let folded =
            fold_through(&pairs(&[("from", "2026-12-05"), ("through", "2026-12-05")])).unwrap();
        assert_eq!(
            folded,
            pairs(&[("from", "2026-12-05"), ("to", "2026-12-06")])
        );
        let (q, _) = parse_params(&folded, today, &[]).unwrap();
        let page = view(&q, None, None, &KeyLabels::none());
        assert_eq!(
            (page.from.as_str(), page.through.as_str()),
            ("2026-12-05", "2026-12-05")
        );
        let html = page.render().unwrap();
        assert!(
            html.contains(
                "id=\"cost-period\">2026-12-05 · 1 UTC day: 2026-12-05 00:00 to 2026-12-06 00:00 UTC"
            ),
            "{html}"
        );
        assert!(
            html.contains("name=\"through\" value=\"2026-12-05\""),
            "{html}"
        );
        // A link's `to` is still the API's exclusive end.
        assert_eq!(
            fold_through(&pairs(&[("from", "2026-12-01"), ("to", "2026-12-06")])).unwrap(),
            pairs(&[("from", "2026-12-01"), ("to", "2026-12-06")])
        );
        assert_eq!(
            period_words(q.from, NaiveDate::from_ymd_opt(2026, 12, 8).unwrap()),
            "2026-12-05 through 2026-12-07 · 3 UTC days: 2026-12-05 00:00 to 2026-12-08 00:00 UTC"
        );
    }

    #[test]
    fn a_last_day_before_the_first_or_beside_to_is_refused_by_name() {
        let err =
            fold_through(&pairs(&[("from", "2026-12-05"), ("through", "2026-12-04")])).unwrap_err();
        assert_eq!(err.field, "through");
        assert!(err.reason.contains("before the first"), "{}", err.reason);
        let err =
            fold_through(&pairs(&[("to", "2026-12-05"), ("through", "2026-12-04")])).unwrap_err();
        assert_eq!(err.field, "through");
        assert_eq!(
            fold_through(&pairs(&[("through", "5.12.2026")]))
                .unwrap_err()
                .field,
            "through"
        );
    }

    /// A refused query reads nothing: the header does not name the default
    /// period beside the error, and the form keeps what was sent.
    #[test]
    fn a_refused_period_is_not_shown_as_the_default_one() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 9).unwrap();
        let (fallback, _) = parse_params(&[], today, &[]).unwrap();
        let raw = pairs(&[
            ("from", "2026-12-07"),
            ("through", "2026-12-05"),
            ("team", "search"),
        ]);
        let html = refused_view(&fallback, &raw, "Invalid through: …".into())
            .render()
            .unwrap();
        assert!(!html.contains("2026-12-01"), "the default period: {html}");
        assert!(html.contains("Nothing read"), "{html}");
        assert!(
            html.contains("name=\"from\" value=\"2026-12-07\""),
            "{html}"
        );
        assert!(
            html.contains("name=\"through\" value=\"2026-12-05\""),
            "{html}"
        );
        assert!(html.contains("name=\"team\" value=\"search\""), "{html}");
    }

    /// The total card says how many calls its total leaves out.
    #[test]
    fn the_total_card_names_the_unpriced_calls() {
        let q = samples::cost_query();
        let mut o = samples::overview();
        o.total.calls = 5;
        o.total.unpriced_calls = 1;
        let mut page = view(&q, None, None, &KeyLabels::none());
        page.overview = Some(overview_view(&q, &o, &KeyLabels::none()));
        let html = page.render().unwrap();
        assert!(
            html.contains("5 calls · <strong class=\"unpriced-note\" id=\"overview-unpriced\">1 unpriced call not in the total</strong>"),
            "{html}"
        );
        o.total.unpriced_calls = 0;
        page.overview = Some(overview_view(&q, &o, &KeyLabels::none()));
        assert!(!page.render().unwrap().contains("overview-unpriced"));
    }

    /// Keys are shown by name and prefix, their id on hover and in the
    /// links: the top keys, the table and chart of a report by key. A
    /// key without a name (unknown, or of an org the reader does not
    /// see) is its id. One call is "1 call".
    #[test]
    fn keys_are_shown_by_name_with_the_id_on_hover() {
        use tollgate_queries::cost::CostGroup;
        let named = "01a2517a-7083-7c3e-9d0b-2f1e4c6a8b90";
        let unknown = "01a2517a-7083-7c3e-9d0b-2f1e4c6a8b91";
        let keys = KeyLabels::of(&[crate::key_labels::tests::key(
            named,
            "search-svc",
            "abcd1234",
        )]);
        let q = CostQuery {
            group_by: vec![CostDimension::Key],
            ..samples::cost_query()
        };
        let group = |id: &str, calls: i64| CostGroup {
            key: [("key".to_string(), id.to_string())].into(),
            totals: CostTotals {
                calls,
                cost: Some("1.5".parse().unwrap()),
                ..CostTotals::default()
            },
        };
        let report = CostReport::of_groups(&q, vec![group(named, 1), group(unknown, 1)]);
        let mut o = samples::overview();
        o.top_keys = Some(vec![group(named, 1), group(unknown, 1)]);
        o.total.calls = 1;
        o.total.unpriced_calls = 0;
        let mut page = view(&q, Some(&report), None, &keys);
        page.overview = Some(overview_view(&q, &o, &keys));
        let html = page.render().unwrap();
        let top = html
            .split("id=\"top-keys\"")
            .nth(1)
            .and_then(|t| t.split("</table>").next())
            .unwrap();
        // The top keys: the name, the id on hover and in the link.
        assert!(
            top.contains(&format!(
                "&#38;key={named}&#38;group_by=model\" title=\"{named}\">search-svc (tg_abcd1234)</a>"
            )),
            "{top}"
        );
        assert!(
            top.contains(&format!(
                "&#38;key={unknown}&#38;group_by=model\">{unknown}</a>"
            )),
            "{top}"
        );
        // The report by key.
        let table = html.split("id=\"cost-table\"").nth(1).unwrap();
        assert!(
            table.contains(&format!(
                "<td title=\"{named}\">search-svc (tg_abcd1234)</td>"
            )),
            "{table}"
        );
        assert!(table.contains(&format!("<td>{unknown}</td>")), "{table}");
        assert!(
            page.chart_json.contains("\"search-svc (tg_abcd1234)\""),
            "{}",
            page.chart_json
        );
        // The card.
        assert!(html.contains("<p class=\"card-note\">1 call</p>"), "{html}");
        // The CSV keeps the ids.
        let csv = cost::table(&report).to_csv();
        assert!(csv.contains(named) && !csv.contains("search-svc"), "{csv}");
        let top = overview::top_table(&o).to_csv();
        assert!(top.contains(named) && !top.contains("search-svc"), "{top}");
    }

    /// A team without calls that month: a notice naming team, org and
    /// month instead of a $0.00 statement.
    #[test]
    fn a_statement_without_calls_says_so() {
        let mut s = samples::statement();
        s.lines.clear();
        s.total = CostTotals::default();
        let mut page = StatementPage::empty("team-x", "2026-03", "acme");
        page.org_field = OrgField::Fixed;
        let html = statement_view(page, &s).render().unwrap();
        assert!(
            html.contains("No calls for team team-search in org acme in 2026-03"),
            "{html}"
        );
        assert!(!html.contains("statement-table"), "{html}");
        let page = StatementPage::empty("team-x", "2026-03", "");
        let html = statement_view(page, &s).render().unwrap();
        assert!(html.contains("in any org in 2026-03"), "{html}");
    }

    /// The org field: free text for a reader of every org (suggesting the
    /// orgs a team id is ambiguous between), a choice among a reader's
    /// orgs, and for a reader of one org none to fill (it is kept).
    #[test]
    fn the_statement_form_asks_for_the_org_its_reader_may_name() {
        let mut page = StatementPage::empty("shared", "2026-03", "");
        page.org_field = OrgField::Any {
            suggested: vec!["acme".into(), "globex".into()],
        };
        let html = page.render().unwrap();
        assert!(html.contains("<input type=\"text\" name=\"org\""), "{html}");
        assert!(html.contains("<option value=\"globex\">"), "{html}");
        let mut page = StatementPage::empty("shared", "2026-03", "globex");
        page.org_field = OrgField::Choose(vec![("acme".into(), false), ("globex".into(), true)]);
        let html = page.render().unwrap();
        assert!(html.contains("<select name=\"org\""), "{html}");
        assert!(
            html.contains("<option value=\"globex\" selected>"),
            "{html}"
        );
        let mut page = StatementPage::empty("shared", "2026-03", "acme");
        page.org_field = OrgField::Fixed;
        let html = page.render().unwrap();
        assert!(
            html.contains("<input type=\"hidden\" name=\"org\" value=\"acme\">"),
            "{html}"
        );
        assert!(!html.contains("<label>Org"), "{html}");
    }

    #[test]
    fn the_group_by_tag_input_joins_group_by() {
        assert_eq!(
            fold_group_tag(&pairs(&[("group_by", "team"), ("group_tag", " feature ")])),
            pairs(&[("group_by", "team,tag:feature")])
        );
        assert_eq!(
            fold_group_tag(&pairs(&[("group_by", ""), ("group_tag", "feature")])),
            pairs(&[("group_by", "tag:feature")])
        );
        assert_eq!(
            fold_group_tag(&pairs(&[("group_tag", "feature")])),
            pairs(&[("group_by", "team,tag:feature")])
        );
        assert_eq!(
            fold_group_tag(&pairs(&[("group_by", "model"), ("group_tag", "")])),
            pairs(&[("group_by", "model")])
        );
    }

    #[test]
    fn tag_page_drills_down_to_teams_then_providers() {
        let today = NaiveDate::from_ymd_opt(2026, 3, 15).unwrap();
        let (q, _) = parse_params(
            &pairs(&[("group_by", "tag:feature,team"), ("month", "2026-03")]),
            today,
            &[],
        )
        .unwrap();
        let report = CostReport {
            from: q.from,
            to: q.to,
            group_by: vec!["tag:feature".into(), "team".into()],
            filters: Default::default(),
            tag_key: Some("feature".into()),
            groups: vec![tollgate_queries::cost::CostGroup {
                key: [
                    ("tag:feature".to_string(), "search".to_string()),
                    ("team".to_string(), "a".to_string()),
                ]
                .into(),
                totals: CostTotals::default(),
            }],
            total: CostTotals::default(),
        };
        let page = view(&q, Some(&report), None, &KeyLabels::none());
        assert_eq!(page.headers[0], "tag:feature");
        assert_eq!(page.group_tag, "feature");
        assert!(page.tag_note.is_some());
        let tag_link = page.rows[0].keys[0].href.clone().unwrap();
        assert!(tag_link.contains("tag.feature=search"), "{tag_link}");
        assert!(tag_link.ends_with("group_by=team"), "{tag_link}");
        let team_link = page.rows[0].keys[1].href.clone().unwrap();
        assert!(
            team_link.ends_with("team=a&group_by=provider"),
            "{team_link}"
        );
        assert!(
            page.csv_url.contains("group_by=tag%3Afeature%2Cteam"),
            "{}",
            page.csv_url
        );
        // The select shows the group_by without its tag.
        assert!(page.group_choices.iter().any(|(g, on)| g == "team" && *on));
    }

    #[test]
    fn top_spenders_are_the_csv_and_drill_down_to_models() {
        use tollgate_queries::cost::CostGroup;
        let today = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        let (q, _) = parse_params(
            &pairs(&[
                ("group_by", "team"),
                ("team", "a b"),
                ("user", "old"),
                ("from", "2026-11-01"),
            ]),
            today,
            &[],
        )
        .unwrap();
        let spender = |d: &str, id: &str, cost: Option<&str>| CostGroup {
            key: [(d.to_string(), id.to_string())].into(),
            totals: CostTotals {
                calls: 3,
                cost: cost.map(|c| c.parse().unwrap()),
                unpriced_calls: if cost.is_none() { 3 } else { 0 },
                ..CostTotals::default()
            },
        };
        let o = CostOverview {
            from: q.from,
            to: q.to,
            filters: Default::default(),
            tag_key: None,
            today,
            total: CostTotals {
                calls: 6,
                cost: Some("1.5".parse().unwrap()),
                ..CostTotals::default()
            },
            top_users: Some(vec![
                spender("user", "=u1", Some("1.5")),
                spender("user", "u2", None),
            ]),
            top_keys: Some(vec![spender("key", "k&1", Some("1.5"))]),
            cache_savings: None,
            forecast: None,
        };
        let v = overview_view(&q, &o, &KeyLabels::none());
        assert_eq!(v.total.text(), "$1.50");
        assert!(v.savings.is_none() && v.forecast.is_none());
        assert_eq!(v.top_tables.len(), 2);
        let users = &v.top_tables[0];
        assert_eq!(users.id, "top-users");
        // The CSV's rows in its order; the id as it is (the CSV guards it
        // against formulas, the page has no need to).
        let csv = overview::top_table(&o).into_rows();
        for (row, fields) in users.rows.iter().zip(&csv) {
            assert_eq!(row.rank.to_string(), fields[1]);
            assert_eq!(row.calls.text(), fields[3]);
            assert_eq!(row.unpriced_calls.text(), fields[4]);
        }
        assert_eq!(users.rows[0].id, "=u1");
        assert_eq!(users.rows[0].cost.0, Some("1.5".parse().unwrap()));
        assert_eq!(users.rows[1].cost.text(), "unpriced");
        assert!(users.rows[1].cost.is_unpriced());
        // The link filters on the raw id, replaces the user filter and
        // keeps the period and the other filters.
        assert_eq!(
            users.rows[0].href,
            "/finance/cost?from=2026-11-01&to=2026-11-23&team=a%20b&user=%3Du1&group_by=model"
        );
        assert_eq!(
            v.top_tables[1].rows[0].href,
            "/finance/cost?from=2026-11-01&to=2026-11-23&team=a%20b&user=old&key=k%261&group_by=model"
        );
        // A tag report has no spender tables.
        let tagged = CostOverview {
            top_users: None,
            top_keys: None,
            ..o
        };
        assert!(overview_view(&q, &tagged, &KeyLabels::none())
            .top_tables
            .is_empty());
    }
}
