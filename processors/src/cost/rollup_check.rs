//! The cost rollups checked against the facts they are folded from, and
//! repaired: `tollgate rollups check [--repair]`.
//!
//! Each cost rollup (`cost_daily`, `cost_daily_by_team`,
//! `cost_daily_by_user`, `cost_daily_by_key`) is the sum, per
//! cell, of the billable `calls` and of the `cost_adjustments` rows
//! (`tollgate reprice`), fed by materialized views in the same insert. A
//! ClickHouse server killed between the part of `calls` and the parts of
//! its views leaves a rollup short of the facts for good
//! (docs/processor.md, "Guarantees"). The check computes, per cell of a day
//! range, what the facts say minus what the rollup holds; the repair
//! inserts exactly that difference (the rollups are `SummingMergeTree`s of
//! signed sums), so a repaired rollup equals the facts and a second repair
//! inserts nothing.
//!
//! An insert running while the difference is read can be half visible (its
//! `calls` part without its views' parts yet), and the repair would then
//! count it twice: `--repair` runs only while no processor does (the
//! caller checks the consumer group, as `migrate` does for a backfill), and
//! not beside `tollgate reprice`.

use clickhouse::{Client, Row};
use serde::Deserialize;
use tollgate_control::cost_rollup::{Rollup, ROLLUPS};

/// The sums of every cost rollup, in column order: (name, from a `calls`
/// row, from a `cost_adjustments` row). As the views of 0021 compute them.
const MEASURES: [(&str, &str, &str); 10] = [
    ("calls", "toInt64(count())", "toInt64(sum(sign))"),
    (
        "unpriced_calls",
        "toInt64(sum(1 - priced))",
        "toInt64(sum(unpriced))",
    ),
    (
        "input_tokens",
        "toInt64(sum(input_tokens))",
        "toInt64(sum(input_tokens))",
    ),
    (
        "output_tokens",
        "toInt64(sum(output_tokens))",
        "toInt64(sum(output_tokens))",
    ),
    (
        "cached_input_tokens",
        "toInt64(sum(cached_input_tokens))",
        "toInt64(sum(cached_input_tokens))",
    ),
    (
        "cache_write_tokens",
        "toInt64(sum(cache_write_tokens))",
        "toInt64(sum(cache_write_tokens))",
    ),
    (
        "reasoning_tokens",
        "toInt64(sum(reasoning_tokens))",
        "toInt64(sum(reasoning_tokens))",
    ),
    ("images", "toInt64(sum(images))", "toInt64(sum(images))"),
    (
        "audio_ms",
        "toInt64(sum(audio_ms))",
        "toInt64(sum(audio_ms))",
    ),
    ("cost", "sum(cost)", "sum(cost)"),
];

/// A dimension as read from the facts (`calls`, `cost_adjustments`): the
/// day of `occurred_at` in UTC, the others as plain types (a view's
/// `LowCardinality` and `UInt64` columns meet in one `UNION ALL`).
fn fact_dimension(dimension: &str) -> String {
    match dimension {
        "day" => "toDate(occurred_at, 'UTC') AS day".to_string(),
        "price_version" => "toUInt64(price_version) AS price_version".to_string(),
        other => format!("toString({other}) AS {other}"),
    }
}

/// A dimension as read from the rollup itself.
fn rollup_dimension(dimension: &str) -> String {
    match dimension {
        "day" | "price_version" => dimension.to_string(),
        other => format!("toString({other}) AS {other}"),
    }
}

/// The difference per cell of `rollup` over the days `[from, to)` (two
/// bound values, `YYYY-MM-DD`, bound twice: once per source): facts minus
/// rollup, only the cells where some sum differs.
pub fn difference_sql(rollup: &Rollup) -> String {
    let group_by = rollup.columns.join(", ");
    let fact_dims: Vec<String> = rollup.columns.iter().map(|d| fact_dimension(d)).collect();
    let rollup_dims: Vec<String> = rollup.columns.iter().map(|d| rollup_dimension(d)).collect();
    let measures = |pick: &dyn Fn(&(&str, &str, &str)) -> String| -> String {
        MEASURES
            .iter()
            .map(|m| format!("{} AS d_{}", pick(m), m.0))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let in_facts = "occurred_at >= toDateTime(?, 'UTC') AND occurred_at < toDateTime(?, 'UTC')";
    let totals: Vec<String> = MEASURES
        .iter()
        .map(|m| format!("sum(d_{0}) AS {0}", m.0))
        .collect();
    let differs: Vec<String> = MEASURES.iter().map(|m| format!("{} != 0", m.0)).collect();
    format!(
        "SELECT {group_by}, {totals} FROM (\
         SELECT {fact_dims}, {from_calls} FROM calls \
         WHERE kind IN ('ai.call.completed', 'ai.call.failed') AND {in_facts} GROUP BY {group_by} \
         UNION ALL \
         SELECT {fact_dims}, {from_adjustments} FROM cost_adjustments WHERE {in_facts} GROUP BY {group_by} \
         UNION ALL \
         SELECT {rollup_dims}, {negated} FROM {table} \
         WHERE day >= toDate(?) AND day < toDate(?) GROUP BY {group_by}\
         ) GROUP BY {group_by} HAVING {differs}",
        totals = totals.join(", "),
        fact_dims = fact_dims.join(", "),
        rollup_dims = rollup_dims.join(", "),
        from_calls = measures(&|m| m.1.to_string()),
        from_adjustments = measures(&|m| m.2.to_string()),
        negated = measures(&|m| format!("-sum({})", m.0)),
        table = rollup.table,
        differs = differs.join(" OR "),
    )
}

/// What the facts and one rollup disagree on over a day range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    pub table: &'static str,
    /// Cells where some sum differs.
    pub cells: u64,
    /// Facts minus rollup, over those cells: calls and cost (exact, as
    /// ClickHouse prints a `Decimal(38, 12)`).
    pub calls: i64,
    pub cost: String,
}

#[derive(Debug, Row, Deserialize)]
struct Summary {
    cells: u64,
    calls: i64,
    cost: String,
}

/// Compare `rollup` with the facts over `[from, to)` (days, `YYYY-MM-DD`).
pub async fn check(
    client: &Client,
    rollup: &Rollup,
    from: &str,
    to: &str,
) -> clickhouse::error::Result<Disagreement> {
    let summary: Summary = with_days(
        client.query(&format!(
            "SELECT count() AS cells, toInt64(sum(calls)) AS calls, toString(sum(cost)) AS cost \
             FROM ({})",
            difference_sql(rollup)
        )),
        from,
        to,
    )
    .fetch_one()
    .await?;
    Ok(Disagreement {
        table: rollup.table,
        cells: summary.cells,
        calls: summary.calls,
        cost: summary.cost,
    })
}

/// Insert the difference of [`check`] into `rollup`, so it equals the facts.
pub async fn repair(
    client: &Client,
    rollup: &Rollup,
    from: &str,
    to: &str,
) -> clickhouse::error::Result<()> {
    let columns: Vec<&str> = rollup
        .columns
        .iter()
        .copied()
        .chain(MEASURES.iter().map(|m| m.0))
        .collect();
    with_days(
        client.query(&format!(
            "INSERT INTO {} ({}) {}",
            rollup.table,
            columns.join(", "),
            difference_sql(rollup)
        )),
        from,
        to,
    )
    .execute()
    .await
}

/// [`difference_sql`]'s bound values for the days `[from, to)`
/// (`YYYY-MM-DD`): the first second of each for the two facts tables, the
/// days themselves for the rollup.
fn with_days(query: clickhouse::query::Query, from: &str, to: &str) -> clickhouse::query::Query {
    let start = |day: &str| format!("{day} 00:00:00");
    query
        .bind(start(from))
        .bind(start(to))
        .bind(start(from))
        .bind(start(to))
        .bind(from)
        .bind(to)
}

/// The statements, with sample values, for the SQL compatibility check.
pub fn catalog() -> Vec<(String, String)> {
    ROLLUPS
        .iter()
        .map(|rollup| {
            let query = Client::default().query(&difference_sql(rollup));
            let sql = with_days(query, "2026-03-01", "2026-04-01")
                .sql_display()
                .to_string();
            (format!("rollup_check.difference.{}", rollup.table), sql)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rollup_keeps_day_first_and_only_cost_daily_dimensions() {
        let all = ROLLUPS[ROLLUPS.len() - 1].columns;
        for rollup in &ROLLUPS {
            assert_eq!(rollup.columns[0], "day", "{}", rollup.table);
            for d in rollup.columns {
                assert!(all.contains(d), "{} has {d}", rollup.table);
            }
        }
    }

    #[test]
    fn the_difference_groups_by_the_rollup_dimensions_only() {
        let by_team = ROLLUPS
            .iter()
            .find(|r| r.table == "cost_daily_by_team")
            .unwrap();
        let sql = difference_sql(by_team);
        assert!(!sql.contains("user_id"), "{sql}");
        assert!(sql.contains("GROUP BY day, org_id, team_id, provider, model, price_version"));
        assert_eq!(sql.matches('?').count(), 6, "{sql}");
    }
}
