//! Cost reports, read from the cost rollups (migrations 0021, 0037, 0039;
//! [`CostQuery::rollup`] picks the smallest that has the report's
//! dimensions): cost, calls and tokens by any combination of day / month /
//! org / team / user / key / provider / model / price version over a range
//! of UTC days, with filters for drill-down. The monthly statement and top
//! spenders are this report with fixed groupings.
//!
//! A report that names a tag key (`group_by=tag:feature`, or a filter
//! `tag.feature=search`) reads the tag rollup `cost_daily_tags` (0023)
//! instead: one row per call *and tag*, so it sums to the spend of the calls
//! carrying that key, not to the total spend, and it has no user or key
//! dimension. One report names at most one tag key (a row holds one tag, so
//! two keys cannot be crossed from the rollup).
//!
//! This module owns the SQL text (only in [`cost_sql`], from fixed
//! fragments; values are always bound) and the row-to-report assembly.
//! Costs leave ClickHouse as `Decimal(38,12)` mantissas and become exact
//! `rust_decimal::Decimal`s. Unpriced calls are counted apart: a group whose
//! calls are all unpriced has `cost: None` ("unpriced"), never 0.

use chrono::{Datelike, NaiveDate};
use clickhouse::Row;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use std::borrow::Cow;

use super::params::{Expected, InvalidParameter, QueryParams};
use super::table::Table;
use super::{BoundSql, ReadModelError, ReadModels, SqlValue};
use tollgate_contract::cost::from_mantissa;

/// Longest range one cost report may cover (days).
pub const MAX_RANGE_DAYS: i64 = 732;
const MAX_FILTER_LEN: usize = 256;
/// Longest tag key a report accepts (the event contract's limit).
pub const MAX_TAG_KEY_LEN: usize = 64;

/// A dimension a cost report can be grouped or filtered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostDimension {
    Day,
    Month,
    Org,
    Team,
    User,
    Key,
    Provider,
    Model,
    PriceVersion,
    /// The value of the query's tag key ([`CostQuery::tag_key`]); named
    /// `tag:<key>` in `group_by` and `tag.<key>` as a filter.
    Tag,
}

impl CostDimension {
    /// Every dimension, in the order of the report's SQL columns.
    pub const ALL: [CostDimension; 10] = [
        Self::Day,
        Self::Month,
        Self::Org,
        Self::Team,
        Self::User,
        Self::Key,
        Self::Provider,
        Self::Model,
        Self::PriceVersion,
        Self::Tag,
    ];

    /// The dimensions named by a fixed word (all but the tag).
    pub const FIXED: [CostDimension; 9] = [
        Self::Day,
        Self::Month,
        Self::Org,
        Self::Team,
        Self::User,
        Self::Key,
        Self::Provider,
        Self::Model,
        Self::PriceVersion,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
            Self::Org => "org",
            Self::Team => "team",
            Self::User => "user",
            Self::Key => "key",
            Self::Provider => "provider",
            Self::Model => "model",
            Self::PriceVersion => "price_version",
            Self::Tag => "tag",
        }
    }

    /// A fixed dimension by name; the tag is `tag:<key>` (see
    /// [`parse_params`]), never plain `tag`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::FIXED.into_iter().find(|d| d.name() == name)
    }

    /// Whether the tag rollup has this dimension (it has no user or key).
    pub fn in_tag_rollup(self) -> bool {
        !matches!(self, Self::User | Self::Key)
    }

    /// The expression selected for this dimension, as a string. Only these
    /// fixed fragments reach SQL as identifiers.
    fn expr(self) -> &'static str {
        match self {
            Self::Day => "toString(day)",
            Self::Month => "substring(toString(toStartOfMonth(day)), 1, 7)",
            Self::Org => "org_id",
            Self::Team => "team_id",
            Self::User => "user_id",
            Self::Key => "api_key_id",
            Self::Provider => "toString(provider)",
            Self::Model => "toString(model)",
            Self::PriceVersion => "toString(price_version)",
            Self::Tag => "tag_value",
        }
    }

    /// The rollup column the expression reads (what decides which rollup
    /// can serve a report, `tollgate_control::cost_rollup`).
    fn column(self) -> &'static str {
        match self {
            Self::Day | Self::Month => "day",
            Self::Org => "org_id",
            Self::Team => "team_id",
            Self::User => "user_id",
            Self::Key => "api_key_id",
            Self::Provider => "provider",
            Self::Model => "model",
            Self::PriceVersion => "price_version",
            Self::Tag => "tag_value",
        }
    }

    fn alias(self) -> &'static str {
        match self {
            Self::Day => "k_day",
            Self::Month => "k_month",
            Self::Org => "k_org",
            Self::Team => "k_team",
            Self::User => "k_user",
            Self::Key => "k_key",
            Self::Provider => "k_provider",
            Self::Model => "k_model",
            Self::PriceVersion => "k_price_version",
            Self::Tag => "k_tag",
        }
    }
}

/// A validated cost report request: UTC days `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostQuery {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub group_by: Vec<CostDimension>,
    /// Equality filters (drill-down), at most one per dimension.
    pub filters: Vec<(CostDimension, String)>,
    /// The tag key of [`CostDimension::Tag`]; `Some` makes the report read
    /// the tag rollup.
    pub tag_key: Option<String>,
}

/// Whether `key` is a tag key a report can name: 1 to 64 characters of
/// `A-Z a-z 0-9 _ . -`.
pub fn valid_tag_key(key: &str) -> bool {
    (1..=MAX_TAG_KEY_LEN).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn tag_key_reason(key: &str) -> String {
    format!(
        "tag key `{key}` must be 1 to {MAX_TAG_KEY_LEN} characters of A-Z, a-z, 0-9, `_`, `.`, `-`"
    )
}

fn invalid(parameter: &str, reason: impl Into<String>) -> InvalidParameter {
    InvalidParameter::new(parameter, reason)
}

impl CostQuery {
    /// The untagged cost rollup this query reads: the smallest that has
    /// every column it groups or filters by (`cost_daily_by_team` without
    /// user and key, `cost_daily_by_user` or `cost_daily_by_key` for one
    /// caller with day, month, org and team, else `cost_daily`;
    /// `tollgate_control::cost_rollup` decides from the columns).
    pub fn rollup(&self) -> &'static str {
        let dimensions = self
            .group_by
            .iter()
            .chain(self.filters.iter().map(|(d, _)| d));
        tollgate_control::cost_rollup::table_for(dimensions.map(|d| d.column()))
    }

    /// A report over the untagged rollup.
    pub fn new(
        from: NaiveDate,
        to: NaiveDate,
        group_by: Vec<CostDimension>,
        filters: Vec<(CostDimension, String)>,
    ) -> Result<Self, InvalidParameter> {
        Self::with_tag(from, to, group_by, filters, None)
    }

    /// A report that may name a tag key (then it reads the tag rollup).
    pub fn with_tag(
        from: NaiveDate,
        to: NaiveDate,
        group_by: Vec<CostDimension>,
        filters: Vec<(CostDimension, String)>,
        tag_key: Option<String>,
    ) -> Result<Self, InvalidParameter> {
        if from >= to {
            return Err(invalid("from", "must be before `to`"));
        }
        // The bounds first, naming the date outside them; then the length.
        let (min, max) = date_bounds();
        for (name, date) in [("from", from), ("to", to)] {
            if date < min || date > max {
                return Err(invalid(
                    name,
                    format!("{date} is outside the dates a report covers: {min} to {max}"),
                ));
            }
        }
        if (to - from).num_days() > MAX_RANGE_DAYS {
            return Err(invalid(
                "to",
                format!("the range may cover at most {MAX_RANGE_DAYS} days"),
            ));
        }
        for (i, d) in group_by.iter().enumerate() {
            if group_by[..i].contains(d) {
                return Err(invalid("group_by", format!("`{}` is repeated", d.name())));
            }
        }
        for (i, (d, v)) in filters.iter().enumerate() {
            if filters[..i].iter().any(|(e, _)| e == d) {
                return Err(invalid(
                    "filter",
                    format!("`{}` is filtered twice", d.name()),
                ));
            }
            if v.len() > MAX_FILTER_LEN {
                return Err(invalid("filter", format!("`{}` is too long", d.name())));
            }
        }
        let uses_tag = group_by.contains(&CostDimension::Tag)
            || filters.iter().any(|(d, _)| *d == CostDimension::Tag);
        match &tag_key {
            None if uses_tag => {
                return Err(invalid(
                    "group_by",
                    "the tag dimension needs a key: tag:<key>",
                ))
            }
            None => {}
            Some(key) => {
                if !valid_tag_key(key) {
                    return Err(invalid("group_by", tag_key_reason(key)));
                }
                let not_tagged = |d: &CostDimension| !d.in_tag_rollup();
                if let Some(d) = group_by.iter().find(|d| not_tagged(d)) {
                    return Err(invalid("group_by", untagged_reason(*d, key)));
                }
                if let Some((d, _)) = filters.iter().find(|(d, _)| not_tagged(d)) {
                    return Err(invalid(d.name(), untagged_reason(*d, key)));
                }
            }
        }
        Ok(Self {
            from,
            to,
            group_by,
            filters,
            tag_key,
        })
    }

    /// How `d` is named in this report's `group_by` and group keys:
    /// `tag:<key>` for the tag, else the dimension's name.
    pub fn label(&self, d: CostDimension) -> String {
        match (d, &self.tag_key) {
            (CostDimension::Tag, Some(key)) => format!("tag:{key}"),
            _ => d.name().to_string(),
        }
    }

    /// The filters by the parameter that names them (`team`, `tag.feature`),
    /// as reports show them.
    pub fn filters_by_name(&self) -> std::collections::BTreeMap<String, String> {
        self.filters
            .iter()
            .map(|(d, v)| (self.filter_name(*d), v.clone()))
            .collect()
    }

    /// The query parameter that filters on `d`: `tag.<key>` for the tag.
    pub fn filter_name(&self, d: CostDimension) -> String {
        match (d, &self.tag_key) {
            (CostDimension::Tag, Some(key)) => format!("tag.{key}"),
            _ => d.name().to_string(),
        }
    }
}

fn untagged_reason(d: CostDimension, key: &str) -> String {
    format!(
        "`{}` cannot be combined with tag `{key}`: the tag rollup has no user or key \
         (day, month, org, team, provider, model and price_version can)",
        d.name()
    )
}

/// The columns of [`CostTotals::count_cells`] in the reports' tables.
pub const COUNT_COLUMNS: [&str; 9] = [
    "calls",
    "unpriced_calls",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "images",
    "audio_ms",
];

/// Sums of one group. Tokens are totals of the group's calls, summed as
/// 128-bit integers (`Decimal(38, 0)` in ClickHouse): a report over any
/// range cannot overflow, whereas a signed 64-bit sum of bounded per-call
/// counts could over enough rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CostTotals {
    pub calls: i64,
    pub unpriced_calls: i64,
    pub input_tokens: i128,
    pub output_tokens: i128,
    pub cached_input_tokens: i128,
    pub cache_write_tokens: i128,
    pub reasoning_tokens: i128,
    pub images: i128,
    pub audio_ms: i128,
    /// Exact USD of the priced calls; `None` when every call is unpriced.
    pub cost: Option<Decimal>,
}

impl CostTotals {
    /// `"unpriced"`, or the cost with its 12 places, plus a note of
    /// unpriced calls when some are: what pages and CSV show.
    pub fn cost_label(&self) -> String {
        match self.cost {
            None => "unpriced".into(),
            Some(c) => crate::table::usd(c),
        }
    }

    /// The counts every table shows, under [`COUNT_COLUMNS`].
    pub fn count_cells(&self) -> [String; 9] {
        [
            self.calls.to_string(),
            self.unpriced_calls.to_string(),
            self.input_tokens.to_string(),
            self.cached_input_tokens.to_string(),
            self.cache_write_tokens.to_string(),
            self.output_tokens.to_string(),
            self.reasoning_tokens.to_string(),
            self.images.to_string(),
            self.audio_ms.to_string(),
        ]
    }

    fn add(&mut self, other: &CostTotals) {
        self.calls += other.calls;
        self.unpriced_calls += other.unpriced_calls;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cached_input_tokens += other.cached_input_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
        self.images += other.images;
        self.audio_ms += other.audio_ms;
        self.cost = match (self.cost, other.cost) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or_default() + b.unwrap_or_default()),
        };
    }
}

/// One group of a cost report: its key (only the grouped dimensions) and
/// its sums.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CostGroup {
    /// By the dimension's label (`team`, `tag:feature`, ...).
    pub key: std::collections::BTreeMap<String, String>,
    #[serde(flatten)]
    pub totals: CostTotals,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CostReport {
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Labels: `team`, `tag:feature`, ...
    pub group_by: Vec<String>,
    /// By parameter name: `team`, `tag.feature`, ...
    pub filters: std::collections::BTreeMap<String, String>,
    /// The tag key the report is restricted to (it then covers only the
    /// calls carrying that key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag_key: Option<String>,
    /// Ordered by cost, highest first, then by key.
    pub groups: Vec<CostGroup>,
    pub total: CostTotals,
}

#[derive(Debug, Row, Deserialize)]
struct CostRow {
    k_day: String,
    k_month: String,
    k_org: String,
    k_team: String,
    k_user: String,
    k_key: String,
    k_provider: String,
    k_model: String,
    k_price_version: String,
    k_tag: String,
    calls: i64,
    unpriced_calls: i64,
    input_tokens: i128,
    output_tokens: i128,
    cached_input_tokens: i128,
    cache_write_tokens: i128,
    reasoning_tokens: i128,
    images: i128,
    audio_ms: i128,
    cost: i128,
}

impl CostRow {
    fn key(&self, d: CostDimension) -> &str {
        match d {
            CostDimension::Day => &self.k_day,
            CostDimension::Month => &self.k_month,
            CostDimension::Org => &self.k_org,
            CostDimension::Team => &self.k_team,
            CostDimension::User => &self.k_user,
            CostDimension::Key => &self.k_key,
            CostDimension::Provider => &self.k_provider,
            CostDimension::Model => &self.k_model,
            CostDimension::PriceVersion => &self.k_price_version,
            CostDimension::Tag => &self.k_tag,
        }
    }
}

/// The report's one statement: over `cost_daily_tags` for the query's tag
/// key, else over the cost rollup its dimensions need ([`CostQuery::rollup`]).
pub(crate) fn cost_sql(query: &CostQuery) -> BoundSql {
    let mut sql = grouped_sql(query);
    let aliases: Vec<&str> = CostDimension::ALL.iter().map(|d| d.alias()).collect();
    sql.template
        .push_str(&format!(" ORDER BY {}", aliases.join(", ")));
    sql
}

/// The `n` groups of `query` with the highest cost, in the report's order
/// (groups with a priced call or a cost first, then cost highest first,
/// then key), so only those rows leave ClickHouse: the top spenders of the
/// cost overview. `n` is bound, not spliced.
pub(crate) fn top_sql(query: &CostQuery, n: u64) -> BoundSql {
    let mut sql = grouped_sql(query);
    let aliases: Vec<&str> = CostDimension::ALL.iter().map(|d| d.alias()).collect();
    sql.template.push_str(&format!(
        " ORDER BY (s_calls != s_unpriced_calls OR s_cost != 0) DESC, s_cost DESC, {} LIMIT ?",
        aliases.join(", ")
    ));
    sql.binds.push(SqlValue::UInt(n));
    sql.name = if query.tag_key.is_some() {
        "cost.top.tags"
    } else {
        "cost.top"
    };
    sql
}

/// The report's SELECT up to its HAVING clause (no order).
fn grouped_sql(query: &CostQuery) -> BoundSql {
    let keys: Vec<String> = CostDimension::ALL
        .iter()
        .map(|d| {
            if query.group_by.contains(d) {
                format!("{} AS {}", d.expr(), d.alias())
            } else {
                format!("'' AS {}", d.alias())
            }
        })
        .collect();
    let aliases: Vec<&str> = CostDimension::ALL.iter().map(|d| d.alias()).collect();
    let (table, tag_condition) = match &query.tag_key {
        Some(_) => ("cost_daily_tags", "tag_key = ? AND "),
        None => (query.rollup(), ""),
    };
    let mut template = format!(
        "SELECT {}, sum(calls) AS s_calls, sum(unpriced_calls) AS s_unpriced_calls, \
         sum(toDecimal128(input_tokens, 0)) AS s_input_tokens, sum(toDecimal128(output_tokens, 0)) AS s_output_tokens, \
         sum(toDecimal128(cached_input_tokens, 0)) AS s_cached_input_tokens, \
         sum(toDecimal128(cache_write_tokens, 0)) AS s_cache_write_tokens, \
         sum(toDecimal128(reasoning_tokens, 0)) AS s_reasoning_tokens, sum(toDecimal128(images, 0)) AS s_images, \
         sum(toDecimal128(audio_ms, 0)) AS s_audio_ms, \
         sum(cost) AS s_cost \
         FROM {table} WHERE {tag_condition}day >= toDate(?) AND day < toDate(?)",
        keys.join(", ")
    );
    let mut binds = Vec::new();
    if let Some(key) = &query.tag_key {
        binds.push(SqlValue::Str(key.clone()));
    }
    binds.push(SqlValue::Str(query.from.to_string()));
    binds.push(SqlValue::Str(query.to.to_string()));
    for (d, value) in &query.filters {
        template.push_str(&format!(" AND {} = ?", d.expr()));
        binds.push(SqlValue::Str(value.clone()));
    }
    template.push_str(&format!(
        " GROUP BY {} HAVING s_calls != 0 OR s_cost != 0",
        aliases.join(", ")
    ));
    BoundSql {
        name: if query.tag_key.is_some() {
            "cost.report.tags"
        } else {
            "cost.report"
        },
        template,
        binds,
    }
}

pub(crate) async fn run(
    models: &ReadModels,
    query: &CostQuery,
) -> Result<CostReport, ReadModelError> {
    fetch(models, query, cost_sql(query)).await
}

/// The report of `query` cut to its `n` costliest groups ([`top_sql`]).
pub(crate) async fn run_top(
    models: &ReadModels,
    query: &CostQuery,
    n: u64,
) -> Result<CostReport, ReadModelError> {
    fetch(models, query, top_sql(query, n)).await
}

async fn fetch(
    models: &ReadModels,
    query: &CostQuery,
    sql: BoundSql,
) -> Result<CostReport, ReadModelError> {
    let rows: Vec<CostRow> = models
        .bounded(sql.query(models.client()).fetch_all::<CostRow>())
        .await
        .map_err(|err| models.classify(sql.name, err))?;
    assemble(query, rows, sql.name)
}

fn assemble(
    query: &CostQuery,
    rows: Vec<CostRow>,
    name: &'static str,
) -> Result<CostReport, ReadModelError> {
    let mut groups = Vec::with_capacity(rows.len());
    for row in rows {
        let cost = from_mantissa(row.cost).ok_or_else(|| ReadModelError::UnexpectedRow {
            query: name,
            detail: format!("cost mantissa {} is out of range", row.cost),
        })?;
        let priced_calls = row.calls - row.unpriced_calls;
        let totals = CostTotals {
            calls: row.calls,
            unpriced_calls: row.unpriced_calls,
            input_tokens: row.input_tokens,
            output_tokens: row.output_tokens,
            cached_input_tokens: row.cached_input_tokens,
            cache_write_tokens: row.cache_write_tokens,
            reasoning_tokens: row.reasoning_tokens,
            images: row.images,
            audio_ms: row.audio_ms,
            cost: (priced_calls != 0 || !cost.is_zero()).then_some(cost),
        };
        let key = query
            .group_by
            .iter()
            .map(|d| (query.label(*d), row.key(*d).to_string()))
            .collect();
        groups.push(CostGroup { key, totals });
    }
    // Highest cost first; unpriced groups last; ties by key.
    groups.sort_by(|a, b| {
        b.totals
            .cost
            .unwrap_or(Decimal::MIN)
            .cmp(&a.totals.cost.unwrap_or(Decimal::MIN))
            .then_with(|| a.key.cmp(&b.key))
    });
    Ok(CostReport::of_groups(query, groups))
}

impl CostReport {
    /// The report of `query` with `groups` (in their order) and their sum.
    pub fn of_groups(query: &CostQuery, groups: Vec<CostGroup>) -> Self {
        let mut total = CostTotals::default();
        for g in &groups {
            total.add(&g.totals);
        }
        // No calls at all cost nothing (not "unpriced": that says calls
        // were made that no price covers).
        if total.calls == 0 {
            total.cost = Some(Decimal::ZERO);
        }
        Self {
            from: query.from,
            to: query.to,
            group_by: query.group_by.iter().map(|d| query.label(*d)).collect(),
            filters: query.filters_by_name(),
            tag_key: query.tag_key.clone(),
            groups,
            total,
        }
    }
}

/// The cost report's table (its CSV): one row per group with the grouped
/// dimensions, then counts, tokens and cost (exact decimal, or
/// `unpriced`), and a last `total` row.
pub fn table(report: &CostReport) -> Table {
    let mut columns: Vec<Cow<'static, str>> =
        report.group_by.iter().cloned().map(Cow::Owned).collect();
    columns.extend(
        COUNT_COLUMNS
            .into_iter()
            .chain(["cost_usd"])
            .map(Cow::Borrowed),
    );
    let mut table = Table::new(columns);
    let row = |keys: Vec<String>, t: &CostTotals| {
        let mut fields = keys;
        fields.extend(t.count_cells());
        fields.push(t.cost_label());
        fields
    };
    for g in &report.groups {
        let keys = report
            .group_by
            .iter()
            .map(|d| g.key.get(d).cloned().unwrap_or_default())
            .collect();
        table.push(row(keys, &g.totals));
    }
    // The total row says `total` in its first key column (none when the
    // report has no key column).
    let mut keys = vec![String::new(); report.group_by.len()];
    if let Some(first) = keys.first_mut() {
        *first = "total".into();
    }
    table.push(row(keys, &report.total));
    table
}

/// Sample statements for the SQL compatibility check.
pub(crate) fn catalog() -> Vec<BoundSql> {
    let day = |d| NaiveDate::from_ymd_opt(2026, 3, d).unwrap_or_default();
    let all = CostQuery {
        from: day(1),
        to: day(31),
        group_by: CostDimension::FIXED.to_vec(),
        filters: vec![
            (CostDimension::Team, "team-a".into()),
            (CostDimension::Month, "2026-03".into()),
        ],
        tag_key: None,
    };
    let none = CostQuery {
        from: day(1),
        to: day(2),
        group_by: vec![],
        filters: vec![],
        tag_key: None,
    };
    let tagged = CostQuery {
        from: day(1),
        to: day(31),
        group_by: CostDimension::ALL
            .into_iter()
            .filter(|d| d.in_tag_rollup())
            .collect(),
        filters: vec![
            (CostDimension::Team, "team-a".into()),
            (CostDimension::Tag, "search".into()),
        ],
        tag_key: Some("feature".into()),
    };
    let tag_total = CostQuery {
        from: day(1),
        to: day(2),
        group_by: vec![],
        filters: vec![(CostDimension::Tag, "b".into())],
        tag_key: Some("variant".into()),
    };
    let by_team = CostQuery {
        from: day(1),
        to: day(31),
        group_by: CostDimension::FIXED
            .into_iter()
            .filter(|d| d.in_tag_rollup())
            .collect(),
        filters: vec![
            (CostDimension::Org, "org-a".into()),
            (CostDimension::Month, "2026-03".into()),
        ],
        tag_key: None,
    };
    let named = |q: &CostQuery, name| {
        let mut sql = cost_sql(q);
        sql.name = name;
        sql
    };
    // One caller with every dimension its rollup has.
    let by_caller = |d: CostDimension| CostQuery {
        from: day(1),
        to: day(31),
        group_by: vec![
            CostDimension::Day,
            CostDimension::Month,
            CostDimension::Org,
            CostDimension::Team,
            d,
        ],
        filters: vec![
            (CostDimension::Team, "team-a".into()),
            (CostDimension::Month, "2026-03".into()),
        ],
        tag_key: None,
    };
    let (by_user, by_key) = (
        by_caller(CostDimension::User),
        by_caller(CostDimension::Key),
    );
    let top = |q: &CostQuery, name| {
        let mut sql = top_sql(q, 10);
        sql.name = name;
        sql
    };
    vec![
        named(&all, "cost.report.all_dimensions"),
        named(&by_team, "cost.report.by_team_dimensions"),
        top(&by_team, "cost.top.by_team_dimensions"),
        named(&by_user, "cost.report.by_user_dimensions"),
        top(&by_user, "cost.top.by_user_dimensions"),
        named(&by_key, "cost.report.by_key_dimensions"),
        top(&by_key, "cost.top.by_key_dimensions"),
        named(&none, "cost.report.total"),
        named(&tagged, "cost.report.tags.all_dimensions"),
        named(&tag_total, "cost.report.tags.total"),
    ]
}

/// Parse a query string's pairs into a [`CostQuery`]: `from`, `to` (UTC
/// dates, `to` exclusive; default: this month so far), `group_by` (comma
/// list of dimension names and at most one `tag:<key>`; default `team`;
/// empty for one total), and one optional filter per dimension, named like
/// the dimension (`team=...`) or `tag.<key>=<value>`. A tag key in
/// `group_by` and in a filter must be the same key. Unknown and repeated
/// parameters are errors ([`QueryParams`]). `extra` names parameters the
/// caller reads itself (e.g. `format`) from the returned [`QueryParams`].
pub fn parse_params(
    pairs: &[(String, String)],
    today: NaiveDate,
    extra: &[&str],
) -> Result<(CostQuery, QueryParams), InvalidParameter> {
    let names: Vec<&str> = ["from", "to", "group_by"]
        .into_iter()
        .chain(CostDimension::FIXED.map(CostDimension::name))
        .chain(extra.iter().copied())
        .collect();
    let params = QueryParams::parse(
        pairs,
        &Expected {
            names: &names,
            prefixes: &["tag."],
        },
    )?;
    let mut group_by = vec![CostDimension::Team];
    let mut filters = Vec::new();
    // The tag key and the parameter that named it first.
    let mut tag: Option<(String, String)> = None;
    let mut name_tag = |key: &str, parameter: &str| -> Result<(), InvalidParameter> {
        if !valid_tag_key(key) {
            return Err(invalid(parameter, tag_key_reason(key)));
        }
        match &tag {
            Some((k, first)) if k != key => Err(invalid(
                parameter,
                format!(
                    "a report names one tag key (`{first}` names `{k}`): \
                     the tag rollup holds one tag per row, so two keys cannot be crossed"
                ),
            )),
            Some(_) => Ok(()),
            None => {
                tag = Some((key.to_string(), parameter.to_string()));
                Ok(())
            }
        }
    };
    // In the order given: filters keep it, and the first parameter to name
    // a tag key is the one a conflicting one is told about.
    for (name, value) in params.iter() {
        if name == "group_by" {
            group_by = Vec::new();
            for s in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if let Some(key) = s.strip_prefix("tag:") {
                    name_tag(key, "group_by")?;
                    group_by.push(CostDimension::Tag);
                } else {
                    group_by.push(CostDimension::parse(s).ok_or_else(|| {
                        invalid(
                            "group_by",
                            format!(
                                "unknown dimension `{s}`; expected some of {}, tag:<key>",
                                dimension_names()
                            ),
                        )
                    })?);
                }
            }
        } else if let Some(d) = CostDimension::parse(name) {
            check_filter_value(d, value)?;
            filters.push((d, value.to_string()));
        } else if let Some(key) = name.strip_prefix("tag.") {
            name_tag(key, name)?;
            filters.push((CostDimension::Tag, value.to_string()));
        }
    }
    let month_start = today.with_day(1).unwrap_or(today);
    let from = params.date("from")?.unwrap_or(month_start);
    let to = params
        .date("to")?
        .unwrap_or_else(|| today.succ_opt().unwrap_or(today));
    let tag_key = tag.map(|(key, _)| key);
    let query = CostQuery::with_tag(from, to, group_by, filters, tag_key)?;
    Ok((query, params))
}

/// The first and last day a cost report may name (ClickHouse's `Date`
/// holds 1970-01-01 to 2105-12-31; a range ends the day after its last).
pub fn date_bounds() -> (NaiveDate, NaiveDate) {
    (
        NaiveDate::from_ymd_opt(1970, 1, 2).unwrap_or_default(),
        NaiveDate::from_ymd_opt(2105, 12, 31).unwrap_or_default(),
    )
}

/// A filter on a day, a month or a price version must be one: a value
/// that cannot match (`month=2026-13`, `price_version=abc`) is a mistake,
/// not an empty report.
fn check_filter_value(dimension: CostDimension, value: &str) -> Result<(), InvalidParameter> {
    let name = dimension.name();
    let well_formed = match dimension {
        CostDimension::Day => {
            value.len() == 10 && NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok()
        }
        CostDimension::Month => {
            value.len() == 7
                && NaiveDate::parse_from_str(&format!("{value}-01"), "%Y-%m-%d").is_ok()
        }
        CostDimension::PriceVersion => value.parse::<u64>().is_ok(),
        _ => return Ok(()),
    };
    if well_formed {
        return Ok(());
    }
    let expected = match dimension {
        CostDimension::Day => "a UTC day as YYYY-MM-DD",
        CostDimension::Month => "a month as YYYY-MM",
        _ => "a price version id (a whole number)",
    };
    let shown: String = value.chars().take(40).collect();
    Err(invalid(name, format!("`{shown}` is not {expected}")))
}

fn dimension_names() -> String {
    CostDimension::FIXED.map(CostDimension::name).join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `GET /api/v1/reports/cost` of the sample report, as JSON and CSV.
    #[test]
    fn json_and_csv_snapshots() {
        let report = crate::samples::cost_report();
        insta::assert_snapshot!("json", serde_json::to_string_pretty(&report).unwrap());
        insta::assert_snapshot!("csv", table(&report).to_csv());
    }

    #[test]
    fn validation() {
        let d = |m, day| NaiveDate::from_ymd_opt(2026, m, day).unwrap();
        assert!(CostQuery::new(d(3, 2), d(3, 1), vec![], vec![]).is_err());
        assert!(CostQuery::new(
            d(3, 1),
            d(3, 2),
            vec![CostDimension::Team, CostDimension::Team],
            vec![]
        )
        .is_err());
        assert!(CostQuery::new(
            d(3, 1),
            d(3, 2),
            vec![],
            vec![
                (CostDimension::Team, "a".into()),
                (CostDimension::Team, "b".into())
            ]
        )
        .is_err());
        assert!(CostQuery::new(
            d(3, 1),
            d(3, 2),
            vec![CostDimension::Model],
            vec![(CostDimension::Team, "a".into())]
        )
        .is_ok());
    }

    #[test]
    fn sql_binds_filters_and_never_splices() {
        let q = CostQuery::new(
            NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
            NaiveDate::from_ymd_opt(2026, 4, 1).unwrap(),
            vec![CostDimension::Model],
            vec![(CostDimension::Team, "x' OR 1=1".into())],
        )
        .unwrap();
        let text = cost_sql(&q).text();
        assert!(text.contains(r"team_id = 'x\' OR 1=1'"), "{text}");
        assert!(text.contains("toString(model) AS k_model"), "{text}");
        assert!(text.contains("'' AS k_team"), "{text}");
    }

    #[test]
    fn day_month_and_price_version_filters_must_be_well_formed() {
        let today = NaiveDate::from_ymd_opt(2026, 3, 15).unwrap();
        for (name, value) in [
            ("month", "2026-03"),
            ("day", "2026-02-28"),
            ("price_version", "17"),
        ] {
            assert!(
                parse_params(&pairs(&[(name, value)]), today, &[]).is_ok(),
                "{name}={value}"
            );
        }
        for (name, value) in [
            ("month", "2026-13"),
            ("month", "2026-1"),
            ("month", "march"),
            ("day", "2026-02-30"),
            ("day", "2026-2-3"),
            ("price_version", "abc"),
            ("price_version", "-1"),
        ] {
            let err = parse_params(&pairs(&[(name, value)]), today, &[]).unwrap_err();
            assert_eq!(err.field, name, "{name}={value}");
            assert!(err.reason.contains(value), "{err}");
        }
    }

    #[test]
    fn no_calls_cost_nothing_and_only_unpriced_calls_are_unpriced() {
        let today = NaiveDate::from_ymd_opt(2026, 3, 15).unwrap();
        let (q, _) = parse_params(&[], today, &[]).unwrap();
        let empty = CostReport::of_groups(&q, Vec::new());
        assert_eq!(empty.total.cost, Some(Decimal::ZERO));
        assert_eq!(empty.total.cost_label(), "0.000000000000");
        let unpriced = CostGroup {
            key: std::collections::BTreeMap::new(),
            totals: CostTotals {
                calls: 2,
                unpriced_calls: 2,
                ..CostTotals::default()
            },
        };
        let report = CostReport::of_groups(&q, vec![unpriced.clone()]);
        assert_eq!(report.total.cost, None);
        assert_eq!(report.total.cost_label(), "unpriced");
        let mut priced = unpriced;
        priced.totals.unpriced_calls = 0;
        priced.totals.cost = Some(Decimal::ONE);
        let report = CostReport::of_groups(&q, vec![priced]);
        assert_eq!(report.total.cost, Some(Decimal::ONE));
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn tag_group_and_filter_read_the_tag_rollup() {
        let today = NaiveDate::from_ymd_opt(2026, 3, 15).unwrap();
        let (q, _) = parse_params(
            &pairs(&[
                ("group_by", "day,tag:feature,team"),
                ("tag.feature", "search"),
                ("model", "gpt-4o"),
            ]),
            today,
            &[],
        )
        .unwrap();
        assert_eq!(q.tag_key.as_deref(), Some("feature"));
        assert_eq!(
            q.group_by,
            vec![CostDimension::Day, CostDimension::Tag, CostDimension::Team]
        );
        assert_eq!(q.label(CostDimension::Tag), "tag:feature");
        assert_eq!(q.filter_name(CostDimension::Tag), "tag.feature");
        let text = cost_sql(&q).text();
        assert!(
            text.contains("FROM cost_daily_tags WHERE tag_key = 'feature' AND day >="),
            "{text}"
        );
        assert!(text.contains("tag_value AS k_tag"), "{text}");
        assert!(text.contains("AND tag_value = 'search'"), "{text}");
        assert!(text.contains("'' AS k_user"), "{text}");
        // A filter alone names the key too.
        let (q, _) = parse_params(&pairs(&[("tag.exp-1.a", "x")]), today, &[]).unwrap();
        assert_eq!(q.tag_key.as_deref(), Some("exp-1.a"));
        assert_eq!(q.group_by, vec![CostDimension::Team]);
        // Without a tag: the plain rollup.
        let (q, _) = parse_params(&pairs(&[("group_by", "model")]), today, &[]).unwrap();
        let text = cost_sql(&q).text();
        assert!(
            text.contains("FROM cost_daily_by_team WHERE day >="),
            "{text}"
        );
        assert!(text.contains("'' AS k_tag"), "{text}");
    }

    #[test]
    fn each_report_reads_the_smallest_rollup_with_its_dimensions() {
        let today = NaiveDate::from_ymd_opt(2026, 3, 15).unwrap();
        let table = |list: &[(&str, &str)]| {
            let (q, _) = parse_params(&pairs(list), today, &[]).unwrap();
            let from = |text: String| {
                let after = text.split(" FROM ").nth(1).unwrap().to_string();
                after.split(' ').next().unwrap().to_string()
            };
            let report = from(cost_sql(&q).text());
            assert_eq!(report, from(top_sql(&q, 10).text()));
            (q.rollup(), report)
        };
        for (list, expected) in [
            (vec![], "cost_daily_by_team"),
            (vec![("group_by", "")], "cost_daily_by_team"),
            (vec![("group_by", "team")], "cost_daily_by_team"),
            (vec![("group_by", "provider,model")], "cost_daily_by_team"),
            (
                vec![(
                    "group_by",
                    "day,month,org,team,provider,model,price_version",
                )],
                "cost_daily_by_team",
            ),
            (
                vec![
                    ("group_by", "model"),
                    ("team", "t"),
                    ("org", "o"),
                    ("provider", "p"),
                ],
                "cost_daily_by_team",
            ),
            (
                vec![("group_by", "day"), ("month", "2026-03")],
                "cost_daily_by_team",
            ),
            (vec![("group_by", "user")], "cost_daily_by_user"),
            (vec![("group_by", "key")], "cost_daily_by_key"),
            (vec![("group_by", "team,user")], "cost_daily_by_user"),
            (
                vec![("group_by", "day,month,org,team,user"), ("org", "o")],
                "cost_daily_by_user",
            ),
            (
                vec![("group_by", "team"), ("user", "u-1")],
                "cost_daily_by_user",
            ),
            (
                vec![("group_by", "day"), ("key", "k-1")],
                "cost_daily_by_key",
            ),
            (vec![("group_by", ""), ("key", "k-1")], "cost_daily_by_key"),
            (
                vec![("group_by", "key"), ("month", "2026-03"), ("team", "t")],
                "cost_daily_by_key",
            ),
            (vec![("group_by", "user,key")], "cost_daily"),
            (vec![("group_by", "user"), ("key", "k-1")], "cost_daily"),
            (vec![("group_by", "user,model")], "cost_daily"),
            (vec![("group_by", "model"), ("key", "k-1")], "cost_daily"),
            (vec![("group_by", "user"), ("provider", "p")], "cost_daily"),
            (vec![("group_by", "key,price_version")], "cost_daily"),
        ] {
            let (rollup, from) = table(&list);
            assert_eq!(rollup, expected, "{list:?}");
            assert_eq!(from, expected, "{list:?}");
        }
    }

    #[test]
    fn bad_tag_requests_name_the_parameter() {
        let today = NaiveDate::from_ymd_opt(2026, 3, 15).unwrap();
        let err = |list: &[(&str, &str)]| parse_params(&pairs(list), today, &[]).unwrap_err();
        let long = "k".repeat(65);
        for (list, parameter, needle) in [
            (vec![("group_by", "tag:")], "group_by", "tag key ``"),
            (vec![("group_by", "tag:a b")], "group_by", "A-Z, a-z, 0-9"),
            (vec![("group_by", "tag:a/b")], "group_by", "tag key `a/b`"),
            (
                vec![("group_by", long.as_str())],
                "group_by",
                "unknown dimension",
            ),
            (
                vec![("tag.bad key", "x")],
                "tag.bad key",
                "tag key `bad key`",
            ),
            (vec![("tag.", "x")], "tag.", "tag key ``"),
            (
                vec![("group_by", "tag:feature"), ("tag.variant", "b")],
                "tag.variant",
                "one tag key",
            ),
            (
                vec![("group_by", "tag:feature,tag:variant")],
                "group_by",
                "one tag key",
            ),
            (
                vec![("group_by", "user,tag:feature")],
                "group_by",
                "no user or key",
            ),
            (
                vec![("group_by", "tag:feature"), ("key", "k1")],
                "key",
                "no user or key",
            ),
            (vec![("group_by", "tag")], "group_by", "tag:<key>"),
            (
                vec![("tag.feature", "a"), ("tag.feature", "b")],
                "tag.feature",
                "more than once",
            ),
        ] {
            let e = err(&list);
            assert_eq!(e.field, parameter, "{list:?}: {e}");
            assert!(e.reason.contains(needle), "{list:?}: {e}");
        }
        let long_key = format!("tag:{}", "k".repeat(65));
        assert_eq!(err(&[("group_by", long_key.as_str())]).field, "group_by");
        let ok_key = format!("tag:{}", "k".repeat(64));
        assert!(parse_params(&pairs(&[("group_by", ok_key.as_str())]), today, &[]).is_ok());
    }
}
