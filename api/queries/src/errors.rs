//! The error-patterns reports: the distinct failure patterns of a window
//! (`GET /api/v1/reports/errors`) and one pattern's drill-down with sample
//! messages and what recovery worked (`.../errors/{signature}`), read from
//! the error-patterns fold's tables (migration 0031): `error_patterns_minute`
//! (failures and how calls ended), `error_pattern_catalog` (template, first
//! and last seen), `error_recovery_minute` (recovery attempts), the learned
//! `error_pattern_merges`, and sample messages from `calls`.
//!
//! The fold counts by raw signature id; this module groups raw ids into
//! patterns by their canonical id under the learned merges
//! ([`CanonicalIds`]: the smallest id of a merged group), so a page lists a
//! pattern once whatever replica learned which merge when. First and last
//! seen, and so "new", are of the pattern anywhere (not only under the
//! report's filters): a pattern is new when nobody saw it before the
//! window.
//!
//! Requests are validated as the latency report's are (`from`, `to`,
//! `bucket`, `provider`, `model`, `team`, `org`; whole minutes, at most 31
//! days); the bucket is the sparkline's.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use clickhouse::Row;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use tollgate_contract::cost::{from_mantissa, round};
use tollgate_contract::signature::{CanonicalIds, Merge, SignatureId};

use super::latency::{epoch, Dimension, LatencyFilters, LatencyParams, BUCKET};
use super::params::{InvalidParameter, QueryParams};
use super::table::{usd, Table};
use super::{BoundSql, ReadModelError, ReadModels, SqlValue};

/// How many team and key names a pattern lists next to their counts.
pub const NAMES_SHOWN: usize = 3;
/// How many sample messages a drill-down shows.
pub const SAMPLES: u64 = 5;

/// A validated errors request: the window (whole minutes), the sparkline's
/// bucket and the filters (the failing provider and model, the calling
/// team and org).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorsQuery {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bucket_secs: u32,
    pub filters: LatencyFilters,
}

impl ErrorsQuery {
    /// The parameter names [`parse_params`] reads besides the caller's own.
    pub const NAMES: [&'static str; 7] =
        ["from", "to", "bucket", "provider", "model", "team", "org"];
}

/// Read an errors request's query string: the window and filters as the
/// latency report takes them (defaults: the last hour, a bucket giving
/// at most about 200 points), plus the parameters in `extra`, which the
/// caller reads from the returned [`QueryParams`] (e.g. `format`).
pub fn parse_params(
    pairs: &[(String, String)],
    now: DateTime<Utc>,
    extra: &[&str],
) -> Result<(ErrorsQuery, QueryParams), InvalidParameter> {
    let (window, params) = LatencyParams::window(pairs, now, &ErrorsQuery::NAMES, extra)?;
    Ok((
        ErrorsQuery {
            from: window.from,
            to: window.to,
            bucket_secs: window.bucket_secs,
            filters: window.filters,
        },
        params,
    ))
}

/// A signature id from a URL path segment, or an error naming `signature`.
pub fn parse_signature(text: &str) -> Result<SignatureId, InvalidParameter> {
    text.parse().map_err(|_| {
        InvalidParameter::new(
            "signature",
            format!(
                "`{}` is not a signature id (16 lowercase hex digits)",
                text.chars().take(40).collect::<String>()
            ),
        )
    })
}

// ---------------------------------------------------------------- report

/// How many distinct teams (or keys) a pattern hit, and the few that it hit
/// most.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Affected {
    pub count: u64,
    /// Up to [`NAMES_SHOWN`], by failures and endings (highest first), then
    /// by name.
    pub names: Vec<String>,
}

/// One bucket of a pattern's counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatternPoint {
    pub bucket_start: DateTime<Utc>,
    pub failures: u64,
    pub calls_recovered: u64,
    pub calls_failed: u64,
}

/// One failure pattern over the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatternSummary {
    /// The canonical id (the smallest id of its merged group).
    pub signature: SignatureId,
    /// The raw ids counted under it in the window, ascending.
    pub members: Vec<SignatureId>,
    /// The masked message; for a merged group, the join of its members'
    /// templates (`<*>` where they differ).
    pub template: String,
    pub provider: String,
    pub http_status: u16,
    pub error_type: String,
    /// Models that failed with it in the window, by name.
    pub models: Vec<String>,
    /// Failed attempts with this pattern in the window.
    pub failures: u64,
    /// Calls whose first failure had this pattern and that ended in
    /// success (a retry or fallback worked) / in failure.
    pub calls_recovered: u64,
    pub calls_failed: u64,
    /// First and last failure with this pattern anywhere, ever (not only
    /// under the filters); `None` when the catalog has not seen it.
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    /// Never seen before the window: `first_seen` lies in it.
    pub new: bool,
    pub teams: Affected,
    pub keys: Affected,
    /// Buckets with any count, in time order (empty buckets omitted).
    pub series: Vec<PatternPoint>,
}

/// `GET /api/v1/reports/errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorsReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bucket_secs: u32,
    pub filters: LatencyFilters,
    /// By failures, highest first, then by id.
    pub patterns: Vec<PatternSummary>,
}

/// One raw signature of a pattern, as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatternMember {
    pub signature: SignatureId,
    pub template: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// One failed attempt with the pattern, with the parts masking took out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    pub occurred_at: DateTime<Utc>,
    pub signature: SignatureId,
    pub provider: String,
    pub model: String,
    pub team: String,
    pub api_key: String,
    pub http_status: u16,
    pub error_type: String,
    pub message: String,
    pub template: String,
    /// The masked parts of `message`, in order.
    pub variables: Vec<String>,
    /// The failed attempt's call, and the trace and span that made it
    /// (empty when the producer recorded none).
    pub call_id: String,
    pub trace_id: String,
    pub span_id: String,
}

/// What one recovery strategy and target did for calls that first failed
/// with the pattern.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecoveryRow {
    /// `retry` (same provider and model), `fallback_model` (another model
    /// of the provider) or `fallback_provider`.
    pub strategy: String,
    /// The target tried.
    pub provider: String,
    pub model: String,
    pub attempts: u64,
    pub successes: u64,
    /// `successes / attempts`, to 4 places.
    pub success_rate: f64,
    /// Mean wait before an attempt (backoff, `Retry-After`), ms, to 0.1.
    pub mean_wait_ms: f64,
    /// Mean added latency of an attempt: its wait plus its duration, ms,
    /// to 0.1.
    pub added_latency_ms: f64,
    /// Exact USD the attempts cost (each attempt's own cost).
    pub added_cost: Decimal,
    /// `added_cost / attempts`, rounded to 12 places.
    pub added_cost_per_attempt: Decimal,
}

/// `GET /api/v1/reports/errors/{signature}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatternReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bucket_secs: u32,
    pub filters: LatencyFilters,
    pub pattern: PatternSummary,
    /// Every raw id of the merged group the catalog knows, ascending.
    pub member_templates: Vec<PatternMember>,
    /// Up to [`SAMPLES`] recent failures in the window, one per distinct
    /// message, newest first.
    pub samples: Vec<Sample>,
    /// Highest success rate first (then most attempts).
    pub recovery: Vec<RecoveryRow>,
}

// ---------------------------------------------------------------- SQL

const MERGES_SQL: &str =
    "SELECT DISTINCT from_signature, into_signature, template FROM error_pattern_merges";

const MINUTE_WINDOW: &str = "minute >= toDateTime(?) AND minute < toDateTime(?)";

#[derive(Debug, Row, Deserialize)]
struct MergeRow {
    from_signature: u64,
    into_signature: u64,
    template: String,
}

#[derive(Debug, Row, Deserialize)]
struct CatalogRow {
    signature: u64,
    provider: String,
    http_status: u16,
    error_type: String,
    template: String,
    first_seen: u32,
    last_seen: u32,
}

#[derive(Debug, Row, Deserialize)]
struct TenantRow {
    signature: u64,
    model: String,
    team_id: String,
    api_key_id: String,
    failures: u64,
    calls_recovered: u64,
    calls_failed: u64,
}

#[derive(Debug, Row, Deserialize)]
struct SeriesRow {
    signature: u64,
    bucket_start: u32,
    failures: u64,
    calls_recovered: u64,
    calls_failed: u64,
}

#[derive(Debug, Row, Deserialize)]
struct SampleRow {
    occurred_at_ms: u64,
    error_signature: u64,
    provider: String,
    model: String,
    team_id: String,
    api_key_id: String,
    http_status: u16,
    error_type: String,
    error_message: String,
    error_template: String,
    error_variables: Vec<String>,
    call_id: String,
    trace_id: String,
    span_id: String,
}

#[derive(Debug, Row, Deserialize)]
struct RecoverySqlRow {
    strategy: String,
    provider: String,
    model: String,
    attempts: u64,
    successes: u64,
    wait_ms: u64,
    duration_ms: u64,
    cost: i128,
}

/// The filters' `AND column = ?` clauses, with `columns` naming the
/// table's column for provider, model, team and org.
fn filter_sql(
    filters: &LatencyFilters,
    columns: [&str; 4],
    sql: &mut String,
    binds: &mut Vec<SqlValue>,
) {
    for (dimension, column) in Dimension::ALL.into_iter().zip(columns) {
        if let Some(value) = filters.get(dimension) {
            sql.push_str(&format!(" AND {column} = ?"));
            binds.push(SqlValue::Str(value.to_string()));
        }
    }
}

/// ` AND <column> IN (?, ...)` of `ids`; nothing when `ids` is `None`.
fn ids_sql(column: &str, ids: Option<&[u64]>, sql: &mut String, binds: &mut Vec<SqlValue>) {
    if let Some(ids) = ids {
        let marks = vec!["?"; ids.len().max(1)].join(", ");
        sql.push_str(&format!(" AND {column} IN ({marks})"));
        if ids.is_empty() {
            binds.push(SqlValue::UInt(0));
        }
        binds.extend(ids.iter().map(|id| SqlValue::UInt(*id)));
    }
}

/// The error columns of the minute table, in [`Dimension::ALL`] order.
const PATTERN_COLUMNS: [&str; 4] = ["provider", "model", "team_id", "org_id"];

fn window_binds(query: &ErrorsQuery) -> Vec<SqlValue> {
    vec![
        SqlValue::UInt(epoch(query.from)),
        SqlValue::UInt(epoch(query.to)),
    ]
}

fn merges_sql() -> BoundSql {
    BoundSql {
        name: "errors.merges",
        template: MERGES_SQL.to_string(),
        binds: vec![],
    }
}

/// Catalog rows of `ids` (first and last seen as epoch seconds).
fn catalog_sql(ids: &[u64]) -> BoundSql {
    let mut template = "SELECT signature, provider, http_status, error_type, template, \
         toUInt32(minMerge(first_seen)) AS first_seen, toUInt32(maxMerge(last_seen)) AS last_seen \
         FROM error_pattern_catalog WHERE 1"
        .to_string();
    let mut binds = Vec::new();
    ids_sql("signature", Some(ids), &mut template, &mut binds);
    template.push_str(
        " GROUP BY signature, provider, http_status, error_type, template ORDER BY signature",
    );
    BoundSql {
        name: "errors.catalog",
        template,
        binds,
    }
}

/// Per raw signature, model, team and key: the window's counts.
fn tenants_sql(query: &ErrorsQuery, ids: Option<&[u64]>) -> BoundSql {
    let mut template = format!(
        "SELECT signature, model, team_id, api_key_id, sum(failures) AS failures, \
         sum(calls_recovered) AS calls_recovered, sum(calls_failed) AS calls_failed \
         FROM error_patterns_minute WHERE {MINUTE_WINDOW}"
    );
    let mut binds = window_binds(query);
    filter_sql(&query.filters, PATTERN_COLUMNS, &mut template, &mut binds);
    ids_sql("signature", ids, &mut template, &mut binds);
    template.push_str(
        " GROUP BY signature, model, team_id, api_key_id \
         ORDER BY signature, model, team_id, api_key_id",
    );
    BoundSql {
        name: if ids.is_some() {
            "errors.tenants.pattern"
        } else {
            "errors.tenants"
        },
        template,
        binds,
    }
}

/// Per raw signature and bucket: the window's counts.
fn series_sql(query: &ErrorsQuery, ids: Option<&[u64]>) -> BoundSql {
    let mut template = format!(
        "SELECT signature, {BUCKET}, sum(failures) AS failures, \
         sum(calls_recovered) AS calls_recovered, sum(calls_failed) AS calls_failed \
         FROM error_patterns_minute WHERE {MINUTE_WINDOW}"
    );
    let step = SqlValue::UInt(u64::from(query.bucket_secs));
    let mut binds = vec![step.clone(), step];
    binds.extend(window_binds(query));
    filter_sql(&query.filters, PATTERN_COLUMNS, &mut template, &mut binds);
    ids_sql("signature", ids, &mut template, &mut binds);
    template.push_str(" GROUP BY signature, bucket_start ORDER BY signature, bucket_start");
    BoundSql {
        name: if ids.is_some() {
            "errors.series.pattern"
        } else {
            "errors.series"
        },
        template,
        binds,
    }
}

/// The newest failures of `ids` in the window, one per distinct message.
fn samples_sql(query: &ErrorsQuery, ids: &[u64]) -> BoundSql {
    let mut template = "SELECT occurred_at_ms, error_signature, \
         toString(provider) AS provider, toString(model) AS model, team_id, api_key_id, \
         http_status, error_type, error_message, error_template, error_variables, \
         call_id, trace_id, span_id FROM calls WHERE kind = 'ai.call.failed' \
         AND occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?)"
        .to_string();
    let mut binds = window_binds(query);
    filter_sql(&query.filters, PATTERN_COLUMNS, &mut template, &mut binds);
    ids_sql("error_signature", Some(ids), &mut template, &mut binds);
    template.push_str(&format!(
        " ORDER BY occurred_at_ms DESC, event_id LIMIT 1 BY error_message LIMIT {SAMPLES}"
    ));
    BoundSql {
        name: "errors.samples",
        template,
        binds,
    }
}

/// Recovery attempts from `ids` in the window, per strategy and target.
/// The provider and model filters name the failing provider and model.
fn recovery_sql(query: &ErrorsQuery, ids: &[u64]) -> BoundSql {
    let mut template = format!(
        "SELECT strategy, provider, model, sum(attempts) AS attempts, sum(successes) AS successes, \
         sum(wait_ms) AS wait_ms, sum(duration_ms) AS duration_ms, sum(cost) AS cost \
         FROM error_recovery_minute WHERE {MINUTE_WINDOW}"
    );
    let mut binds = window_binds(query);
    filter_sql(
        &query.filters,
        ["from_provider", "from_model", "team_id", "org_id"],
        &mut template,
        &mut binds,
    );
    ids_sql("from_signature", Some(ids), &mut template, &mut binds);
    template.push_str(" GROUP BY strategy, provider, model ORDER BY strategy, provider, model");
    BoundSql {
        name: "errors.recovery",
        template,
        binds,
    }
}

async fn fetch<T>(models: &ReadModels, sql: BoundSql) -> Result<Vec<T>, ReadModelError>
where
    T: clickhouse::RowOwned + clickhouse::RowRead,
{
    models
        .bounded(sql.query(models.client()).fetch_all::<T>())
        .await
        .map_err(|err| models.classify(sql.name, err))
}

/// Every learned merge (the fold's learner writes them; any replica's).
async fn merges(models: &ReadModels) -> Result<Vec<Merge>, ReadModelError> {
    let rows: Vec<MergeRow> = fetch(models, merges_sql()).await?;
    Ok(rows
        .into_iter()
        .map(|r| Merge {
            from: SignatureId(r.from_signature),
            into: SignatureId(r.into_signature),
            template: r.template,
        })
        .collect())
}

/// The raw ids of the groups `ids` belong to: each id, and every id a
/// merge puts in the same group.
fn group_members(canonical: &CanonicalIds, merges: &[Merge], ids: &BTreeSet<u64>) -> Vec<u64> {
    let groups: BTreeSet<SignatureId> = ids
        .iter()
        .map(|id| canonical.canonical(SignatureId(*id)))
        .collect();
    let mut out: BTreeSet<u64> = ids.clone();
    for m in merges {
        for id in [m.from, m.into] {
            if groups.contains(&canonical.canonical(id)) {
                out.insert(id.0);
            }
        }
    }
    for g in groups {
        out.insert(g.0);
    }
    out.into_iter().collect()
}

fn time(secs: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(i64::from(secs), 0).unwrap_or_default()
}

/// What the window's rows say about every pattern, before rendering.
struct Rows {
    canonical: CanonicalIds,
    catalog: Vec<CatalogRow>,
    tenants: Vec<TenantRow>,
    series: Vec<SeriesRow>,
}

/// Read the rows of `ids` (every pattern when `None`).
async fn read_rows(
    models: &ReadModels,
    query: &ErrorsQuery,
    merges: &[Merge],
    ids: Option<&[u64]>,
) -> Result<Rows, ReadModelError> {
    let canonical = CanonicalIds::new(merges);
    let (tenants, series) = futures::try_join!(
        fetch::<TenantRow>(models, tenants_sql(query, ids)),
        fetch::<SeriesRow>(models, series_sql(query, ids)),
    )?;
    let seen: BTreeSet<u64> = tenants
        .iter()
        .map(|r| r.signature)
        .chain(ids.unwrap_or_default().iter().copied())
        .collect();
    let members = group_members(&canonical, merges, &seen);
    let catalog = if members.is_empty() {
        Vec::new()
    } else {
        fetch::<CatalogRow>(models, catalog_sql(&members)).await?
    };
    Ok(Rows {
        canonical,
        catalog,
        tenants,
        series,
    })
}

/// Count names by weight; the top [`NAMES_SHOWN`] by weight, then name.
fn affected(weights: &BTreeMap<String, u64>) -> Affected {
    let mut by_weight: Vec<(&String, &u64)> = weights.iter().collect();
    by_weight.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    Affected {
        count: weights.len() as u64,
        names: by_weight
            .into_iter()
            .take(NAMES_SHOWN)
            .map(|(name, _)| name.clone())
            .collect(),
    }
}

#[derive(Default)]
struct Builder {
    members: BTreeSet<SignatureId>,
    models: BTreeSet<String>,
    failures: u64,
    calls_recovered: u64,
    calls_failed: u64,
    teams: BTreeMap<String, u64>,
    keys: BTreeMap<String, u64>,
    series: BTreeMap<u32, (u64, u64, u64)>,
}

/// Group the rows by canonical id into patterns, by failures (highest
/// first), then by id.
fn assemble(query: &ErrorsQuery, rows: Rows) -> Vec<PatternSummary> {
    let Rows {
        canonical,
        catalog,
        tenants,
        series,
    } = rows;
    let group = |id: u64| canonical.canonical(SignatureId(id));
    let mut builders: BTreeMap<SignatureId, Builder> = BTreeMap::new();
    for r in tenants {
        let b = builders.entry(group(r.signature)).or_default();
        b.members.insert(SignatureId(r.signature));
        if r.failures > 0 {
            b.models.insert(r.model);
        }
        b.failures += r.failures;
        b.calls_recovered += r.calls_recovered;
        b.calls_failed += r.calls_failed;
        let weight = r.failures + r.calls_recovered + r.calls_failed;
        *b.teams.entry(r.team_id).or_default() += weight;
        *b.keys.entry(r.api_key_id).or_default() += weight;
    }
    for r in series {
        if let Some(b) = builders.get_mut(&group(r.signature)) {
            let point = b.series.entry(r.bucket_start).or_default();
            point.0 += r.failures;
            point.1 += r.calls_recovered;
            point.2 += r.calls_failed;
        }
    }
    // Catalog rows by group: the canonical id's own row (else the smallest
    // member's) names the class and template; first and last seen span the
    // group.
    let mut classes: BTreeMap<SignatureId, &CatalogRow> = BTreeMap::new();
    let mut seen: BTreeMap<SignatureId, (u32, u32)> = BTreeMap::new();
    for row in &catalog {
        let g = group(row.signature);
        let class = classes.entry(g).or_insert(row);
        if row.signature == g.0 || (class.signature != g.0 && row.signature < class.signature) {
            *class = row;
        }
        let span = seen.entry(g).or_insert((row.first_seen, row.last_seen));
        span.0 = span.0.min(row.first_seen);
        span.1 = span.1.max(row.last_seen);
    }
    let mut patterns: Vec<PatternSummary> = builders
        .into_iter()
        .map(|(id, b)| {
            let class = classes.get(&id);
            let template = canonical
                .template(id)
                .map(str::to_string)
                .or_else(|| class.map(|c| c.template.clone()))
                .unwrap_or_default();
            let span = seen.get(&id).copied();
            let first_seen = span.map(|s| time(s.0));
            PatternSummary {
                signature: id,
                members: b.members.into_iter().collect(),
                template,
                provider: class.map(|c| c.provider.clone()).unwrap_or_default(),
                http_status: class.map_or(0, |c| c.http_status),
                error_type: class.map(|c| c.error_type.clone()).unwrap_or_default(),
                models: b.models.into_iter().collect(),
                failures: b.failures,
                calls_recovered: b.calls_recovered,
                calls_failed: b.calls_failed,
                first_seen,
                last_seen: span.map(|s| time(s.1)),
                new: first_seen.is_some_and(|t| query.from <= t && t < query.to),
                teams: affected(&b.teams),
                keys: affected(&b.keys),
                series: b
                    .series
                    .into_iter()
                    .map(|(start, (f, r, c))| PatternPoint {
                        bucket_start: time(start),
                        failures: f,
                        calls_recovered: r,
                        calls_failed: c,
                    })
                    .collect(),
            }
        })
        .collect();
    patterns.sort_by(|a, b| {
        b.failures
            .cmp(&a.failures)
            .then(a.signature.cmp(&b.signature))
    });
    patterns
}

/// The errors report of `query`.
pub(crate) async fn run(
    models: &ReadModels,
    query: &ErrorsQuery,
) -> Result<ErrorsReport, ReadModelError> {
    let merges = merges(models).await?;
    let rows = read_rows(models, query, &merges, None).await?;
    Ok(ErrorsReport {
        from: query.from,
        to: query.to,
        bucket_secs: query.bucket_secs,
        filters: query.filters.clone(),
        patterns: assemble(query, rows),
    })
}

/// The drill-down of the pattern `signature` belongs to; `None` when no
/// failure with it was ever recorded.
pub(crate) async fn run_pattern(
    models: &ReadModels,
    query: &ErrorsQuery,
    signature: SignatureId,
) -> Result<Option<PatternReport>, ReadModelError> {
    let merges = merges(models).await?;
    let canonical = CanonicalIds::new(&merges);
    let id = canonical.canonical(signature);
    let ids = group_members(&canonical, &merges, &BTreeSet::from([signature.0, id.0]));
    let rows = read_rows(models, query, &merges, Some(&ids)).await?;
    let member_templates: Vec<PatternMember> = rows
        .catalog
        .iter()
        .map(|r| PatternMember {
            signature: SignatureId(r.signature),
            template: r.template.clone(),
            first_seen: time(r.first_seen),
            last_seen: time(r.last_seen),
        })
        .collect();
    if member_templates.is_empty() && rows.tenants.is_empty() {
        return Ok(None);
    }
    // The class of a pattern without failures in the window: its own
    // catalog row, else its smallest member's.
    let class = rows
        .catalog
        .iter()
        .find(|r| r.signature == id.0)
        .or(rows.catalog.first())
        .map(|r| {
            (
                r.provider.clone(),
                r.http_status,
                r.error_type.clone(),
                r.template.clone(),
            )
        });
    let mut patterns = assemble(query, rows);
    let pattern = match patterns.iter().position(|p| p.signature == id) {
        Some(i) => patterns.swap_remove(i),
        // Known, but no failure in this window: the catalog's facts and
        // zero counts.
        None => {
            let first = member_templates.iter().map(|m| m.first_seen).min();
            let (provider, http_status, error_type, template) = class.unwrap_or_default();
            PatternSummary {
                signature: id,
                members: Vec::new(),
                template: canonical.template(id).map_or(template, str::to_string),
                provider,
                http_status,
                error_type,
                models: Vec::new(),
                failures: 0,
                calls_recovered: 0,
                calls_failed: 0,
                first_seen: first,
                last_seen: member_templates.iter().map(|m| m.last_seen).max(),
                new: first.is_some_and(|t| query.from <= t && t < query.to),
                teams: Affected::default(),
                keys: Affected::default(),
                series: Vec::new(),
            }
        }
    };
    let (samples, recovery) = futures::try_join!(
        fetch::<SampleRow>(models, samples_sql(query, &ids)),
        fetch::<RecoverySqlRow>(models, recovery_sql(query, &ids)),
    )?;
    let samples = samples
        .into_iter()
        .map(|r| Sample {
            occurred_at: i64::try_from(r.occurred_at_ms)
                .ok()
                .and_then(DateTime::from_timestamp_millis)
                .unwrap_or_default(),
            signature: SignatureId(r.error_signature),
            provider: r.provider,
            model: r.model,
            team: r.team_id,
            api_key: r.api_key_id,
            http_status: r.http_status,
            error_type: r.error_type,
            message: r.error_message,
            template: r.error_template,
            variables: r.error_variables,
            call_id: r.call_id,
            trace_id: r.trace_id,
            span_id: r.span_id,
        })
        .collect();
    let recovery = recovery_rows(recovery)?;
    Ok(Some(PatternReport {
        from: query.from,
        to: query.to,
        bucket_secs: query.bucket_secs,
        filters: query.filters.clone(),
        pattern,
        member_templates,
        samples,
        recovery,
    }))
}

fn ratio(part: u64, whole: u64, places: i32) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    let scale = 10f64.powi(places);
    (part as f64 / whole as f64 * scale).round() / scale
}

fn recovery_rows(rows: Vec<RecoverySqlRow>) -> Result<Vec<RecoveryRow>, ReadModelError> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let cost = from_mantissa(r.cost).ok_or_else(|| ReadModelError::UnexpectedRow {
            query: "errors.recovery",
            detail: format!("cost mantissa {} is out of range", r.cost),
        })?;
        let per_attempt = if r.attempts == 0 {
            Decimal::ZERO
        } else {
            round(cost / Decimal::from(r.attempts))
        };
        out.push(RecoveryRow {
            success_rate: ratio(r.successes, r.attempts, 4),
            mean_wait_ms: ratio(r.wait_ms, r.attempts, 1),
            added_latency_ms: ratio(r.wait_ms + r.duration_ms, r.attempts, 1),
            strategy: r.strategy,
            provider: r.provider,
            model: r.model,
            attempts: r.attempts,
            successes: r.successes,
            added_cost: cost,
            added_cost_per_attempt: per_attempt,
        });
    }
    // Exact comparison of success rates: a/b > c/d  <=>  a d > c b.
    out.sort_by(|a, b| {
        (u128::from(b.successes) * u128::from(a.attempts))
            .cmp(&(u128::from(a.successes) * u128::from(b.attempts)))
            .then(b.attempts.cmp(&a.attempts))
            .then_with(|| {
                (&a.strategy, &a.provider, &a.model).cmp(&(&b.strategy, &b.provider, &b.model))
            })
    });
    Ok(out)
}

// ---------------------------------------------------------------- tables

fn stamp(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// The errors report's table (its CSV): one row per pattern.
pub fn table(report: &ErrorsReport) -> Table {
    let mut table = Table::new([
        "signature",
        "provider",
        "http_status",
        "error_type",
        "template",
        "models",
        "failures",
        "calls_recovered",
        "calls_failed",
        "first_seen",
        "last_seen",
        "new",
        "teams",
        "team_names",
        "keys",
        "key_names",
    ]);
    for p in &report.patterns {
        table.push([
            p.signature.to_string(),
            p.provider.clone(),
            p.http_status.to_string(),
            p.error_type.clone(),
            p.template.clone(),
            p.models.join(";"),
            p.failures.to_string(),
            p.calls_recovered.to_string(),
            p.calls_failed.to_string(),
            stamp(p.first_seen),
            stamp(p.last_seen),
            p.new.to_string(),
            p.teams.count.to_string(),
            p.teams.names.join(";"),
            p.keys.count.to_string(),
            p.keys.names.join(";"),
        ]);
    }
    table
}

/// A pattern's recovery table (its CSV): one row per strategy and target,
/// costs as exact decimals.
pub fn recovery_table(report: &PatternReport) -> Table {
    let mut table = Table::new([
        "signature",
        "strategy",
        "provider",
        "model",
        "attempts",
        "successes",
        "success_rate",
        "mean_wait_ms",
        "added_latency_ms",
        "added_cost_usd",
        "added_cost_per_attempt_usd",
    ]);
    for r in &report.recovery {
        table.push([
            report.pattern.signature.to_string(),
            r.strategy.clone(),
            r.provider.clone(),
            r.model.clone(),
            r.attempts.to_string(),
            r.successes.to_string(),
            r.success_rate.to_string(),
            r.mean_wait_ms.to_string(),
            r.added_latency_ms.to_string(),
            usd(r.added_cost),
            usd(r.added_cost_per_attempt),
        ]);
    }
    table
}

/// A pattern's sample messages (its CSV with `table=samples`, the page's
/// "Sample messages"): newest first, the masked parts joined by `;`,
/// times RFC 3339 in UTC to the millisecond.
pub fn samples_table(report: &PatternReport) -> Table {
    let mut table = Table::new([
        "occurred_at",
        "signature",
        "provider",
        "model",
        "team",
        "api_key",
        "http_status",
        "error_type",
        "message",
        "template",
        "variables",
        "call_id",
        "trace_id",
        "span_id",
    ]);
    for s in &report.samples {
        table.push([
            s.occurred_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            s.signature.to_string(),
            s.provider.clone(),
            s.model.clone(),
            s.team.clone(),
            s.api_key.clone(),
            s.http_status.to_string(),
            s.error_type.clone(),
            s.message.clone(),
            s.template.clone(),
            s.variables.join(";"),
            s.call_id.clone(),
            s.trace_id.clone(),
            s.span_id.clone(),
        ]);
    }
    table
}

/// Sample statements for the SQL compatibility check: every shape.
pub(crate) fn catalog() -> Vec<BoundSql> {
    let plain = ErrorsQuery {
        from: time(1_767_225_600),
        to: time(1_767_225_600 + 3_600),
        bucket_secs: 300,
        filters: LatencyFilters::default(),
    };
    let filtered = ErrorsQuery {
        filters: LatencyFilters {
            provider: Some("openai".into()),
            model: Some("gpt-4o".into()),
            team: Some("team-a".into()),
            org: Some("org-1".into()),
        },
        ..plain.clone()
    };
    let ids = [0x0123_4567_89ab_cdef, 42];
    let mut unfiltered_series = series_sql(&plain, None);
    unfiltered_series.name = "errors.series.unfiltered";
    vec![
        merges_sql(),
        catalog_sql(&ids),
        tenants_sql(&filtered, None),
        series_sql(&filtered, None),
        unfiltered_series,
        tenants_sql(&plain, Some(&ids)),
        series_sql(&filtered, Some(&ids)),
        samples_sql(&filtered, &ids),
        recovery_sql(&filtered, &ids),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-10T12:00:20Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// `GET /api/v1/reports/errors` and `.../errors/{signature}` of the
    /// sample reports, as JSON and CSV.
    #[test]
    fn json_and_csv_snapshots() {
        let report = crate::samples::errors_report();
        insta::assert_snapshot!("json", serde_json::to_string_pretty(&report).unwrap());
        insta::assert_snapshot!("csv", table(&report).to_csv());
        let pattern = crate::samples::pattern_report();
        insta::assert_snapshot!(
            "pattern_json",
            serde_json::to_string_pretty(&pattern).unwrap()
        );
        insta::assert_snapshot!("recovery_csv", recovery_table(&pattern).to_csv());
        insta::assert_snapshot!("samples_csv", samples_table(&pattern).to_csv());
    }

    #[test]
    fn bad_parameters_are_named() {
        for (list, parameter) in [
            (&[("from", "yesterday")][..], "from"),
            (&[("bucket", "fast")][..], "bucket"),
            (&[("group_by", "team")][..], "group_by"),
            (&[("team", "a"), ("team", "b")][..], "team"),
            (&[("format", "csv")][..], "format"),
        ] {
            let err = parse_params(&pairs(list), now(), &[]).unwrap_err();
            assert_eq!(err.field, parameter, "{list:?}: {err}");
        }
        let (q, params) = parse_params(
            &pairs(&[("team", "t"), ("format", "csv")]),
            now(),
            &["format"],
        )
        .unwrap();
        assert_eq!(q.filters.team.as_deref(), Some("t"));
        assert_eq!(params.get("format"), Some("csv"));
        assert_eq!(q.to - q.from, chrono::Duration::minutes(61));
        assert_eq!(
            parse_signature("00000000000000zz").unwrap_err().field,
            "signature"
        );
        assert_eq!(
            parse_signature("00000000000000ff").unwrap(),
            SignatureId(255)
        );
    }

    #[test]
    fn sql_binds_every_id_and_filter() {
        let q = ErrorsQuery {
            from: time(0),
            to: time(3_600),
            bucket_secs: 60,
            filters: LatencyFilters {
                team: Some("t'1".into()),
                ..LatencyFilters::default()
            },
        };
        let sql = recovery_sql(&q, &[1, 2]).text();
        assert!(
            sql.ends_with(
                "WHERE minute >= toDateTime(0) AND minute < toDateTime(3600) AND team_id = 't\\'1' \
                 AND from_signature IN (1, 2) GROUP BY strategy, provider, model \
                 ORDER BY strategy, provider, model"
            ),
            "{sql}"
        );
        // No ids matches nothing rather than being a syntax error.
        assert!(catalog_sql(&[]).text().contains("signature IN (0)"));
    }

    fn tenant(sig: u64, team: &str, failures: u64, recovered: u64) -> TenantRow {
        TenantRow {
            signature: sig,
            model: "m".into(),
            team_id: team.into(),
            api_key_id: format!("{team}-key"),
            failures,
            calls_recovered: recovered,
            calls_failed: 0,
        }
    }

    fn catalog_row(sig: u64, first: u32) -> CatalogRow {
        CatalogRow {
            signature: sig,
            provider: "p".into(),
            http_status: 529,
            error_type: "overloaded_error".into(),
            template: format!("Overloaded {sig}"),
            first_seen: first,
            last_seen: first + 60,
        }
    }

    /// Merged ids count as one pattern under the smallest id, first seen is
    /// the group's earliest, and "new" means first seen inside the window.
    #[test]
    fn merged_signatures_are_one_pattern() {
        let q = ErrorsQuery {
            from: time(3_600),
            to: time(7_200),
            bucket_secs: 60,
            filters: LatencyFilters::default(),
        };
        let merges = vec![Merge {
            from: SignatureId(9),
            into: SignatureId(5),
            template: "Overloaded <*>".into(),
        }];
        let rows = Rows {
            canonical: CanonicalIds::new(&merges),
            catalog: vec![
                catalog_row(5, 100),
                catalog_row(9, 4_000),
                catalog_row(7, 4_000),
            ],
            tenants: vec![
                tenant(9, "a", 3, 1),
                tenant(5, "b", 1, 0),
                tenant(7, "a", 2, 0),
            ],
            series: vec![SeriesRow {
                signature: 9,
                bucket_start: 3_600,
                failures: 3,
                calls_recovered: 1,
                calls_failed: 0,
            }],
        };
        let patterns = assemble(&q, rows);
        assert_eq!(patterns.len(), 2);
        let merged = &patterns[0];
        assert_eq!(merged.signature, SignatureId(5));
        assert_eq!(merged.members, vec![SignatureId(5), SignatureId(9)]);
        assert_eq!(merged.template, "Overloaded <*>");
        assert_eq!((merged.failures, merged.calls_recovered), (4, 1));
        assert_eq!(merged.first_seen, Some(time(100)));
        assert!(!merged.new, "a member was seen before the window");
        assert_eq!(merged.teams.count, 2);
        assert_eq!(merged.teams.names, vec!["a", "b"]);
        assert_eq!(merged.series.len(), 1);
        assert!(patterns[1].new);
    }
}
