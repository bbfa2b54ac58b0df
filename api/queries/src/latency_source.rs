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
//! Which one a read uses depends only on how many calls its window holds,
//! and whether the rollups count calls that `calls` no longer holds
//! ([`calls_in_window_sql`]: both counts are exact whatever parts
//! ClickHouse has merged, so the same calls give the same report). Both sources name
//! the same intermediate values (`d_sample`, `d_last`, `t_sample`,
//! `t_last`) and the same columns, so every statement built over them
//! reads into the same rows.

use super::latency::{ranks, EXACT_MAX_CALLS};
use super::{BoundSql, ReadModelError, ReadModels, SqlValue};

/// The calls a latency statistic counts: the terminal attempts (the
/// rollups' views keep the same ones).
pub(crate) const TERMINAL: &str = "kind IN ('ai.call.completed', 'ai.call.failed')";

/// Where a latency statement reads its values (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `calls`: every value, exact percentiles at any count.
    Calls,
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
        let side = |p: &str, sample: &str, count: &str| {
            format!(
                "arraySort({sample}) AS {p}_sample, toUInt64(greatest({count}, 1) - 1) AS {p}_last"
            )
        };
        let (duration, ttft) = match self {
            // Milliseconds as stored (UInt32): half the memory of the
            // microseconds the rollups keep; scaled in `order_stats_at`.
            Self::Calls => (
                "groupArray(duration_ms)".to_string(),
                "groupArrayIf(ttft_ms, has_ttft)".to_string(),
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
            Self::Rollups => "countMerge(calls)",
        }
    }

    /// The group's calls whose outcome was not `success`.
    pub(crate) fn error_count(self) -> &'static str {
        match self {
            Self::Calls => "sum(toUInt64(outcome != 'success'))",
            Self::Rollups => "sumMerge(errors)",
        }
    }

    /// The group's streamed calls (with a time to first token).
    pub(crate) fn ttft_count(self) -> &'static str {
        match self {
            Self::Calls => "sum(toUInt64(has_ttft))",
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
    pub(crate) fn order_stats_at(self, p: &str, levels: &[f64]) -> String {
        let scale = match self {
            Self::Calls => " * 1000",
            Self::Rollups => "",
        };
        let stats: Vec<String> = ranks(&format!("{p}_last"), levels)
            .into_iter()
            .map(|k| format!("toFloat64({p}_sample[{k} + 1]){scale}"))
            .collect();
        format!("[{}]", stats.join(", "))
    }

    /// The table and the window on its time (two binds: `from` and `to` as
    /// epoch seconds, so the server's time zone never matters); more
    /// conditions follow with `AND`.
    pub(crate) fn window(self) -> String {
        match self {
            Self::Calls => format!(
                "FROM calls WHERE {TERMINAL} \
                 AND occurred_at >= toDateTime(?) AND occurred_at < toDateTime(?)"
            ),
            Self::Rollups => {
                "FROM latency_minute_calls WHERE minute >= toDateTime(?) AND minute < toDateTime(?)"
                    .to_string()
            }
        }
    }

    /// The column a series buckets by. A window and its buckets are whole
    /// minutes, so `occurred_at` and its minute fall in the same bucket.
    pub(crate) fn time_column(self) -> &'static str {
        match self {
            Self::Calls => "occurred_at",
            Self::Rollups => "minute",
        }
    }

    /// Whether every order statistic of this source is of every value
    /// (the rollups' are above [`EXACT_MAX_CALLS`] values replaced by
    /// histogram estimates).
    pub(crate) fn exact_at_any_count(self) -> bool {
        self == Self::Calls
    }
}

/// How many calls a latency read over `window` (epoch seconds) and
/// `filters` (`(column, value)`, each `column = value`) would sort
/// (`calls`), and how many of them the rollups hold (`folded`): fewer calls
/// than folded means calls the rollups still count are gone from `calls`
/// (dropped by `retention.calls_days` before the rollups' own retention,
/// or erased), and the rollups are then the complete source.
pub(crate) fn calls_in_window_sql(
    name: &'static str,
    (from, to): (u64, u64),
    filters: &[(&'static str, String)],
) -> BoundSql {
    let mut binds = Vec::new();
    let mut count = |count: &str, source: Source| {
        let mut sql = format!("SELECT {count} {}", source.window());
        binds.push(SqlValue::UInt(from));
        binds.push(SqlValue::UInt(to));
        for (column, value) in filters {
            sql.push_str(&format!(" AND {column} = ?"));
            binds.push(SqlValue::Str(value.clone()));
        }
        sql
    };
    let calls = count("count()", Source::Calls);
    let folded = count("countMerge(calls)", Source::Rollups);
    BoundSql {
        name,
        template: format!("SELECT ({calls}) AS calls, ({folded}) AS folded"),
        binds,
    }
}

/// [`calls_in_window_sql`]'s answer.
#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct InWindow {
    calls: u64,
    folded: u64,
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
    Ok(source_for(counted, limit))
}

fn source_for(counted: InWindow, limit: u64) -> Source {
    if counted.calls <= limit && counted.calls >= counted.folded {
        Source::Calls
    } else {
        Source::Rollups
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn both_sources_name_the_same_values() {
        for source in [Source::Calls, Source::Rollups] {
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
        let source = |calls, folded| source_for(InWindow { calls, folded }, 100);
        assert_eq!(source(100, 100), Source::Calls);
        assert_eq!(source(0, 0), Source::Calls);
        // Calls landing: stored, not yet folded by every view.
        assert_eq!(source(100, 98), Source::Calls);
        assert_eq!(source(101, 101), Source::Rollups);
        // Calls the rollups still count are gone (retention, erasure).
        assert_eq!(source(90, 100), Source::Rollups);
    }
}
