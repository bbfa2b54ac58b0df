//! Where a latency statement reads its values: the calls themselves, or the
//! minute rollups (docs/architecture.md, "Latency percentiles").
//!
//! - [`Source::Calls`]: every value of every group, read from `calls` and
//!   sorted in ClickHouse, so each percentile is exact at any group size.
//!   It reads a row per call and holds every value of the window while it
//!   sorts (4 bytes per duration and per time to first token, and the
//!   sorted copy), so it is used only while the window holds at most
//!   [`ReadModels::latency_sort_max_calls`] calls (`[clickhouse]
//!   latency_sort_max_calls`).
//! - [`Source::Rollups`]: `latency_minute_calls`' kept values (up to 1000
//!   per minute and group: exact for groups of at most
//!   [`EXACT_MAX_CALLS`] values) and, above, the histogram of
//!   `latency_minute_buckets` (`latency_histogram`, estimates within
//!   [`super::latency::HISTOGRAM_MAX_RELATIVE_ERROR`]). Their rows stop
//!   growing with the calls of a busy minute, and their reads stay bounded
//!   in memory however many calls a window holds.
//!
//! From the calls, a statement reads its groups one of two ways, both of
//! every value and both giving the same order statistics:
//! - [`Source::Calls`]: each group's values collected and sorted. The
//!   cheaper way for many small groups: a series' points.
//! - [`Source::CallCounts`]: each group's values counted per distinct
//!   millisecond first (a subquery), then the order statistics found in
//!   the running counts. Durations are whole milliseconds, so a group of
//!   10M calls holds a few thousand distinct values: the cheaper way for
//!   a few large groups (the totals, an alert's window), and its memory
//!   stays bounded by the distinct values (docs/performance.md, "Order
//!   statistics from counted values").
//!
//! Which one a read uses depends only on how many calls its window holds,
//! and whether the rollups count calls that `calls` no longer holds
//! ([`calls_in_window_sql`]: both counts are exact whatever parts
//! ClickHouse has merged, so the same calls give the same report). Both sources name
//! the same intermediate values (`d_sample`, `d_last`, `t_sample`,
//! `t_last`) and the same columns, so every statement built over them
//! reads into the same rows.

use super::latency::{ranks, EXACT_MAX_CALLS};
use super::latency_histogram::Column;
use super::{BoundSql, ReadModelError, ReadModels, SqlValue};

/// The calls a latency statistic counts: the terminal attempts (the
/// rollups' views keep the same ones).
pub(crate) const TERMINAL: &str = "kind IN ('ai.call.completed', 'ai.call.failed')";

/// Where a latency statement reads its values (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `calls`, each group's values sorted: exact percentiles at any
    /// count.
    Calls,
    /// `calls`, each group's values counted per distinct value first:
    /// the same exact percentiles, cheaper for large groups. Chosen for
    /// windows of at least [`ReadModels::latency_count_min_calls`] calls;
    /// their series still sort ([`Source::sorted`]).
    CallCounts,
    /// `latency_minute_calls` (and `latency_minute_buckets` above
    /// [`EXACT_MAX_CALLS`] values).
    Rollups,
}

impl Source {
    /// Per-group intermediate values, named once for both metrics (`d_`
    /// duration, `t_` time to first token): the sorted values and the last
    /// rank `n - 1`. In WITH so they are not returned; lambdas can refer to
    /// them (18.16 drops columns of a subquery that only a lambda uses, so
    /// a subquery would not do).
    pub(crate) fn values_with(self) -> String {
        if self == Self::CallCounts {
            return format!("WITH {}, {}", counted_side("d", 0), counted_side("t", 1));
        }
        let side = |p: &str, sample: &str, count: &str| {
            format!(
                "arraySort({sample}) AS {p}_sample, toUInt64(greatest({count}, 1) - 1) AS {p}_last"
            )
        };
        let (duration, ttft) = match self {
            // Milliseconds as stored (UInt32): half the memory of the
            // microseconds the rollups keep; scaled in `order_stats_at`.
            Self::Calls | Self::CallCounts => (
                format!("groupArray({VALUE_OF_DURATION})"),
                format!("groupArrayIf({VALUE_OF_TTFT}, has_ttft)"),
            ),
            Self::Rollups => (
                format!("groupArrayMerge({EXACT_MAX_CALLS})(duration_sample)"),
                format!("groupArrayIfMerge({EXACT_MAX_CALLS})(ttft_sample)"),
            ),
        };
        format!(
            "WITH {}, {}",
            side("d", &duration, self.call_count()),
            side("t", &ttft, self.ttft_count())
        )
    }

    /// The group's completed and failed calls.
    pub(crate) fn call_count(self) -> &'static str {
        match self {
            Self::Calls => "count()",
            Self::CallCounts => "sumIf(n, m = 0)",
            Self::Rollups => "countMerge(calls)",
        }
    }

    /// The group's failed calls ([`tollgate_contract::Outcome::is_failure`]).
    pub(crate) fn error_count(self) -> &'static str {
        match self {
            Self::Calls => ERRORS,
            Self::CallCounts => "sum(e)",
            Self::Rollups => "sumMerge(errors)",
        }
    }

    /// The group's streamed calls (with a time to first token).
    pub(crate) fn ttft_count(self) -> &'static str {
        match self {
            Self::Calls => "sum(toUInt64(has_ttft))",
            Self::CallCounts => "sumIf(n, m = 1)",
            Self::Rollups => "sumMerge(ttft_calls)",
        }
    }

    /// The order statistics `Percentiles::from_order_stats` interpolates
    /// between, in microseconds, as `Array(Float64)`, of the values named
    /// `{p}_sample` by [`Source::values_with`], at the quantile `levels`
    /// (two ranks per level: the histogram statement picks the same ones).
    /// From the rollups they are right for a group of at most
    /// [`EXACT_MAX_CALLS`] values, which kept them all; a larger group's
    /// come from the histogram (`latency_histogram`) and replace them.
    ///
    /// Each is indexed directly (an array literal of the six subscripts),
    /// not through `arrayMap` over the ranks: a lambda that captures the
    /// sample copies it once per rank, which was 15 % of the 24-hour series
    /// statement (docs/performance.md, "The latency report's statements
    /// side by side").
    ///
    /// From [`Source::CallCounts`], `{p}_sample` holds each distinct value
    /// once and `{p}_running` how many values are at most each: the value
    /// at rank `k` (from 0) is the first whose running count exceeds `k`.
    pub(crate) fn order_stats_at(self, p: &str, levels: &[f64]) -> String {
        let scale = match self {
            Self::Calls | Self::CallCounts => " * 1000",
            Self::Rollups => "",
        };
        let stats: Vec<String> = ranks(&format!("{p}_last"), levels)
            .into_iter()
            .map(|k| match self {
                Self::CallCounts => format!(
                    "toFloat64({p}_sample[arrayFirstIndex(r -> r > {k}, {p}_running)]){scale}"
                ),
                Self::Calls | Self::Rollups => format!("toFloat64({p}_sample[{k} + 1]){scale}"),
            })
            .collect();
        format!("[{}]", stats.join(", "))
    }

    /// `FROM table WHERE` the window on its time and `column = ?` for each
    /// of `filters` (`(column, value)`), their values pushed on `binds`:
    /// `from` and `to` as epoch seconds, so the server's time zone never
    /// matters.
    pub(crate) fn window(
        self,
        (from, to): (u64, u64),
        filters: &[(&'static str, String)],
        binds: &mut Vec<SqlValue>,
    ) -> String {
        let mut sql = match self {
            Self::Calls | Self::CallCounts => format!(
                "FROM calls WHERE {TERMINAL} \
                 AND occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?)"
            ),
            Self::Rollups => {
                "FROM latency_minute_calls WHERE minute >= toDateTime(?) AND minute < toDateTime(?)"
                    .to_string()
            }
        };
        binds.extend([SqlValue::UInt(from), SqlValue::UInt(to)]);
        for (column, value) in filters {
            sql.push_str(&format!(" AND {column} = ?"));
            binds.push(SqlValue::Str(value.clone()));
        }
        sql
    }

    /// The column a series buckets by. A window and its buckets are whole
    /// minutes, so `occurred_at` and its minute fall in the same bucket.
    pub(crate) fn time_column(self) -> &'static str {
        match self {
            Self::Calls | Self::CallCounts => "occurred_at",
            Self::Rollups => "minute",
        }
    }

    /// Whether every order statistic of this source is of every value
    /// (the rollups' are above [`EXACT_MAX_CALLS`] values replaced by
    /// histogram estimates).
    pub(crate) fn exact_at_any_count(self) -> bool {
        matches!(self, Self::Calls | Self::CallCounts)
    }

    /// How a series reads its points, many small groups: from the calls,
    /// sorted (counting per value would hash nearly every call as a key
    /// of its own); the rollups as they are.
    pub(crate) fn sorted(self) -> Self {
        match self {
            Self::CallCounts => Self::Calls,
            other => other,
        }
    }

    /// `{values_with} SELECT {columns}, {stats} FROM … WHERE {window} AND
    /// {column} = ? … GROUP BY {keys} ORDER BY {keys}`: `columns` in their
    /// order (grouped by or constant), `column_binds` the `?` values of
    /// their expressions, `keys` the aliases of the grouped ones in the
    /// order rows are sorted by, `stats` expressions of this source's
    /// aggregates ([`Source::call_count`], [`Source::order_stats_at`], …),
    /// `window` in epoch seconds and `filters` as `(column, value)`.
    pub(crate) fn grouped_sql(
        self,
        (columns, column_binds, keys): (&[Column], &[SqlValue], &[&str]),
        stats: &str,
        window: (u64, u64),
        filters: &[(&'static str, String)],
    ) -> (String, Vec<SqlValue>) {
        let mut binds = Vec::new();
        let mut outer: Vec<String> = match self {
            // The inner statements compute the grouped columns.
            Self::CallCounts => columns.iter().map(Column::over_subquery).collect(),
            Self::Calls | Self::Rollups => {
                binds.extend_from_slice(column_binds);
                columns.iter().map(Column::computed).collect()
            }
        };
        let from_sql = match self {
            Self::CallCounts => {
                // Per group and distinct value: how many calls (`n`) and,
                // of durations, how many failed (`e`); `m` 0 for
                // durations, 1 for times to first token.
                let computed: String = columns
                    .iter()
                    .filter(|c| c.grouped_alias().is_some())
                    .map(|c| format!("{}, ", c.computed()))
                    .collect();
                let group_keys: String = keys.iter().map(|a| format!("{a}, ")).collect();
                let mut inner = |m: u8, value: &str, errors: &str, only: &str| {
                    binds.extend_from_slice(column_binds);
                    let conditions = self.window(window, filters, &mut binds);
                    format!(
                        "SELECT {computed}{m} AS m, {value} AS v, count() AS n, {errors} AS e \
                         {conditions}{only} GROUP BY {group_keys}v"
                    )
                };
                let durations = inner(0, VALUE_OF_DURATION, ERRORS, "");
                let ttfts = inner(1, VALUE_OF_TTFT, "toUInt64(0)", " AND has_ttft");
                format!("FROM ({durations} UNION ALL {ttfts})")
            }
            Self::Calls | Self::Rollups => self.window(window, filters, &mut binds),
        };
        outer.push(stats.to_string());
        let mut sql = format!(
            "{} SELECT {} {from_sql}",
            self.values_with(),
            outer.join(", ")
        );
        if !keys.is_empty() {
            let keys = keys.join(", ");
            sql.push_str(&format!(" GROUP BY {keys} ORDER BY {keys}"));
        }
        (sql, binds)
    }
}

/// A call's duration as `calls` stores it (milliseconds, UInt32): the
/// `v` of [`Source::CallCounts`]' subquery where `m` is 0.
const VALUE_OF_DURATION: &str = "duration_ms";
/// A call's time to first token, likewise: `v` where `m` is 1.
const VALUE_OF_TTFT: &str = "ttft_ms";

/// How many of the calls read failed: [`tollgate_contract::FAILED_OUTCOME_SQL`]
/// (a cancelled call did not), as the rollup counts them.
const ERRORS: &str = "sum(toUInt64(outcome NOT IN ('success', 'cancelled')))";

/// [`Source::CallCounts`]' intermediate values of one metric (`m` 0 or 1
/// in its subquery, [`Source::grouped_sql`]): the distinct values sorted
/// (`{p}_sample`), the running count at each (`{p}_running`), and the last
/// rank (`{p}_last`).
fn counted_side(p: &str, m: u8) -> String {
    format!(
        "arraySort(groupArrayIf(v, m = {m})) AS {p}_sample, \
         arrayCumSum(arraySort((c, x) -> x, groupArrayIf(n, m = {m}), groupArrayIf(v, m = {m}))) AS {p}_running, \
         toUInt64(greatest(sumIf(n, m = {m}), 1) - 1) AS {p}_last"
    )
}

/// How many calls a latency read over `window` (epoch seconds) and
/// `filters` (`(column, value)`, each `column = value`) would sort
/// (`calls`), and how many of them the rollups hold (`folded`): fewer calls
/// than folded means calls the rollups still count are gone from `calls`
/// (dropped by `retention.calls_days` before the rollups' own retention,
/// or erased), and the rollups are then the complete source.
pub(crate) fn calls_in_window_sql(
    name: &'static str,
    window: (u64, u64),
    filters: &[(&'static str, String)],
) -> BoundSql {
    let mut binds = Vec::new();
    let mut count = |source: Source| {
        let from = source.window(window, filters, &mut binds);
        format!("SELECT {} {from}", source.call_count())
    };
    let calls = count(Source::Calls);
    let folded = count(Source::Rollups);
    BoundSql {
        name,
        template: format!("SELECT ({calls}) AS calls, ({folded}) AS folded"),
        binds,
    }
}

/// [`calls_in_window_sql`]'s answer.
#[derive(Debug, clickhouse::Row, serde::Deserialize)]
pub(crate) struct InWindow {
    pub(crate) calls: u64,
    pub(crate) folded: u64,
}

/// The source of a read over `window` and `filters`: the calls while they
/// are at most [`ReadModels::latency_sort_max_calls`] (0: always the
/// rollups, without counting) and none the rollups count is missing.
pub(crate) async fn choose(
    models: &ReadModels,
    name: &'static str,
    window: (u64, u64),
    filters: &[(&'static str, String)],
) -> Result<Source, ReadModelError> {
    let limit = models.latency_sort_max_calls();
    if limit == 0 {
        return Ok(Source::Rollups);
    }
    let sql = calls_in_window_sql(name, window, filters);
    let counted = models
        .bounded(sql.query(models.client()).fetch_one::<InWindow>())
        .await
        .map_err(|err| models.classify(sql.name, err))?;
    Ok(source_for(counted, limit, models.latency_count_min_calls()))
}

/// `count_min`: from how many calls the totals are counted per value
/// (`[clickhouse] latency_count_min_calls`, 100k by default). Measured
/// (docs/performance.md, "Order statistics from counted values"): over
/// 333k calls (24 h) counting took half the time of sorting, over 10M
/// calls a tenth; over an alert rule's few minutes (thousands of calls)
/// it took 1.7 times as long, its subquery reading the window twice.
pub(crate) fn source_for(counted: InWindow, limit: u64, count_min: u64) -> Source {
    if counted.calls > limit || counted.calls < counted.folded {
        Source::Rollups
    } else if counted.calls >= count_min {
        Source::CallCounts
    } else {
        Source::Calls
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_counted_as_the_contract_counts_them() {
        assert_eq!(
            ERRORS,
            format!("sum(toUInt64({}))", tollgate_contract::FAILED_OUTCOME_SQL)
        );
    }

    #[test]
    fn both_sources_name_the_same_values() {
        for source in [Source::Calls, Source::CallCounts, Source::Rollups] {
            let with = source.values_with();
            for name in ["d_sample", "d_last", "t_sample", "t_last"] {
                assert!(with.contains(&format!("AS {name}")), "{source:?}: {with}");
            }
        }
    }

    #[test]
    fn order_stats_are_microseconds_from_either_source() {
        let calls = Source::Calls.order_stats_at("d", &[0.5]);
        assert_eq!(
            calls,
            "[toFloat64(d_sample[toUInt64(floor(d_last * 0.5)) + 1]) * 1000, \
             toFloat64(d_sample[least(toUInt64(floor(d_last * 0.5)) + 1, d_last) + 1]) * 1000]"
        );
        let rollups = Source::Rollups.order_stats_at("d", &[0.5]);
        assert_eq!(rollups, calls.replace(" * 1000", ""));
    }

    #[test]
    fn counted_order_stats_are_the_first_value_whose_running_count_exceeds_the_rank() {
        let counted = Source::CallCounts.order_stats_at("d", &[0.5]);
        assert_eq!(
            counted,
            "[toFloat64(d_sample[arrayFirstIndex(r -> r > toUInt64(floor(d_last * 0.5)), d_running)]) * 1000, \
             toFloat64(d_sample[arrayFirstIndex(r -> r > least(toUInt64(floor(d_last * 0.5)) + 1, d_last), d_running)]) * 1000]"
        );
        assert!(Source::CallCounts.exact_at_any_count());
        assert_eq!(Source::CallCounts.sorted(), Source::Calls);
        assert_eq!(Source::Calls.sorted(), Source::Calls);
        assert_eq!(Source::Rollups.sorted(), Source::Rollups);
    }

    #[test]
    fn counted_statements_group_each_metrics_values_in_a_subquery() {
        let columns = [
            Column::Grouped {
                expr: "team_id".into(),
                alias: "key_team",
            },
            Column::Constant {
                expr: "''",
                alias: "key_org",
            },
        ];
        let (sql, binds) = Source::CallCounts.grouped_sql(
            (&columns, &[], &["key_team"]),
            "sumIf(n, m = 0) AS call_count",
            (60, 120),
            &[("org_id", "acme".into())],
        );
        let inner = |m: u8, v: &str, e: &str, only: &str| {
            format!(
                "SELECT team_id AS key_team, {m} AS m, {v} AS v, count() AS n, {e} AS e \
                 FROM calls WHERE {TERMINAL} AND occurred_at >= toDateTime(?) \
                 AND occurred_at < toDateTime(?) AND org_id = ?{only} GROUP BY key_team, v"
            )
        };
        assert_eq!(
            sql,
            format!(
                "{} SELECT key_team, '' AS key_org, sumIf(n, m = 0) AS call_count \
                 FROM ({} UNION ALL {}) GROUP BY key_team ORDER BY key_team",
                Source::CallCounts.values_with(),
                inner(0, "duration_ms", ERRORS, ""),
                inner(1, "ttft_ms", "toUInt64(0)", " AND has_ttft"),
            )
        );
        // The window and the filter, once per metric.
        assert_eq!(binds.len(), 6);
    }

    #[test]
    fn the_count_reads_the_calls_and_what_the_rollups_folded() {
        let sql = calls_in_window_sql(
            "latency.calls_in_window",
            (60, 120),
            &[("org_id", "acme".into())],
        );
        assert_eq!(
            sql.text(),
            "SELECT (SELECT count() FROM calls WHERE kind IN ('ai.call.completed', 'ai.call.failed') \
             AND occurred_at >= toDateTime(60) AND occurred_at < toDateTime(120) AND org_id = 'acme') AS calls, \
             (SELECT countMerge(calls) FROM latency_minute_calls WHERE minute >= toDateTime(60) \
             AND minute < toDateTime(120) AND org_id = 'acme') AS folded"
        );
    }

    #[test]
    fn the_calls_answer_up_to_the_limit_when_none_is_missing() {
        let source = |calls, folded| source_for(InWindow { calls, folded }, 100, 1_000);
        assert_eq!(source(100, 100), Source::Calls);
        assert_eq!(source(0, 0), Source::Calls);
        // Calls landing: stored, not yet folded by every view.
        assert_eq!(source(100, 98), Source::Calls);
        assert_eq!(source(101, 101), Source::Rollups);
        // Calls the rollups still count are gone (retention, erasure).
        assert_eq!(source(90, 100), Source::Rollups);
        // A large window's totals are counted per value.
        let source = |calls| {
            source_for(
                InWindow {
                    calls,
                    folded: calls,
                },
                16_000_000,
                100_000,
            )
        };
        assert_eq!(source(99_999), Source::Calls);
        assert_eq!(source(100_000), Source::CallCounts);
        assert_eq!(source(16_000_000), Source::CallCounts);
        assert_eq!(source(16_000_001), Source::Rollups);
        // 0: always counted.
        assert_eq!(
            source_for(
                InWindow {
                    calls: 0,
                    folded: 0
                },
                100,
                0
            ),
            Source::CallCounts
        );
    }
}
