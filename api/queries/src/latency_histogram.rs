//! Order statistics of the groups too large for exact percentiles, read
//! from the latency histogram `latency_minute_buckets` (migration 0036):
//! one row per minute × org × team × provider × model × metric × bucket,
//! with the bucket's exact count (`calls`) and sum (`total_us`).
//!
//! The value at 0-based rank k of a group of more than
//! [`EXACT_MAX_CALLS`] values is the mean (sum / count) of the bucket,
//! in bucket order, where the running count first exceeds k: the
//! definition the report and the alert signals have used since 0026's
//! `sumMap` histograms, so the same calls give the same numbers. Groups of
//! at most [`EXACT_MAX_CALLS`] values get theirs from the kept values of
//! `latency_minute_calls` instead (`latency`), and this statement leaves
//! them out (`HAVING`).
//!
//! One statement answers any grouping, in one of two shapes
//! ([`Fold`]) that give the same numbers:
//! - [`Fold::BucketsFirst`]: an inner `GROUP BY` adds up each bucket of
//!   each group (a bucket is spread over minutes and parts), the outer one
//!   collects a group's buckets in order and picks the ranks. Right when a
//!   group holds many rows per bucket (a few large groups: the totals).
//! - [`Fold::RowsAsRead`]: one `GROUP BY` collects a group's rows as read,
//!   sorted by bucket (a bucket may repeat, once per minute), finds the
//!   bucket where the running count first exceeds each rank, and takes
//!   that bucket's count and sum from the running counts and sums at both
//!   ends of its run of rows. Right when rows are sparse: a series of
//!   many groups and buckets, where nearly every row is a bucket of its
//!   own and the inner `GROUP BY` of the first shape is a hash table as
//!   large as the table read (docs/performance.md, "Latency over long
//!   windows"). The bucket found is the same (the running count at the
//!   last row of a bucket is the bucket's running count), and so is its
//!   mean: the same integer sums divided once.

use std::collections::HashMap;

use super::latency::{ranks, EXACT_MAX_CALLS};
use super::{BoundSql, SqlValue};

/// The histogram table; only this module names it in SQL.
pub(crate) const TABLE: &str = "latency_minute_buckets";

/// Which values a histogram row counts (`metric` in the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Metric {
    /// Every completed or failed call's duration.
    Duration,
    /// The time to first token of streamed calls.
    Ttft,
}

impl Metric {
    /// The value stored in `metric`.
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::Duration => 0,
            Self::Ttft => 1,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Duration),
            1 => Some(Self::Ttft),
            _ => None,
        }
    }
}

/// One output column before `metric`: grouped by (an expression of the
/// table's columns) or a constant (so several statements can share a row
/// struct). Only fixed strings of the calling modules reach SQL here.
#[derive(Debug, Clone)]
pub(crate) enum Column {
    Grouped {
        expr: String,
        alias: &'static str,
    },
    Constant {
        expr: &'static str,
        alias: &'static str,
    },
}

impl Column {
    /// `expr AS alias`: the column where its expression is computed.
    pub(crate) fn computed(&self) -> String {
        match self {
            Self::Grouped { expr, alias } => format!("{expr} AS {alias}"),
            Self::Constant { expr, alias } => format!("{expr} AS {alias}"),
        }
    }

    /// The column over a subquery that computed the grouped ones: their
    /// alias, or the constant.
    pub(crate) fn over_subquery(&self) -> String {
        match self {
            Self::Grouped { alias, .. } => (*alias).to_string(),
            Self::Constant { .. } => self.computed(),
        }
    }

    /// The alias of a grouped column; `None` for a constant.
    pub(crate) fn grouped_alias(&self) -> Option<&'static str> {
        match self {
            Self::Grouped { alias, .. } => Some(*alias),
            Self::Constant { .. } => None,
        }
    }
}

/// What to read: the output columns, the `?` values their expressions
/// take (in order), the window in epoch seconds, `column = value` filters,
/// one metric or both, and the quantile levels (two ranks each, as
/// [`super::latency::order_stats_at`] picks them).
#[derive(Debug, Clone)]
pub(crate) struct HistogramQuery<'a> {
    pub name: &'static str,
    pub columns: Vec<Column>,
    pub column_binds: Vec<SqlValue>,
    pub window: (u64, u64),
    pub filters: Vec<(&'static str, String)>,
    pub metric: Option<Metric>,
    pub levels: &'a [f64],
    pub fold: Fold,
}

/// How the statement adds up a group's bucket rows (module docs); both
/// give identical order statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fold {
    /// Sum each bucket of each group first, then order the buckets.
    BucketsFirst,
    /// Order a group's rows as read, then sum only the buckets picked.
    RowsAsRead,
}

/// The statement: the caller's columns, then `metric UInt8`,
/// `value_count UInt64` and `order_stats Array(Float64)` (in
/// microseconds), one row per group and metric of more than
/// [`EXACT_MAX_CALLS`] values, ordered by the grouped columns and metric.
pub(crate) fn order_stats_sql(query: &HistogramQuery<'_>) -> BoundSql {
    let grouped: Vec<&str> = query
        .columns
        .iter()
        .filter_map(Column::grouped_alias)
        .collect();
    let inner_select: Vec<String> = query
        .columns
        .iter()
        .filter(|c| c.grouped_alias().is_some())
        .map(Column::computed)
        .collect();
    let outer_select: Vec<String> = query.columns.iter().map(Column::over_subquery).collect();
    let every_select: Vec<String> = query.columns.iter().map(Column::computed).collect();
    let mut binds = query.column_binds.clone();
    binds.push(SqlValue::UInt(query.window.0));
    binds.push(SqlValue::UInt(query.window.1));
    let mut filters = String::new();
    if let Some(metric) = query.metric {
        filters.push_str(" AND metric = ?");
        binds.push(SqlValue::UInt(u64::from(metric.code())));
    }
    for (column, value) in &query.filters {
        filters.push_str(&format!(" AND {column} = ?"));
        binds.push(SqlValue::Str(value.clone()));
    }
    let keys: Vec<&str> = grouped.iter().copied().chain(["metric"]).collect();
    let keys = keys.join(", ");
    let leading = |parts: &[String]| {
        parts
            .iter()
            .map(|part| format!("{part}, "))
            .collect::<String>()
    };
    let ranks = ranks("h_last", query.levels);
    let window =
        format!("FROM {TABLE} WHERE minute >= toDateTime(?) AND minute < toDateTime(?){filters}");
    let template = match query.fold {
        Fold::BucketsFirst => {
            let (positions, stats) = buckets_first_stats(&ranks);
            format!(
                "WITH arraySort(groupArray((bucket, n, s))) AS h, \
                 arrayMap(e -> tupleElement(e, 2), h) AS h_counts, \
                 arrayMap(e -> tupleElement(e, 3), h) AS h_sums, \
                 arrayCumSum(h_counts) AS h_cum, \
                 toUInt64(sum(n) - 1) AS h_last, {positions} \
                 SELECT {outer}metric, sum(n) AS value_count, [{stats}] AS order_stats \
                 FROM (SELECT {inner}metric, bucket, sum(calls) AS n, sum(total_us) AS s \
                 {window} GROUP BY {keys}, bucket) \
                 GROUP BY {keys} HAVING value_count > {EXACT_MAX_CALLS} ORDER BY {keys}",
                outer = leading(&outer_select),
                inner = leading(&inner_select),
            )
        }
        // Three sorts by bucket of parallel arrays: rows of one bucket may
        // come in another order in each, which moves no running count at a
        // bucket's end and no bucket's sum.
        Fold::RowsAsRead => {
            let (positions, stats) = rows_as_read_stats(&ranks);
            format!(
                "WITH groupArray(bucket) AS h_read, \
                 arraySort(h_read) AS h_buckets, \
                 arraySort((n, b) -> b, groupArray(calls), h_read) AS h_counts, \
                 arraySort((s, b) -> b, groupArray(total_us), h_read) AS h_sums, \
                 arrayCumSum(h_counts) AS h_cum, \
                 arrayCumSum(h_sums) AS h_sum_cum, \
                 arrayReverse(h_buckets) AS h_reversed, \
                 length(h_buckets) + 1 AS h_end, \
                 toUInt64(sum(calls) - 1) AS h_last, {positions} \
                 SELECT {inner}metric, sum(calls) AS value_count, [{stats}] AS order_stats \
                 {window} GROUP BY {keys} HAVING value_count > {EXACT_MAX_CALLS} ORDER BY {keys}",
                inner = leading(&every_select),
            )
        }
    };
    BoundSql {
        name: query.name,
        template,
        binds,
    }
}

/// [`Fold::BucketsFirst`]'s `WITH` entries (each rank's position in the
/// group's buckets: the first whose running count exceeds it) and its
/// order statistics (that bucket's mean). Each rank is a subscript of its
/// own, not an `arrayMap` over the ranks: a lambda copies every array it
/// captures once per rank (docs/performance.md, "The latency report's
/// statements side by side").
fn buckets_first_stats(ranks: &[String]) -> (String, String) {
    let positions: Vec<String> = ranks
        .iter()
        .enumerate()
        .map(|(i, rank)| format!("arrayFirstIndex(c -> c > {rank}, h_cum) AS h_at{i}"))
        .collect();
    let stats: Vec<String> = (0..ranks.len())
        .map(|i| format!("h_sums[h_at{i}] / h_counts[h_at{i}]"))
        .collect();
    (positions.join(", "), stats.join(", "))
}

/// [`Fold::RowsAsRead`]'s `WITH` entries and order statistics: each
/// rank's bucket (at the first row whose running count exceeds it), the
/// rows just before and at the end of that bucket's run (rows are sorted
/// by bucket: `indexOf` finds its first row, `indexOf` in the reversed
/// buckets its last), and the bucket's mean from the running sums at
/// both ends. Index 0 (a run that starts the group) reads as 0.
fn rows_as_read_stats(ranks: &[String]) -> (String, String) {
    let positions: Vec<String> = ranks
        .iter()
        .enumerate()
        .map(|(i, rank)| {
            format!(
                "h_buckets[arrayFirstIndex(c -> c > {rank}, h_cum)] AS h_bucket{i}, \
                 indexOf(h_buckets, h_bucket{i}) - 1 AS h_before{i}, \
                 h_end - indexOf(h_reversed, h_bucket{i}) AS h_through{i}"
            )
        })
        .collect();
    let stats: Vec<String> = (0..ranks.len())
        .map(|i| {
            format!(
                "(h_sum_cum[h_through{i}] - h_sum_cum[h_before{i}]) \
                 / (h_cum[h_through{i}] - h_cum[h_before{i}])"
            )
        })
        .collect();
    (positions.join(", "), stats.join(", "))
}

/// What a statement's rows hold (their order statistics, with whatever
/// the caller reads beside them) by `(key, metric)`, `key` being whatever
/// identifies the caller's group; a row with a metric code this version
/// does not know is an error naming the statement.
pub(crate) fn by_group<K: std::hash::Hash + Eq, V>(
    query: &'static str,
    rows: impl IntoIterator<Item = (K, u8, V)>,
) -> Result<HashMap<(K, Metric), V>, super::ReadModelError> {
    rows.into_iter()
        .map(|(key, code, order_stats)| {
            let metric =
                Metric::from_code(code).ok_or_else(|| super::ReadModelError::UnexpectedRow {
                    query,
                    detail: format!("metric {code} is neither 0 (duration) nor 1 (ttft)"),
                })?;
            Ok(((key, metric), order_stats))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn statement_groups_buckets_then_groups() {
        let sql = order_stats_sql(&HistogramQuery {
            name: "t",
            columns: vec![
                Column::Grouped {
                    expr: "provider".into(),
                    alias: "key_provider",
                },
                Column::Constant {
                    expr: "''",
                    alias: "key_model",
                },
            ],
            column_binds: vec![],
            window: (60, 120),
            filters: vec![("org_id", "o'1".into())],
            metric: Some(Metric::Ttft),
            levels: &[0.5],
            fold: Fold::BucketsFirst,
        })
        .text();
        assert_eq!(
            sql,
            "WITH arraySort(groupArray((bucket, n, s))) AS h, \
             arrayMap(e -> tupleElement(e, 2), h) AS h_counts, \
             arrayMap(e -> tupleElement(e, 3), h) AS h_sums, \
             arrayCumSum(h_counts) AS h_cum, toUInt64(sum(n) - 1) AS h_last, \
             arrayFirstIndex(c -> c > toUInt64(floor(h_last * 0.5)), h_cum) AS h_at0, \
             arrayFirstIndex(c -> c > least(toUInt64(floor(h_last * 0.5)) + 1, h_last), h_cum) AS h_at1 \
             SELECT key_provider, '' AS key_model, metric, sum(n) AS value_count, \
             [h_sums[h_at0] / h_counts[h_at0], h_sums[h_at1] / h_counts[h_at1]] AS order_stats \
             FROM (SELECT provider AS key_provider, metric, bucket, sum(calls) AS n, sum(total_us) AS s \
             FROM latency_minute_buckets WHERE minute >= toDateTime(60) AND minute < toDateTime(120) \
             AND metric = 1 AND org_id = 'o\\'1' GROUP BY key_provider, metric, bucket) \
             GROUP BY key_provider, metric HAVING value_count > 1000 ORDER BY key_provider, metric"
        );
    }

    #[test]
    fn rows_as_read_groups_once() {
        let sql = order_stats_sql(&HistogramQuery {
            name: "t",
            columns: vec![
                Column::Grouped {
                    expr: "toUInt32(intDiv(toUInt32(minute), ?) * ?)".into(),
                    alias: "bucket_start",
                },
                Column::Constant {
                    expr: "''",
                    alias: "key_model",
                },
            ],
            column_binds: vec![SqlValue::UInt(300), SqlValue::UInt(300)],
            window: (60, 120),
            filters: vec![],
            metric: None,
            levels: &[0.5],
            fold: Fold::RowsAsRead,
        })
        .text();
        assert_eq!(
            sql,
            "WITH groupArray(bucket) AS h_read, arraySort(h_read) AS h_buckets, \
             arraySort((n, b) -> b, groupArray(calls), h_read) AS h_counts, \
             arraySort((s, b) -> b, groupArray(total_us), h_read) AS h_sums, \
             arrayCumSum(h_counts) AS h_cum, arrayCumSum(h_sums) AS h_sum_cum, \
             arrayReverse(h_buckets) AS h_reversed, length(h_buckets) + 1 AS h_end, \
             toUInt64(sum(calls) - 1) AS h_last, \
             h_buckets[arrayFirstIndex(c -> c > toUInt64(floor(h_last * 0.5)), h_cum)] AS h_bucket0, \
             indexOf(h_buckets, h_bucket0) - 1 AS h_before0, \
             h_end - indexOf(h_reversed, h_bucket0) AS h_through0, \
             h_buckets[arrayFirstIndex(c -> c > least(toUInt64(floor(h_last * 0.5)) + 1, h_last), h_cum)] AS h_bucket1, \
             indexOf(h_buckets, h_bucket1) - 1 AS h_before1, \
             h_end - indexOf(h_reversed, h_bucket1) AS h_through1 \
             SELECT toUInt32(intDiv(toUInt32(minute), 300) * 300) AS bucket_start, '' AS key_model, \
             metric, sum(calls) AS value_count, \
             [(h_sum_cum[h_through0] - h_sum_cum[h_before0]) / (h_cum[h_through0] - h_cum[h_before0]), \
             (h_sum_cum[h_through1] - h_sum_cum[h_before1]) / (h_cum[h_through1] - h_cum[h_before1])] AS order_stats \
             FROM latency_minute_buckets WHERE minute >= toDateTime(60) AND minute < toDateTime(120) \
             GROUP BY bucket_start, metric HAVING value_count > 1000 ORDER BY bucket_start, metric"
        );
    }

    #[test]
    fn unknown_metric_is_named() {
        let err = by_group("q", [((), 7, Vec::<f64>::new())]).unwrap_err();
        assert!(err.to_string().contains("metric 7"), "{err}");
    }
}
