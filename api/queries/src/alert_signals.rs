//! What an alert rule's signal measures at one instant, and the backtest:
//! the same measurement at every step of a past period, replayed through
//! the alert lifecycle (`tollgate_contract::alert_lifecycle`). The
//! evaluator calls [`measure`] at each evaluation and the backtest calls it
//! at each step, so a backtest is what the evaluator does on the same data.
//!
//! Every measurement reads one org's rows (the rule's `org_id`), except the
//! fleet-wide sources that carry no org: breaker transitions (the breakers
//! are shared by every org) and the first-seen time of an error pattern
//! (its catalog is fleet-wide; the org's own failures in the window decide
//! whether the pattern concerns it), and the pipeline's health samples
//! (`pipeline_health`: the pipeline is shared by every org). See
//! `docs/alerting-signals.md`.

use chrono::{DateTime, Duration, Utc};
use clickhouse::Row;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use tollgate_contract::alert_lifecycle::{replay, Observation, Phase, Transition};
use tollgate_contract::alerts::{
    BreakerSignal, BudgetForecastSignal, BudgetUsedSignal, ErrorPatternSignal, ErrorRateSignal,
    LatencyMetric, LatencySignal, PipelineHealthSignal, PipelineMetric, RuleSpec, Signal,
    SpendSignal, SpendSubject,
};
use tollgate_contract::cost::from_mantissa;
use tollgate_control::budgets::BudgetStore;

use crate::audit::search::urlencode;
use crate::latency::{interpolate_ms, EXACT_MAX_CALLS};
use crate::latency_histogram::{by_group, order_stats_sql, Fold, HistogramQuery, Metric};
use crate::latency_source::{self, Source};
use crate::table::Table;
use crate::{BoundSql, ReadModelError, ReadModels, SqlValue};

mod batch;

/// The window of the event-like signals (a breaker opened, a new error
/// pattern), which have no window of their own: an event counts for five
/// minutes after it happened, several evaluation intervals, so one missed
/// or late evaluation cannot lose it.
pub const EVENT_WINDOW_SECS: u32 = 300;
/// The evaluator's interval, and the backtest's default step.
pub const DEFAULT_STEP_SECS: u32 = 60;
/// Most steps of one backtest (24 h at one minute is 1,441).
pub const MAX_BACKTEST_STEPS: i64 = 1_500;
/// How many steps of a backtest are measured at once.
const BACKTEST_CONCURRENCY: usize = 8;

/// Where the signals are read from. `budgets` is `None` when the process
/// runs without PostgreSQL: budget signals are then unknown.
#[derive(Clone, Copy)]
pub struct SignalSources<'a> {
    pub read: &'a ReadModels,
    pub budgets: Option<&'a BudgetStore>,
}

/// What one measurement found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Measurement {
    /// The figure compared with the threshold, in the unit of the signal
    /// (percent, milliseconds, USD, USD per hour, count); `None` when
    /// unknown.
    pub value: Option<Decimal>,
    #[serde(serialize_with = "observation_name")]
    pub observation: Observation,
    /// What was measured over which window, or why it is unknown.
    pub detail: String,
}

fn observation_name<S: serde::Serializer>(o: &Observation, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(observation_str(*o))
}

/// `holds`, `clear` or `unknown`.
pub fn observation_str(o: Observation) -> &'static str {
    match o {
        Observation::Holds => "holds",
        Observation::Clear => "clear",
        Observation::Unknown => "unknown",
    }
}

impl Measurement {
    fn unknown(detail: impl Into<String>) -> Self {
        Self {
            value: None,
            observation: Observation::Unknown,
            detail: detail.into(),
        }
    }

    /// No calls in the window: nothing to alert on, so clear with no value
    /// (as Prometheus resolves an alert whose expression returns nothing:
    /// an error-rate alert resolves when its traffic stops). Not unknown,
    /// which is kept for a source that could not answer.
    fn no_calls(detail: impl Into<String>) -> Self {
        Self {
            value: None,
            observation: Observation::Clear,
            detail: detail.into(),
        }
    }

    /// `value` against `threshold`: holds when strictly above.
    fn above(value: Decimal, threshold: Decimal, detail: String) -> Self {
        Self {
            value: Some(value),
            observation: if value > threshold {
                Observation::Holds
            } else {
                Observation::Clear
            },
            detail,
        }
    }
}

/// What the evaluator records for a measurement that failed (ClickHouse or
/// PostgreSQL down): unknown, which changes no alert's phase.
pub fn or_unknown(result: Result<Measurement, ReadModelError>) -> Measurement {
    result.unwrap_or_else(|err| Measurement::unknown(format!("source failed: {err}")))
}

/// The window a measurement at `at` reads: `[end - window, end)` with `end`
/// = `at` cut down to the whole minute and the window rounded up to whole
/// minutes. Whole minutes because the latency rollup has no finer grain,
/// and every signal uses the same cut so they agree; the minute in progress
/// is left out (it is still filling, and a backtest of the past must see
/// what the evaluator saw).
pub fn window(at: DateTime<Utc>, window_secs: u32) -> (DateTime<Utc>, DateTime<Utc>) {
    let secs = at.timestamp();
    let end = secs - secs.rem_euclid(60);
    let minutes = i64::from(window_secs.div_ceil(60));
    let start = end - minutes.max(1) * 60;
    (
        DateTime::from_timestamp(start, 0).unwrap_or_default(),
        DateTime::from_timestamp(end, 0).unwrap_or_default(),
    )
}

fn epoch(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp()).unwrap_or(0)
}

fn span(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let f = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ");
    format!("{} to {}", f(from), f(to))
}

/// Failed calls in percent of all calls, exact, rounded to 4 decimal places
/// for display only (the comparison uses the exact quotient).
pub fn error_percent(errors: u64, calls: u64) -> Option<Decimal> {
    if calls == 0 {
        return None;
    }
    Some(Decimal::from(errors) * Decimal::ONE_HUNDRED / Decimal::from(calls))
}

/// USD per hour of `spend` over `window_secs`, exact to 12 places.
pub fn per_hour(spend: Decimal, window_secs: i64) -> Decimal {
    tollgate_contract::cost::round(spend * Decimal::from(3_600) / Decimal::from(window_secs.max(1)))
}

// ---------------------------------------------------------------- SQL

/// `AND column = ?` for each filter given (`None`: any value); the columns
/// are fixed strings of this module, the values are bound.
fn equal_filters(
    template: &mut String,
    binds: &mut Vec<SqlValue>,
    filters: &[(&'static str, Option<&str>)],
) {
    for (column, value) in filters {
        if let Some(v) = value {
            template.push_str(&format!(" AND {column} = ?"));
            binds.push(SqlValue::Str(v.to_string()));
        }
    }
}

/// One row of the latency-rollup statement; fields in SELECT order.
#[derive(Debug, Row, Deserialize)]
struct CallsRow {
    call_count: u64,
    duration_order_stats: Vec<f64>,
    ttft_order_stats: Vec<f64>,
    ttft_count: u64,
}

/// One row of the error-count statement.
#[derive(Debug, Row, Deserialize)]
struct ErrorsRow {
    call_count: u64,
    error_count: u64,
}

/// Calls and errors over one org's window, from `latency_minute_calls`:
/// what an error-rate rule needs, without the percentile work of
/// [`calls_sql`] (`tollgate bench alerts`: 84 ms p50 at 10M calls with it).
fn errors_sql(
    org: &str,
    provider: Option<&str>,
    model: Option<&str>,
    team: Option<&str>,
    window: (DateTime<Utc>, DateTime<Utc>),
) -> BoundSql {
    calls_and_errors_sql(
        "alert_signals.errors",
        false,
        org,
        [provider, model, team],
        window,
    )
}

/// [`errors_sql`]'s statement named `name`, over the whole window or, with
/// `per_minute`, per minute (column `m`, the backtest's one read).
fn calls_and_errors_sql(
    name: &'static str,
    per_minute: bool,
    org: &str,
    [provider, model, team]: [Option<&str>; 3],
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> BoundSql {
    let minute = if per_minute {
        "toUInt32(intDiv(toUInt32(minute), 60)) AS m, "
    } else {
        ""
    };
    let mut template = format!(
        "SELECT {minute}countMerge(calls) AS call_count, sumMerge(errors) AS error_count \
         FROM latency_minute_calls WHERE minute >= toDateTime(?) AND minute < toDateTime(?) AND org_id = ?"
    );
    let mut binds = vec![
        SqlValue::UInt(epoch(from)),
        SqlValue::UInt(epoch(to)),
        SqlValue::Str(org.to_string()),
    ];
    equal_filters(
        &mut template,
        &mut binds,
        &[("provider", provider), ("model", model), ("team_id", team)],
    );
    if per_minute {
        template.push_str(" GROUP BY m");
    }
    BoundSql {
        name,
        template,
        binds,
    }
}

/// Calls and the order statistics of the `q` quantile of duration
/// and TTFT over one org's window, with the latency report's own
/// expressions, from `source` (`latency_source`): from the calls, right
/// at any count; from the rollups' kept values, right up to 1,000 values,
/// and above, [`histogram_sql`] gives the metric's.
fn calls_sql(
    source: Source,
    org: &str,
    provider: Option<&str>,
    model: Option<&str>,
    team: Option<&str>,
    q: f64,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> BoundSql {
    let stats = format!(
        "{} AS call_count, {} AS duration_order_stats, {} AS ttft_order_stats, {} AS ttft_count",
        source.call_count(),
        source.order_stats_at("d", &[q]),
        source.order_stats_at("t", &[q]),
        source.ttft_count(),
    );
    let (template, binds) = source.grouped_sql(
        (&[], &[], &[]),
        &stats,
        (epoch(from), epoch(to)),
        &latency_filters(org, provider, model, team),
    );
    BoundSql {
        name: match source {
            Source::Calls => "alert_signals.calls.exact",
            Source::CallCounts => "alert_signals.calls.counted",
            Source::Rollups => "alert_signals.calls",
        },
        template,
        binds,
    }
}

/// A latency signal's conditions as `(column, value)`: its org, and
/// each of provider, model and team it names.
fn latency_filters(
    org: &str,
    provider: Option<&str>,
    model: Option<&str>,
    team: Option<&str>,
) -> Vec<(&'static str, String)> {
    [
        ("org_id", Some(org)),
        ("provider", provider),
        ("model", model),
        ("team_id", team),
    ]
    .into_iter()
    .filter_map(|(column, value)| value.map(|v| (column, v.to_string())))
    .collect()
}

/// The order statistics of the `q` quantile of one metric over one org's
/// window from the latency histogram (`latency_histogram`): no row when the
/// window has at most 1,000 values of it.
fn histogram_sql(
    org: &str,
    provider: Option<&str>,
    model: Option<&str>,
    team: Option<&str>,
    metric: Metric,
    q: &[f64],
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> BoundSql {
    let filters = latency_filters(org, provider, model, team);
    order_stats_sql(&HistogramQuery {
        name: "alert_signals.histogram",
        columns: Vec::new(),
        column_binds: Vec::new(),
        window: (epoch(from), epoch(to)),
        filters,
        metric: Some(metric),
        levels: q,
        // One group of a rule's window: few rows per bucket summed first.
        fold: Fold::BucketsFirst,
    })
}

/// One row of [`histogram_sql`]; fields in SELECT order.
#[derive(Debug, Row, Deserialize)]
struct HistogramRow {
    metric: u8,
    /// Read to keep the fields in SELECT order.
    #[allow(dead_code)]
    value_count: u64,
    order_stats: Vec<f64>,
}

#[derive(Debug, Row, Deserialize)]
struct SpendRow {
    s_cost: i128,
}

/// One org's spend in the window from the facts (billable calls plus
/// repricing adjustments, as the budget burn-down's hours): the daily
/// rollup cannot answer a window shorter than a day.
fn spend_sql(
    org: &str,
    kind: SpendSubject,
    subject: &str,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> BoundSql {
    let (filter, subject_binds): (&str, Vec<SqlValue>) = match kind {
        SpendSubject::Org => ("org_id = ?", vec![SqlValue::Str(subject.to_string())]),
        SpendSubject::Team => ("team_id = ?", vec![SqlValue::Str(subject.to_string())]),
        SpendSubject::Key => ("api_key_id = ?", vec![SqlValue::Str(subject.to_string())]),
        SpendSubject::Tag => {
            let (k, v) = subject.split_once('=').unwrap_or((subject, ""));
            (
                "arrayExists((k, v) -> k = ? AND v = ?, tag_keys, tag_values)",
                vec![SqlValue::Str(k.to_string()), SqlValue::Str(v.to_string())],
            )
        }
    };
    let mut binds = Vec::new();
    for _ in 0..2 {
        binds.push(SqlValue::Str(org.to_string()));
        binds.extend(subject_binds.iter().cloned());
        binds.push(SqlValue::UInt(epoch(from)));
        binds.push(SqlValue::UInt(epoch(to)));
    }
    BoundSql {
        name: "alert_signals.spend",
        template: format!(
            "SELECT sum(c) AS s_cost FROM ( \
               SELECT cost AS c FROM calls \
               WHERE org_id = ? AND {filter} AND occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?) \
               AND kind IN ('ai.call.completed', 'ai.call.failed') \
               UNION ALL \
               SELECT cost AS c FROM cost_adjustments \
               WHERE org_id = ? AND {filter} AND occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?) \
             )"
        ),
        binds,
    }
}

/// Error patterns first seen (fleet-wide) in the window that this org
/// failed with in the window.
fn new_patterns_sql(
    org: &str,
    provider: Option<&str>,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> BoundSql {
    let mut binds = Vec::new();
    let mut catalog_filter = String::new();
    if let Some(p) = provider {
        catalog_filter.push_str(" WHERE provider = ?");
        binds.push(SqlValue::Str(p.to_string()));
    }
    binds.extend([SqlValue::UInt(epoch(from)), SqlValue::UInt(epoch(to))]);
    binds.extend([
        SqlValue::Str(org.to_string()),
        SqlValue::UInt(epoch(from)),
        SqlValue::UInt(epoch(to)),
    ]);
    let mut minute_filter = String::new();
    if let Some(p) = provider {
        minute_filter.push_str(" AND provider = ?");
        binds.push(SqlValue::Str(p.to_string()));
    }
    BoundSql {
        name: "alert_signals.new_error_patterns",
        template: format!(
            "SELECT count() AS n FROM ( \
               SELECT signature, minMerge(first_seen) AS fs FROM error_pattern_catalog{catalog_filter} \
               GROUP BY signature HAVING fs >= toDateTime(?) AND fs < toDateTime(?) \
             ) WHERE signature IN ( \
               SELECT signature FROM error_patterns_minute \
               WHERE org_id = ? AND minute >= toDateTime(?) AND minute < toDateTime(?){minute_filter} \
             )"
        ),
        binds,
    }
}

/// Breakers that opened in the window (fleet-wide: breakers have no org).
fn breaker_opens_sql(
    provider: Option<&str>,
    model: Option<&str>,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> BoundSql {
    let mut template = "SELECT count() AS n FROM breaker_transitions \
         WHERE to_state = 'open' AND at >= toDateTime(?) AND at < toDateTime(?)"
        .to_string();
    let mut binds = vec![SqlValue::UInt(epoch(from)), SqlValue::UInt(epoch(to))];
    equal_filters(
        &mut template,
        &mut binds,
        &[("provider", provider), ("model", model)],
    );
    BoundSql {
        name: "alert_signals.breaker_opens",
        template,
        binds,
    }
}

/// One row of a pipeline-health statement; fields in SELECT order.
#[derive(Debug, Row, Deserialize)]
struct PipelineRow {
    /// Samples read (for the lag: partitions with a sample).
    samples: u64,
    /// Partitions (lag) or instances (the others) that sent samples.
    sources: u64,
    value: u64,
}

/// The pipeline figure `metric` over the window from `pipeline_health`
/// (fleet-wide, no org): consumer lag is the sum over partitions of each
/// partition's latest sample in the window; dead letters and rejected
/// events are the sum of the counts sampled in the window; the spool depth
/// is the largest sample of any proxy in the window.
fn pipeline_sql(metric: PipelineMetric, (from, to): (DateTime<Utc>, DateTime<Utc>)) -> BoundSql {
    let binds = vec![
        SqlValue::Str(metric.as_str().to_string()),
        SqlValue::UInt(epoch(from)),
        SqlValue::UInt(epoch(to)),
    ];
    let filter = "metric = ? AND at >= toDateTime(?) AND at < toDateTime(?)";
    let template = match metric {
        PipelineMetric::ConsumerLag => format!(
            "SELECT count() AS samples, count() AS sources, sum(latest) AS value FROM ( \
               SELECT kafka_partition, argMax(value, at_ms) AS latest FROM pipeline_health \
               WHERE {filter} GROUP BY kafka_partition \
             )"
        ),
        PipelineMetric::DeadLetters | PipelineMetric::RejectedIngest => format!(
            "SELECT count() AS samples, uniqExact(instance) AS sources, sum(value) AS value \
             FROM pipeline_health WHERE {filter}"
        ),
        PipelineMetric::ProxySpoolDepth => format!(
            "SELECT count() AS samples, uniqExact(instance) AS sources, max(value) AS value \
             FROM pipeline_health WHERE {filter}"
        ),
    };
    BoundSql {
        name: match metric {
            PipelineMetric::ConsumerLag => "alert_signals.pipeline_consumer_lag",
            PipelineMetric::DeadLetters => "alert_signals.pipeline_dead_letters",
            PipelineMetric::RejectedIngest => "alert_signals.pipeline_rejected_ingest",
            PipelineMetric::ProxySpoolDepth => "alert_signals.pipeline_proxy_spool_depth",
        },
        template,
        binds,
    }
}

/// Sample statements for the SQL compatibility check: every shape.
pub(crate) fn catalog() -> Vec<BoundSql> {
    let at = DateTime::from_timestamp(1_767_229_200, 0).unwrap_or_default();
    let w = window(at, 300);
    let mut out = vec![
        errors_sql("org-1", None, None, None, w),
        errors_sql("org-1", Some("openai"), Some("gpt-4o"), Some("team-a"), w),
        calls_sql(Source::Rollups, "org-1", None, None, None, 0.95, w),
        calls_sql(
            Source::Rollups,
            "org-1",
            Some("openai"),
            Some("gpt-4o"),
            Some("team-a"),
            0.9,
            w,
        ),
        calls_sql(Source::Calls, "org-1", None, None, None, 0.95, w),
        calls_sql(
            Source::CallCounts,
            "org-1",
            Some("openai"),
            Some("gpt-4o"),
            Some("team-a"),
            0.9,
            w,
        ),
        calls_sql(
            Source::Calls,
            "org-1",
            Some("openai"),
            Some("gpt-4o"),
            Some("team-a"),
            0.9,
            w,
        ),
        latency_source::calls_in_window_sql(
            "alert_signals.calls_in_window",
            (epoch(w.0), epoch(w.1)),
            &[
                ("org_id", "org-1".into()),
                ("provider", "openai".into()),
                ("model", "gpt-4o".into()),
                ("team_id", "team-a".into()),
            ],
        ),
        histogram_sql("org-1", None, None, None, Metric::Duration, &[0.95], w),
        histogram_sql(
            "org-1",
            Some("openai"),
            Some("gpt-4o"),
            Some("team-a"),
            Metric::Ttft,
            &[0.9],
            w,
        ),
    ];
    for kind in [
        SpendSubject::Org,
        SpendSubject::Team,
        SpendSubject::Key,
        SpendSubject::Tag,
    ] {
        out.push(spend_sql("org-1", kind, "feature=chat", w));
    }
    out.push(new_patterns_sql("org-1", None, w));
    out.push(new_patterns_sql("org-1", Some("openai"), w));
    out.push(breaker_opens_sql(None, None, w));
    out.push(breaker_opens_sql(Some("openai"), Some("gpt-4o"), w));
    for metric in [
        PipelineMetric::ConsumerLag,
        PipelineMetric::DeadLetters,
        PipelineMetric::RejectedIngest,
        PipelineMetric::ProxySpoolDepth,
    ] {
        out.push(pipeline_sql(metric, w));
    }
    out.extend(batch::catalog(w));
    out
}

async fn fetch_one<T>(models: &ReadModels, sql: &BoundSql) -> Result<T, ReadModelError>
where
    T: clickhouse::RowOwned + clickhouse::RowRead,
{
    models
        .bounded(sql.query(models.client()).fetch_one::<T>())
        .await
        .map_err(|e| models.classify(sql.name, e))
}

// ---------------------------------------------------------------- measuring

/// Measure `signal` of `org_id` at `at`. An `Err` is a source that failed
/// (the evaluator turns it into unknown with [`or_unknown`]; the backtest
/// reports it); a source with no data where zero is not an answer (no calls
/// for a rate or a percentile, a budget that does not exist, a pipeline
/// figure with no sample in the window) is `Ok` with [`Observation::Unknown`].
pub async fn measure(
    sources: SignalSources<'_>,
    org_id: &str,
    signal: &Signal,
    at: DateTime<Utc>,
) -> Result<Measurement, ReadModelError> {
    let models = sources.read;
    match signal {
        Signal::ErrorRate(ErrorRateSignal {
            provider,
            model,
            team,
            above_percent,
            window_secs,
        }) => {
            let w = window(at, *window_secs);
            let sql = errors_sql(
                org_id,
                provider.as_deref(),
                model.as_deref(),
                team.as_deref(),
                w,
            );
            let row: ErrorsRow = fetch_one(models, &sql).await?;
            Ok(error_rate(
                row.error_count,
                row.call_count,
                *above_percent,
                w,
            ))
        }
        Signal::Latency(LatencySignal {
            metric,
            percentile,
            provider,
            model,
            team,
            above_ms,
            window_secs,
        }) => {
            let w = window(at, *window_secs);
            let q = f64::from(*percentile) / 100.0;
            let filters = latency_filters(
                org_id,
                provider.as_deref(),
                model.as_deref(),
                team.as_deref(),
            );
            let source = latency_source::choose(
                models,
                "alert_signals.calls_in_window",
                (epoch(w.0), epoch(w.1)),
                &filters,
            )
            .await?;
            let sql = calls_sql(
                source,
                org_id,
                provider.as_deref(),
                model.as_deref(),
                team.as_deref(),
                q,
                w,
            );
            let row: CallsRow = fetch_one(models, &sql).await?;
            let (count, kept, which) = match metric {
                LatencyMetric::Duration => {
                    (row.call_count, row.duration_order_stats, Metric::Duration)
                }
                LatencyMetric::Ttft => (row.ttft_count, row.ttft_order_stats, Metric::Ttft),
            };
            let stats = if count > EXACT_MAX_CALLS && !source.exact_at_any_count() {
                let sql = histogram_sql(
                    org_id,
                    provider.as_deref(),
                    model.as_deref(),
                    team.as_deref(),
                    which,
                    &[q],
                    w,
                );
                let rows: Vec<HistogramRow> = models
                    .bounded(sql.query(models.client()).fetch_all())
                    .await
                    .map_err(|e| models.classify(sql.name, e))?;
                let mut stats = by_group(
                    sql.name,
                    rows.into_iter().map(|r| ((), r.metric, r.order_stats)),
                )?;
                stats.remove(&((), which)).ok_or_else(|| ReadModelError::UnexpectedRow {
                    query: sql.name,
                    detail: format!(
                        "no histogram of {which:?} for org {org_id:?} although the kept values count {count} (more than {EXACT_MAX_CALLS})"
                    ),
                })?
            } else {
                kept
            };
            latency(count, &stats, q, *percentile, *above_ms, w)
        }
        Signal::Spend(SpendSignal {
            subject_kind,
            subject_id,
            window_secs,
            above_usd,
            per_hour_above_usd,
        }) => {
            let w = window(at, *window_secs);
            let sql = spend_sql(org_id, *subject_kind, subject_id, w);
            let row: SpendRow = fetch_one(models, &sql).await?;
            let spent = from_mantissa(row.s_cost).ok_or_else(|| ReadModelError::UnexpectedRow {
                query: sql.name,
                detail: format!("cost mantissa {} is out of range", row.s_cost),
            })?;
            Ok(spend(spent, *above_usd, *per_hour_above_usd, w))
        }
        Signal::BudgetUsed(BudgetUsedSignal {
            budget_id,
            above_percent,
        }) => {
            let Some(status) = budget_status(sources, org_id, *budget_id, at).await? else {
                return Ok(Measurement::unknown(format!(
                    "no budget {budget_id} of org {org_id}"
                )));
            };
            Ok(Measurement::above(
                status.percent,
                // "at or above": the percent is rounded to 2 places, so
                // compare with the threshold less one hundredth.
                Decimal::from(*above_percent) - Decimal::new(1, 2),
                format!(
                    "budget {budget_id}: {} of {} USD spent ({}%) in the period from {}",
                    status.spend_usd, status.budget.limit_usd, status.percent, status.period_start
                ),
            ))
        }
        Signal::BudgetForecast(BudgetForecastSignal { budget_id }) => {
            let Some(status) = budget_status(sources, org_id, *budget_id, at).await? else {
                return Ok(Measurement::unknown(format!(
                    "no budget {budget_id} of org {org_id}"
                )));
            };
            Ok(Measurement::above(
                status.forecast_usd,
                status.budget.limit_usd,
                format!(
                    "budget {budget_id}: forecast {} USD at the end of the period ending {}, limit {} USD",
                    status.forecast_usd, status.period_end, status.budget.limit_usd
                ),
            ))
        }
        Signal::NewErrorPattern(ErrorPatternSignal { provider }) => {
            let w = window(at, EVENT_WINDOW_SECS);
            let sql = new_patterns_sql(org_id, provider.as_deref(), w);
            let n: u64 = fetch_one(models, &sql).await?;
            Ok(Measurement::above(
                Decimal::from(n),
                Decimal::ZERO,
                format!("{n} error patterns first seen {}", span(w.0, w.1)),
            ))
        }
        Signal::BreakerOpened(BreakerSignal { provider, model }) => {
            let w = window(at, EVENT_WINDOW_SECS);
            let sql = breaker_opens_sql(provider.as_deref(), model.as_deref(), w);
            let n: u64 = fetch_one(models, &sql).await?;
            Ok(Measurement::above(
                Decimal::from(n),
                Decimal::ZERO,
                format!("{n} breakers opened {}", span(w.0, w.1)),
            ))
        }
        Signal::PipelineHealth(PipelineHealthSignal {
            metric,
            above,
            window_secs,
        }) => {
            let w = window(at, *window_secs);
            let sql = pipeline_sql(*metric, w);
            let row: PipelineRow = fetch_one(models, &sql).await?;
            Ok(pipeline(*metric, &row, *above, w))
        }
    }
}

/// Pure: the pipeline-health measurement from its row. No sample in the
/// window is unknown, not zero: the component that reports the figure
/// may be down, or not reporting.
fn pipeline(
    metric: PipelineMetric,
    row: &PipelineRow,
    above: u64,
    w: (DateTime<Utc>, DateTime<Utc>),
) -> Measurement {
    let when = span(w.0, w.1);
    if row.samples == 0 {
        let who = match metric {
            PipelineMetric::ConsumerLag | PipelineMetric::DeadLetters => {
                "`tollgate process` (calls fold, processor.health_sample_secs)"
            }
            PipelineMetric::RejectedIngest => "`tollgate ingest` (ingest.health_sample_secs)",
            PipelineMetric::ProxySpoolDepth => "`tollgate proxy` (proxy.health_sample_secs)",
        };
        return Measurement::unknown(format!(
            "no {} samples {when}: none was written by {who}",
            metric.as_str()
        ));
    }
    let v = row.value;
    let detail = match metric {
        PipelineMetric::ConsumerLag => format!(
            "consumer lag {v} messages: the latest sample of each of {} partitions {when}",
            row.sources
        ),
        PipelineMetric::DeadLetters => format!(
            "{v} messages dead-lettered {when} ({} samples)",
            row.samples
        ),
        PipelineMetric::RejectedIngest => format!(
            "{v} events rejected at ingest {when} ({} samples from {} instances)",
            row.samples, row.sources
        ),
        PipelineMetric::ProxySpoolDepth => format!(
            "deepest proxy spool {v} bytes {when} ({} proxies)",
            row.sources
        ),
    };
    Measurement::above(Decimal::from(v), Decimal::from(above), detail)
}

/// Pure: the error-rate measurement over `w` from its counts.
pub fn error_rate(
    errors: u64,
    calls: u64,
    above_percent: Decimal,
    w: (DateTime<Utc>, DateTime<Utc>),
) -> Measurement {
    match error_percent(errors, calls) {
        None => Measurement::no_calls(format!("no calls {}", span(w.0, w.1))),
        Some(rate) => {
            let mut shown = rate.round_dp(4);
            shown.rescale(4);
            let mut m = Measurement::above(
                rate,
                above_percent,
                format!("{errors} of {calls} calls failed {}", span(w.0, w.1)),
            );
            m.value = Some(shown);
            m
        }
    }
}

/// Pure: the latency measurement over `w` from the `q` quantile's two
/// order statistics (microseconds) of `count` values.
fn latency(
    count: u64,
    order_stats_us: &[f64],
    q: f64,
    percentile: u8,
    above_ms: u32,
    w: (DateTime<Utc>, DateTime<Utc>),
) -> Result<Measurement, ReadModelError> {
    if count == 0 {
        return Ok(Measurement::no_calls(format!(
            "no calls with that latency {}",
            span(w.0, w.1)
        )));
    }
    let unexpected = |detail: String| ReadModelError::UnexpectedRow {
        query: "alert_signals.calls",
        detail,
    };
    let [lo, hi] = order_stats_us else {
        return Err(unexpected(format!(
            "expected 2 order statistics, got {order_stats_us:?}"
        )));
    };
    let ms = interpolate_ms(count, q, *lo, *hi);
    let value = Decimal::try_from(ms)
        .map_err(|e| unexpected(format!("p{percentile} {ms} ms: {e}")))?
        .round_dp(3);
    Ok(Measurement::above(
        value,
        Decimal::from(above_ms),
        format!("p{percentile} of {count} calls {}", span(w.0, w.1)),
    ))
}

/// Pure: the spend measurement over `w`.
pub fn spend(
    spent: Decimal,
    above_usd: Option<Decimal>,
    per_hour_above_usd: Option<Decimal>,
    w: (DateTime<Utc>, DateTime<Utc>),
) -> Measurement {
    let secs = (w.1 - w.0).num_seconds();
    match (above_usd, per_hour_above_usd) {
        (_, Some(rate_limit)) => {
            let rate = per_hour(spent, secs);
            Measurement::above(
                rate,
                rate_limit,
                format!("{spent} USD spent {}, {rate} USD per hour", span(w.0, w.1)),
            )
        }
        (limit, None) => Measurement::above(
            spent,
            limit.unwrap_or(Decimal::MAX),
            format!("{spent} USD spent {}", span(w.0, w.1)),
        ),
    }
}

/// The running-period status of budget `id` at `at` as the budgets report
/// computes it (`ReadModels::budget_status`: spend from the cost rollups,
/// forecast at the burn rate so far). `None` when there is no such budget,
/// or it is an org budget of another org (budgets of teams, users and keys
/// carry no org: the rule's store checks who may name them).
async fn budget_status(
    sources: SignalSources<'_>,
    org_id: &str,
    id: i64,
    at: DateTime<Utc>,
) -> Result<Option<tollgate_control::budgets::BudgetStatus>, ReadModelError> {
    let Some(store) = sources.budgets else {
        return Ok(None);
    };
    let all = store
        .all()
        .await
        .map_err(|e| ReadModelError::UnexpectedRow {
            query: "budgets.all",
            detail: format!("postgres: {e}"),
        })?;
    // Another org's budget is as absent as one that does not exist.
    let Some(budget) = all.into_iter().find(|b| b.id == id && b.belongs_to(org_id)) else {
        return Ok(None);
    };
    let mut status = sources.read.budget_status(&[budget], at).await?;
    Ok(status.pop())
}

// ---------------------------------------------------------------- explaining

/// The threshold a signal's value is compared with, in the value's unit;
/// `None` for a budget forecast (its limit is the budget's, not the
/// rule's). Charts draw it as a line.
pub fn threshold(signal: &Signal) -> Option<Decimal> {
    match signal {
        Signal::ErrorRate(ErrorRateSignal { above_percent, .. }) => Some(*above_percent),
        Signal::Latency(LatencySignal { above_ms, .. }) => Some(Decimal::from(*above_ms)),
        Signal::Spend(SpendSignal {
            above_usd,
            per_hour_above_usd,
            ..
        }) => per_hour_above_usd.or(*above_usd),
        Signal::BudgetUsed(BudgetUsedSignal { above_percent, .. }) => {
            Some(Decimal::from(*above_percent))
        }
        Signal::BudgetForecast(_) => None,
        Signal::NewErrorPattern(_) | Signal::BreakerOpened(_) => Some(Decimal::ZERO),
        Signal::PipelineHealth(PipelineHealthSignal { above, .. }) => Some(Decimal::from(*above)),
    }
}

/// The unit of a signal's value, for labels.
pub fn unit(signal: &Signal) -> &'static str {
    match signal {
        Signal::ErrorRate(_) | Signal::BudgetUsed(_) => "%",
        Signal::Latency(_) => "ms",
        Signal::Spend(SpendSignal {
            per_hour_above_usd: Some(_),
            ..
        }) => "USD/h",
        Signal::Spend(_) | Signal::BudgetForecast(_) => "USD",
        Signal::NewErrorPattern(_) | Signal::BreakerOpened(_) | Signal::PipelineHealth(_) => "",
    }
}

/// The Tollgate page and time range that explain a measurement of
/// `signal` at `at`: the page of the signal's source, filtered as the
/// signal is, over the window the measurement read (`window`). A path and
/// query (`/sre/errors?range=custom&from=…`); the evaluator prefixes its
/// public URL for `generatorURL`, the Alerts page links it as is. The
/// `range=custom` makes the SRE pages use `from` and `to` instead of their
/// default preset. The pages of one org's calls name `org`, so a person
/// who reads several orgs sees only the rule's; the breakers and the
/// pipeline are the fleet's.
pub fn explain_url(signal: &Signal, org: &str, at: DateTime<Utc>) -> String {
    let (from, to) = window(at, signal.window_secs().unwrap_or(EVENT_WINDOW_SECS));
    let time = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let window = |page: &str, filters: &[(&str, Option<&str>)]| {
        let mut url = format!("{page}?range=custom&from={}&to={}", time(from), time(to));
        for (name, value) in filters {
            if let Some(v) = value {
                url.push_str(&format!("&{name}={}", urlencode(v)));
            }
        }
        url
    };
    match signal {
        Signal::ErrorRate(ErrorRateSignal {
            provider,
            model,
            team,
            ..
        }) => window(
            "/sre/errors",
            &[
                ("org", Some(org)),
                ("provider", provider.as_deref()),
                ("model", model.as_deref()),
                ("team", team.as_deref()),
            ],
        ),
        Signal::NewErrorPattern(ErrorPatternSignal { provider }) => window(
            "/sre/errors",
            &[("org", Some(org)), ("provider", provider.as_deref())],
        ),
        // Filtered as the rule is, and one group of all those calls
        // (`group_by=`), so the totals row is the value the rule measured.
        Signal::Latency(LatencySignal {
            provider,
            model,
            team,
            ..
        }) => window(
            "/sre/latency",
            &[
                ("org", Some(org)),
                ("provider", provider.as_deref()),
                ("model", model.as_deref()),
                ("team", team.as_deref()),
                ("group_by", Some("")),
            ],
        ),
        Signal::BreakerOpened(BreakerSignal { provider, model }) => window(
            "/sre/breakers",
            &[
                ("provider", provider.as_deref()),
                ("model", model.as_deref()),
            ],
        ),
        Signal::Spend(SpendSignal {
            subject_kind,
            subject_id,
            ..
        }) => {
            // The cost report counts whole UTC days, `to` exclusive.
            let day = |t: DateTime<Utc>| t.format("%Y-%m-%d").to_string();
            let mut url = format!(
                "/finance/cost?from={}&to={}",
                day(from),
                day(to + Duration::days(1))
            );
            let (name, value) = match subject_kind {
                SpendSubject::Org => ("org".to_string(), subject_id.as_str()),
                SpendSubject::Team => ("team".to_string(), subject_id.as_str()),
                SpendSubject::Key => ("key".to_string(), subject_id.as_str()),
                SpendSubject::Tag => {
                    let (k, v) = subject_id.split_once('=').unwrap_or((subject_id, ""));
                    (format!("tag.{k}"), v)
                }
            };
            if name != "org" {
                url.push_str(&format!("&org={}", urlencode(org)));
            }
            url.push_str(&format!("&{}={}", urlencode(&name), urlencode(value)));
            url
        }
        Signal::BudgetUsed(BudgetUsedSignal { budget_id, .. })
        | Signal::BudgetForecast(BudgetForecastSignal { budget_id }) => {
            format!("/finance/budgets/{budget_id}")
        }
        // No page shows the pipeline's figures (Prometheus does): the
        // Alerts page, with the alert's value.
        Signal::PipelineHealth(_) => "/sre/alerts".to_string(),
    }
}

// ---------------------------------------------------------------- backtest

/// One step of a backtest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BacktestPoint {
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub measurement: Measurement,
}

/// When a rule would have fired over a past period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backtest {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub step_secs: u32,
    pub for_secs: u32,
    /// The unit of every value ([`unit`]): `USD` and `USD/h` values are
    /// money, written with all 12 decimals in the CSV.
    pub unit: &'static str,
    pub series: Vec<BacktestPoint>,
    /// Every transition, in order, from inactive at `from`.
    pub transitions: Vec<(DateTime<Utc>, Transition)>,
}

/// Why a backtest request is refused (the API answers 400 naming it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{parameter}: {reason}")]
pub struct BacktestRangeError {
    pub parameter: &'static str,
    pub reason: String,
}

/// The instants a backtest measures: `from`, `from + step`, … up to and
/// including `to`, at most [`MAX_BACKTEST_STEPS`].
pub fn steps(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step_secs: u32,
) -> Result<Vec<DateTime<Utc>>, BacktestRangeError> {
    if step_secs == 0 {
        return Err(BacktestRangeError {
            parameter: "step_secs",
            reason: "must be a positive number of seconds".into(),
        });
    }
    if from >= to {
        return Err(BacktestRangeError {
            parameter: "from",
            reason: format!("must be earlier than `to` ({from} is not before {to})"),
        });
    }
    let n = (to - from).num_seconds() / i64::from(step_secs) + 1;
    if n > MAX_BACKTEST_STEPS {
        return Err(BacktestRangeError {
            parameter: "step_secs",
            reason: format!(
                "{n} steps of {step_secs} s from `from` to `to`; at most {MAX_BACKTEST_STEPS} (choose a larger step or a shorter range)"
            ),
        });
    }
    Ok((0..n)
        .map(|i| from + Duration::seconds(i * i64::from(step_secs)))
        .collect())
}

/// Measure `rule` at every step from `from` to `to` and replay the
/// observations from inactive with the rule's `for`.
pub async fn backtest(
    sources: SignalSources<'_>,
    rule: &RuleSpec,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step_secs: u32,
) -> Result<Result<Backtest, BacktestRangeError>, ReadModelError> {
    use futures::{StreamExt, TryStreamExt};
    let instants = match steps(from, to, step_secs) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    // What one read over the whole period gives (error-rate and latency
    // rules, exactly `measure`'s values: `batch`); the other steps are
    // measured one by one.
    let batched = batch::measure_steps(sources.read, &rule.org_id, &rule.signal, &instants).await?;
    let series: Vec<BacktestPoint> = futures::stream::iter(instants.into_iter().zip(batched))
        .map(|(at, batched)| async move {
            let measurement = match batched {
                Some(m) => m,
                None => measure(sources, &rule.org_id, &rule.signal, at).await?,
            };
            Ok::<_, ReadModelError>(BacktestPoint { at, measurement })
        })
        .buffered(BACKTEST_CONCURRENCY)
        .try_collect()
        .await?;
    let (_, transitions) = replay(
        Phase::Inactive,
        series.iter().map(|p| (p.at, p.measurement.observation)),
        Duration::seconds(i64::from(rule.for_secs)),
    );
    Ok(Ok(Backtest {
        from,
        to,
        step_secs,
        for_secs: rule.for_secs,
        unit: unit(&rule.signal),
        series,
        transitions,
    }))
}

/// The backtest's CSV: one row per step, with the transition made there.
pub fn table(backtest: &Backtest) -> Table {
    let mut table = Table::new(["at", "value", "observation", "transition", "detail"]);
    let time = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for p in &backtest.series {
        let transition = backtest
            .transitions
            .iter()
            .find(|(at, _)| *at == p.at)
            .map(|(_, t)| t.to_state())
            .unwrap_or_default();
        table.push([
            time(p.at),
            match p.measurement.value {
                Some(v) if backtest.unit.starts_with("USD") => crate::table::usd(v),
                Some(v) => v.to_string(),
                None => String::new(),
            },
            observation_str(p.measurement.observation).to_string(),
            transition.to_string(),
            p.measurement.detail.clone(),
        ]);
    }
    table
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn backtest_csv_writes_money_with_twelve_decimals_and_other_units_as_measured() {
        let point = |value: &str| BacktestPoint {
            at: t("2026-12-01T10:00:00Z"),
            measurement: Measurement {
                value: Some(d(value)),
                observation: Observation::Holds,
                detail: "spend".into(),
            },
        };
        let mut b = Backtest {
            from: t("2026-12-01T10:00:00Z"),
            to: t("2026-12-01T10:00:00Z"),
            step_secs: 60,
            for_secs: 0,
            unit: "USD/h",
            series: vec![point("1.5"), point("0.000000000001")],
            transitions: Vec::new(),
        };
        let values = |b: &Backtest| -> Vec<String> {
            table(b).rows().iter().map(|row| row[1].clone()).collect()
        };
        assert_eq!(values(&b), ["1.500000000000", "0.000000000001"]);
        b.unit = "ms";
        assert_eq!(values(&b), ["1.5", "0.000000000001"]);
    }

    #[test]
    fn windows_end_at_the_last_whole_minute() {
        let (from, to) = window(t("2026-12-01T10:07:42.5Z"), 300);
        assert_eq!(
            (from, to),
            (t("2026-12-01T10:02:00Z"), t("2026-12-01T10:07:00Z"))
        );
        // On the minute: that minute is not in yet.
        let (from, to) = window(t("2026-12-01T10:07:00Z"), 60);
        assert_eq!(
            (from, to),
            (t("2026-12-01T10:06:00Z"), t("2026-12-01T10:07:00Z"))
        );
        // A window that is not whole minutes is rounded up.
        let (from, _) = window(t("2026-12-01T10:07:00Z"), 90);
        assert_eq!(from, t("2026-12-01T10:05:00Z"));
    }

    #[test]
    fn error_rate_is_exact_and_strictly_above() {
        let w = window(t("2026-12-01T10:07:00Z"), 300);
        let m = error_rate(1, 3, d("33.3333"), w);
        assert_eq!(m.value, Some(d("33.3333")));
        assert_eq!(
            m.observation,
            Observation::Holds,
            "1/3 = 33.33333…% is above 33.3333 although it shows as 33.3333"
        );
        let m = error_rate(1, 20, d("5"), w);
        assert_eq!(m.value, Some(d("5.0000")));
        assert_eq!(
            m.observation,
            Observation::Clear,
            "exactly 5% is not above 5"
        );
        assert_eq!(error_rate(0, 7, d("0"), w).observation, Observation::Clear);
        let none = error_rate(0, 0, d("5"), w);
        assert_eq!(
            (none.value, none.observation),
            (None, Observation::Clear),
            "no calls: no rate, and nothing to alert on"
        );
    }

    #[test]
    fn spend_and_rate_are_exact_decimals() {
        let w = window(t("2026-12-01T10:07:00Z"), 1_800);
        let m = spend(d("0.000000000003"), Some(d("0.000000000002")), None, w);
        assert_eq!(m.observation, Observation::Holds);
        let m = spend(d("1.5"), None, Some(d("3")), w);
        assert_eq!(m.value, Some(d("3")), "1.5 USD in half an hour is 3 USD/h");
        assert_eq!(m.observation, Observation::Clear);
        let m = spend(
            d("1"),
            None,
            Some(d("1")),
            window(t("2026-12-01T10:07:00Z"), 10_800),
        );
        assert_eq!(m.value, Some(d("0.333333333333")));
        let zero = spend(Decimal::ZERO, Some(d("1")), None, w);
        assert_eq!(
            (zero.value, zero.observation),
            (Some(Decimal::ZERO), Observation::Clear),
            "no spend is an answer: zero"
        );
    }

    #[test]
    fn latency_uses_the_reports_interpolation() {
        let w = window(t("2026-12-01T10:07:00Z"), 300);
        // 20 values 10..=200 ms: p95 at h = 19 * 0.95 = 18.05 between the
        // 19th (190 ms) and 20th (200 ms): 190.5 ms.
        let m = latency(20, &[190_000.0, 200_000.0], 0.95, 95, 190, w).unwrap();
        assert_eq!(m.value, Some(d("190.5")));
        assert_eq!(m.observation, Observation::Holds);
        let m = latency(0, &[0.0, 0.0], 0.95, 95, 190, w).unwrap();
        assert_eq!(
            (m.value, m.observation),
            (None, Observation::Clear),
            "no calls: no percentile, and nothing to alert on"
        );
        assert!(latency(3, &[1.0], 0.95, 95, 190, w).is_err());
    }

    #[test]
    fn steps_are_bounded_and_named() {
        let from = t("2026-12-01T00:00:00Z");
        let s = steps(from, from + Duration::hours(24), 60).unwrap();
        assert_eq!(s.len(), 1_441);
        assert_eq!(s[1], t("2026-12-01T00:01:00Z"));
        assert_eq!(s.last(), Some(&(from + Duration::hours(24))));
        assert_eq!(
            steps(from, from + Duration::hours(25), 60)
                .unwrap_err()
                .parameter,
            "step_secs"
        );
        assert_eq!(steps(from, from, 60).unwrap_err().parameter, "from");
        assert_eq!(
            steps(from, from + Duration::hours(1), 0)
                .unwrap_err()
                .parameter,
            "step_secs"
        );
    }

    #[test]
    fn explain_url_opens_the_measured_window_on_the_signals_page() {
        let at = t("2026-12-02T10:07:42Z");
        let signal: Signal = serde_json::from_value(serde_json::json!({
            "kind": "error_rate", "provider": "openai", "team": "search & ads",
            "above_percent": "5", "window_secs": 300
        }))
        .unwrap();
        assert_eq!(
            explain_url(&signal, "acme", at),
            "/sre/errors?range=custom&from=2026-12-02T10:02:00Z&to=2026-12-02T10:07:00Z\
             &org=acme&provider=openai&team=search%20%26%20ads"
        );
        let spend: Signal = serde_json::from_value(serde_json::json!({
            "kind": "spend", "subject_kind": "tag", "subject_id": "feature=chat",
            "window_secs": 3600, "above_usd": "25"
        }))
        .unwrap();
        assert_eq!(
            explain_url(&spend, "acme", at),
            "/finance/cost?from=2026-12-02&to=2026-12-03&org=acme&tag.feature=chat"
        );
        assert_eq!(threshold(&spend), Some(d("25")));
        // A team-scoped latency rule (duration or time to first token):
        // the latency page of that team's calls, as one group.
        for metric in ["duration", "ttft"] {
            let latency: Signal = serde_json::from_value(serde_json::json!({
                "kind": "latency", "metric": metric, "percentile": 95,
                "provider": "openai", "team": "search & ads",
                "above_ms": 2000, "window_secs": 300
            }))
            .unwrap();
            assert_eq!(
                explain_url(&latency, "acme", at),
                "/sre/latency?range=custom&from=2026-12-02T10:02:00Z&to=2026-12-02T10:07:00Z\
                 &org=acme&provider=openai&team=search%20%26%20ads&group_by=",
                "{metric}"
            );
        }
        assert_eq!(unit(&spend), "USD");
    }

    #[test]
    fn pipeline_figures_without_samples_are_unknown_not_zero() {
        let w = window(t("2026-12-01T10:07:00Z"), 300);
        let none = PipelineRow {
            samples: 0,
            sources: 0,
            value: 0,
        };
        let m = pipeline(PipelineMetric::ConsumerLag, &none, 0, w);
        assert_eq!((m.value, m.observation), (None, Observation::Unknown));
        assert!(m.detail.contains("tollgate process"), "{}", m.detail);
        let zero = PipelineRow {
            samples: 30,
            sources: 1,
            value: 0,
        };
        let m = pipeline(PipelineMetric::DeadLetters, &zero, 0, w);
        assert_eq!(
            (m.value, m.observation),
            (Some(Decimal::ZERO), Observation::Clear),
            "samples of zero dead letters are an answer"
        );
        let three = PipelineRow {
            samples: 2,
            sources: 2,
            value: 3,
        };
        let m = pipeline(PipelineMetric::ConsumerLag, &three, 2, w);
        assert_eq!(m.observation, Observation::Holds, "3 is above 2");
        assert_eq!(
            pipeline(PipelineMetric::ConsumerLag, &three, 3, w).observation,
            Observation::Clear,
            "3 is not above 3"
        );
    }

    #[test]
    fn source_failures_are_unknown_for_the_evaluator() {
        let m = or_unknown(Err(ReadModelError::UnexpectedRow {
            query: "q",
            detail: "x".into(),
        }));
        assert_eq!(m.observation, Observation::Unknown);
    }
}
