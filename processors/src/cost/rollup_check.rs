//! The cost rollups checked against the facts they are folded from, and
//! repaired: `tollgate rollups check [--repair]`.
//!
//! Each cost rollup (`cost_daily`, `cost_daily_by_team`,
//! `cost_daily_by_user`, `cost_daily_by_key`, and per tag
//! `cost_daily_tags`) is the sum, per cell, of the billable `calls` and of
//! the `cost_adjustments` rows (`tollgate reprice`), fed by materialized
//! views in the same insert. The tag rollup has a row per tag of a call (a
//! call with two tags is in two cells), and an adjustment counts under its
//! own tags, or its call's when it has none (adjustments posted before
//! migration 0023 have none: its backfill gave them their call's). A
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
//! count it twice: `--repair` over every cell runs only while no processor
//! does (the caller checks the consumer group, as `migrate` does for a
//! backfill), and not beside `tollgate reprice`. The calls fold repairs the
//! cells of some teams ([`Cells::OfTeams`], [`level`]) while processors run:
//! the rows a failed insert stored after all (docs/processor.md, step 7).

use chrono::{DateTime, NaiveDate};
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

/// The tag rollup (migration 0023) as a [`Rollup`]: its cells, day first.
pub const COST_DAILY_TAGS: Rollup = Rollup {
    table: "cost_daily_tags",
    columns: &[
        "day",
        "org_id",
        "team_id",
        "tag_key",
        "tag_value",
        "provider",
        "model",
        "price_version",
    ],
};

/// Every cost rollup checked against the facts: the untagged ones, then
/// the tag rollup.
pub fn checked() -> impl Iterator<Item = &'static Rollup> {
    ROLLUPS.iter().chain(std::iter::once(&COST_DAILY_TAGS))
}

/// Whether `rollup` has a cell per tag of a call (its facts are read
/// through `ARRAY JOIN` of the tags).
fn is_tagged(rollup: &Rollup) -> bool {
    rollup.columns.contains(&"tag_key")
}

/// A dimension as read from the facts (`calls`, `cost_adjustments`): the
/// day of `occurred_at` in UTC, the others as plain types (a view's
/// `LowCardinality` and `UInt64` columns meet in one `UNION ALL`).
fn fact_dimension(dimension: &str) -> String {
    match dimension {
        "day" => "toDate(occurred_at, 'UTC') AS day".to_string(),
        "price_version" => "toUInt64(price_version) AS price_version".to_string(),
        // Names given by `ARRAY JOIN`, already strings (renaming them to
        // themselves would be a cyclic alias).
        "tag_key" | "tag_value" => dimension.to_string(),
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

/// Which cells of the days a check reads.
#[derive(Debug, Clone, Copy)]
pub enum Cells<'a> {
    /// Every cell.
    All,
    /// The cells of these teams (not empty). Every rollup has `team_id` in
    /// its cells, and the events topic is keyed by it, so these cells are
    /// fed by the Kafka partitions the teams hash to and no other: the
    /// processor that owns them can check them while the others insert
    /// (`crate::folds::calls`, a failed insert stored after all).
    OfTeams(&'a [String]),
}

/// The difference per cell of `rollup` over the days `[from, to)` (two
/// bound values, `YYYY-MM-DD`, bound once per source, followed by the
/// teams for [`Cells::OfTeams`]; see [`bind`]): facts minus rollup, only
/// the cells where some sum differs.
pub fn difference_sql(rollup: &Rollup, cells: Cells<'_>) -> String {
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
    let of_teams = match cells {
        Cells::All => "",
        Cells::OfTeams(_) => " AND has(?, team_id)",
    };
    let in_facts = format!(
        "occurred_at >= toDateTime(?, 'UTC') AND occurred_at < toDateTime(?, 'UTC'){of_teams}"
    );
    let billable = "kind IN ('ai.call.completed', 'ai.call.failed')";
    let (calls, adjustments) = if is_tagged(rollup) {
        // An adjustment carries its call's `occurred_at` (and team), so
        // its call is among the facts of the same cells; only the calls
        // with adjustments are joined (the join holds its right side in
        // memory).
        let adjustment_columns = "occurred_at, org_id, team_id, provider, model, price_version, \
             sign, unpriced, input_tokens, output_tokens, cached_input_tokens, \
             cache_write_tokens, reasoning_tokens, images, audio_ms, cost";
        (
            "calls ARRAY JOIN tag_keys AS tag_key, tag_values AS tag_value".to_string(),
            format!(
                "(SELECT {adjustment_columns}, \
                 if(empty(tag_keys), call_tag_keys, tag_keys) AS keys, \
                 if(empty(tag_keys), call_tag_values, tag_values) AS vals \
                 FROM cost_adjustments ANY LEFT JOIN (\
                 SELECT event_id, tag_keys AS call_tag_keys, tag_values AS call_tag_values \
                 FROM calls WHERE {billable} AND {in_facts} \
                 AND event_id IN (SELECT event_id FROM cost_adjustments WHERE {in_facts})\
                 ) AS call_tags USING event_id \
                 WHERE {in_facts}) ARRAY JOIN keys AS tag_key, vals AS tag_value"
            ),
        )
    } else {
        (
            "calls".to_string(),
            format!("cost_adjustments WHERE {in_facts}"),
        )
    };
    let totals: Vec<String> = MEASURES
        .iter()
        .map(|m| format!("sum(d_{0}) AS {0}", m.0))
        .collect();
    let differs: Vec<String> = MEASURES.iter().map(|m| format!("{} != 0", m.0)).collect();
    format!(
        "SELECT {group_by}, {totals} FROM (\
         SELECT {fact_dims}, {from_calls} FROM {calls} \
         WHERE {billable} AND {in_facts} GROUP BY {group_by} \
         UNION ALL \
         SELECT {fact_dims}, {from_adjustments} FROM {adjustments} GROUP BY {group_by} \
         UNION ALL \
         SELECT {rollup_dims}, {negated} FROM {table} \
         WHERE day >= toDate(?) AND day < toDate(?){of_teams} GROUP BY {group_by}\
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
    cells: Cells<'_>,
    from: &str,
    to: &str,
) -> clickhouse::error::Result<Disagreement> {
    let summary: Summary = bind(
        client.query(&format!(
            "SELECT count() AS cells, toInt64(sum(calls)) AS calls, toString(sum(cost)) AS cost \
             FROM ({})",
            difference_sql(rollup, cells)
        )),
        rollup,
        cells,
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
    cells: Cells<'_>,
    from: &str,
    to: &str,
) -> clickhouse::error::Result<()> {
    let columns: Vec<&str> = rollup
        .columns
        .iter()
        .copied()
        .chain(MEASURES.iter().map(|m| m.0))
        .collect();
    bind(
        client.query(&format!(
            "INSERT INTO {} ({}) {}",
            rollup.table,
            columns.join(", "),
            difference_sql(rollup, cells)
        )),
        rollup,
        cells,
        from,
        to,
    )
    .execute()
    .await
}

/// The cells a batch of `calls` rows adds to: its teams (sorted, once
/// each) and its days, `[from, to)` as `YYYY-MM-DD` (UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchCells {
    pub teams: Vec<String>,
    pub from: String,
    pub to: String,
}

impl BatchCells {
    /// Of rows given as (team, `occurred_at` in Unix seconds); `None` for
    /// no rows.
    pub fn of<'a>(rows: impl IntoIterator<Item = (&'a str, u32)>) -> Option<Self> {
        let mut teams = std::collections::BTreeSet::new();
        let mut days: Option<(NaiveDate, NaiveDate)> = None;
        for (team, occurred_at) in rows {
            teams.insert(team.to_string());
            let day = DateTime::from_timestamp(i64::from(occurred_at), 0)
                .unwrap_or_default()
                .date_naive();
            days = Some(match days {
                None => (day, day),
                Some((first, last)) => (first.min(day), last.max(day)),
            });
        }
        let (first, last) = days?;
        Some(Self {
            teams: teams.into_iter().collect(),
            from: first.to_string(),
            to: last.succ_opt().unwrap_or(last).to_string(),
        })
    }
}

/// Check every cost rollup over `cells` and repair each that disagrees
/// with the facts; returns what was found before the repairs, and the
/// tables that still disagree after theirs (something else inserted into
/// those cells meanwhile: `tollgate reprice`). Exact only while no insert
/// into these cells is under way (see [`Cells::OfTeams`]).
pub async fn level(
    client: &Client,
    cells: &BatchCells,
) -> clickhouse::error::Result<(Vec<Disagreement>, Vec<&'static str>)> {
    let scope = Cells::OfTeams(&cells.teams);
    let mut found = Vec::new();
    let mut still = Vec::new();
    for rollup in checked() {
        let before = check(client, rollup, scope, &cells.from, &cells.to).await?;
        if before.cells == 0 {
            continue;
        }
        repair(client, rollup, scope, &cells.from, &cells.to).await?;
        if check(client, rollup, scope, &cells.from, &cells.to)
            .await?
            .cells
            != 0
        {
            still.push(rollup.table);
        }
        found.push(before);
    }
    Ok((found, still))
}

/// [`difference_sql`]'s bound values for the days `[from, to)`
/// (`YYYY-MM-DD`): the first second of each for each read of the facts
/// (four for the tag rollup: calls, the calls joined to the adjustments
/// and which calls have adjustments, the adjustments), the days
/// themselves for the rollup; after each pair the teams, if any.
fn bind(
    query: clickhouse::query::Query,
    rollup: &Rollup,
    cells: Cells<'_>,
    from: &str,
    to: &str,
) -> clickhouse::query::Query {
    let start = |day: &str| format!("{day} 00:00:00");
    let teams = |query: clickhouse::query::Query| match cells {
        Cells::All => query,
        Cells::OfTeams(teams) => query.bind(teams),
    };
    let facts_reads = if is_tagged(rollup) { 4 } else { 2 };
    let query = (0..facts_reads).fold(query, |query, _| {
        teams(query.bind(start(from)).bind(start(to)))
    });
    teams(query.bind(from).bind(to))
}

/// The statements, with sample values, for the SQL compatibility check.
pub fn catalog() -> Vec<(String, String)> {
    checked()
        .flat_map(|rollup| {
            let teams = ["search".to_string(), "ads".to_string()];
            [("", Cells::All), (".of_teams", Cells::OfTeams(&teams))].map(|(suffix, cells)| {
                let query = Client::default().query(&difference_sql(rollup, cells));
                let sql = bind(query, rollup, cells, "2026-03-01", "2026-04-01")
                    .sql_display()
                    .to_string();
                (
                    format!("rollup_check.difference.{}{suffix}", rollup.table),
                    sql,
                )
            })
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
        let sql = difference_sql(by_team, Cells::All);
        assert!(!sql.contains("user_id"), "{sql}");
        assert!(sql.contains("GROUP BY day, org_id, team_id, provider, model, price_version"));
        assert_eq!(sql.matches('?').count(), 6, "{sql}");
    }

    #[test]
    fn a_batch_adds_to_its_teams_over_its_days() {
        // 2026-03-09 23:59:59 and 2026-03-11 00:00:00 UTC.
        let rows = [
            ("ads", 1_773_100_799),
            ("search", 1_773_187_200),
            ("ads", 1_773_150_000),
        ];
        assert_eq!(
            BatchCells::of(rows),
            Some(BatchCells {
                teams: vec!["ads".into(), "search".into()],
                from: "2026-03-09".into(),
                to: "2026-03-12".into(),
            })
        );
        assert_eq!(BatchCells::of([]), None);
    }

    #[test]
    fn the_cells_of_some_teams_are_filtered_in_every_source() {
        let teams = ["search".to_string(), "it's".to_string()];
        for rollup in checked() {
            // Calls, (for tags: the calls joined to the adjustments and
            // which have adjustments,) the adjustments, the rollup.
            let reads = if is_tagged(rollup) { 5 } else { 3 };
            let sql = difference_sql(rollup, Cells::OfTeams(&teams));
            assert_eq!(sql.matches("has(?, team_id)").count(), reads, "{sql}");
            let bound = bind(
                Client::default().query(&sql),
                rollup,
                Cells::OfTeams(&teams),
                "2026-03-01",
                "2026-03-02",
            )
            .sql_display()
            .to_string();
            assert!(!bound.contains('?'), "{bound}");
            // The facts' day range then the teams, three times over.
            let positions: Vec<usize> = bound
                .match_indices("['search','it\\'s']")
                .map(|(i, _)| i)
                .collect();
            assert_eq!(positions.len(), reads, "{bound}");
            assert!(
                bound.find("'2026-03-01 00:00:00'").unwrap() < positions[0],
                "{bound}"
            );
            assert!(
                bound.rfind("'2026-03-02'").unwrap() < positions[reads - 1],
                "{bound}"
            );
        }
    }

    #[test]
    fn the_tag_rollup_reads_a_row_per_tag_and_adjustments_under_their_calls_tags() {
        let sql = difference_sql(&COST_DAILY_TAGS, Cells::All);
        assert_eq!(
            sql.matches("ARRAY JOIN").count(),
            2,
            "calls and adjustments: {sql}"
        );
        assert!(
            sql.contains("if(empty(tag_keys), call_tag_keys, tag_keys) AS keys"),
            "{sql}"
        );
        assert!(sql.contains(
            "GROUP BY day, org_id, team_id, tag_key, tag_value, provider, model, price_version"
        ));
        assert_eq!(sql.matches('?').count(), 10, "{sql}");
        assert_eq!(checked().last(), Some(&COST_DAILY_TAGS));
        assert_eq!(checked().count(), ROLLUPS.len() + 1);
    }
}
