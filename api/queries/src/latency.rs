//! Latency report: call counts, error rates and p50/p90/p95/p99 of duration and
//! time-to-first-token (TTFT), per time bucket and per group of
//! provider / model / team / org, read from the `latency_minute_calls`
//! rollup and its histogram `latency_minute_buckets` (migration 0036).
//!
//! Percentiles follow one definition, checkable by hand: linear
//! interpolation between the closest ranks (Hyndman & Fan type 7, the
//! default of numpy, R and Excel's PERCENTILE.INC): over the n sorted values
//! x\[0\] <= ... <= x\[n-1\], with h = (n - 1) q, the q-quantile is
//! x\[floor h\] + (h - floor h) (x\[floor h + 1\] - x\[floor h\]). A group of at
//! most [`EXACT_MAX_CALLS`] values gets it exactly, from the values kept in
//! the rollup; a larger group gets the same formula over the histogram: the
//! two order statistics are located exactly by the histogram's counts and
//! each is estimated by the mean of its bucket, which lies within
//! [`HISTOGRAM_MAX_RELATIVE_ERROR`] of it. Every number is computed from
//! integer states, so the same calls give the same report whatever the
//! rollup's part layout (see docs/architecture.md, "Latency percentiles").
//!
//! This module owns the whole query side of the latency fold: validating the
//! request (`LatencyParams` -> `LatencyQuery`), the SQL text (only in
//! `stats_sql` and `dimensions_sql`, built from fixed fragments; values are
//! always bound), the row structs, and the assembly of rows into a
//! `LatencyReport`. The rollup has one-minute resolution, so a query's window
//! is widened to whole minutes and buckets are whole minutes.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::latency_histogram::{by_group, order_stats_sql, Column, Fold, HistogramQuery, Metric};
use super::latency_source::{self, Source};
use super::params::{parse_time, InvalidParameter};
use super::params::{Expected, QueryParams};
use super::table::Table;
use super::{BoundSql, ReadModelError, ReadModels, SqlValue};

/// Longest window one report may cover.
pub const MAX_RANGE_SECS: i64 = 31 * 86_400;
/// Most buckets one series may have.
pub const MAX_BUCKETS: i64 = 1_440;
/// Window used when the request names neither end.
pub const DEFAULT_RANGE_SECS: i64 = 3_600;
/// The default bucket is the smallest of `BUCKET_STEPS` giving at most this
/// many points.
const TARGET_POINTS: i64 = 200;
const BUCKET_STEPS: [u32; 6] = [60, 300, 900, 3_600, 21_600, 86_400];
const MAX_FILTER_LEN: usize = 256;

/// A column a report can be grouped or filtered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dimension {
    Provider,
    Model,
    Team,
    Org,
}

impl Dimension {
    pub const ALL: [Dimension; 4] = [Self::Provider, Self::Model, Self::Team, Self::Org];

    /// The name used in URLs and in report keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::Provider => "provider",
            Self::Model => "model",
            Self::Team => "team",
            Self::Org => "org",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The rollup column. Only these fixed strings ever reach SQL as
    /// identifiers.
    fn column(self) -> &'static str {
        match self {
            Self::Provider => "provider",
            Self::Model => "model",
            Self::Team => "team_id",
            Self::Org => "org_id",
        }
    }

    /// The output alias; distinct from the column so that `'' AS alias` for
    /// an ungrouped dimension cannot shadow the column in WHERE.
    fn alias(self) -> &'static str {
        match self {
            Self::Provider => "key_provider",
            Self::Model => "key_model",
            Self::Team => "key_team",
            Self::Org => "key_org",
        }
    }
}

/// Equality filters; `None` means any value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyFilters {
    pub provider: Option<String>,
    pub model: Option<String>,
    pub team: Option<String>,
    pub org: Option<String>,
}

impl LatencyFilters {
    pub fn get(&self, dimension: Dimension) -> Option<&str> {
        match dimension {
            Dimension::Provider => self.provider.as_deref(),
            Dimension::Model => self.model.as_deref(),
            Dimension::Team => self.team.as_deref(),
            Dimension::Org => self.org.as_deref(),
        }
    }
}

/// A validated latency request. Build it with [`LatencyQuery::new`] or
/// [`LatencyParams::to_query`]; `from` and `to` are whole minutes.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyQuery {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bucket_secs: u32,
    pub group_by: Vec<Dimension>,
    pub filters: LatencyFilters,
}

fn invalid(parameter: &'static str, reason: impl Into<String>) -> InvalidParameter {
    InvalidParameter::new(parameter, reason)
}

impl LatencyQuery {
    /// Validate a request. `from` is rounded down and `to` up to whole
    /// minutes (the rollup's resolution); `bucket_secs = None` picks a bucket
    /// that gives at most about 200 points.
    pub fn new(
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket_secs: Option<u32>,
        group_by: Vec<Dimension>,
        filters: LatencyFilters,
    ) -> Result<Self, InvalidParameter> {
        let from_secs = from.timestamp().div_euclid(60) * 60;
        let to_secs = ceil_minute(to);
        let epoch_range = 0..=i64::from(u32::MAX);
        if !epoch_range.contains(&from_secs) {
            return Err(invalid("from", "must be between 1970-01-01 and 2106-02-07"));
        }
        if !epoch_range.contains(&to_secs) {
            return Err(invalid("to", "must be between 1970-01-01 and 2106-02-07"));
        }
        if from >= to {
            return Err(invalid(
                "from",
                format!(
                    "must be earlier than `to` (from {}, to {})",
                    from.to_rfc3339(),
                    to.to_rfc3339()
                ),
            ));
        }
        let range = to_secs - from_secs;
        if range > MAX_RANGE_SECS {
            return Err(invalid(
                "from",
                format!(
                    "the range from..to is {}; a report covers at most {}",
                    describe_secs(range),
                    describe_secs(MAX_RANGE_SECS)
                ),
            ));
        }
        let bucket_secs = match bucket_secs {
            None => default_bucket(range),
            Some(step) => {
                check_bucket_step(step)?;
                let buckets = bucket_count(from_secs, to_secs, step);
                if buckets > MAX_BUCKETS {
                    return Err(invalid(
                        "bucket",
                        format!(
                            "{} over {} gives {buckets} buckets; at most {MAX_BUCKETS} (choose a larger bucket)",
                            format_bucket(step),
                            describe_secs(range)
                        ),
                    ));
                }
                step
            }
        };
        for dimension in Dimension::ALL {
            if let Some(value) = filters.get(dimension) {
                if value.len() > MAX_FILTER_LEN {
                    return Err(invalid(
                        filter_parameter(dimension),
                        format!("longer than {MAX_FILTER_LEN} bytes"),
                    ));
                }
            }
        }
        Ok(Self {
            from: timestamp(from_secs),
            to: timestamp(to_secs),
            bucket_secs,
            group_by,
            filters,
        })
    }
}

fn filter_parameter(dimension: Dimension) -> &'static str {
    dimension.name()
}

fn ceil_minute(t: DateTime<Utc>) -> i64 {
    let secs = t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0);
    secs.div_euclid(60) * 60 + if secs.rem_euclid(60) > 0 { 60 } else { 0 }
}

/// Callers only pass values already checked to lie in the `u32` epoch range.
fn timestamp(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// Buckets are aligned to multiples of the step since the epoch (so a day
/// bucket starts at 00:00 UTC), hence the window may touch one more bucket
/// than `range / step`.
/// How many buckets of `step` seconds a report from `from` to `to` has,
/// the window widened to whole minutes as [`LatencyQuery::new`] widens it
/// (at most [`MAX_BUCKETS`] are allowed).
pub fn buckets_in(from: DateTime<Utc>, to: DateTime<Utc>, step: u32) -> i64 {
    bucket_count(
        from.timestamp().div_euclid(60) * 60,
        ceil_minute(to),
        step.max(1),
    )
}

fn bucket_count(from_secs: i64, to_secs: i64, step: u32) -> i64 {
    let step = i64::from(step);
    (to_secs - 1).div_euclid(step) - from_secs.div_euclid(step) + 1
}

fn default_bucket(range_secs: i64) -> u32 {
    BUCKET_STEPS
        .into_iter()
        .find(|step| range_secs / i64::from(*step) <= TARGET_POINTS)
        .unwrap_or(86_400)
}

fn check_bucket_step(step: u32) -> Result<(), InvalidParameter> {
    if step < 60 || !step.is_multiple_of(60) {
        return Err(invalid(
            "bucket",
            "must be a whole number of minutes, at least 1m (the rollup has one-minute resolution)",
        ));
    }
    if i64::from(step) > MAX_RANGE_SECS {
        return Err(invalid(
            "bucket",
            format!("at most {}", describe_secs(MAX_RANGE_SECS)),
        ));
    }
    Ok(())
}

/// Parse a bucket width like `90s`, `5m`, `1h` or `1d` into seconds.
pub fn parse_bucket(text: &str) -> Result<u32, InvalidParameter> {
    let text = text.trim();
    let unit_at = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(unit_at);
    let multiplier: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => {
            return Err(invalid(
                "bucket",
                format!("`{text}` is not a duration like 1m, 5m, 1h or 1d"),
            ))
        }
    };
    let count: u64 = digits.parse().map_err(|_| {
        invalid(
            "bucket",
            format!("`{text}` is not a duration like 1m, 5m, 1h or 1d"),
        )
    })?;
    let secs = count
        .checked_mul(multiplier)
        .and_then(|secs| u32::try_from(secs).ok())
        .ok_or_else(|| invalid("bucket", format!("`{text}` is too large")))?;
    check_bucket_step(secs)?;
    Ok(secs)
}

/// The shortest way to write a bucket width: `300` -> `5m`.
pub fn format_bucket(secs: u32) -> String {
    match secs {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn describe_secs(secs: i64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s % 3_600 == 0 => format!("{} hours", s / 3_600),
        s if s % 60 == 0 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

/// Parse a comma-separated `group_by` list; empty items are ignored, so an
/// empty string means "no grouping" (one group of all calls).
pub fn parse_group_by(text: &str) -> Result<Vec<Dimension>, InvalidParameter> {
    let mut dimensions = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let dimension = Dimension::parse(item).ok_or_else(|| {
            invalid(
                "group_by",
                format!("unknown dimension `{item}`; expected provider, model, team or org"),
            )
        })?;
        if dimensions.contains(&dimension) {
            return Err(invalid("group_by", format!("`{item}` is listed twice")));
        }
        dimensions.push(dimension);
    }
    Ok(dimensions)
}

/// The latency request as it arrives in a URL query: every field optional,
/// empty strings meaning "not given".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub bucket: Option<String>,
    pub group_by: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub team: Option<String>,
    pub org: Option<String>,
}

impl LatencyParams {
    /// Names of the parameters `to_query` understands.
    pub const NAMES: [&'static str; 8] = [
        "from", "to", "bucket", "group_by", "provider", "model", "team", "org",
    ];

    /// Read a query string's pairs ([`QueryParams`]: unknown and repeated
    /// parameters are errors naming them).
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, InvalidParameter> {
        let params = QueryParams::parse(pairs, &Expected::names(&Self::NAMES))?;
        let get = |name: &str| params.get(name).map(str::to_string);
        Ok(Self {
            from: get("from"),
            to: get("to"),
            bucket: get("bucket"),
            group_by: get("group_by"),
            provider: get("provider"),
            model: get("model"),
            team: get("team"),
            org: get("org"),
        })
    }

    /// Read the parameters `names` (some of [`Self::NAMES`]) and the
    /// caller's `extra` from a query string, and validate them as a window
    /// without grouping: how the errors and breakers reports take their
    /// window and filters, so they reject what this report rejects, in
    /// its words. The caller reads `extra` from the returned params.
    pub fn window(
        pairs: &[(String, String)],
        now: DateTime<Utc>,
        names: &[&str],
        extra: &[&str],
    ) -> Result<(LatencyQuery, QueryParams), InvalidParameter> {
        let all: Vec<&str> = names.iter().chain(extra).copied().collect();
        let params = QueryParams::parse(pairs, &Expected::names(&all))?;
        let get = |name: &str| {
            names
                .contains(&name)
                .then(|| params.get(name).map(str::to_string))
                .flatten()
        };
        let query = Self {
            from: get("from"),
            to: get("to"),
            bucket: get("bucket"),
            group_by: Some(String::new()),
            provider: get("provider"),
            model: get("model"),
            team: get("team"),
            org: get("org"),
        }
        .to_query(now)?;
        Ok((query, params))
    }

    /// Validate. Defaults: `to` = now, `from` = `to` - 1 hour, bucket from the
    /// range, `group_by` = provider,model (an empty `group_by=` means none).
    pub fn to_query(&self, now: DateTime<Utc>) -> Result<LatencyQuery, InvalidParameter> {
        let to = match non_empty(&self.to) {
            Some(text) => parse_time("to", text)?,
            None => now,
        };
        let from = match non_empty(&self.from) {
            Some(text) => parse_time("from", text)?,
            None => to - Duration::seconds(DEFAULT_RANGE_SECS),
        };
        let bucket = non_empty(&self.bucket).map(parse_bucket).transpose()?;
        let group_by = match &self.group_by {
            Some(text) => parse_group_by(text)?,
            None => vec![Dimension::Provider, Dimension::Model],
        };
        let filters = LatencyFilters {
            provider: non_empty(&self.provider).map(str::to_string),
            model: non_empty(&self.model).map(str::to_string),
            team: non_empty(&self.team).map(str::to_string),
            org: non_empty(&self.org).map(str::to_string),
        };
        LatencyQuery::new(from, to, bucket, group_by, filters)
    }
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

// ---------------------------------------------------------------- report

/// The latency report, as served by `GET /api/v1/reports/latency`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyReport {
    /// Start of the window (inclusive, whole minute).
    pub from: DateTime<Utc>,
    /// End of the window (exclusive, whole minute).
    pub to: DateTime<Utc>,
    pub bucket_secs: u32,
    pub group_by: Vec<Dimension>,
    /// Groups with at least one call, ordered by key.
    pub groups: Vec<LatencyGroup>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyGroup {
    pub key: GroupKey,
    /// Over the whole window (not an average of buckets).
    pub total: Stats,
    /// Buckets with at least one call, in time order; empty buckets are
    /// omitted.
    pub series: Vec<SeriesPoint>,
}

/// The values of the grouped dimensions; dimensions not grouped by are
/// absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
}

impl GroupKey {
    /// `openai / gpt-4o`, or `all calls` for the ungrouped report.
    pub fn label(&self) -> String {
        let parts: Vec<&str> = [&self.provider, &self.model, &self.team, &self.org]
            .into_iter()
            .filter_map(|part| part.as_deref())
            .map(|part| if part.is_empty() { "(none)" } else { part })
            .collect();
        if parts.is_empty() {
            "all calls".into()
        } else {
            parts.join(" / ")
        }
    }

    fn from_row(
        group_by: &[Dimension],
        provider: &str,
        model: &str,
        team: &str,
        org: &str,
    ) -> Self {
        let pick = |d: Dimension, value: &str| group_by.contains(&d).then(|| value.to_string());
        Self {
            provider: pick(Dimension::Provider, provider),
            model: pick(Dimension::Model, model),
            team: pick(Dimension::Team, team),
            org: pick(Dimension::Org, org),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    pub bucket_start: DateTime<Utc>,
    pub stats: Stats,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Completed and failed calls.
    pub count: u64,
    /// Calls whose outcome was not `success`.
    pub errors: u64,
    /// `errors / count`.
    pub error_rate: f64,
    /// Over all calls; exact when read from the calls themselves, from the
    /// minute rollups exact up to [`EXACT_MAX_CALLS`] calls
    /// (`latency_source`).
    pub duration_ms: Percentiles,
    /// Calls that reported a first token (streamed).
    pub ttft_count: u64,
    /// Over streamed calls (exact as `duration_ms` is); `null` when there
    /// were none.
    pub ttft_ms: Option<Percentiles>,
}

/// Quantile levels of every report, in [`Percentiles`] order.
pub const LEVELS: [f64; 4] = [0.5, 0.9, 0.95, 0.99];

/// Groups of at most this many values get exact percentiles. The rollup
/// keeps up to this many values per row (`groupArray(1000)` in migration
/// 0026); a group this small is made only of rows that kept all of theirs.
/// Above it the values of a busy minute are no longer all kept, and the
/// histogram answers within [`HISTOGRAM_MAX_RELATIVE_ERROR`].
pub const EXACT_MAX_CALLS: u64 = 1_000;

/// Histogram buckets per power of two (`256` in migration 0026's bucket
/// key): a bucket `[lo, lo + w)` has `w <= lo / 256`.
pub const HISTOGRAM_BUCKETS_PER_OCTAVE: u64 = 256;

/// Bound on `|estimate - exact| / exact` for a histogram percentile. Both
/// order statistics the definition interpolates between are located
/// exactly (the histogram's counts are exact), and each is replaced by the
/// mean of the bucket it lies in; mean and value share a bucket, so they
/// differ by less than its width `w <= lo / 256 <= value / 256`; the
/// interpolation of two such values keeps the bound. (Rounding the report
/// to the microsecond can add half a microsecond.)
pub const HISTOGRAM_MAX_RELATIVE_ERROR: f64 = 1.0 / HISTOGRAM_BUCKETS_PER_OCTAVE as f64;

/// How a group's percentiles were computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PercentileMethod {
    /// From every value of the group.
    Exact,
    /// From the log-linear histogram; an estimate within
    /// [`HISTOGRAM_MAX_RELATIVE_ERROR`] of the exact value.
    Histogram,
}

impl PercentileMethod {
    /// The name the JSON and the CSV give it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Histogram => "histogram",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    /// `exact` when read from the calls themselves, or from the rollups
    /// for groups of at most [`EXACT_MAX_CALLS`] values; else
    /// `histogram`.
    pub method: PercentileMethod,
    /// Bound on `|reported - exact| / exact` for each of the four values:
    /// `0` when exact, [`HISTOGRAM_MAX_RELATIVE_ERROR`] otherwise.
    pub max_relative_error: f64,
}

/// The `q` quantile of `count` values in milliseconds (to the
/// microsecond) from the order statistics at ranks `floor(h)` and
/// `min(floor(h) + 1, count - 1)`, `h = (count - 1) q`, in microseconds
/// (type 7 interpolation). The one definition of a percentile: the report
/// and the alert signals (`alert_signals`) both call it.
pub(crate) fn interpolate_ms(count: u64, q: f64, lo_us: f64, hi_us: f64) -> f64 {
    let h = count.saturating_sub(1) as f64 * q;
    let frac = h - h.floor();
    let us = lo_us + frac * (hi_us - lo_us);
    us.round() / 1_000.0
}

impl Percentiles {
    /// `count` values' percentiles from the order statistics the SQL
    /// returns (in microseconds): for each level of [`LEVELS`], the values
    /// at ranks `floor(h)` and `min(floor(h) + 1, count - 1)`, where
    /// `h = (count - 1) q` (computed the same way in the SQL). Reported in
    /// milliseconds, to the microsecond. `None` when the arity is wrong or
    /// a value is not finite (a histogram that does not hold the rank).
    pub fn from_order_stats(count: u64, order_stats_us: &[f64]) -> Option<Self> {
        let method = if count <= EXACT_MAX_CALLS {
            PercentileMethod::Exact
        } else {
            PercentileMethod::Histogram
        };
        Self::by(method, count, order_stats_us)
    }

    /// [`Percentiles::from_order_stats`] of order statistics taken from
    /// every value at any count (read from the calls themselves).
    pub fn of_every_value(count: u64, order_stats_us: &[f64]) -> Option<Self> {
        Self::by(PercentileMethod::Exact, count, order_stats_us)
    }

    fn by(method: PercentileMethod, count: u64, order_stats_us: &[f64]) -> Option<Self> {
        if order_stats_us.len() != 2 * LEVELS.len() || order_stats_us.iter().any(|v| !v.is_finite())
        {
            return None;
        }
        let at = |i: usize| {
            interpolate_ms(
                count,
                LEVELS[i],
                order_stats_us[2 * i],
                order_stats_us[2 * i + 1],
            )
        };
        Some(Self {
            p50: at(0),
            p90: at(1),
            p95: at(2),
            p99: at(3),
            method,
            max_relative_error: match method {
                PercentileMethod::Exact => 0.0,
                PercentileMethod::Histogram => HISTOGRAM_MAX_RELATIVE_ERROR,
            },
        })
    }

    /// Whether the values are estimates (the page marks them).
    pub fn is_estimate(&self) -> bool {
        self.method != PercentileMethod::Exact
    }
}

/// The report's totals table (its CSV, the SRE latency page's "Totals"):
/// one row per group, a column per grouped dimension, then the group's
/// counts and percentiles over the whole window as the JSON has them
/// (milliseconds; `histogram` percentiles are within
/// [`HISTOGRAM_MAX_RELATIVE_ERROR`]); empty time-to-first-token cells
/// for a group without streamed calls.
pub fn totals_table(report: &LatencyReport) -> Table {
    let mut table = Table::new(report.group_by.iter().map(|d| d.name()).chain([
        "calls",
        "errors",
        "error_rate",
        "duration_p50_ms",
        "duration_p90_ms",
        "duration_p95_ms",
        "duration_p99_ms",
        "duration_method",
        "streamed_calls",
        "ttft_p50_ms",
        "ttft_p90_ms",
        "ttft_p95_ms",
        "ttft_p99_ms",
        "ttft_method",
    ]));
    for g in &report.groups {
        let t = &g.total;
        let key = report.group_by.iter().map(|d| {
            match d {
                Dimension::Provider => &g.key.provider,
                Dimension::Model => &g.key.model,
                Dimension::Team => &g.key.team,
                Dimension::Org => &g.key.org,
            }
            .clone()
            .unwrap_or_default()
        });
        let percentiles = |p: Option<&Percentiles>| match p {
            Some(p) => [
                p.p50.to_string(),
                p.p90.to_string(),
                p.p95.to_string(),
                p.p99.to_string(),
                p.method.name().to_string(),
            ],
            None => Default::default(),
        };
        table.push(
            key.chain([
                t.count.to_string(),
                t.errors.to_string(),
                t.error_rate.to_string(),
            ])
            .chain(percentiles(Some(&t.duration_ms)))
            .chain([t.ttft_count.to_string()])
            .chain(percentiles(t.ttft_ms.as_ref())),
        );
    }
    table
}

// ---------------------------------------------------------------- SQL

/// The 0-based ranks of each level's two order statistics,
/// `floor(h)` and `min(floor(h) + 1, last)` with `h = last q`, one SQL
/// expression each over the expression `last` (the group's last rank,
/// `n - 1`).
pub(crate) fn ranks(last: &str, levels: &[f64]) -> Vec<String> {
    levels
        .iter()
        .flat_map(|q| {
            let lo = format!("toUInt64(floor({last} * {q}))");
            let hi = format!("least({lo} + 1, {last})");
            [lo, hi]
        })
        .collect()
}

/// The statistics of one group, from `source`; identical in every
/// statement.
fn group_stats(source: Source) -> String {
    format!(
        "{} AS call_count, {} AS error_count, {} AS duration_order_stats, \
         {} AS ttft_order_stats, {} AS ttft_count",
        source.call_count(),
        source.error_count(),
        source.order_stats_at("d", &LEVELS),
        source.order_stats_at("t", &LEVELS),
        source.ttft_count()
    )
}

/// The window on the rollup's primary key; binds `from` and `to` as epoch
/// seconds so the server's time zone never matters.
const WINDOW: &str =
    "FROM latency_minute_calls WHERE minute >= toDateTime(?) AND minute < toDateTime(?)";

/// Buckets aligned to multiples of the step since the epoch. Works on 18.16,
/// which has no `toStartOfInterval`.
pub(crate) const BUCKET: &str = "toDateTime(intDiv(toUInt32(minute), ?) * ?) AS bucket_start";

/// One row of the totals statement; fields in SELECT order.
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
struct TotalsRow {
    key_provider: String,
    key_model: String,
    key_team: String,
    key_org: String,
    call_count: u64,
    error_count: u64,
    duration_order_stats: Vec<f64>,
    ttft_order_stats: Vec<f64>,
    ttft_count: u64,
}

/// One row of the series statement; fields in SELECT order.
#[derive(Debug, clickhouse::Row, Deserialize)]
struct SeriesRow {
    /// `DateTime` travels as epoch seconds in RowBinary.
    bucket_start: u32,
    key_provider: String,
    key_model: String,
    key_team: String,
    key_org: String,
    call_count: u64,
    error_count: u64,
    duration_order_stats: Vec<f64>,
    ttft_order_stats: Vec<f64>,
    ttft_count: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct DimensionRow {
    provider: String,
    model: String,
}

/// The statement behind both halves of the report: per group (`bucketed =
/// false`, the totals) or per group and bucket (the series), from `source`.
fn stats_sql(name: &'static str, query: &LatencyQuery, bucketed: bool, source: Source) -> BoundSql {
    // A series' points are many small groups: sorted, however the
    // totals of a large window are read (`latency_source`).
    let source = if bucketed { source.sorted() } else { source };
    let mut columns = Vec::new();
    let mut column_binds = Vec::new();
    let mut keys: Vec<&str> = query.group_by.iter().map(|d| d.alias()).collect();
    if bucketed {
        let time = source.time_column();
        columns.push(Column::Grouped {
            expr: format!("toDateTime(intDiv(toUInt32({time}), ?) * ?)"),
            alias: "bucket_start",
        });
        column_binds.extend(bucket_binds(query));
        keys.push("bucket_start");
    }
    columns.extend(dimension_columns(query));
    let (template, binds) = source.grouped_sql(
        (&columns, &column_binds, &keys),
        &group_stats(source),
        (epoch(query.from), epoch(query.to)),
        &filters(query),
    );
    BoundSql {
        name,
        template,
        binds,
    }
}

/// The four key columns of a row in [`Dimension::ALL`]'s order: grouped
/// by the dimensions the query groups by, `''` for the others.
fn dimension_columns(query: &LatencyQuery) -> impl Iterator<Item = Column> + '_ {
    Dimension::ALL.into_iter().map(|dimension| {
        if query.group_by.contains(&dimension) {
            Column::Grouped {
                expr: dimension.column().into(),
                alias: dimension.alias(),
            }
        } else {
            Column::Constant {
                expr: "''",
                alias: dimension.alias(),
            }
        }
    })
}

fn bucket_binds(query: &LatencyQuery) -> [SqlValue; 2] {
    let step = SqlValue::UInt(u64::from(query.bucket_secs));
    [step.clone(), step]
}

/// The request's filters as `(column, value)`.
fn filters(query: &LatencyQuery) -> Vec<(&'static str, String)> {
    Dimension::ALL
        .into_iter()
        .filter_map(|d| query.filters.get(d).map(|v| (d.column(), v.to_string())))
        .collect()
}

/// The histogram statement for the groups of [`stats_sql`] with more than
/// [`EXACT_MAX_CALLS`] values (`latency_histogram`): the same keys, and
/// `bucket_start` 0 for the totals, so both halves share [`HistogramRow`].
fn histogram_sql(name: &'static str, query: &LatencyQuery, bucketed: bool, fold: Fold) -> BoundSql {
    let mut columns = Vec::new();
    let mut column_binds = Vec::new();
    if bucketed {
        columns.push(Column::Grouped {
            expr: "toUInt32(intDiv(toUInt32(minute), ?) * ?)".into(),
            alias: "bucket_start",
        });
        column_binds.extend(bucket_binds(query));
    } else {
        columns.push(Column::Constant {
            expr: "toUInt32(0)",
            alias: "bucket_start",
        });
    }
    columns.extend(dimension_columns(query));
    order_stats_sql(&HistogramQuery {
        name,
        columns,
        column_binds,
        window: (epoch(query.from), epoch(query.to)),
        filters: filters(query),
        metric: None,
        levels: &LEVELS,
        fold,
    })
}

/// One row of [`histogram_sql`]; fields in SELECT order.
#[derive(Debug, clickhouse::Row, Deserialize)]
struct HistogramRow {
    bucket_start: u32,
    key_provider: String,
    key_model: String,
    key_team: String,
    key_org: String,
    metric: u8,
    /// How many values the order statistics are of: checked against the
    /// kept values' count of the row they replace.
    value_count: u64,
    order_stats: Vec<f64>,
}

/// A row's identity across the statements: bucket start (0 for totals)
/// and the four key columns.
type RowKey = (u32, String, String, String, String);

/// The [`RowKey`] of a row in `bucket` (0 for the totals) with its
/// provider, model, team and org keys.
fn row_key(bucket: u32, [p, m, t, o]: [&String; 4]) -> RowKey {
    (bucket, p.clone(), m.clone(), t.clone(), o.clone())
}

/// One statement's histograms by row and metric: how many values each
/// holds, and its order statistics.
type Histograms = HashMap<(RowKey, Metric), (u64, Vec<f64>)>;

/// The provider/model pairs with calls in `[from, to)`, of one org's
/// calls when `org` is given (a viewer pinned to an org must not learn
/// which models another org calls).
fn dimensions_sql(from: DateTime<Utc>, to: DateTime<Utc>, org: Option<&str>) -> BoundSql {
    let mut binds = vec![SqlValue::UInt(epoch(from)), SqlValue::UInt(epoch(to))];
    let of_org = match org {
        Some(org) => {
            binds.push(SqlValue::Str(org.to_string()));
            " AND org_id = ?"
        }
        None => "",
    };
    BoundSql {
        name: if org.is_some() {
            "latency.dimensions.org"
        } else {
            "latency.dimensions"
        },
        template: format!(
            "SELECT provider, model {WINDOW}{of_org} GROUP BY provider, model ORDER BY provider, model"
        ),
        binds,
    }
}

pub(crate) fn epoch(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp()).unwrap_or(0)
}

/// Sample statements for [`super::sql_catalog`]: every shape `stats_sql`
/// and `histogram_sql` can take (grouped or not, filtered or not, bucketed
/// or not).
pub(crate) fn catalog() -> Vec<BoundSql> {
    let from = timestamp(1_767_225_600); // 2026-01-01T00:00:00Z
    let to = timestamp(1_767_225_600 + 3_600);
    let plain = LatencyQuery {
        from,
        to,
        bucket_secs: 300,
        group_by: vec![Dimension::Provider, Dimension::Model],
        filters: LatencyFilters::default(),
    };
    let filtered = LatencyQuery {
        group_by: vec![
            Dimension::Org,
            Dimension::Team,
            Dimension::Provider,
            Dimension::Model,
        ],
        filters: LatencyFilters {
            provider: Some("openai".into()),
            model: Some("gpt-4o".into()),
            team: Some("team-a".into()),
            org: Some("org-1".into()),
        },
        ..plain.clone()
    };
    let ungrouped = LatencyQuery {
        group_by: Vec::new(),
        ..plain.clone()
    };
    // The series and totals statements of each source, in each shape.
    let stats = [
        (
            Source::Rollups,
            [
                ["latency.totals", "latency.series"],
                ["latency.totals.filtered", "latency.series.filtered"],
                ["latency.totals.ungrouped", "latency.series.ungrouped"],
            ],
        ),
        (
            Source::Calls,
            [
                ["latency.calls.totals", "latency.calls.series"],
                [
                    "latency.calls.totals.filtered",
                    "latency.calls.series.filtered",
                ],
                [
                    "latency.calls.totals.ungrouped",
                    "latency.calls.series.ungrouped",
                ],
            ],
        ),
    ];
    let mut out: Vec<BoundSql> = Vec::new();
    for (source, names) in stats {
        for (query, [totals, series]) in [&plain, &filtered, &ungrouped].into_iter().zip(names) {
            out.push(stats_sql(totals, query, false, source));
            out.push(stats_sql(series, query, true, source));
        }
    }
    // Totals counted per value (a series reads as from `Calls`).
    for (query, name) in [&plain, &filtered, &ungrouped].into_iter().zip([
        "latency.calls.counted.totals",
        "latency.calls.counted.totals.filtered",
        "latency.calls.counted.totals.ungrouped",
    ]) {
        out.push(stats_sql(name, query, false, Source::CallCounts));
    }
    out.extend([
        histogram_sql(
            "latency.totals.histogram",
            &plain,
            false,
            Fold::BucketsFirst,
        ),
        histogram_sql("latency.series.histogram", &plain, true, Fold::RowsAsRead),
        histogram_sql(
            "latency.series.histogram.dense",
            &plain,
            true,
            Fold::BucketsFirst,
        ),
        histogram_sql(
            "latency.totals.histogram.filtered",
            &filtered,
            false,
            Fold::BucketsFirst,
        ),
        histogram_sql(
            "latency.series.histogram.filtered",
            &filtered,
            true,
            Fold::RowsAsRead,
        ),
        histogram_sql(
            "latency.totals.histogram.ungrouped",
            &ungrouped,
            false,
            Fold::BucketsFirst,
        ),
        histogram_sql(
            "latency.series.histogram.ungrouped",
            &ungrouped,
            true,
            Fold::RowsAsRead,
        ),
        // One bucket over the whole sample window: the series' fold must
        // give the totals' order statistics (tests/sql_compat).
        histogram_sql(
            "latency.series.histogram.one_bucket",
            &LatencyQuery {
                bucket_secs: 3_600,
                ..plain.clone()
            },
            true,
            Fold::RowsAsRead,
        ),
        dimensions_sql(from, to, None),
        dimensions_sql(from, to, Some("acme")),
        // The same report read from the calls themselves.
        latency_source::calls_in_window_sql(
            "latency.calls_in_window",
            (epoch(from), epoch(to)),
            &[],
        ),
        latency_source::calls_in_window_sql(
            "latency.calls_in_window.filtered",
            (epoch(from), epoch(to)),
            &filters(&filtered),
        ),
    ]);
    out
}

// ---------------------------------------------------------------- running

/// The report, from the calls themselves while its window holds at most
/// `[clickhouse] latency_sort_max_calls` of them ([`read_calls`]: every
/// percentile exact), else from the minute rollups ([`read_rollups`]);
/// `latency_source` says why.
pub(crate) async fn run(
    models: &ReadModels,
    query: &LatencyQuery,
) -> Result<LatencyReport, ReadModelError> {
    let window = (epoch(query.from), epoch(query.to));
    match latency_source::choose(models, "latency.calls_in_window", window, &filters(query)).await?
    {
        source @ (Source::Calls | Source::CallCounts) => read_calls(models, query, source).await,
        Source::Rollups => read_rollups(models, query).await,
    }
}

/// The report from the calls themselves ([`Source::Calls`], or
/// [`Source::CallCounts`] whose totals are counted per value): the series
/// and the totals, each one statement, read side by side. Every
/// percentile is of every value, so only their counts can disagree (calls
/// that landed between the two statements), and such a reading is read
/// again as [`read_rollups`] does.
async fn read_calls(
    models: &ReadModels,
    query: &LatencyQuery,
    source: Source,
) -> Result<LatencyReport, ReadModelError> {
    let started = std::time::Instant::now();
    let mut reads = 1;
    loop {
        let (series, totals) = futures::try_join!(
            fetch_stats::<SeriesRow>(models, query, true, source),
            fetch_stats::<TotalsRow>(models, query, false, source)
        )?;
        let agrees = same_counts(&totals_of(query, &series), &totals);
        if agrees || reads >= CONSISTENT_READS || started.elapsed() >= READ_AGAIN_WITHIN {
            if !agrees {
                tracing::debug!(
                    reads,
                    "latency report: its statements disagree (calls landing in the window)"
                );
            }
            return assemble(query, totals, series, source);
        }
        reads += 1;
    }
}

/// The report from the minute rollups ([`Source::Rollups`]), read in two
/// rounds of statements (see docs/architecture.md, "What it costs"):
/// 1. the series from the kept values (all a group or bucket of at most
///    [`EXACT_MAX_CALLS`] values needs), beside the histogram of the
///    totals above the threshold. The series' counts add up to each
///    group's totals, since its buckets split the window;
/// 2. the totals' kept values, only when some group has a metric of at
///    most [`EXACT_MAX_CALLS`] values (over long windows every group is
///    larger, and merging their kept values was work thrown away),
///    beside the histogram of the series rows above the threshold.
///
/// The statements are separate reads, so a call that lands between them
/// can be in one and not in another ([`Agreement`]):
/// - a large group without its histogram (it grew past the threshold
///   between two statements) would show the kept values' order
///   statistics of a sample, so such a reading is always read again, with
///   each histogram after the counts it completes ([`Rounds::CountsFirst`]:
///   counts only grow, so every large group finds its histogram, and a
///   missing one is then an error: the two tables disagree for good);
/// - counts that disagree (the totals' kept values against the series'
///   sums, a histogram's value count against its row's) are read again
///   while the readings so far took less than [`READ_AGAIN_WITHIN`], up to
///   [`CONSISTENT_READS`] readings in all. A short window under live
///   ingestion then adds up; a long one, whose reading takes seconds,
///   returns its first reading, in which the calls landed during the
///   read are a few among millions, rather than reading everything again.
async fn read_rollups(
    models: &ReadModels,
    query: &LatencyQuery,
) -> Result<LatencyReport, ReadModelError> {
    let started = std::time::Instant::now();
    let mut rounds = Rounds::Together;
    let mut reads = 1;
    loop {
        let (report, agreement) = read_once(models, query, rounds).await?;
        match agreement {
            Agreement::Agrees => return Ok(report),
            Agreement::MissingHistogram => rounds = Rounds::CountsFirst,
            Agreement::CountsDiffer => {
                if reads >= CONSISTENT_READS || started.elapsed() >= READ_AGAIN_WITHIN {
                    tracing::debug!(
                        reads,
                        "latency report: its statements disagree (calls landing in the window)"
                    );
                    return Ok(report);
                }
                if reads + 1 >= CONSISTENT_READS {
                    rounds = Rounds::CountsFirst;
                }
            }
        }
        reads += 1;
    }
}

/// How many readings [`run`] makes of a report whose counts disagree.
const CONSISTENT_READS: u32 = 3;

/// How long the readings of a report may have taken for [`run`] to read
/// it again when its counts disagree.
const READ_AGAIN_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether one reading's statements saw the same calls, from best to
/// worst (a reading is as good as its worst statement: [`Agreement::and`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Agreement {
    /// Every order statistic is of exactly the values counted.
    Agrees,
    /// Some counts differ between statements.
    CountsDiffer,
    /// A group above the threshold has no histogram (only when the
    /// histogram was read beside its counts).
    MissingHistogram,
}

impl Agreement {
    /// The worse of two.
    fn and(self, other: Self) -> Self {
        self.max(other)
    }
}

/// When the totals' histogram is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rounds {
    /// Beside the series: the fastest, but a group that grows past the
    /// threshold between the two statements has no histogram (read
    /// again).
    Together,
    /// After the counts it completes (the series, and the totals' kept
    /// values when they are read).
    CountsFirst,
}

/// One reading of the report, and whether every order statistic in it is
/// of the values it counts.
async fn read_once(
    models: &ReadModels,
    query: &LatencyQuery,
    rounds: Rounds,
) -> Result<(LatencyReport, Agreement), ReadModelError> {
    let (mut series, early_totals_histograms) = match rounds {
        Rounds::Together => {
            let (series, histograms) = futures::try_join!(
                fetch_stats::<SeriesRow>(models, query, true, Source::Rollups),
                fetch_histograms(models, query, false, Fold::BucketsFirst)
            )?;
            (series, Some(histograms))
        }
        Rounds::CountsFirst => (
            fetch_stats::<SeriesRow>(models, query, true, Source::Rollups).await?,
            None,
        ),
    };
    let summed = totals_of(query, &series);
    let series_histograms = async {
        let largest = series
            .iter()
            .filter(|r| is_large(r.call_count, r.ttft_count))
            .map(|r| r.call_count)
            .max();
        match largest {
            None => Ok(Histograms::new()),
            Some(values) => fetch_histograms(models, query, true, series_fold(values)).await,
        }
    };
    let needs_kept = summed.iter().any(|r| has_small(r.call_count, r.ttft_count));
    let (mut totals, totals_histograms, series_histograms, kept_agrees) = if needs_kept {
        let (totals, series_histograms) = futures::try_join!(
            fetch_stats::<TotalsRow>(models, query, false, Source::Rollups),
            series_histograms
        )?;
        let totals_histograms = match early_totals_histograms {
            Some(histograms) => histograms,
            None if totals.iter().any(|r| is_large(r.call_count, r.ttft_count)) => {
                fetch_histograms(models, query, false, Fold::BucketsFirst).await?
            }
            None => Histograms::new(),
        };
        let agrees = if same_counts(&summed, &totals) {
            Agreement::Agrees
        } else {
            Agreement::CountsDiffer
        };
        (totals, totals_histograms, series_histograms, agrees)
    } else {
        let totals_histograms = async {
            match early_totals_histograms {
                Some(histograms) => Ok(histograms),
                None if summed.is_empty() => Ok(Histograms::new()),
                None => fetch_histograms(models, query, false, Fold::BucketsFirst).await,
            }
        };
        let (totals_histograms, series_histograms) =
            futures::try_join!(totals_histograms, series_histograms)?;
        (
            summed,
            totals_histograms,
            series_histograms,
            Agreement::Agrees,
        )
    };
    let strict = rounds == Rounds::CountsFirst;
    let totals_agree = apply_histograms(
        "latency.totals.histogram",
        &totals_histograms,
        &mut totals,
        strict,
    )?;
    let series_agree = apply_histograms(
        "latency.series.histogram",
        &series_histograms,
        &mut series,
        strict,
    )?;
    let agreement = kept_agrees.and(totals_agree).and(series_agree);
    Ok((assemble(query, totals, series, Source::Rollups)?, agreement))
}

/// Whether two sets of totals hold the same groups with the same counts
/// (in any order).
fn same_counts(a: &[TotalsRow], b: &[TotalsRow]) -> bool {
    fn counts(rows: &[TotalsRow]) -> Vec<([&str; 4], [u64; 3])> {
        let mut out: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    [
                        r.key_provider.as_str(),
                        r.key_model.as_str(),
                        r.key_team.as_str(),
                        r.key_org.as_str(),
                    ],
                    [r.call_count, r.error_count, r.ttft_count],
                )
            })
            .collect();
        out.sort_unstable();
        out
    }
    a.len() == b.len() && counts(a) == counts(b)
}

/// Series points of up to this many values fold their histogram rows as
/// read ([`Fold::RowsAsRead`]); larger ones sum each bucket first. On the
/// 1M-call, 30-day bench data (docs/performance.md, "Latency over long
/// windows") rows-as-read took a fifth to a third of the time at about
/// 1,000 values a point, but more time and six times the memory at 4,000
/// (its lambdas copy a point's arrays once per rank).
const ROWS_AS_READ_MAX_VALUES: u64 = 2 * EXACT_MAX_CALLS;

/// The series histogram's fold when its largest point holds `values`
/// calls.
fn series_fold(values: u64) -> Fold {
    if values <= ROWS_AS_READ_MAX_VALUES {
        Fold::RowsAsRead
    } else {
        Fold::BucketsFirst
    }
}

/// Whether a row has a metric above [`EXACT_MAX_CALLS`] values (its
/// order statistics come from the histogram).
fn is_large(count: u64, ttft: u64) -> bool {
    count > EXACT_MAX_CALLS || ttft > EXACT_MAX_CALLS
}

/// Whether a row has a metric of 1 to [`EXACT_MAX_CALLS`] values (its
/// order statistics come from the kept values).
fn has_small(count: u64, ttft: u64) -> bool {
    (1..=EXACT_MAX_CALLS).contains(&count) || (1..=EXACT_MAX_CALLS).contains(&ttft)
}

/// Each group's totals added up from its series rows, in the totals
/// statement's order (by the grouped keys in `group_by` order), without
/// order statistics: what the report uses when every group's metrics come
/// from the histogram.
fn totals_of(query: &LatencyQuery, series: &[SeriesRow]) -> Vec<TotalsRow> {
    let mut groups: BTreeMap<Vec<&str>, TotalsRow> = BTreeMap::new();
    for row in series {
        let keys = [
            &row.key_provider,
            &row.key_model,
            &row.key_team,
            &row.key_org,
        ];
        let order: Vec<&str> = query
            .group_by
            .iter()
            .map(|d| match d {
                Dimension::Provider => row.key_provider.as_str(),
                Dimension::Model => row.key_model.as_str(),
                Dimension::Team => row.key_team.as_str(),
                Dimension::Org => row.key_org.as_str(),
            })
            .collect();
        let total = groups.entry(order).or_insert_with(|| {
            let [provider, model, team, org] = keys.map(String::clone);
            TotalsRow {
                key_provider: provider,
                key_model: model,
                key_team: team,
                key_org: org,
                call_count: 0,
                error_count: 0,
                duration_order_stats: Vec::new(),
                ttft_order_stats: Vec::new(),
                ttft_count: 0,
            }
        });
        total.call_count += row.call_count;
        total.error_count += row.error_count;
        total.ttft_count += row.ttft_count;
    }
    groups.into_values().collect()
}

/// A row of the kept-values statements, as the histograms see it.
trait StatsRow {
    /// Its [`RowKey`] (bucket start 0 for the totals).
    fn key(&self) -> RowKey;
    /// Each metric's value count and order statistics.
    fn metrics(&mut self) -> [(u64, &mut Vec<f64>); 2];
}

impl StatsRow for TotalsRow {
    fn key(&self) -> RowKey {
        row_key(
            0,
            [
                &self.key_provider,
                &self.key_model,
                &self.key_team,
                &self.key_org,
            ],
        )
    }
    fn metrics(&mut self) -> [(u64, &mut Vec<f64>); 2] {
        [
            (self.call_count, &mut self.duration_order_stats),
            (self.ttft_count, &mut self.ttft_order_stats),
        ]
    }
}

impl StatsRow for SeriesRow {
    fn key(&self) -> RowKey {
        row_key(
            self.bucket_start,
            [
                &self.key_provider,
                &self.key_model,
                &self.key_team,
                &self.key_org,
            ],
        )
    }
    fn metrics(&mut self) -> [(u64, &mut Vec<f64>); 2] {
        [
            (self.call_count, &mut self.duration_order_stats),
            (self.ttft_count, &mut self.ttft_order_stats),
        ]
    }
}

/// [`use_histograms`] for every row of one statement; whether every
/// histogram used is of exactly its row's values.
fn apply_histograms<R: StatsRow>(
    statement: &'static str,
    histograms: &Histograms,
    rows: &mut [R],
    strict: bool,
) -> Result<Agreement, ReadModelError> {
    let mut agreement = Agreement::Agrees;
    for row in rows {
        let key = row.key();
        let [duration, ttft] = row.metrics();
        agreement = agreement.and(use_histograms(
            statement, histograms, key, duration, ttft, strict,
        )?);
    }
    Ok(agreement)
}

/// Replace the kept values' order statistics of each metric of one row
/// that has more than [`EXACT_MAX_CALLS`] values with the histogram's;
/// whether each histogram counts as many values as the row. A missing
/// histogram is an error when `strict` (it was read after the row's
/// count, which only grows), else [`Agreement::MissingHistogram`].
fn use_histograms(
    statement: &'static str,
    histograms: &Histograms,
    key: RowKey,
    duration: (u64, &mut Vec<f64>),
    ttft: (u64, &mut Vec<f64>),
    strict: bool,
) -> Result<Agreement, ReadModelError> {
    let mut key = (key, Metric::Duration);
    let mut agreement = Agreement::Agrees;
    for (metric, (count, stats)) in [(Metric::Duration, duration), (Metric::Ttft, ttft)] {
        if count <= EXACT_MAX_CALLS {
            continue;
        }
        key.1 = metric;
        match histograms.get(&key) {
            Some((values, histogram)) => {
                if *values != count {
                    agreement = agreement.and(Agreement::CountsDiffer);
                }
                stats.clone_from(histogram);
            }
            None if strict => return Err(missing_histogram(statement, &key, count)),
            None => agreement = Agreement::MissingHistogram,
        }
    }
    Ok(agreement)
}

fn missing_histogram(
    statement: &'static str,
    key: &(RowKey, Metric),
    count: u64,
) -> ReadModelError {
    let ((bucket_start, provider, model, team, org), metric) = key;
    ReadModelError::UnexpectedRow {
        query: statement,
        detail: format!(
            "no histogram for provider {provider:?}, model {model:?}, team {team:?}, org {org:?}, \
             bucket {bucket_start}, {metric:?}: the kept values count {count} (more than {EXACT_MAX_CALLS}); \
             are latency_minute_buckets and latency_minute_calls from the same migrations and retention?"
        ),
    }
}

/// The rows of one kept-values statement: the series (`bucketed`) or the
/// totals.
async fn fetch_stats<R>(
    models: &ReadModels,
    query: &LatencyQuery,
    bucketed: bool,
    source: Source,
) -> Result<Vec<R>, ReadModelError>
where
    R: clickhouse::RowOwned + clickhouse::RowRead,
{
    let name = match (source, bucketed) {
        (Source::Rollups, true) => "latency.series",
        (Source::Rollups, false) => "latency.totals",
        (Source::Calls | Source::CallCounts, true) => "latency.calls.series",
        (Source::Calls, false) => "latency.calls.totals",
        (Source::CallCounts, false) => "latency.calls.counted.totals",
    };
    let sql = stats_sql(name, query, bucketed, source);
    models
        .bounded(sql.query(models.client()).fetch_all::<R>())
        .await
        .map_err(|err| models.classify(sql.name, err))
}

/// The histograms of the large groups of the totals (`bucketed` false) or
/// of the series, by row and metric.
async fn fetch_histograms(
    models: &ReadModels,
    query: &LatencyQuery,
    bucketed: bool,
    fold: Fold,
) -> Result<Histograms, ReadModelError> {
    let name = if bucketed {
        "latency.series.histogram"
    } else {
        "latency.totals.histogram"
    };
    let sql = histogram_sql(name, query, bucketed, fold);
    let rows = models
        .bounded(sql.query(models.client()).fetch_all::<HistogramRow>())
        .await
        .map_err(|err| models.classify(sql.name, err))?;
    by_group(
        sql.name,
        rows.into_iter().map(|row| {
            let key = (
                row.bucket_start,
                row.key_provider,
                row.key_model,
                row.key_team,
                row.key_org,
            );
            (key, row.metric, (row.value_count, row.order_stats))
        }),
    )
}

pub(crate) async fn dimensions(
    models: &ReadModels,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    org: Option<&str>,
) -> Result<Vec<(String, String)>, ReadModelError> {
    let sql = dimensions_sql(from, to, org);
    let rows = models
        .bounded(sql.query(models.client()).fetch_all::<DimensionRow>())
        .await
        .map_err(|err| models.classify(sql.name, err))?;
    Ok(rows
        .into_iter()
        .map(|row| (row.provider, row.model))
        .collect())
}

fn stats(
    query_name: &'static str,
    source: Source,
    count: u64,
    errors: u64,
    duration: &[f64],
    ttft: &[f64],
    ttft_count: u64,
) -> Result<Stats, ReadModelError> {
    let percentiles = |n: u64, values: &[f64]| {
        let read = if source.exact_at_any_count() {
            Percentiles::of_every_value(n, values)
        } else {
            Percentiles::from_order_stats(n, values)
        };
        read.ok_or_else(|| ReadModelError::UnexpectedRow {
            query: query_name,
            detail: format!(
                "expected {} finite order statistics, got {values:?}",
                2 * LEVELS.len()
            ),
        })
    };
    Ok(Stats {
        count,
        errors,
        error_rate: if count == 0 {
            0.0
        } else {
            errors as f64 / count as f64
        },
        duration_ms: percentiles(count, duration)?,
        ttft_count,
        ttft_ms: if ttft_count == 0 {
            None
        } else {
            Some(percentiles(ttft_count, ttft)?)
        },
    })
}

/// Rows to report. Totals and series are two statements; a call that lands
/// between them can appear in one and not the other, so a series point whose
/// group has no total is dropped (it shows on the next read).
fn assemble(
    query: &LatencyQuery,
    totals: Vec<TotalsRow>,
    series: Vec<SeriesRow>,
    source: Source,
) -> Result<LatencyReport, ReadModelError> {
    let mut groups = Vec::with_capacity(totals.len());
    let mut index = HashMap::with_capacity(totals.len());
    // An ungrouped aggregate returns one row even over no data.
    for row in totals.into_iter().filter(|row| row.call_count > 0) {
        let key = GroupKey::from_row(
            &query.group_by,
            &row.key_provider,
            &row.key_model,
            &row.key_team,
            &row.key_org,
        );
        let total = stats(
            "latency.totals",
            source,
            row.call_count,
            row.error_count,
            &row.duration_order_stats,
            &row.ttft_order_stats,
            row.ttft_count,
        )?;
        index.insert(key.clone(), groups.len());
        groups.push(LatencyGroup {
            key,
            total,
            series: Vec::new(),
        });
    }
    for row in series.into_iter().filter(|row| row.call_count > 0) {
        let key = GroupKey::from_row(
            &query.group_by,
            &row.key_provider,
            &row.key_model,
            &row.key_team,
            &row.key_org,
        );
        let Some(&at) = index.get(&key) else {
            tracing::debug!(group = %key.label(), "series point without a total, dropped");
            continue;
        };
        let stats = stats(
            "latency.series",
            source,
            row.call_count,
            row.error_count,
            &row.duration_order_stats,
            &row.ttft_order_stats,
            row.ttft_count,
        )?;
        if let Some(group) = groups.get_mut(at) {
            group.series.push(SeriesPoint {
                bucket_start: timestamp(i64::from(row.bucket_start)),
                stats,
            });
        }
    }
    Ok(LatencyReport {
        from: query.from,
        to: query.to,
        bucket_secs: query.bucket_secs,
        group_by: query.group_by.clone(),
        groups,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// What `GET /api/v1/reports/latency` returns for the sample report.
    #[test]
    fn json_snapshot() {
        let report = crate::samples::latency_report();
        insta::assert_snapshot!(serde_json::to_string_pretty(&report).unwrap());
    }

    /// The totals CSV of the sample report: the JSON's totals, a row per
    /// group.
    #[test]
    fn totals_csv_snapshot() {
        let report = crate::samples::latency_report();
        insta::assert_snapshot!(totals_table(&report).to_csv());
    }

    fn t(text: &str) -> DateTime<Utc> {
        parse_time("t", text).unwrap()
    }

    fn params(pairs: &[(&str, &str)]) -> LatencyParams {
        let mut p = LatencyParams::default();
        for (name, value) in pairs {
            let value = Some(value.to_string());
            match *name {
                "from" => p.from = value,
                "to" => p.to = value,
                "bucket" => p.bucket = value,
                "group_by" => p.group_by = value,
                "provider" => p.provider = value,
                "model" => p.model = value,
                "team" => p.team = value,
                "org" => p.org = value,
                other => panic!("unknown {other}"),
            }
        }
        p
    }

    fn now() -> DateTime<Utc> {
        t("2026-03-01T12:34:56.5Z")
    }

    #[test]
    fn defaults_are_last_hour_by_provider_and_model() {
        let q = params(&[]).to_query(now()).unwrap();
        assert_eq!(q.from, t("2026-03-01T11:34:00Z"));
        assert_eq!(q.to, t("2026-03-01T12:35:00Z"));
        assert_eq!(q.bucket_secs, 60);
        assert_eq!(q.group_by, vec![Dimension::Provider, Dimension::Model]);
        assert_eq!(q.filters, LatencyFilters::default());
    }

    #[test]
    fn window_is_widened_to_whole_minutes() {
        let q = params(&[
            ("from", "2026-03-01T10:00:30Z"),
            ("to", "2026-03-01T11:00:00Z"),
        ])
        .to_query(now())
        .unwrap();
        assert_eq!(q.from, t("2026-03-01T10:00:00Z"));
        assert_eq!(q.to, t("2026-03-01T11:00:00Z"));
        let q = params(&[
            ("from", "2026-03-01T10:00:00+02:00"),
            ("to", "2026-03-01T08:59:59.001Z"),
        ])
        .to_query(now())
        .unwrap();
        assert_eq!(q.from, t("2026-03-01T08:00:00Z"));
        assert_eq!(q.to, t("2026-03-01T09:00:00Z"));
    }

    #[test]
    fn default_bucket_follows_range() {
        let cases = [
            ("2026-03-01T12:00:00Z", 60),     // 15 minutes
            ("2026-03-01T06:15:00Z", 300),    // 6 hours
            ("2026-02-28T12:15:00Z", 900),    // 24 hours
            ("2026-02-22T12:15:00Z", 3_600),  // 7 days
            ("2026-02-01T12:15:00Z", 21_600), // 28 days
        ];
        for (from, want) in cases {
            let q = params(&[("from", from), ("to", "2026-03-01T12:15:00Z")])
                .to_query(now())
                .unwrap();
            assert_eq!(q.bucket_secs, want, "from {from}");
        }
    }

    #[test]
    fn bucket_parsing() {
        assert_eq!(parse_bucket("1m").unwrap(), 60);
        assert_eq!(parse_bucket("120s").unwrap(), 120);
        assert_eq!(parse_bucket("5m").unwrap(), 300);
        assert_eq!(parse_bucket("1h").unwrap(), 3_600);
        assert_eq!(parse_bucket("1d").unwrap(), 86_400);
        for bad in [
            "",
            "m",
            "5",
            "5x",
            "-5m",
            "1.5h",
            "30s",
            "90s",
            "99999999999d",
            "32d",
        ] {
            let err = parse_bucket(bad).unwrap_err();
            assert_eq!(err.field, "bucket", "{bad}");
        }
        assert_eq!(format_bucket(300), "5m");
        assert_eq!(format_bucket(7_200), "2h");
        assert_eq!(format_bucket(86_400), "1d");
        assert_eq!(format_bucket(90), "90s");
    }

    /// `(parameters, rejected parameter, part of the reason)`.
    type BadCase = (
        &'static [(&'static str, &'static str)],
        &'static str,
        &'static str,
    );

    #[test]
    fn each_bad_parameter_is_named() {
        let cases: [BadCase; 9] = [
            (&[("from", "yesterday")], "from", "RFC 3339"),
            (&[("to", "2026-13-01T00:00:00Z")], "to", "RFC 3339"),
            (
                &[
                    ("from", "2026-03-01T12:00:00Z"),
                    ("to", "2026-03-01T11:00:00Z"),
                ],
                "from",
                "earlier than",
            ),
            (
                &[
                    ("from", "2026-03-01T12:00:00Z"),
                    ("to", "2026-03-01T12:00:00Z"),
                ],
                "from",
                "earlier than",
            ),
            (
                &[
                    ("from", "2025-01-01T00:00:00Z"),
                    ("to", "2026-03-01T12:00:00Z"),
                ],
                "from",
                "at most 31 days",
            ),
            (
                &[("group_by", "provider,region")],
                "group_by",
                "unknown dimension `region`",
            ),
            (&[("group_by", "model,model")], "group_by", "twice"),
            (
                &[
                    ("from", "2026-02-01T00:00:00Z"),
                    ("to", "2026-03-01T00:00:00Z"),
                    ("bucket", "1m"),
                ],
                "bucket",
                "buckets; at most 1440",
            ),
            (&[("bucket", "fast")], "bucket", "not a duration"),
        ];
        for (pairs, parameter, reason) in cases {
            let err = params(pairs).to_query(now()).unwrap_err();
            assert_eq!(err.field, parameter, "{pairs:?}: {err}");
            assert!(err.reason.contains(reason), "{pairs:?}: {err}");
        }
        let long = "x".repeat(300);
        let err = params(&[("model", &long)]).to_query(now()).unwrap_err();
        assert_eq!(err.field, "model");
    }

    #[test]
    fn empty_values_mean_absent() {
        let q = params(&[
            ("from", ""),
            ("provider", ""),
            ("model", " "),
            ("bucket", ""),
        ])
        .to_query(now())
        .unwrap();
        assert_eq!(q.filters, LatencyFilters::default());
        let q = params(&[("group_by", "")]).to_query(now()).unwrap();
        assert!(q.group_by.is_empty());
        let q = params(&[("group_by", " team , provider ")])
            .to_query(now())
            .unwrap();
        assert_eq!(q.group_by, vec![Dimension::Team, Dimension::Provider]);
    }

    #[test]
    fn bucket_count_counts_aligned_buckets() {
        // 10:02..10:07 with 5m buckets touches 10:00 and 10:05.
        assert_eq!(bucket_count(36_120, 36_420, 300), 2);
        assert_eq!(bucket_count(36_000, 36_300, 300), 1);
        // Exactly the limit is allowed.
        let q = LatencyQuery::new(
            t("2026-03-01T00:00:00Z"),
            t("2026-03-02T00:00:00Z"),
            Some(60),
            vec![],
            LatencyFilters::default(),
        );
        assert!(q.is_ok());
    }

    fn sample_query() -> LatencyQuery {
        LatencyQuery {
            from: t("2026-01-01T00:00:00Z"),
            to: t("2026-01-01T01:00:00Z"),
            bucket_secs: 300,
            group_by: vec![Dimension::Model, Dimension::Provider],
            filters: LatencyFilters {
                team: Some("team'a".into()),
                ..LatencyFilters::default()
            },
        }
    }

    #[test]
    fn series_sql_text() {
        let sql = stats_sql("latency.series", &sample_query(), true, Source::Rollups).text();
        let (with, rest) = sql.split_once(" SELECT ").unwrap();
        assert_eq!(
            with,
            "WITH arraySort(groupArrayMerge(1000)(duration_sample)) AS d_sample, \
             toUInt64(greatest(countMerge(calls), 1) - 1) AS d_last, \
             arraySort(groupArrayIfMerge(1000)(ttft_sample)) AS t_sample, \
             toUInt64(greatest(sumMerge(ttft_calls), 1) - 1) AS t_last"
        );
        assert!(
            rest.starts_with(
                "toDateTime(intDiv(toUInt32(minute), 300) * 300) AS bucket_start, \
                 provider AS key_provider, model AS key_model, '' AS key_team, '' AS key_org, \
                 countMerge(calls) AS call_count, sumMerge(errors) AS error_count, \
                 [toFloat64(d_sample[toUInt64(floor(d_last * 0.5)) + 1]), \
                 toFloat64(d_sample[least(toUInt64(floor(d_last * 0.5)) + 1, d_last) + 1]), \
                 toFloat64(d_sample[toUInt64(floor(d_last * 0.9)) + 1]), \
                 toFloat64(d_sample[least(toUInt64(floor(d_last * 0.9)) + 1, d_last) + 1]), \
                 toFloat64(d_sample[toUInt64(floor(d_last * 0.95)) + 1]), \
                 toFloat64(d_sample[least(toUInt64(floor(d_last * 0.95)) + 1, d_last) + 1]), \
                 toFloat64(d_sample[toUInt64(floor(d_last * 0.99)) + 1]), \
                 toFloat64(d_sample[least(toUInt64(floor(d_last * 0.99)) + 1, d_last) + 1])] \
                 AS duration_order_stats, [toFloat64(t_sample["
            ),
            "{rest}"
        );
        assert!(
            rest.ends_with(
                "AS ttft_order_stats, sumMerge(ttft_calls) AS ttft_count \
                 FROM latency_minute_calls WHERE minute >= toDateTime(1767225600) \
                 AND minute < toDateTime(1767229200) AND team_id = 'team\\'a' \
                 GROUP BY key_model, key_provider, bucket_start \
                 ORDER BY key_model, key_provider, bucket_start"
            ),
            "{rest}"
        );
    }

    /// The histogram statement groups like the series statement it
    /// completes, and reads only the bucket table.
    #[test]
    fn histogram_sql_matches_the_series_keys() {
        let sql = histogram_sql(
            "latency.series.histogram",
            &sample_query(),
            true,
            Fold::RowsAsRead,
        )
        .text();
        assert!(
            sql.contains(
                "SELECT toUInt32(intDiv(toUInt32(minute), 300) * 300) AS bucket_start, \
                 provider AS key_provider, model AS key_model, '' AS key_team, '' AS key_org, \
                 metric, sum(calls) AS value_count, "
            ),
            "{sql}"
        );
        assert!(
            sql.ends_with(
                "FROM latency_minute_buckets \
                 WHERE minute >= toDateTime(1767225600) AND minute < toDateTime(1767229200) \
                 AND team_id = 'team\\'a' GROUP BY bucket_start, key_provider, key_model, metric \
                 HAVING value_count > 1000 ORDER BY bucket_start, key_provider, key_model, metric"
            ),
            "{sql}"
        );
        assert!(!sql.contains("latency_minute_calls"), "{sql}");
        let totals = histogram_sql(
            "latency.totals.histogram",
            &sample_query(),
            false,
            Fold::BucketsFirst,
        )
        .text();
        assert!(
            totals.contains("SELECT toUInt32(0) AS bucket_start, "),
            "{totals}"
        );
        assert!(
            totals.contains("GROUP BY key_provider, key_model, metric, bucket)"),
            "{totals}"
        );
        assert!(
            totals.ends_with(
                "GROUP BY key_provider, key_model, metric HAVING value_count > 1000 \
                 ORDER BY key_provider, key_model, metric"
            ),
            "{totals}"
        );
    }

    /// A group above the threshold takes the histogram's order statistics
    /// for each metric above it, and keeps the kept values' for the other.
    /// A histogram of another number of values than its row counts is a
    /// disagreement (read again); a missing one is a disagreement when the
    /// histogram was read beside the counts, and an error naming the
    /// statement when it was read after them.
    #[test]
    fn histograms_replace_only_large_metrics() {
        let key: RowKey = (0, "p".into(), "m".into(), String::new(), String::new());
        let mut histograms = Histograms::new();
        histograms.insert((key.clone(), Metric::Duration), (1_001, vec![9.0; 8]));
        let mut duration = vec![1.0; 8];
        let mut ttft = vec![2.0; 8];
        let lookup = |duration: (u64, &mut Vec<f64>), ttft: (u64, &mut Vec<f64>), strict| {
            use_histograms("q", &histograms, key.clone(), duration, ttft, strict)
        };
        let agreement = lookup((1_001, &mut duration), (1_000, &mut ttft), true).unwrap();
        assert_eq!(agreement, Agreement::Agrees);
        assert_eq!((duration[0], ttft[0]), (9.0, 2.0));

        let mut duration = vec![1.0; 8];
        let grown = lookup((1_002, &mut duration), (0, &mut ttft), true).unwrap();
        assert_eq!(
            grown,
            Agreement::CountsDiffer,
            "a histogram of 1001 values for a row of 1002"
        );

        let missing = lookup((5, &mut duration), (1_001, &mut ttft), false).unwrap();
        assert_eq!(
            missing,
            Agreement::MissingHistogram,
            "read beside the counts, a missing histogram is read again"
        );
        let err = lookup((5, &mut duration), (1_001, &mut ttft), true).unwrap_err();
        assert!(
            err.to_string().contains("no histogram for provider \"p\""),
            "{err}"
        );
    }

    /// The constants the SQL and the bound are built from are the ones the
    /// migration stores with.
    #[test]
    fn constants_match_the_migration() {
        let migration = include_str!("../../../migrations/clickhouse/0026_latency_minute_hist.sql");
        assert!(migration.contains(&format!("groupArray({EXACT_MAX_CALLS})")));
        assert!(migration.contains(&format!("groupArrayIf({EXACT_MAX_CALLS})")));
        assert!(migration.contains(&format!(
            "intDiv(roundToExp2(v), {HISTOGRAM_BUCKETS_PER_OCTAVE})"
        )));
        let buckets =
            include_str!("../../../migrations/clickhouse/0036_latency_minute_buckets.sql");
        for value in ["duration_ms", "ttft_ms"] {
            assert!(buckets.contains(&format!(
                "intDiv(roundToExp2(toUInt64({value}) * 1000), {HISTOGRAM_BUCKETS_PER_OCTAVE})"
            )));
        }
        assert_eq!(HISTOGRAM_MAX_RELATIVE_ERROR, 0.00390625);
    }

    /// The order statistics the SQL returns for sorted `values`, exactly as
    /// its exact path picks them.
    fn exact_order_stats(values: &[f64]) -> Vec<f64> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let last = sorted.len().saturating_sub(1);
        LEVELS
            .iter()
            .flat_map(|q| {
                let lo = (last as f64 * q).floor() as usize;
                [sorted[lo], sorted[(lo + 1).min(last)]]
            })
            .map(|ms| ms * 1_000.0)
            .collect()
    }

    /// numpy.percentile(values, [50, 95, 99]) (method "linear", type 7),
    /// written out for the group of 102 calls whose top values are
    /// 1749, 1782 and a 60002 ms timeout: h = 101 q, so p99 interpolates
    /// 0.99 of the way from the 100th to the 101st value.
    #[test]
    fn percentiles_are_type_7_interpolation() {
        let mut values: Vec<f64> = (0..99).map(|i| 100.0 + f64::from(i) * 10.0).collect();
        values.extend([1_749.0, 1_782.0, 60_002.0]);
        let p = Percentiles::from_order_stats(102, &exact_order_stats(&values)).unwrap();
        // p50: h = 50.5 -> 600 + 0.5 * 10.
        assert_eq!(p.p50, 605.0);
        // p95: h = 95.95 -> 1050 + 0.95 * 10.
        assert_eq!(p.p95, 1_059.5);
        // p99: h = 99.99 -> 1749 + 0.99 * 33.
        assert_eq!(p.p99, 1_781.67);
        assert_eq!(p.method, PercentileMethod::Exact);
        assert_eq!(p.max_relative_error, 0.0);

        // One value: every percentile is that value.
        let p = Percentiles::from_order_stats(1, &exact_order_stats(&[42.5])).unwrap();
        assert_eq!((p.p50, p.p95, p.p99), (42.5, 42.5, 42.5));
        // Sub-millisecond results are kept: 50 x 7 ms and 50 x 8 ms.
        let values: Vec<f64> = (0..100).map(|i| if i < 50 { 7.0 } else { 8.0 }).collect();
        let p = Percentiles::from_order_stats(100, &exact_order_stats(&values)).unwrap();
        assert_eq!(p.p50, 7.5);
    }

    #[test]
    fn above_the_threshold_values_are_marked_estimates() {
        let p = Percentiles::from_order_stats(EXACT_MAX_CALLS, &[1.0; 8]).unwrap();
        assert!(!p.is_estimate());
        let p = Percentiles::from_order_stats(EXACT_MAX_CALLS + 1, &[1.0; 8]).unwrap();
        assert!(p.is_estimate());
        assert_eq!(p.method, PercentileMethod::Histogram);
        assert_eq!(p.max_relative_error, HISTOGRAM_MAX_RELATIVE_ERROR);
        let json = serde_json::to_value(p).unwrap();
        assert_eq!(json["method"], "histogram");
        assert_eq!(json["max_relative_error"], 0.00390625);
        assert!(Percentiles::from_order_stats(
            2_000,
            &[1.0, 2.0, f64::NAN, 1.0, 1.0, 1.0, 1.0, 1.0]
        )
        .is_none());
    }

    fn series_row(bucket: u32, provider: &str, model: &str, counts: [u64; 3]) -> SeriesRow {
        SeriesRow {
            bucket_start: bucket,
            key_provider: provider.into(),
            key_model: model.into(),
            key_team: String::new(),
            key_org: String::new(),
            call_count: counts[0],
            error_count: counts[1],
            duration_order_stats: vec![1e3; 8],
            ttft_order_stats: vec![1e3; 8],
            ttft_count: counts[2],
        }
    }

    /// The totals added up from the series: each group's counts, in the
    /// totals statement's order (by the keys in `group_by` order), no
    /// order statistics.
    #[test]
    fn totals_of_adds_up_the_series_in_key_order() {
        let query = LatencyQuery {
            group_by: vec![Dimension::Model, Dimension::Provider],
            ..sample_query()
        };
        let series = vec![
            series_row(0, "openai", "b", [1_500, 3, 0]),
            series_row(0, "anthropic", "c", [7, 0, 7]),
            series_row(300, "openai", "b", [600, 2, 0]),
            series_row(300, "zeta", "a", [2, 1, 1]),
        ];
        let totals: Vec<(String, String, u64, u64, u64, bool)> = totals_of(&query, &series)
            .into_iter()
            .map(|t| {
                (
                    t.key_model,
                    t.key_provider,
                    t.call_count,
                    t.error_count,
                    t.ttft_count,
                    t.duration_order_stats.is_empty() && t.ttft_order_stats.is_empty(),
                )
            })
            .collect();
        assert_eq!(
            totals,
            vec![
                ("a".into(), "zeta".into(), 2, 1, 1, true),
                ("b".into(), "openai".into(), 2_100, 5, 0, true),
                ("c".into(), "anthropic".into(), 7, 0, 7, true),
            ]
        );
    }

    #[test]
    fn series_fold_follows_the_largest_point() {
        assert_eq!(series_fold(1_001), Fold::RowsAsRead);
        assert_eq!(series_fold(2_000), Fold::RowsAsRead);
        assert_eq!(series_fold(2_001), Fold::BucketsFirst);
    }

    #[test]
    fn has_small_and_is_large_split_each_metric() {
        assert!(has_small(1_000, 0) && !is_large(1_000, 0));
        assert!(!has_small(1_001, 0) && is_large(1_001, 0));
        assert!(has_small(5_000, 1_000) && is_large(5_000, 1_000));
        assert!(!has_small(5_000, 1_001));
    }

    #[test]
    fn totals_sql_without_grouping_has_no_group_by() {
        let query = LatencyQuery {
            group_by: vec![],
            filters: LatencyFilters::default(),
            ..sample_query()
        };
        let sql = stats_sql("latency.totals", &query, false, Source::Rollups).text();
        assert!(
            sql.contains(" SELECT '' AS key_provider, '' AS key_model"),
            "{sql}"
        );
        assert!(!sql.contains("GROUP BY"), "{sql}");
        assert!(sql.ends_with("minute < toDateTime(1767229200)"), "{sql}");
    }

    fn totals_row(provider: &str, model: &str, count: u64) -> TotalsRow {
        TotalsRow {
            key_provider: provider.into(),
            key_model: model.into(),
            key_team: String::new(),
            key_org: String::new(),
            call_count: count,
            error_count: 1,
            duration_order_stats: vec![100e3, 100e3, 150e3, 150e3, 200e3, 200e3, 300e3, 300e3],
            ttft_order_stats: vec![0.0; 8],
            ttft_count: 0,
        }
    }

    /// A missing histogram outweighs counts that differ, which outweigh
    /// agreement: a reading is only as good as its worst statement.
    #[test]
    fn a_reading_agrees_only_when_every_statement_does() {
        use Agreement::{Agrees, CountsDiffer, MissingHistogram};
        assert_eq!(Agrees.and(Agrees), Agrees);
        assert_eq!(Agrees.and(CountsDiffer), CountsDiffer);
        assert_eq!(CountsDiffer.and(Agrees), CountsDiffer);
        assert_eq!(CountsDiffer.and(MissingHistogram), MissingHistogram);
        assert_eq!(MissingHistogram.and(Agrees), MissingHistogram);
        assert_eq!(MissingHistogram.and(CountsDiffer), MissingHistogram);
    }

    /// The totals statement's counts are compared with the series' sums in
    /// any order; a call counted in one and not the other, or a group in
    /// one only, makes the report read again.
    #[test]
    fn totals_agree_with_the_series_only_on_every_count() {
        let summed = vec![
            totals_row("anthropic", "claude", 4),
            totals_row("openai", "gpt-4o", 2),
        ];
        let reordered = vec![
            totals_row("openai", "gpt-4o", 2),
            totals_row("anthropic", "claude", 4),
        ];
        assert!(same_counts(&summed, &reordered));
        let grown = vec![
            totals_row("anthropic", "claude", 5),
            totals_row("openai", "gpt-4o", 2),
        ];
        assert!(!same_counts(&summed, &grown));
        let mut more_errors = reordered.clone();
        more_errors[0].error_count += 1;
        assert!(!same_counts(&summed, &more_errors));
        let mut streamed = reordered.clone();
        streamed[1].ttft_count += 1;
        assert!(!same_counts(&summed, &streamed));
        let new_group = vec![
            totals_row("anthropic", "claude", 4),
            totals_row("openai", "gpt-4o", 2),
            totals_row("mistral", "large", 1),
        ];
        assert!(!same_counts(&summed, &new_group));
        assert!(!same_counts(&summed, &summed[..1]));
    }

    #[test]
    fn assemble_groups_series_under_totals() {
        let query = LatencyQuery {
            group_by: vec![Dimension::Provider, Dimension::Model],
            ..sample_query()
        };
        let totals = vec![
            totals_row("anthropic", "claude", 4),
            totals_row("openai", "gpt-4o", 2),
        ];
        let series = vec![
            SeriesRow {
                bucket_start: 1_767_225_600,
                key_provider: "anthropic".into(),
                key_model: "claude".into(),
                key_team: String::new(),
                key_org: String::new(),
                call_count: 4,
                error_count: 1,
                duration_order_stats: vec![
                    1e3,
                    1e3,
                    1.5e3,
                    1.5e3,
                    2e3,
                    2e3,
                    3_123.456_7,
                    3_123.456_7,
                ],
                ttft_order_stats: vec![10e3, 10e3, 15e3, 15e3, 20e3, 20e3, 30e3, 30e3],
                ttft_count: 3,
            },
            SeriesRow {
                bucket_start: 1_767_225_900,
                key_provider: "mistral".into(),
                key_model: "late-arrival".into(),
                key_team: String::new(),
                key_org: String::new(),
                call_count: 1,
                error_count: 0,
                duration_order_stats: vec![1e3; 8],
                ttft_order_stats: vec![0.0; 8],
                ttft_count: 0,
            },
        ];
        let report = assemble(&query, totals, series, Source::Rollups).unwrap();
        assert_eq!(report.groups.len(), 2);
        let first = &report.groups[0];
        assert_eq!(first.key.label(), "anthropic / claude");
        assert_eq!(first.total.error_rate, 0.25);
        assert_eq!(first.total.ttft_ms, None);
        assert_eq!(first.series.len(), 1);
        let point = &first.series[0];
        assert_eq!(point.bucket_start, t("2026-01-01T00:00:00Z"));
        assert_eq!(point.stats.duration_ms.p99, 3.123);
        assert_eq!(point.stats.ttft_ms.unwrap().p95, 20.0);
        assert!(report.groups[1].series.is_empty());

        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["groups"][0]["key"],
            serde_json::json!({"provider": "anthropic", "model": "claude"})
        );
        assert_eq!(
            json["groups"][0]["total"]["ttft_ms"],
            serde_json::Value::Null
        );
        assert_eq!(json["group_by"], serde_json::json!(["provider", "model"]));
        assert_eq!(json["from"], "2026-01-01T00:00:00Z");
    }

    /// The same large group is a histogram estimate from the rollups and
    /// exact from the calls (whose order statistics are of every value).
    #[test]
    fn a_large_group_is_exact_only_from_the_calls() {
        let method = |source| {
            let mut row = totals_row("openai", "big", EXACT_MAX_CALLS + 1);
            row.duration_order_stats = vec![1e3; 8];
            let report = assemble(&sample_query(), vec![row], vec![], source).unwrap();
            let total = &report.groups[0].total;
            (
                total.duration_ms.method,
                total.duration_ms.max_relative_error,
            )
        };
        assert_eq!(
            method(Source::Rollups),
            (PercentileMethod::Histogram, HISTOGRAM_MAX_RELATIVE_ERROR)
        );
        assert_eq!(method(Source::Calls), (PercentileMethod::Exact, 0.0));
    }

    #[test]
    fn empty_ungrouped_total_is_no_group() {
        let query = LatencyQuery {
            group_by: vec![],
            ..sample_query()
        };
        let report =
            assemble(&query, vec![totals_row("", "", 0)], vec![], Source::Rollups).unwrap();
        assert!(report.groups.is_empty());
    }

    #[test]
    fn wrong_quantile_arity_is_an_error() {
        let mut row = totals_row("a", "b", 1);
        row.duration_order_stats = vec![1.0];
        let err = assemble(&sample_query(), vec![row], vec![], Source::Rollups).unwrap_err();
        assert!(
            err.to_string()
                .contains("expected 8 finite order statistics"),
            "{err}"
        );
    }
}
