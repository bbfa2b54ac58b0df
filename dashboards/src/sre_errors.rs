//! The SRE Errors pages: `GET /sre/errors` lists the failure patterns of a
//! window (template, provider and models, count with a sparkline, first and
//! last seen with a "new" mark, teams and keys hit, how the calls ended),
//! and `GET /sre/errors/{signature}` drills into one: its chart per
//! bucket, sample messages with their variable parts, and the recovery
//! table (per strategy and target: attempts, success rate, added latency
//! and cost). Both render the read side's reports (`tollgate_queries::
//! errors`), the ones the JSON API serves, and link to their JSON and CSV.
//!
//! Charts are inline SVG drawn on the server: a sparkline per pattern and
//! bars on the drill-down, so the page needs no script and a test reads
//! what is drawn from the DOM (`data-points`).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use tollgate_queries::errors::{self, ErrorsQuery, PatternPoint, PatternReport, PatternSummary};
use tollgate_queries::params::{Expected, QueryParams};
use tollgate_queries::{InvalidParameter, ReadModelError};

use tollgate_access::{Identity, SRE_READERS};

use crate::display::{counted, Count, Figure, Instant, Millis, Money, Parts, Percent, Period};
use crate::key_labels::{KeyLabels, KeyName};
use crate::layout::{render, Section};
use crate::sre_form::{api_pairs, choices, form_time, percent_encode, range_asked, Choice, RANGES};
use crate::trace_link::TraceLinks;
use crate::DashboardState;

/// The form's fields (the same on the list and the drill-down).
pub const FIELDS: [&str; 7] = ["range", "from", "to", "provider", "model", "team", "org"];

/// The form as it is shown again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorsForm {
    pub range: String,
    pub from: String,
    pub to: String,
    pub provider: String,
    pub model: String,
    pub team: String,
    pub org: String,
}

impl ErrorsForm {
    /// The filters as `(name, value)`, only those given.
    fn filters(&self) -> Vec<(&'static str, &str)> {
        [
            ("provider", self.provider.as_str()),
            ("model", self.model.as_str()),
            ("team", self.team.as_str()),
            ("org", self.org.as_str()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect()
    }

    /// This form as a query string (for links between the pages).
    fn query_string(&self) -> String {
        let mut parts = vec![format!("range={}", percent_encode(&self.range))];
        if self.range == "custom" {
            parts.push(format!("from={}", percent_encode(&self.from)));
            parts.push(format!("to={}", percent_encode(&self.to)));
        }
        for (name, value) in self.filters() {
            parts.push(format!("{name}={}", percent_encode(value)));
        }
        parts.join("&")
    }
}

/// Read the page's query string into the form and the report query; the
/// form comes back even when a field is bad, for the page to show.
pub fn parse_form(
    pairs: &[(String, String)],
    now: DateTime<Utc>,
) -> (ErrorsForm, Result<ErrorsQuery, InvalidParameter>) {
    let params = match QueryParams::parse(pairs, &Expected::names(&FIELDS)) {
        Ok(params) => params,
        Err(err) => return (default_form(), Err(err)),
    };
    let text = |name: &str| params.text(name).unwrap_or("").to_string();
    let mut form = ErrorsForm {
        range: range_asked(params.text("range"), &text("from"), &text("to"), "1h"),
        from: text("from"),
        to: text("to"),
        provider: text("provider"),
        model: text("model"),
        team: text("team"),
        org: text("org"),
    };
    let query = api_pairs(&form.range, &form.from, &form.to, &form.filters(), now)
        .and_then(|pairs| errors::parse_params(&pairs, now, &[]).map(|(query, _)| query));
    if let Ok(query) = &query {
        form.from = form_time(query.from);
        form.to = form_time(query.to);
    }
    (form, query)
}

fn default_form() -> ErrorsForm {
    ErrorsForm {
        range: "1h".into(),
        ..ErrorsForm::default()
    }
}

/// What the list and the drill-down show of one pattern.
#[derive(Debug, Clone)]
pub struct PatternRow {
    pub signature: String,
    pub href: String,
    pub template: String,
    pub provider: String,
    /// `429 rate_limit_exceeded`.
    pub class: String,
    pub models: String,
    pub failures: Count,
    pub recovered: Count,
    pub failed: Count,
    /// A time, or `—`.
    pub first_seen: Figure,
    pub last_seen: Figure,
    pub new: bool,
    pub teams: Count,
    pub team_names: String,
    pub keys: Count,
    /// The keys hit most, by name (their ids on hover).
    pub key_names: Vec<KeyName>,
    /// How many more keys were hit than are named.
    pub keys_more: u64,
    /// Inline SVG, built here from numbers only.
    pub sparkline: String,
}

fn stamp(t: Option<DateTime<Utc>>) -> Figure {
    t.map_or_else(|| "—".into(), |t| Instant::new(t).into())
}

/// The bucket starts covering `[from, to)`, aligned like the SQL buckets.
fn bucket_starts(from: DateTime<Utc>, to: DateTime<Utc>, bucket_secs: u32) -> Vec<i64> {
    let step = i64::from(bucket_secs.max(60));
    let first = from.timestamp().div_euclid(step) * step;
    let end = to.timestamp();
    std::iter::successors(Some(first), |t| Some(t + step))
        .take_while(|t| *t < end)
        .collect()
}

/// Failures per bucket of the window, zeros included.
fn failures_per_bucket(series: &[PatternPoint], starts: &[i64]) -> Vec<u64> {
    let mut values = vec![0; starts.len()];
    for point in series {
        if let Ok(i) = starts.binary_search(&point.bucket_start.timestamp()) {
            values[i] += point.failures;
        }
    }
    values
}

/// A 120 x 24 sparkline of `values` (scaled to their maximum).
fn sparkline(values: &[u64], label: &str) -> String {
    let (w, h) = (120.0, 24.0);
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = if values.len() > 1 {
        w / (values.len() - 1) as f64
    } else {
        0.0
    };
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                h - 1.0 - (*v as f64 / max) * (h - 2.0)
            )
        })
        .collect();
    format!(
        "<svg class=\"spark\" viewBox=\"0 0 120 24\" width=\"120\" height=\"24\" role=\"img\" \
         aria-label=\"{label}\" data-points=\"{}\"><polyline points=\"{}\"/></svg>",
        values.iter().filter(|v| **v > 0).count(),
        points.join(" ")
    )
}

/// Bars of `values` per bucket, 720 x 160, each with its time and count as
/// a tooltip.
fn bar_chart(values: &[u64], starts: &[i64]) -> String {
    let (w, h, top) = (720.0, 160.0, 14.0);
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let slot = w / values.len().max(1) as f64;
    let mut out = format!(
        "<svg class=\"bars\" id=\"pattern-chart\" viewBox=\"0 0 720 180\" width=\"100%\" height=\"180\" \
         role=\"img\" aria-label=\"Failures per bucket\" data-points=\"{}\">",
        values.iter().filter(|v| **v > 0).count()
    );
    out.push_str(&format!(
        "<text x=\"0\" y=\"10\">max {}</text>",
        Count(max.into()).text()
    ));
    for (i, (v, start)) in values.iter().zip(starts).enumerate() {
        if *v == 0 {
            continue;
        }
        let bar = (*v as f64 / max as f64) * (h - top);
        let when = DateTime::from_timestamp(*start, 0)
            .map(|t| t.format("%m-%d %H:%M").to_string())
            .unwrap_or_default();
        out.push_str(&format!(
            "<rect class=\"failures\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\">\
             <title>{when} UTC: {} failures</title></rect>",
            i as f64 * slot + slot * 0.1,
            h - bar,
            (slot * 0.8).max(1.0),
            bar,
            Count((*v).into()).text()
        ));
    }
    for i in [0, starts.len().saturating_sub(1)] {
        if let Some(t) = starts.get(i).and_then(|s| DateTime::from_timestamp(*s, 0)) {
            let anchor = if i == 0 { "start" } else { "end" };
            let x = if i == 0 { 0.0 } else { w };
            out.push_str(&format!(
                "<text x=\"{x}\" y=\"176\" text-anchor=\"{anchor}\">{}</text>",
                t.format("%m-%d %H:%M")
            ));
        }
    }
    out.push_str("</svg>");
    out
}

fn pattern_row(
    p: &PatternSummary,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket_secs: u32,
    query_string: &str,
    keys: &KeyLabels,
) -> PatternRow {
    let starts = bucket_starts(from, to, bucket_secs);
    let values = failures_per_bucket(&p.series, &starts);
    PatternRow {
        signature: p.signature.to_string(),
        href: format!("/sre/errors/{}?{query_string}", p.signature),
        template: p.template.clone(),
        provider: p.provider.clone(),
        class: format!("{} {}", p.http_status, p.error_type),
        models: p.models.join(", "),
        failures: Count(p.failures.into()),
        recovered: Count(p.calls_recovered.into()),
        failed: Count(p.calls_failed.into()),
        first_seen: stamp(p.first_seen),
        last_seen: stamp(p.last_seen),
        new: p.new,
        teams: Count(p.teams.count.into()),
        team_names: names(&p.teams.names, p.teams.count),
        keys: Count(p.keys.count.into()),
        key_names: p.keys.names.iter().map(|id| keys.name(id)).collect(),
        keys_more: p.keys.count.saturating_sub(p.keys.names.len() as u64),
        sparkline: sparkline(&values, &format!("failures per bucket of {}", p.signature)),
    }
}

/// `a, b, c` and `+N more` when there are more.
fn names(names: &[String], count: u64) -> String {
    let shown = names.join(", ");
    let more = count.saturating_sub(names.len() as u64);
    if more > 0 {
        format!("{shown} +{more} more")
    } else {
        shown
    }
}

#[derive(Template)]
#[template(path = "sre_errors.html")]
pub struct ErrorsPage {
    pub section: Section,
    pub form: ErrorsForm,
    pub ranges: Vec<Choice>,
    pub summary: Parts,
    pub json_url: String,
    pub csv_url: String,
    pub error: Option<String>,
    pub rows: Vec<PatternRow>,
}

/// The API URL of the report the page shows, without `format`.
fn api_url(path: &str, query: Option<&ErrorsQuery>, form: &ErrorsForm) -> String {
    let Some(query) = query else {
        return path.to_string();
    };
    let mut url = format!(
        "{path}?from={}&to={}",
        query.from.to_rfc3339_opts(SecondsFormat::Secs, true),
        query.to.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    for (name, value) in form.filters() {
        url.push_str(&format!("&{name}={}", percent_encode(value)));
    }
    url
}

/// The list page's view model. Pure, so it is tested without a server.
pub fn list_view(
    form: ErrorsForm,
    query: Option<&ErrorsQuery>,
    report: Option<&errors::ErrorsReport>,
    error: Option<String>,
    keys: &KeyLabels,
) -> ErrorsPage {
    let json_url = api_url("/api/v1/reports/errors", query, &form);
    let qs = form.query_string();
    let (rows, summary) = match report {
        Some(r) => (
            r.patterns
                .iter()
                .map(|p| pattern_row(p, r.from, r.to, r.bucket_secs, &qs, keys))
                .collect(),
            Parts(vec![
                Period::new(r.from, r.to).into(),
                Figure::Text(counted(r.patterns.len() as u64, "pattern")),
                Figure::Text(counted(
                    r.patterns.iter().map(|p| p.failures).sum::<u64>(),
                    "failure",
                )),
            ]),
        ),
        None => (Vec::new(), Parts::default()),
    };
    ErrorsPage {
        section: Section::Sre,
        ranges: choices(RANGES.iter().map(|(v, l, _)| (*v, *l)), &form.range),
        csv_url: csv_url(&json_url),
        json_url,
        form,
        summary,
        error,
        rows,
    }
}

fn csv_url(json_url: &str) -> String {
    if json_url.contains('?') {
        format!("{json_url}&format=csv")
    } else {
        format!("{json_url}?format=csv")
    }
}

/// One sample message with its variable parts.
#[derive(Debug, Clone)]
pub struct SampleRow {
    pub at: Instant,
    pub target: String,
    pub team: String,
    pub key: KeyName,
    pub message: String,
    pub variables: Vec<String>,
    pub trace_id: String,
    /// The failed call's trace in the user's tracing backend.
    pub trace_url: Option<String>,
}

/// One row of the recovery table, as shown.
#[derive(Debug, Clone)]
pub struct RecoveryView {
    pub strategy: String,
    pub strategy_label: &'static str,
    pub target: String,
    pub attempts: Count,
    pub successes: Count,
    pub success_rate: Percent,
    pub mean_wait: Millis,
    pub added_latency: Millis,
    pub added_cost: Money,
}

#[derive(Template)]
#[template(path = "sre_error_pattern.html")]
pub struct PatternPage {
    pub section: Section,
    pub form: ErrorsForm,
    pub ranges: Vec<Choice>,
    pub action: String,
    pub back_url: String,
    pub json_url: String,
    pub csv_url: String,
    pub error: Option<String>,
    pub row: Option<PatternRow>,
    pub members: Vec<(String, String)>,
    pub chart: String,
    pub samples: Vec<SampleRow>,
    /// The sample messages as CSV (the API's `table=samples`).
    pub samples_csv_url: String,
    pub recovery: Vec<RecoveryView>,
}

fn strategy_label(strategy: &str) -> &'static str {
    match strategy {
        "retry" => "Retry same model",
        "fallback_model" => "Fallback model",
        "fallback_provider" => "Other provider",
        "first" => "First attempt",
        _ => "Other",
    }
}

/// The drill-down's view model. Pure.
pub fn pattern_view(
    form: ErrorsForm,
    trace_links: &TraceLinks,
    signature: &str,
    query: Option<&ErrorsQuery>,
    report: Option<&PatternReport>,
    error: Option<String>,
    keys: &KeyLabels,
) -> PatternPage {
    let qs = form.query_string();
    let json_url = api_url(&format!("/api/v1/reports/errors/{signature}"), query, &form);
    let (row, chart, members, samples, recovery) = match report {
        Some(r) => {
            let starts = bucket_starts(r.from, r.to, r.bucket_secs);
            let values = failures_per_bucket(&r.pattern.series, &starts);
            (
                Some(pattern_row(
                    &r.pattern,
                    r.from,
                    r.to,
                    r.bucket_secs,
                    &qs,
                    keys,
                )),
                bar_chart(&values, &starts),
                r.member_templates
                    .iter()
                    .map(|m| (m.signature.to_string(), m.template.clone()))
                    .collect(),
                r.samples
                    .iter()
                    .map(|s| SampleRow {
                        at: Instant::seconds(s.occurred_at),
                        target: format!("{} / {}", s.provider, s.model),
                        team: s.team.clone(),
                        key: keys.name(&s.api_key),
                        message: s.message.clone(),
                        variables: s.variables.clone(),
                        trace_id: s.trace_id.clone(),
                        trace_url: trace_links.link(&s.trace_id, &s.span_id),
                    })
                    .collect(),
                r.recovery
                    .iter()
                    .map(|x| RecoveryView {
                        strategy: x.strategy.clone(),
                        strategy_label: strategy_label(&x.strategy),
                        target: format!("{} / {}", x.provider, x.model),
                        attempts: Count(x.attempts.into()),
                        successes: Count(x.successes.into()),
                        success_rate: Percent::of_ratio(x.success_rate),
                        mean_wait: Millis(x.mean_wait_ms),
                        added_latency: Millis(x.added_latency_ms),
                        added_cost: Money(x.added_cost),
                    })
                    .collect(),
            )
        }
        None => (None, String::new(), Vec::new(), Vec::new(), Vec::new()),
    };
    PatternPage {
        section: Section::Sre,
        ranges: choices(RANGES.iter().map(|(v, l, _)| (*v, *l)), &form.range),
        action: format!("/sre/errors/{}", percent_encode(signature)),
        back_url: format!("/sre/errors?{qs}"),
        csv_url: csv_url(&json_url),
        samples_csv_url: format!("{}&table=samples", csv_url(&json_url)),
        json_url,
        form,
        error,
        row,
        members,
        chart,
        samples,
        recovery,
    }
}

fn status_of(err: &ReadModelError) -> StatusCode {
    crate::read_failure::status(err, "errors page")
}

type Pairs = Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

/// `GET /sre/errors`.
pub async fn list_page(
    State(state): State<DashboardState>,
    identity: Identity,
    query: Pairs,
) -> Response {
    let pairs = query.map(|Query(p)| p).unwrap_or_default();
    let (form, query) = parse_form(&pairs, Utc::now());
    let none = KeyLabels::none();
    let query = match query {
        Ok(query) => query,
        Err(err) => {
            let page = list_view(form, None, None, Some(invalid(&err)), &none);
            return render(StatusCode::BAD_REQUEST, &page);
        }
    };
    match state.read_models.errors(&query).await {
        Ok(report) => {
            let ids = report
                .patterns
                .iter()
                .flat_map(|p| p.keys.names.iter().map(String::as_str));
            let keys = KeyLabels::read(&state, &identity, SRE_READERS, ids).await;
            render(
                StatusCode::OK,
                &list_view(form, Some(&query), Some(&report), None, &keys),
            )
        }
        Err(err) => render(
            status_of(&err),
            &list_view(
                form,
                Some(&query),
                None,
                Some(format!("The report could not be read: {err}")),
                &none,
            ),
        ),
    }
}

fn invalid(err: &InvalidParameter) -> String {
    format!("Invalid {}: {}", err.field, err.reason)
}

/// `GET /sre/errors/{signature}`.
pub async fn pattern_page(
    State(state): State<DashboardState>,
    identity: Identity,
    Path(signature): Path<String>,
    query: Pairs,
) -> Response {
    let none = KeyLabels::none();
    let pairs = query.map(|Query(p)| p).unwrap_or_default();
    let (form, query) = parse_form(&pairs, Utc::now());
    let parsed = query.and_then(|q| errors::parse_signature(&signature).map(|s| (q, s)));
    let (query, id) = match parsed {
        Ok(ok) => ok,
        Err(err) => {
            let page = pattern_view(
                form,
                &state.trace_links,
                &signature,
                None,
                None,
                Some(invalid(&err)),
                &none,
            );
            return render(StatusCode::BAD_REQUEST, &page);
        }
    };
    match state.read_models.error_pattern(&query, id).await {
        Ok(Some(report)) => {
            let ids = report
                .pattern
                .keys
                .names
                .iter()
                .chain(report.samples.iter().map(|s| &s.api_key))
                .map(String::as_str);
            let keys = KeyLabels::read(&state, &identity, SRE_READERS, ids).await;
            render(
                StatusCode::OK,
                &pattern_view(
                    form,
                    &state.trace_links,
                    &signature,
                    Some(&query),
                    Some(&report),
                    None,
                    &keys,
                ),
            )
        }
        Ok(None) => render(
            StatusCode::NOT_FOUND,
            &pattern_view(
                form,
                &state.trace_links,
                &signature,
                Some(&query),
                None,
                Some(format!("No failure with signature {id} was ever recorded.")),
                &none,
            ),
        ),
        Err(err) => render(
            status_of(&err),
            &pattern_view(
                form,
                &state.trace_links,
                &signature,
                Some(&query),
                None,
                Some(format!("The report could not be read: {err}")),
                &none,
            ),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn sample_form() -> ErrorsForm {
        ErrorsForm {
            range: "custom".into(),
            from: "2026-03-10T10:00".into(),
            to: "2026-03-10T10:15".into(),
            ..ErrorsForm::default()
        }
    }

    fn sample_query() -> ErrorsQuery {
        let r = tollgate_queries::samples::errors_report();
        ErrorsQuery {
            from: r.from,
            to: r.to,
            bucket_secs: r.bucket_secs,
            filters: r.filters,
        }
    }

    /// The list page of the sample report.
    #[test]
    fn list_page_snapshot() {
        let report = tollgate_queries::samples::errors_report();
        let page = list_view(
            sample_form(),
            Some(&sample_query()),
            Some(&report),
            None,
            &KeyLabels::none(),
        );
        insta::assert_snapshot!(page.render().unwrap());
    }

    /// The drill-down of the sample pattern.
    #[test]
    fn pattern_page_snapshot() {
        let report = tollgate_queries::samples::pattern_report();
        let sig = report.pattern.signature.to_string();
        let links = TraceLinks::new(Some(
            "https://tempo.example.com/explore?traceId={trace_id}&spanId={span_id}",
        ))
        .unwrap();
        let page = pattern_view(
            sample_form(),
            &links,
            &sig,
            Some(&sample_query()),
            Some(&report),
            None,
            &KeyLabels::none(),
        );
        insta::assert_snapshot!(page.render().unwrap());
    }

    /// The Keys column names keys (id on hover); one it cannot name is
    /// its id; the drill-down's samples too.
    #[test]
    fn keys_are_shown_by_name_with_the_id_on_hover() {
        let named = "01a2517a-7083-7c3e-9d0b-2f1e4c6a8b90";
        let unknown = "01a2517a-7083-7c3e-9d0b-2f1e4c6a8b91";
        let keys = KeyLabels::of(&[crate::key_labels::tests::key(
            named,
            "search-svc",
            "abcd1234",
        )]);
        let mut report = tollgate_queries::samples::errors_report();
        report.patterns[0].keys.names = vec![named.into(), unknown.into()];
        report.patterns[0].keys.count = 3;
        let html = list_view(
            sample_form(),
            Some(&sample_query()),
            Some(&report),
            None,
            &keys,
        )
        .render()
        .unwrap();
        assert!(
            html.contains(&format!(
                "<span class=\"names\"><span class=\"key-name\" title=\"{named}\">search-svc (tg_abcd1234)</span>, {unknown} +1 more</span>"
            )),
            "{html}"
        );
        let mut pattern = tollgate_queries::samples::pattern_report();
        pattern.samples[0].api_key = named.into();
        let html = pattern_view(
            sample_form(),
            &TraceLinks::new(None).unwrap(),
            &pattern.pattern.signature.to_string(),
            Some(&sample_query()),
            Some(&pattern),
            None,
            &keys,
        )
        .render()
        .unwrap();
        assert!(
            html.contains(&format!(
                "<td title=\"{named}\">search-svc (tg_abcd1234)</td>"
            )),
            "{html}"
        );
    }

    #[test]
    fn form_fields_are_checked_and_named() {
        let now = DateTime::parse_from_rfc3339("2026-03-10T12:00:20Z")
            .unwrap()
            .with_timezone(&Utc);
        let pairs = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            parse_form(&pairs(&[("tem", "a")]), now)
                .1
                .unwrap_err()
                .field,
            "tem"
        );
        assert_eq!(
            parse_form(&pairs(&[("range", "3w")]), now)
                .1
                .unwrap_err()
                .field,
            "range"
        );
        let (form, query) = parse_form(&pairs(&[("range", "6h"), ("team", "search")]), now);
        let query = query.unwrap();
        assert_eq!(query.filters.team.as_deref(), Some("search"));
        assert_eq!(form.from, "2026-03-10T06:00");
        assert_eq!(form.query_string(), "range=6h&team=search");
    }

    #[test]
    fn sparkline_and_costs() {
        let svg = sparkline(&[0, 2, 4], "x");
        assert!(
            svg.contains("points=\"0.0,23.0 60.0,12.0 120.0,1.0\""),
            "{svg}"
        );
        assert!(svg.contains("data-points=\"2\""));
    }
}
