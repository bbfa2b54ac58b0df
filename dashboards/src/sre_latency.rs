//! The SRE latency page (`GET /sre/latency`): a filter form (time range
//! presets or a custom window, provider, model, team, grouping, bucket), six
//! Chart.js line charts (p50/p95/p99 of duration and of time-to-first-token,
//! one line per group), a table of totals per group (p50/p90/p95/p99), and the slowest calls
//! of the window with links to their traces (`api.trace_url`) and a CSV
//! (`/sre/latency/slowest.csv`).
//!
//! The page is rendered complete on the server: the chart data is embedded as
//! JSON in the page, so there is no second round trip and a test can check
//! what the browser draws. `static/latency.js` only hands that JSON to
//! Chart.js and records how many points each chart plotted in its canvas's
//! `data-points` attribute.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Serialize;
use tollgate_queries::latency::{
    buckets_in, format_bucket, parse_bucket, parse_group_by, Dimension, MAX_BUCKETS,
};
use tollgate_queries::params::{Expected, QueryParams};
use tollgate_queries::slow_calls::{self, SlowCall};
use tollgate_queries::{
    InvalidParameter, LatencyFilters, LatencyQuery, LatencyReport, Percentiles, ReadModelError,
    Stats, EXACT_MAX_CALLS, HISTOGRAM_MAX_RELATIVE_ERROR,
};

use crate::display::{Count, Figure, Instant, Millis, Parts, Percent, Period, Rate};
use crate::layout::{render, Section};
use crate::sre_form::{choices, form_time, percent_encode, range_asked, window, Choice, RANGES};
use crate::trace_link::TraceLinks;
use crate::DashboardState;

/// Line colours, one per group, in order (Tableau 10: distinguishable, and
/// readable for the common colour-vision deficiencies).
const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

/// `""` is one group of every call the filters keep (what an alert rule
/// measures; its explain link asks for it).
const GROUPINGS: [(&str, &str); 6] = [
    ("provider,model", "Provider / model"),
    ("provider", "Provider"),
    ("model", "Model"),
    ("team", "Team"),
    ("org", "Organisation"),
    ("", "None (all calls)"),
];

const BUCKETS: [&str; 7] = ["", "1m", "5m", "15m", "1h", "6h", "1d"];

/// The page's URL query, as the filter form submits it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageParams {
    pub range: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    /// A team id, as the latency API and alert rules take it.
    pub team: Option<String>,
    pub group_by: Option<String>,
    pub bucket: Option<String>,
    /// The org the page is about (the sign-in gate pins it for people who
    /// see only some orgs).
    pub org: Option<String>,
}

impl PageParams {
    /// The form's fields.
    pub const NAMES: [&'static str; 9] = [
        "range", "from", "to", "provider", "model", "team", "group_by", "bucket", "org",
    ];

    /// Read a query string's pairs ([`QueryParams`]: unknown and repeated
    /// parameters are errors naming them).
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, InvalidParameter> {
        let params = QueryParams::parse(pairs, &Expected::names(&Self::NAMES))?;
        let get = |name: &str| params.get(name).map(str::to_string);
        Ok(Self {
            range: get("range"),
            from: get("from"),
            to: get("to"),
            provider: get("provider"),
            model: get("model"),
            team: get("team"),
            group_by: get("group_by"),
            bucket: get("bucket"),
            org: get("org"),
        })
    }
}

/// The form as it will be shown again (what the user chose, normalised).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FormState {
    pub range: String,
    /// `datetime-local` values (UTC, minute precision).
    pub from: String,
    pub to: String,
    pub provider: String,
    pub model: String,
    pub team: String,
    pub group_by: String,
    pub bucket: String,
    pub org: String,
    /// Why the chart's bucket is not the one asked for (a menu bucket too
    /// fine for the window: the next one that fits is shown), else empty.
    pub bucket_note: String,
}

/// One of the slowest calls, as listed.
#[derive(Debug, Clone)]
pub struct SlowCallRow {
    pub at: Instant,
    pub call_id: String,
    pub attempt: u16,
    pub target: String,
    pub team: String,
    pub outcome: String,
    /// The provider's HTTP status, `—` for a call that got none (0 in
    /// the event: a timeout, a refused connection).
    pub http_status: String,
    pub duration: Millis,
    pub ttft: String,
    pub trace_id: String,
    /// The trace in the user's tracing backend (`api.trace_url`).
    pub trace_url: Option<String>,
}

/// One row of the totals table.
#[derive(Debug, Clone)]
pub struct TotalsRow {
    pub color: &'static str,
    pub label: String,
    pub count: Count,
    pub errors: Count,
    pub error_rate: Percent,
    pub p50: String,
    pub p90: String,
    pub p95: String,
    pub p99: String,
    pub ttft_count: Count,
    pub ttft_p50: String,
    pub ttft_p90: String,
    pub ttft_p95: String,
    pub ttft_p99: String,
    /// `num estimate` when the duration percentiles are estimates, else
    /// `num`; the cells then start with `≈` and carry the bound as a title.
    pub duration_class: &'static str,
    pub duration_title: String,
    pub ttft_class: &'static str,
    pub ttft_title: String,
}

/// One chart canvas; its data lives in [`ChartData`].
#[derive(Debug, Clone)]
pub struct ChartSlot {
    pub id: &'static str,
    pub title: &'static str,
}

/// What `latency.js` receives.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ChartData {
    /// One label per bucket of the window, UTC.
    pub labels: Vec<String>,
    pub charts: Vec<Chart>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Chart {
    pub id: &'static str,
    pub datasets: Vec<Dataset>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Dataset {
    pub label: String,
    pub color: &'static str,
    /// One value per label; `null` where the bucket had no calls.
    pub data: Vec<Option<f64>>,
}

impl ChartData {
    /// Points that will be drawn (non-null values), per chart id.
    pub fn points(&self, id: &str) -> usize {
        self.charts
            .iter()
            .filter(|chart| chart.id == id)
            .flat_map(|chart| &chart.datasets)
            .map(|dataset| dataset.data.iter().flatten().count())
            .sum()
    }
}

type Metric = fn(&Stats) -> Option<f64>;

const DURATION_CHARTS: [(&str, &str, Metric); 3] = [
    ("duration-p50", "p50", |s| Some(s.duration_ms.p50)),
    ("duration-p95", "p95", |s| Some(s.duration_ms.p95)),
    ("duration-p99", "p99", |s| Some(s.duration_ms.p99)),
];

const TTFT_CHARTS: [(&str, &str, Metric); 3] = [
    ("ttft-p50", "p50", |s| s.ttft_ms.map(|p| p.p50)),
    ("ttft-p95", "p95", |s| s.ttft_ms.map(|p| p.p95)),
    ("ttft-p99", "p99", |s| s.ttft_ms.map(|p| p.p99)),
];

#[derive(Template)]
#[template(path = "sre_latency.html")]
pub struct LatencyPage {
    pub section: Section,
    pub form: FormState,
    pub ranges: Vec<Choice>,
    pub providers: Vec<Choice>,
    pub models: Vec<Choice>,
    pub groupings: Vec<Choice>,
    pub buckets: Vec<Choice>,
    pub summary: Parts,
    pub json_url: String,
    pub error: Option<String>,
    pub duration_charts: Vec<ChartSlot>,
    pub ttft_charts: Vec<ChartSlot>,
    pub rows: Vec<TotalsRow>,
    /// `ChartData` as JSON, escaped for a `<script>` element.
    pub chart_json: String,
    /// For the note under the table: whether any value of the report is
    /// an estimate (a group or point above the threshold read from the
    /// minute rollups), the largest group given exactly then, and the
    /// bound on an estimate.
    pub estimated: bool,
    pub exact_max: Count,
    pub max_error: String,
    pub slow_calls: Vec<SlowCallRow>,
    /// The slowest calls as CSV, for the same window and filters.
    pub slow_csv_url: String,
    /// The "Totals" table as CSV.
    pub totals_csv_url: String,
}

/// Turn the page's parameters into a report query, and the form to show.
/// On a bad parameter the form still comes back, so the page can show it
/// with the error.
pub fn parse_params(
    params: &PageParams,
    now: DateTime<Utc>,
) -> (FormState, Result<LatencyQuery, InvalidParameter>) {
    let text = |value: &Option<String>| value.as_deref().unwrap_or("").trim().to_string();
    let mut form = FormState {
        range: range_asked(
            params.range.as_deref(),
            &text(&params.from),
            &text(&params.to),
            "1h",
        ),
        from: text(&params.from),
        to: text(&params.to),
        provider: text(&params.provider),
        model: text(&params.model),
        team: text(&params.team),
        group_by: params
            .group_by
            .as_deref()
            .unwrap_or("provider,model")
            .trim()
            .to_string(),
        bucket: text(&params.bucket),
        org: text(&params.org),
        bucket_note: String::new(),
    };
    let query = build_query(&mut form, now);
    (form, query)
}

fn build_query(form: &mut FormState, now: DateTime<Utc>) -> Result<LatencyQuery, InvalidParameter> {
    let (from, to) = window(&form.range, &form.from, &form.to, now)?;
    // A preset is that many whole minutes, up to the end of the current
    // one: the report widens its window to whole minutes, and "Last 24
    // hours" from 10:00:20 would otherwise cover 1,441 of them (one more
    // 1m bucket than a report may have).
    let (from, to) = if form.range == "custom" {
        (from, to)
    } else {
        let end = DateTime::from_timestamp(to.timestamp().div_euclid(60) * 60, 0).unwrap_or(to);
        let end = if end < to {
            end + Duration::minutes(1)
        } else {
            end
        };
        (end - (to - from), end)
    };
    let bucket = if form.bucket.is_empty() {
        None
    } else {
        let asked = parse_bucket(&form.bucket)?;
        Some(fitting_bucket(form, from, to, asked))
    };
    let group_by = parse_group_by(&form.group_by)?;
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let filters = LatencyFilters {
        provider: non_empty(&form.provider),
        model: non_empty(&form.model),
        team: non_empty(&form.team),
        org: non_empty(&form.org),
    };
    let query = LatencyQuery::new(from, to, bucket, group_by, filters)?;
    // Show the effective window, so switching to "custom" starts from it.
    form.from = form_time(query.from);
    form.to = form_time(query.to);
    Ok(query)
}

/// `asked`, or when it gives more buckets than a report may have, the
/// first coarser bucket of the menu that fits the window (noted in
/// `form.bucket_note`, and the form shows it): every bucket the menu
/// offers works with every range it offers. No coarser one fits only
/// beyond the report's longest range, which the report names.
fn fitting_bucket(form: &mut FormState, from: DateTime<Utc>, to: DateTime<Utc>, asked: u32) -> u32 {
    if buckets_in(from, to, asked) <= MAX_BUCKETS {
        return asked;
    }
    let coarser = BUCKETS
        .iter()
        .filter_map(|b| parse_bucket(b).ok())
        .filter(|step| *step > asked)
        .find(|step| buckets_in(from, to, *step) <= MAX_BUCKETS);
    match coarser {
        Some(step) => {
            form.bucket_note = format!(
                "{} buckets would be {} points over this window (at most {}): shown in {} buckets.",
                format_bucket(asked),
                Count(buckets_in(from, to, asked).into()).text(),
                Count(MAX_BUCKETS.into()).text(),
                format_bucket(step),
            );
            form.bucket = format_bucket(step);
            step
        }
        None => asked,
    }
}

/// Everything the page needs besides the query result.
pub struct PageInput<'a> {
    pub form: FormState,
    /// Provider/model pairs seen in the window, for the filter menus.
    pub dimensions: &'a [(String, String)],
    pub report: Option<&'a LatencyReport>,
    /// The window's slowest calls (empty without a report).
    pub slow_calls: &'a [SlowCall],
    pub trace_links: &'a TraceLinks,
    pub error: Option<String>,
}

/// Build the page's view model. Pure, so it is tested without a server.
pub fn view(input: PageInput<'_>) -> LatencyPage {
    let PageInput {
        form,
        dimensions,
        report,
        slow_calls,
        trace_links,
        error,
    } = input;
    let mut providers: Vec<&str> = dimensions.iter().map(|(p, _)| p.as_str()).collect();
    let mut models: Vec<&str> = dimensions
        .iter()
        .filter(|(p, _)| form.provider.is_empty() || *p == form.provider)
        .map(|(_, m)| m.as_str())
        .collect();
    // Keep the current choice selectable even when it has no calls now.
    providers.push(&form.provider);
    models.push(&form.model);
    for list in [&mut providers, &mut models] {
        list.retain(|s| !s.is_empty());
        list.sort_unstable();
        list.dedup();
    }
    let all = |label: &'static str| std::iter::once(("", label));
    let provider_choices = choices(
        all("All providers").chain(providers.iter().map(|p| (*p, *p))),
        &form.provider,
    );
    let model_choices = choices(
        all("All models").chain(models.iter().map(|m| (*m, *m))),
        &form.model,
    );
    let ranges = choices(RANGES.iter().map(|(v, l, _)| (*v, *l)), &form.range);
    let groupings = choices(GROUPINGS, &form.group_by);
    let buckets = choices(
        BUCKETS
            .iter()
            .map(|b| (*b, if b.is_empty() { "Auto" } else { *b })),
        &form.bucket,
    );
    let (summary, json_url, rows, chart_data) = match report {
        Some(report) => (
            summary(report),
            json_url(report, &form),
            totals_rows(report),
            chart_data(report),
        ),
        None => (
            Parts::default(),
            "/api/v1/reports/latency".to_string(),
            Vec::new(),
            ChartData::default(),
        ),
    };
    let slots = |charts: &[(&'static str, &'static str, Metric)]| {
        charts
            .iter()
            .map(|(id, title, _)| ChartSlot { id, title })
            .collect()
    };
    let slow_csv_url = slow_csv_url(&form);
    let totals_csv_url = totals_csv_url(&form);
    LatencyPage {
        section: Section::Sre,
        form,
        ranges,
        providers: provider_choices,
        models: model_choices,
        groupings,
        buckets,
        summary,
        json_url,
        error,
        duration_charts: slots(&DURATION_CHARTS),
        ttft_charts: slots(&TTFT_CHARTS),
        rows,
        chart_json: script_json(&chart_data),
        estimated: report.is_some_and(has_estimates),
        exact_max: Count(EXACT_MAX_CALLS.into()),
        max_error: format!("{:.2}%", HISTOGRAM_MAX_RELATIVE_ERROR * 100.0),
        slow_calls: slow_call_rows(slow_calls, trace_links),
        slow_csv_url,
        totals_csv_url,
    }
}

/// Whether any total or point of `report` holds an estimate.
fn has_estimates(report: &LatencyReport) -> bool {
    report.groups.iter().any(|g| {
        std::iter::once(&g.total)
            .chain(g.series.iter().map(|p| &p.stats))
            .any(|s| s.duration_ms.is_estimate() || s.ttft_ms.is_some_and(|t| t.is_estimate()))
    })
}

fn slow_call_rows(calls: &[SlowCall], links: &TraceLinks) -> Vec<SlowCallRow> {
    calls
        .iter()
        .map(|c| SlowCallRow {
            at: Instant::millis(c.occurred_at),
            call_id: c.call_id.clone(),
            attempt: c.attempt,
            target: format!("{} / {}", c.provider, c.model),
            team: c.team.clone(),
            outcome: c.outcome.clone(),
            http_status: match c.http_status {
                0 => "—".to_string(),
                status => status.to_string(),
            },
            duration: Millis(f64::from(c.duration_ms)),
            ttft: c
                .ttft_ms
                .map_or_else(|| "—".to_string(), |t| Millis(f64::from(t)).text()),
            trace_id: c.trace_id.clone(),
            trace_url: links.link(&c.trace_id, &c.span_id),
        })
        .collect()
}

/// `/sre/latency/slowest.csv` with the form's window and filters.
fn slow_csv_url(form: &FormState) -> String {
    csv_url("/sre/latency/slowest.csv", form, false)
}

/// `/sre/latency/totals.csv` with the form's window, filters and grouping.
fn totals_csv_url(form: &FormState) -> String {
    csv_url("/sre/latency/totals.csv", form, true)
}

/// `path` with the form's fields that are set; the grouping only when
/// `grouped`.
fn csv_url(path: &str, form: &FormState, grouped: bool) -> String {
    let pairs = [
        ("range", &form.range),
        ("from", &form.from),
        ("to", &form.to),
        ("provider", &form.provider),
        ("model", &form.model),
        ("team", &form.team),
        ("org", &form.org),
    ];
    let grouping = [("group_by", &form.group_by), ("bucket", &form.bucket)];
    let query: Vec<String> = pairs
        .iter()
        .chain(grouping.iter().filter(|_| grouped))
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect();
    format!("{path}?{}", query.join("&"))
}

fn summary(report: &LatencyReport) -> Parts {
    let calls: u64 = report.groups.iter().map(|g| g.total.count).sum();
    // The window's mean request rate: calls over its minutes.
    #[allow(clippy::cast_precision_loss)]
    let per_minute = calls as f64 / ((report.to - report.from).num_seconds().max(1) as f64 / 60.0);
    Parts(vec![
        Period::new(report.from, report.to).into(),
        Figure::Text(format!("{} buckets", format_bucket(report.bucket_secs))),
        Figure::Text(format!("{} calls", Count(calls.into()).text())),
        Rate::new(per_minute, "req/min").into(),
    ])
}

/// The same report from the JSON API.
fn json_url(report: &LatencyReport, form: &FormState) -> String {
    let group_by: Vec<&str> = report.group_by.iter().map(|d| d.name()).collect();
    let mut url = format!(
        "/api/v1/reports/latency?from={}&to={}&bucket={}&group_by={}",
        report.from.to_rfc3339_opts(SecondsFormat::Secs, true),
        report.to.to_rfc3339_opts(SecondsFormat::Secs, true),
        format_bucket(report.bucket_secs),
        group_by.join(","),
    );
    for (name, value) in [
        ("provider", &form.provider),
        ("model", &form.model),
        ("team", &form.team),
        ("org", &form.org),
    ] {
        if !value.is_empty() {
            url.push_str(&format!("&{name}={}", percent_encode(value)));
        }
    }
    url
}

fn color(index: usize) -> &'static str {
    PALETTE[index % PALETTE.len()]
}

fn totals_rows(report: &LatencyReport) -> Vec<TotalsRow> {
    report
        .groups
        .iter()
        .enumerate()
        .map(|(i, group)| {
            let total = &group.total;
            let ttft = |pick: fn(&Percentiles) -> f64| {
                total
                    .ttft_ms
                    .as_ref()
                    .map_or_else(|| "—".to_string(), |p| marked(p, pick(p)))
            };
            let d = &total.duration_ms;
            let (duration_class, duration_title) = estimate_mark(Some(d), total.count);
            let (ttft_class, ttft_title) = estimate_mark(total.ttft_ms.as_ref(), total.ttft_count);
            TotalsRow {
                color: color(i),
                label: group.key.label(),
                count: Count(total.count.into()),
                errors: Count(total.errors.into()),
                error_rate: Percent::of_ratio(total.error_rate),
                p50: marked(d, d.p50),
                p90: marked(d, d.p90),
                p95: marked(d, d.p95),
                p99: marked(d, d.p99),
                ttft_count: Count(total.ttft_count.into()),
                ttft_p50: ttft(|p| p.p50),
                ttft_p90: ttft(|p| p.p90),
                ttft_p95: ttft(|p| p.p95),
                ttft_p99: ttft(|p| p.p99),
                duration_class,
                duration_title,
                ttft_class,
                ttft_title,
            }
        })
        .collect()
}

/// A percentile for the table: `≈` in front of an estimate.
fn marked(p: &Percentiles, value: f64) -> String {
    if p.is_estimate() {
        format!("≈{}", millis(value))
    } else {
        millis(value)
    }
}

/// The cell class and hover text of a group's percentiles.
fn estimate_mark(p: Option<&Percentiles>, count: u64) -> (&'static str, String) {
    match p {
        Some(p) if p.is_estimate() => (
            "num estimate",
            format!(
                "estimate from the latency histogram of {} values: within ±{:.2}% of the exact value",
                Count(count.into()).text(),
                p.max_relative_error * 100.0
            ),
        ),
        _ => ("num", String::new()),
    }
}

/// Bucket starts covering the window, aligned like the SQL buckets
/// (multiples of the step since the epoch).
fn bucket_starts(report: &LatencyReport) -> Vec<i64> {
    let step = i64::from(report.bucket_secs.max(60));
    let first = report.from.timestamp().div_euclid(step) * step;
    let end = report.to.timestamp();
    std::iter::successors(Some(first), |t| Some(t + step))
        .take_while(|t| *t < end)
        .collect()
}

pub fn chart_data(report: &LatencyReport) -> ChartData {
    let starts = bucket_starts(report);
    let step = i64::from(report.bucket_secs.max(60));
    let first = starts.first().copied().unwrap_or(0);
    let multi_day = report.to - report.from > Duration::days(1);
    let labels = starts
        .iter()
        .filter_map(|t| DateTime::from_timestamp(*t, 0))
        .map(|t| {
            if multi_day {
                t.format("%m-%d %H:%M").to_string()
            } else {
                t.format("%H:%M").to_string()
            }
        })
        .collect();
    let chart = |(id, _, metric): &(&'static str, &'static str, Metric)| Chart {
        id,
        datasets: report
            .groups
            .iter()
            .enumerate()
            .map(|(i, group)| {
                let mut data = vec![None; starts.len()];
                for point in &group.series {
                    let slot = (point.bucket_start.timestamp() - first).div_euclid(step);
                    if let Some(value) = usize::try_from(slot).ok().and_then(|s| data.get_mut(s)) {
                        *value = metric(&point.stats);
                    }
                }
                Dataset {
                    label: group.key.label(),
                    color: color(i),
                    data,
                }
            })
            .collect(),
    };
    ChartData {
        labels,
        charts: DURATION_CHARTS
            .iter()
            .chain(TTFT_CHARTS.iter())
            .map(chart)
            .collect(),
    }
}

/// The chart's data inside its `<script>` ([`crate::display::script_json`]).
fn script_json(data: &ChartData) -> String {
    crate::display::script_json(data)
}

/// Tenths of a millisecond, hundredths below 10 ms: the report carries
/// microseconds, and an exact 1781.67 should not read as a whole 1782.
fn millis(value: f64) -> String {
    if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// `GET /sre/latency`.
pub async fn page(
    State(state): State<DashboardState>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let pairs = query.map(|Query(p)| p).unwrap_or_default();
    let (form, query) = match PageParams::parse(&pairs) {
        Ok(params) => parse_params(&params, Utc::now()),
        // The default form, with the error.
        Err(err) => (parse_params(&PageParams::default(), Utc::now()).0, Err(err)),
    };
    let query = match query {
        Ok(query) => query,
        Err(err) => {
            let page = view(PageInput {
                form,
                dimensions: &[],
                report: None,
                slow_calls: &[],
                trace_links: &state.trace_links,
                error: Some(format!("Invalid {}: {}", err.field, err.reason)),
            });
            return render(StatusCode::BAD_REQUEST, &page);
        }
    };
    let result = read_page_data(&state, &query).await;
    match result {
        Ok((report, dimensions, slow)) => render(
            StatusCode::OK,
            &view(PageInput {
                form,
                dimensions: &dimensions,
                report: Some(&report),
                slow_calls: &slow,
                trace_links: &state.trace_links,
                error: None,
            }),
        ),
        Err(err) => {
            let status = crate::read_failure::status(&err, "latency page");
            let page = view(PageInput {
                form,
                dimensions: &[],
                report: None,
                slow_calls: &[],
                trace_links: &state.trace_links,
                error: Some(format!("The report could not be read: {err}")),
            });
            render(status, &page)
        }
    }
}

/// The report, the filter menus' choices and the slowest calls, read
/// concurrently.
async fn read_page_data(
    state: &DashboardState,
    query: &LatencyQuery,
) -> Result<(LatencyReport, Vec<(String, String)>, Vec<SlowCall>), ReadModelError> {
    futures::try_join!(
        state.read_models.latency(query),
        state.read_models.latency_dimensions(
            query.from,
            query.to,
            query.filters.get(Dimension::Org)
        ),
        state.read_models.slowest_calls(query),
    )
}

/// `GET /sre/latency/slowest.csv`: the slowest calls of the page's window
/// and filters, with their trace and span ids.
pub async fn slowest_csv(
    State(state): State<DashboardState>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let read = |q: LatencyQuery| async move { state.read_models.slowest_calls(&q).await };
    page_csv(
        query,
        read,
        |calls| slow_calls::table(calls),
        "slowest-calls.csv",
    )
    .await
}

/// `GET /sre/latency/totals.csv`: the page's "Totals" table (its window,
/// filters, grouping and org), `tollgate_queries::latency::totals_table`.
pub async fn totals_csv(
    State(state): State<DashboardState>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let read = |q: LatencyQuery| async move { state.read_models.latency(&q).await };
    page_csv(
        query,
        read,
        tollgate_queries::latency::totals_table,
        "latency-totals.csv",
    )
    .await
}

/// A CSV of the page: its parameters read as the page reads them (a 400
/// naming a bad one), `read` for that query, `table` of what it read; 503
/// when retrying the read can help.
async fn page_csv<T, Read, Reading>(
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
    read: Read,
    table: fn(&T) -> tollgate_queries::Table,
    filename: &str,
) -> Response
where
    Read: FnOnce(LatencyQuery) -> Reading,
    Reading: std::future::Future<Output = Result<T, ReadModelError>>,
{
    let pairs = query.map(|Query(p)| p).unwrap_or_default();
    let query = match PageParams::parse(&pairs).and_then(|p| parse_params(&p, Utc::now()).1) {
        Ok(query) => query,
        Err(err) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("invalid {}: {}\n", err.field, err.reason),
            )
                .into_response()
        }
    };
    match read(query).await {
        Ok(value) => crate::finance::csv_download(&table(&value), filename),
        Err(err) => {
            let status = crate::read_failure::status(&err, "latency page csv");
            (status, format!("{err}\n")).into_response()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use tollgate_queries::{Dimension, GroupKey, LatencyGroup, PercentileMethod, SeriesPoint};

    fn t(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    /// Percentiles as the read model gives them for `count` values.
    fn percentiles(count: u64, p50: f64) -> Percentiles {
        let us = |ms: f64| ms * 1_000.0;
        let stats = [
            p50,
            p50,
            p50 * 1.5,
            p50 * 1.5,
            p50 * 2.0,
            p50 * 2.0,
            p50 * 3.0,
            p50 * 3.0,
        ]
        .map(us);
        Percentiles::from_order_stats(count, &stats).unwrap()
    }

    fn stats(count: u64, p50: f64, ttft: Option<f64>) -> Stats {
        Stats {
            count,
            errors: 1,
            error_rate: 1.0 / count as f64,
            duration_ms: percentiles(count, p50),
            ttft_count: u64::from(ttft.is_some()) * count,
            ttft_ms: ttft.map(|v| percentiles(count, v)),
        }
    }

    fn report() -> LatencyReport {
        let group = |provider: &str, model: &str, ttft: Option<f64>| LatencyGroup {
            key: GroupKey {
                provider: Some(provider.into()),
                model: Some(model.into()),
                ..GroupKey::default()
            },
            total: stats(1_234, 120.0, ttft),
            series: vec![
                SeriesPoint {
                    bucket_start: t("2026-01-01T10:00:00Z"),
                    stats: stats(600, 110.0, ttft),
                },
                SeriesPoint {
                    bucket_start: t("2026-01-01T10:10:00Z"),
                    stats: stats(634, 130.0, ttft),
                },
            ],
        };
        LatencyReport {
            from: t("2026-01-01T10:00:00Z"),
            to: t("2026-01-01T10:15:00Z"),
            bucket_secs: 300,
            group_by: vec![Dimension::Provider, Dimension::Model],
            groups: vec![
                group("anthropic", "claude-sonnet", Some(40.0)),
                group("openai", "gpt-4o</script><b>", None),
            ],
        }
    }

    fn links() -> TraceLinks {
        TraceLinks::new(Some(
            "https://tempo.example.com/explore?traceId={trace_id}&spanId={span_id}",
        ))
        .unwrap()
    }

    /// Each slow call links to its trace, the ids escaped in the URL and
    /// the URL escaped in the HTML; a call without a trace id, or a page
    /// without `api.trace_url`, has no link.
    #[test]
    fn slow_calls_link_to_their_traces() {
        let report = tollgate_queries::samples::latency_report();
        let calls = tollgate_queries::samples::slowest_calls();
        let render = |links: &TraceLinks| {
            view(PageInput {
                form: form(),
                dimensions: &[],
                report: Some(&report),
                slow_calls: &calls,
                trace_links: links,
                error: None,
            })
            .render()
            .unwrap()
        };
        let html = render(&links());
        assert_eq!(html.matches("class=\"slow-row\"").count(), 3, "{html}");
        assert!(html.contains(
            "href=\"https://tempo.example.com/explore?traceId=4bf92f3577b34da6a3ce929d0e0e4736&#38;spanId=00f067aa0ba902b7\""
        ), "{html}");
        assert!(html.contains(
            "href=\"https://tempo.example.com/explore?traceId=batch%20run%2F7%26x%3D%3C1%3E&#38;spanId=\""
        ), "{html}");
        assert_eq!(html.matches("class=\"trace-link\"").count(), 2);
        assert!(
            !html.contains("<1>"),
            "the raw id is escaped in the cell too"
        );
        assert!(
            html.contains("/sre/latency/slowest.csv?range=1h&#38;provider=openai"),
            "{html}"
        );
        let without = render(&TraceLinks::default());
        assert_eq!(without.matches("class=\"slow-row\"").count(), 3);
        assert_eq!(without.matches("class=\"trace-link\"").count(), 0);
    }

    fn form() -> FormState {
        FormState {
            range: "1h".into(),
            group_by: "provider,model".into(),
            provider: "openai".into(),
            ..FormState::default()
        }
    }

    /// The page of the sample report (`tollgate_queries::samples`), as
    /// HTML: form, totals table and chart data.
    #[test]
    fn page_snapshot() {
        let dimensions = [("anthropic", "claude-sonnet-4"), ("openai", "gpt-4o")]
            .map(|(p, m)| (p.to_string(), m.to_string()));
        let report = tollgate_queries::samples::latency_report();
        let form = FormState {
            range: "custom".into(),
            from: "2026-03-10T10:00".into(),
            to: "2026-03-10T10:15".into(),
            group_by: "provider,model".into(),
            bucket: "5m".into(),
            ..FormState::default()
        };
        let page = view(PageInput {
            form,
            dimensions: &dimensions,
            report: Some(&report),
            slow_calls: &tollgate_queries::samples::slowest_calls(),
            trace_links: &links(),
            error: None,
        });
        insta::assert_snapshot!(page.render().unwrap());
    }

    #[test]
    fn chart_data_aligns_series_to_buckets() {
        let data = chart_data(&report());
        assert_eq!(data.labels, vec!["10:00", "10:05", "10:10"]);
        assert_eq!(data.charts.len(), 6);
        let p50 = &data.charts[0];
        assert_eq!(p50.id, "duration-p50");
        assert_eq!(p50.datasets[0].data, vec![Some(110.0), None, Some(130.0)]);
        assert_eq!(data.points("duration-p99"), 4);
        // Only the first group streamed.
        assert_eq!(data.points("ttft-p50"), 2);
    }

    #[test]
    fn page_renders_charts_table_and_safe_json() {
        let dimensions = vec![
            ("anthropic".to_string(), "claude-sonnet".to_string()),
            ("openai".to_string(), "gpt-4o".to_string()),
        ];
        let report = report();
        let html = view(PageInput {
            form: form(),
            dimensions: &dimensions,
            report: Some(&report),
            slow_calls: &[],
            trace_links: &TraceLinks::default(),
            error: None,
        })
        .render()
        .unwrap();
        for id in [
            "duration-p50",
            "duration-p95",
            "duration-p99",
            "ttft-p50",
            "ttft-p95",
            "ttft-p99",
        ] {
            assert!(
                html.contains(&format!("<canvas id=\"{id}\"")),
                "{id} missing"
            );
        }
        assert_eq!(html.matches("<tr class=\"group-row\"").count(), 2);
        assert!(html.contains("1,234"));
        assert!(
            html.contains("<option value=\"openai\" selected>"),
            "provider not selected"
        );
        // Only models of the selected provider are offered.
        assert!(!html.contains("<option value=\"claude-sonnet\""));
        // The hostile model name is escaped in the table and cannot close
        // the JSON script element.
        assert!(html.contains("gpt-4o&#60;/script&#62;") || html.contains("gpt-4o&lt;/script&gt;"));
        // chart.umd.js, latency.js, the data and local-time.js.
        assert_eq!(html.matches("</script>").count(), 4, "{html}");
        assert!(html.contains("\\u003c/script\\u003e"));
        assert!(
            html.contains("href=\"/static/chart.umd.js\"")
                || html.contains("src=\"/static/chart.umd.js\"")
        );
        // The sub-navigation is the navigation layer's.
        assert!(html.contains("<!--tollgate:subnav-->"));
        assert!(
            html.contains("&#38;provider=openai") || html.contains("&amp;provider=openai"),
            "json link"
        );
    }

    /// The page of `report`, with no menus, slowest calls or error.
    fn page_of(report: &LatencyReport) -> String {
        view(PageInput {
            form: form(),
            dimensions: &[],
            report: Some(report),
            slow_calls: &[],
            trace_links: &TraceLinks::default(),
            error: None,
        })
        .render()
        .unwrap()
    }

    #[test]
    fn estimates_are_marked_exact_values_are_not() {
        let mut report = report();
        // The first group's total is over 1,234 calls (an estimate); make
        // the second one small enough to be exact.
        report.groups[1].total = stats(800, 90.0, None);
        let rows = totals_rows(&report);
        assert_eq!(rows[0].duration_class, "num estimate");
        assert_eq!(rows[0].p50, "≈120.0");
        assert!(
            rows[0].duration_title.contains("within ±0.39%"),
            "{}",
            rows[0].duration_title
        );
        assert_eq!(rows[0].ttft_class, "num estimate");
        assert_eq!(rows[1].duration_class, "num");
        assert_eq!(rows[1].p50, "90.0");
        assert!(rows[1].duration_title.is_empty());
        assert_eq!(rows[1].ttft_p50, "—");
        let html = page_of(&report);
        assert_eq!(
            html.matches("<td class=\"num estimate\" title=\"estimate")
                .count(),
            8
        );
        assert!(html.contains("exact for a group or chart point of at most 1,000 calls"));
        assert!(!html.contains("every value here is exact"));

        // Read from the calls, the same groups are exact: no mark, and the
        // note says so rather than promising estimates.
        for group in &mut report.groups {
            for s in std::iter::once(&mut group.total)
                .chain(group.series.iter_mut().map(|p| &mut p.stats))
            {
                s.duration_ms.method = PercentileMethod::Exact;
                s.duration_ms.max_relative_error = 0.0;
                if let Some(t) = s.ttft_ms.as_mut() {
                    t.method = PercentileMethod::Exact;
                    t.max_relative_error = 0.0;
                }
            }
        }
        let html = page_of(&report);
        assert_eq!(html.matches("class=\"num estimate\"").count(), 0);
        assert!(html.contains("every value here is exact"), "{html}");
        assert!(!html.contains("estimates from a log histogram"));
    }

    #[test]
    fn empty_report_says_so() {
        let html = view(PageInput {
            form: form(),
            dimensions: &[],
            report: None,
            slow_calls: &[],
            trace_links: &TraceLinks::default(),
            error: Some("Invalid bucket: too small".into()),
        })
        .render()
        .unwrap();
        assert!(html.contains("Invalid bucket: too small"));
        assert!(html.contains("No calls in this window"));
    }

    #[test]
    fn params_presets_and_custom_window() {
        let now = t("2026-01-01T12:00:20Z");
        let (form, query) = parse_params(&PageParams::default(), now);
        let query = query.unwrap();
        // The last hour: 60 whole minutes, to the end of the current one.
        assert_eq!(query.from, t("2026-01-01T11:01:00Z"));
        assert_eq!(query.to, t("2026-01-01T12:01:00Z"));
        assert_eq!(form.from, "2026-01-01T11:01");
        let params = PageParams {
            range: Some("custom".into()),
            from: Some("2026-01-01T08:00".into()),
            to: Some("2026-01-01T09:30:00Z".into()),
            bucket: Some("15m".into()),
            group_by: Some("team".into()),
            ..PageParams::default()
        };
        let query = parse_params(&params, now).1.unwrap();
        assert_eq!(query.from, t("2026-01-01T08:00:00Z"));
        assert_eq!(query.to, t("2026-01-01T09:30:00Z"));
        assert_eq!(query.bucket_secs, 900);
        assert_eq!(query.group_by, vec![Dimension::Team]);
        let params = PageParams {
            range: Some("custom".into()),
            ..PageParams::default()
        };
        assert_eq!(parse_params(&params, now).1.unwrap_err().field, "from");
        let params = PageParams {
            range: Some("3w".into()),
            ..PageParams::default()
        };
        assert_eq!(parse_params(&params, now).1.unwrap_err().field, "range");
    }

    /// Every bucket the menu offers works with every preset it offers:
    /// "Last 24 hours" in 1m buckets is 1,440 of them (it was 1,441, a
    /// 400), at any second; a bucket too fine for the window (7 days in
    /// 1m) is shown in the first coarser one that fits, and the page
    /// says so.
    #[test]
    fn every_offered_bucket_works_with_every_preset() {
        for now in [
            "2026-01-01T12:00:20Z",
            "2026-01-01T12:00:00Z",
            "2026-01-01T12:00:59.5Z",
        ] {
            let now = t(now);
            for (range, _, secs) in RANGES.iter().filter(|(_, _, secs)| *secs > 0) {
                for bucket in BUCKETS {
                    let params = PageParams {
                        range: Some(range.to_string()),
                        bucket: Some(bucket.to_string()),
                        ..PageParams::default()
                    };
                    let (form, query) = parse_params(&params, now);
                    let query = query.unwrap_or_else(|e| panic!("{range} {bucket}: {e:?}"));
                    assert_eq!((query.to - query.from).num_seconds(), *secs, "{range}");
                    assert!(query.to >= now && query.to - now < Duration::minutes(1));
                    if bucket.is_empty()
                        || buckets_in(query.from, query.to, parse_bucket(bucket).unwrap())
                            <= MAX_BUCKETS
                    {
                        assert_eq!(form.bucket, bucket, "{range} {bucket}");
                        assert!(form.bucket_note.is_empty());
                    } else {
                        assert_ne!(form.bucket, bucket, "{range} {bucket}");
                        assert!(!form.bucket_note.is_empty());
                    }
                }
            }
        }
        let params = PageParams {
            range: Some("24h".into()),
            bucket: Some("1m".into()),
            ..PageParams::default()
        };
        let (form, query) = parse_params(&params, t("2026-01-01T12:00:20Z"));
        assert_eq!(query.unwrap().bucket_secs, 60);
        assert_eq!(form.bucket, "1m");
        let params = PageParams {
            range: Some("7d".into()),
            bucket: Some("1m".into()),
            ..PageParams::default()
        };
        let (form, query) = parse_params(&params, t("2026-01-01T12:00:20Z"));
        assert_eq!(query.unwrap().bucket_secs, 900);
        assert_eq!(form.bucket, "15m");
        assert_eq!(
            form.bucket_note,
            "1m buckets would be 10,080 points over this window (at most 1,440): shown in 15m buckets."
        );
        let html = view(PageInput {
            form,
            dimensions: &[],
            report: None,
            slow_calls: &[],
            trace_links: &TraceLinks::default(),
            error: None,
        })
        .render()
        .unwrap();
        assert!(html.contains("shown in 15m buckets."), "{html}");
        assert!(html.contains("<option value=\"15m\" selected>"), "{html}");
    }

    /// The page reads its query string with the API's parser: a typo or a
    /// repeated field is an error naming it, not a silently different
    /// report (before, an unknown field was dropped and a repeated one
    /// reset the whole form to its defaults).
    #[test]
    fn unknown_and_repeated_fields_are_named() {
        let pairs = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let err = PageParams::parse(&pairs(&[("grup_by", "team")])).unwrap_err();
        assert_eq!(err.field, "grup_by");
        let err = PageParams::parse(&pairs(&[("model", "a"), ("model", "b")])).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.reason.as_str()),
            ("model", "given more than once")
        );
        let params = PageParams::parse(&pairs(&[("range", "6h"), ("model", "gpt-4o")])).unwrap();
        assert_eq!(params.range.as_deref(), Some("6h"));
        assert_eq!(params.model.as_deref(), Some("gpt-4o"));
    }

    /// `team=` (which the latency API, the Errors page and latency alert
    /// rules take) filters the page: the query, the form's Team field, and
    /// the JSON and CSV links carry it. `group_by=` is one group of all
    /// calls, offered in the menu.
    #[test]
    fn team_filters_the_page_and_its_links() {
        let pairs: Vec<(String, String)> = [
            ("range", "1h"),
            ("team", "search & ads"),
            ("group_by", ""),
            ("org", "acme"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let params = PageParams::parse(&pairs).unwrap();
        let (form, query) = parse_params(&params, t("2026-01-01T12:00:20Z"));
        let query = query.unwrap();
        assert_eq!(query.filters.team.as_deref(), Some("search & ads"));
        assert_eq!(query.filters.org.as_deref(), Some("acme"));
        assert!(query.group_by.is_empty());
        let report = report();
        let html = view(PageInput {
            form,
            dimensions: &[],
            report: Some(&report),
            slow_calls: &[],
            trace_links: &TraceLinks::default(),
            error: None,
        })
        .render()
        .unwrap();
        assert!(
            html.contains("name=\"team\" value=\"search &#38; ads\""),
            "{html}"
        );
        assert!(html.contains("<option value=\"\" selected>None (all calls)</option>"));
        for link in [
            "/api/v1/reports/latency?",
            "/sre/latency/totals.csv?",
            "/sre/latency/slowest.csv?",
        ] {
            let at = html
                .find(link)
                .unwrap_or_else(|| panic!("{link} in {html}"));
            let href = &html[at..at + html[at..].find('"').unwrap()];
            assert!(href.contains("team=search%20%26%20ads"), "{href}");
            assert!(href.contains("org=acme"), "{href}");
        }
    }

    #[test]
    fn number_formatting() {
        assert_eq!(millis(1781.67), "1781.7");
        assert_eq!(millis(12.345), "12.3");
        assert_eq!(millis(7.5), "7.50");
        assert_eq!(percent_encode("a b/ü"), "a%20b%2F%C3%BC");
    }
}
