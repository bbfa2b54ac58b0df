//! The latency fold: per minute × org × team × provider × model,
//! `latency_minute_calls` holds the call count, errors, and the kept values
//! (up to 1000) of durations and times to first token;
//! `latency_minute_buckets` holds their log-linear histogram as plain rows
//! (metric × bucket → count, sum). ClickHouse folds both from every insert
//! into `calls` through `latency_minute_calls_mv`,
//! `latency_minute_buckets_duration_mv` and `latency_minute_buckets_ttft_mv`
//! (`migrations/clickhouse/0036_latency_minute_buckets.sql`, which replaced
//! the `sumMap` histograms of 0026's `latency_minute_hist`; 0040 counts
//! errors as [`FAILED_OUTCOME_SQL`]: a cancelled call is not one), in the same
//! insert, so it shares the calls fold's effectively-once position; the
//! percentiles are read by `tollgate_queries`.
//!
//! Rust keeps no model of it: the view is the fold. After a failed insert
//! that stored its rows after all, [`repaired`] says how its tables are
//! checked against `calls` and repaired ([`super::view_repair`]).

use super::view_repair::{Counted, Dimension, Feed, RefoldedTable, Sum, SummedTable, ViewTable};
use super::{FoldEntry, Runs};
use tollgate_contract::FAILED_OUTCOME_SQL;

pub const NAME: &str = "latency";

/// The registry's line for this fold.
pub const FOLD: FoldEntry = FoldEntry {
    name: NAME,
    description:
        "per-minute call counts, errors and duration histograms (a clickhouse view over calls)",
    runs: Runs::View {
        fed_by: super::calls::NAME,
        migrations: &[
            "0026_latency_minute_hist.sql",
            "0036_latency_minute_buckets.sql",
            "0040_latency_errors_leave_out_cancelled.sql",
        ],
    },
    catalog,
};

/// The calls the latency views read.
const TIMED_CALLS: &str = "kind IN ('ai.call.completed', 'ai.call.failed')";

/// The bucket of `microseconds` (migration 0036's integer arithmetic: 256
/// buckets per power of two).
fn bucket(microseconds: &str) -> String {
    let width = format!("greatest(intDiv(roundToExp2({microseconds}), 256), toUInt64(1))");
    format!("intDiv({microseconds}, {width}) * {width}")
}

/// A cell of both latency tables, as the views select it from `calls`.
const CELL: [&str; 5] = [
    "toStartOfMinute(occurred_at)",
    "org_id",
    "team_id",
    "provider",
    "model",
];

/// One of the two bucket views (0036): `metric` 0 for durations, 1 for
/// times to first token.
fn bucket_feed(metric: u8, column: &str, filter: String) -> Feed {
    let microseconds = format!("toUInt64({column}) * 1000");
    Feed {
        filter,
        dimensions: CELL
            .iter()
            .map(|d| d.to_string())
            .chain([format!("toUInt8({metric})"), bucket(&microseconds)])
            .collect(),
        sums: vec!["count()".into(), format!("sum({microseconds})")],
    }
}

/// `latency_minute_buckets` (summed, fed by two views) and
/// `latency_minute_calls` (its kept values refolded), as migration 0036's
/// views write them.
pub fn repaired() -> Vec<ViewTable> {
    let cell = [
        ("minute", Dimension::Minute),
        ("org_id", Dimension::Text),
        ("team_id", Dimension::Text),
        ("provider", Dimension::Text),
        ("model", Dimension::Text),
    ];
    vec![
        ViewTable::Summed(SummedTable {
            table: "latency_minute_buckets",
            dimensions: cell
                .iter()
                .copied()
                .chain([("metric", Dimension::Number), ("bucket", Dimension::Number)])
                .collect(),
            sums: vec![("calls", Sum::Count), ("total_us", Sum::Count)],
            feeds: vec![
                bucket_feed(0, "duration_ms", TIMED_CALLS.into()),
                bucket_feed(1, "ttft_ms", format!("{TIMED_CALLS} AND has_ttft = 1")),
            ],
        }),
        ViewTable::Refolded(RefoldedTable {
            table: "latency_minute_calls",
            columns: vec![
                "minute",
                "org_id",
                "team_id",
                "provider",
                "model",
                "calls",
                "errors",
                "duration_sample",
                "ttft_calls",
                "ttft_sample",
            ],
            select: format!(
                "toStartOfMinute(occurred_at) AS minute, org_id, team_id, provider, model, \
                 countState() AS calls, \
                 sumState(toUInt64({FAILED_OUTCOME_SQL})) AS errors, \
                 groupArrayState(1000)(toUInt64(duration_ms) * 1000) AS duration_sample, \
                 sumState(toUInt64(has_ttft)) AS ttft_calls, \
                 groupArrayIfState(1000)(toUInt64(ttft_ms) * 1000, has_ttft) AS ttft_sample"
            ),
            filter: TIMED_CALLS.into(),
            group_by: "minute, org_id, team_id, provider, model".into(),
            counted: Some(Counted {
                cell: CELL
                    .iter()
                    .zip(cell)
                    .map(|(expr, (column, kind))| (expr.to_string(), column, kind))
                    .collect(),
                stored: "countMerge(calls)",
            }),
            covered: None,
        }),
    ]
}

/// The statements of the repair of its tables.
pub fn catalog() -> Vec<(String, String)> {
    super::view_repair::catalog(&repaired())
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    /// The view the newest migration creates counts errors as the contract
    /// does, and the repair refolds them the same way (the repair's own
    /// check reads every migration of the view, so it would also pass
    /// against 0036's `outcome != 'success'`).
    #[test]
    fn the_view_and_its_repair_count_errors_as_the_contract() {
        let newest = include_str!(
            "../../../../migrations/clickhouse/0040_latency_errors_leave_out_cancelled.sql"
        );
        let counted = format!("sumState(toUInt64({FAILED_OUTCOME_SQL})) AS errors");
        assert!(newest.contains(&counted), "{newest}");
        let refolded = catalog().into_iter().any(|(_, sql)| sql.contains(&counted));
        assert!(refolded, "the repair's statements count errors otherwise");
    }
}
