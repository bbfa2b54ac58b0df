//! The views of `calls` other than the cost rollups, checked against
//! `calls` and repaired after a failed insert that stored its rows after
//! all (docs/processor.md, "Effectively-once", step 7).
//!
//! An insert's materialized views are written after its `calls` part and
//! are not atomic with it, so such an insert can leave the latency and
//! error-pattern tables without the batch. The cost rollups are repaired by
//! [`crate::cost::rollup_check::level`]; this module does the same for the
//! other views, in two ways, by how their tables fold:
//!
//! - [`SummedTable`]: a `SummingMergeTree` of plain sums
//!   (`latency_minute_buckets`, `error_patterns_minute`,
//!   `error_recovery_minute`). Per cell, what the views would have made of
//!   `calls` minus what the table holds is inserted, so the table equals
//!   the facts whichever insert it missed, and a second repair inserts
//!   nothing. A cell that holds more than the facts (which a missed view
//!   cannot cause) is reported, not touched.
//! - [`RefoldedTable`]: an `AggregatingMergeTree` whose states cannot be
//!   subtracted (`latency_minute_calls` keeps up to 1000 values per cell;
//!   `error_pattern_catalog` keeps first and last seen). Its view's query is
//!   run again over the batch's own rows: for a counted table only in the
//!   cells short by exactly the batch's rows there (any other shortfall is
//!   reported, not guessed at), for `min`/`max` states in every cell (a
//!   second copy of them changes nothing). Such a table ([`Covered`]) is
//!   checked by its keys: each key of the facts must be in it, its first
//!   and last seen covering the facts'.
//!
//! Every counted cell has `team_id`, and the events topic is keyed by it:
//! these cells are fed only by the partitions this processor owns, and the
//! repair runs inside the insert's retry, after the fence (the same
//! argument as the cost rollups'). The catalog has no team, and is safe
//! because its states are idempotent.

use clickhouse::{Client, Row};
use serde::Deserialize;

/// How a cell's dimension is compared between `calls` and the table: one
/// type on both sides of the `UNION ALL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// A `DateTime`, compared as epoch seconds.
    Minute,
    /// A `String` or `LowCardinality(String)`.
    Text,
    /// An unsigned integer.
    Number,
}

impl Dimension {
    fn normalize(self, expression: &str) -> String {
        match self {
            Self::Minute => format!("toUInt32({expression})"),
            Self::Text => format!("toString({expression})"),
            Self::Number => format!("toUInt64({expression})"),
        }
    }

    /// The normalized value back as the column's value in an insert.
    fn restore(self, alias: &str) -> String {
        match self {
            Self::Minute => format!("toDateTime({alias})"),
            Self::Text | Self::Number => alias.to_string(),
        }
    }
}

/// What a summed column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sum {
    /// An unsigned count or total (compared as `Int64`).
    Count,
    /// A `Decimal(38, 12)` amount, compared exactly.
    Money,
}

impl Sum {
    fn of_facts(self, aggregate: &str) -> String {
        match self {
            Self::Count => format!("toInt64({aggregate})"),
            Self::Money => aggregate.to_string(),
        }
    }

    fn of_table(self, column: &str) -> String {
        match self {
            Self::Count => format!("-toInt64(sum({column}))"),
            Self::Money => format!("-sum({column})"),
        }
    }
}

/// One materialized view feeding a [`SummedTable`], as its migration
/// writes it: the rows of `calls` it reads, and per column of the table
/// the expression it selects (dimensions, then sums, in the table's order).
#[derive(Debug, Clone)]
pub struct Feed {
    pub filter: String,
    pub dimensions: Vec<String>,
    pub sums: Vec<String>,
}

/// A `SummingMergeTree` fed from `calls` by one or more views.
#[derive(Debug, Clone)]
pub struct SummedTable {
    pub table: &'static str,
    pub dimensions: Vec<(&'static str, Dimension)>,
    pub sums: Vec<(&'static str, Sum)>,
    pub feeds: Vec<Feed>,
}

/// An `AggregatingMergeTree` fed from `calls` by one view, whose rows are
/// folded again from the batch's rows.
#[derive(Debug, Clone)]
pub struct RefoldedTable {
    pub table: &'static str,
    /// The view's columns, in the order of `select`.
    pub columns: Vec<&'static str>,
    /// The view's `SELECT` list, `WHERE` and `GROUP BY`.
    pub select: String,
    pub filter: String,
    pub group_by: String,
    /// How the table's cells are counted, or `None` when its states are
    /// idempotent (`min`, `max`) and every cell of the batch is refolded.
    pub counted: Option<Counted>,
    /// How an uncounted table is checked, or `None` when it is counted.
    pub covered: Option<Covered>,
}

/// An uncounted [`RefoldedTable`] agrees with the facts when every key the
/// facts hold is in it and each of its bounds covers the facts' (a first
/// seen no later than the first call, a last seen no earlier than the
/// last).
#[derive(Debug, Clone)]
pub struct Covered {
    /// The view's key expressions named as the table's columns
    /// (`expression AS column`), in the order of `group_by`.
    pub keys: String,
    pub bounds: Vec<Bound>,
}

/// One idempotent state of a [`Covered`] table.
#[derive(Debug, Clone)]
pub struct Bound {
    /// The state finalized over the table's rows (`minMerge(first_seen)`).
    pub stored: &'static str,
    /// The same over the facts' rows (`min(occurred_at)`).
    pub facts: &'static str,
    /// How the stored value must compare with the facts' (`<=`, `>=`).
    pub covers: &'static str,
}

/// A [`RefoldedTable`]'s cells and how many calls each holds.
#[derive(Debug, Clone)]
pub struct Counted {
    /// The cell's dimensions: (expression over `calls`, column of the
    /// table, how they compare).
    pub cell: Vec<(String, &'static str, Dimension)>,
    /// The table's count of calls in a cell (an aggregate).
    pub stored: &'static str,
}

/// A table fed by views of `calls`, repaired one way or the other.
#[derive(Debug, Clone)]
pub enum ViewTable {
    Summed(SummedTable),
    Refolded(RefoldedTable),
}

impl ViewTable {
    pub fn table(&self) -> &'static str {
        match self {
            Self::Summed(t) => t.table,
            Self::Refolded(t) => t.table,
        }
    }

    /// What its check counts: the first sum of a summed table, the calls
    /// of a counted refolded one, the keys of a covered one.
    pub fn measure(&self) -> &'static str {
        match self {
            Self::Summed(t) => t.sums.first().map_or("calls", |(column, _)| *column),
            Self::Refolded(t) if t.counted.is_none() => "keys",
            Self::Refolded(_) => "calls",
        }
    }

    /// Whether its states are idempotent (refolding its rows again changes
    /// nothing), so it is refolded after every failed insert.
    pub fn idempotent(&self) -> bool {
        matches!(self, Self::Refolded(t) if t.counted.is_none())
    }

    /// The insert that repairs it over `scope`.
    pub fn repair_sql(&self, scope: &Scope) -> String {
        match self {
            Self::Summed(t) => repair_sql(t, scope),
            Self::Refolded(t) => refold_sql(t, scope),
        }
    }
}

/// Every table fed by views of `calls` that this module repairs.
pub fn tables() -> Vec<ViewTable> {
    super::latency::repaired()
        .into_iter()
        .chain(super::error_patterns::repaired())
        .collect()
}

/// What a check reads: the rows a failed insert stored after all (their
/// teams, their minutes and their positions), or, offline (`tollgate
/// rollups check`), every cell of a time range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The teams whose cells are read; `None`: every team.
    pub teams: Option<Vec<String>>,
    /// Minutes `[from, to)`, epoch seconds.
    pub from: u32,
    pub to: u32,
    /// The failed insert's own rows, per partition its first and last
    /// offset (the rows of one batch of one partition are the only rows of
    /// `calls` between those offsets while it is retried); `None`: every
    /// row of the range is the repair's own.
    pub offsets: Option<Vec<(i32, i64, i64)>>,
}

impl Scope {
    /// Of rows given as (team, `occurred_at` in epoch seconds, partition,
    /// offset); `None` for no rows.
    pub fn of<'a>(rows: impl IntoIterator<Item = (&'a str, u32, i32, i64)>) -> Option<Self> {
        let mut teams = std::collections::BTreeSet::new();
        let mut offsets = std::collections::BTreeMap::<i32, (i64, i64)>::new();
        let mut range: Option<(u32, u32)> = None;
        for (team, at, partition, offset) in rows {
            teams.insert(team.to_string());
            let span = offsets.entry(partition).or_insert((offset, offset));
            *span = (span.0.min(offset), span.1.max(offset));
            range = Some(match range {
                None => (at, at),
                Some((first, last)) => (first.min(at), last.max(at)),
            });
        }
        let (first, last) = range?;
        Some(Self {
            teams: Some(teams.into_iter().collect()),
            from: first - first % 60,
            to: (last - last % 60).saturating_add(60),
            offsets: Some(
                offsets
                    .into_iter()
                    .map(|(p, (first, last))| (p, first, last))
                    .collect(),
            ),
        })
    }

    /// Every cell of every team in `[from, to)` (epoch seconds, whole
    /// minutes), offline.
    pub fn range(from: u32, to: u32) -> Self {
        Self {
            teams: None,
            from,
            to,
            offsets: None,
        }
    }

    fn of_teams(&self) -> &'static str {
        if self.teams.is_some() {
            " AND has(?, team_id)"
        } else {
            ""
        }
    }

    /// `calls` rows of the scope's teams and minutes.
    fn facts(&self) -> String {
        format!(
            "occurred_at >= toDateTime({}) AND occurred_at < toDateTime({}){}",
            self.from,
            self.to,
            self.of_teams()
        )
    }

    /// A table's rows of the scope's teams and minutes.
    fn cells(&self) -> String {
        format!(
            "minute >= toDateTime({}) AND minute < toDateTime({}){}",
            self.from,
            self.to,
            self.of_teams()
        )
    }

    /// `calls` rows of the batch itself (of the scope's minutes).
    fn own_rows(&self) -> String {
        let Some(offsets) = &self.offsets else {
            return format!(
                "(occurred_at >= toDateTime({}) AND occurred_at < toDateTime({}))",
                self.from, self.to
            );
        };
        let ranges: Vec<String> = offsets
            .iter()
            .map(|(p, first, last)| {
                format!("(kafka_partition = {p} AND kafka_offset >= {first} AND kafka_offset <= {last})")
            })
            .collect();
        format!("({})", ranges.join(" OR "))
    }
}

/// Per cell of `table` over the scope's teams and minutes: what the views
/// make of `calls` minus what the table holds, only where a sum differs.
/// Columns `k0…` (dimensions) and `s0…` (sums); one `?` (the teams) per
/// feed and one for the table.
pub fn difference_sql(table: &SummedTable, scope: &Scope) -> String {
    let keys: Vec<String> = (0..table.dimensions.len())
        .map(|i| format!("k{i}"))
        .collect();
    let group_by = keys.join(", ");
    let mut parts: Vec<String> = table
        .feeds
        .iter()
        .map(|feed| {
            let dims = table
                .dimensions
                .iter()
                .zip(&feed.dimensions)
                .enumerate()
                .map(|(i, ((_, kind), expr))| format!("{} AS k{i}", kind.normalize(expr)));
            let sums = table
                .sums
                .iter()
                .zip(&feed.sums)
                .enumerate()
                .map(|(i, ((_, kind), expr))| format!("{} AS d{i}", kind.of_facts(expr)));
            format!(
                "SELECT {} FROM calls WHERE ({}) AND {} GROUP BY {group_by}",
                dims.chain(sums).collect::<Vec<_>>().join(", "),
                feed.filter,
                scope.facts(),
            )
        })
        .collect();
    let dims = table
        .dimensions
        .iter()
        .enumerate()
        .map(|(i, (column, kind))| format!("{} AS k{i}", kind.normalize(column)));
    let sums = table
        .sums
        .iter()
        .enumerate()
        .map(|(i, (column, kind))| format!("{} AS d{i}", kind.of_table(column)));
    parts.push(format!(
        "SELECT {} FROM {} WHERE {} GROUP BY {group_by}",
        dims.chain(sums).collect::<Vec<_>>().join(", "),
        table.table,
        scope.cells(),
    ));
    let totals: Vec<String> = (0..table.sums.len())
        .map(|i| format!("sum(d{i}) AS s{i}"))
        .collect();
    let differs: Vec<String> = (0..table.sums.len())
        .map(|i| format!("s{i} != 0"))
        .collect();
    format!(
        "SELECT {group_by}, {} FROM ({}) GROUP BY {group_by} HAVING {}",
        totals.join(", "),
        parts.join(" UNION ALL "),
        differs.join(" OR "),
    )
}

/// Every difference of [`difference_sql`] that only adds, inserted into
/// the table.
pub fn repair_sql(table: &SummedTable, scope: &Scope) -> String {
    let columns: Vec<&str> = table
        .dimensions
        .iter()
        .map(|(c, _)| *c)
        .chain(table.sums.iter().map(|(c, _)| *c))
        .collect();
    let values: Vec<String> = table
        .dimensions
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| kind.restore(&format!("k{i}")))
        .chain((0..table.sums.len()).map(|i| format!("s{i}")))
        .collect();
    let adds: Vec<String> = (0..table.sums.len())
        .map(|i| format!("s{i} >= 0"))
        .collect();
    format!(
        "INSERT INTO {} ({}) SELECT {} FROM ({}) WHERE {}",
        table.table,
        columns.join(", "),
        values.join(", "),
        difference_sql(table, scope),
        adds.join(" AND "),
    )
}

/// How many cells of a table differ from the facts, and by how many calls
/// (the first sum, or the count, facts minus table).
pub fn summary_sql(differences: &str) -> String {
    format!("SELECT count() AS cells, toInt64(sum(s0)) AS calls FROM ({differences})")
}

/// Per cell of a counted [`RefoldedTable`] over the scope's teams and
/// minutes: the facts, the batch's own rows and the table's count. Columns
/// `k0…`, `s0` (facts minus table), `own` (the batch's rows); two `?`.
pub fn cell_counts_sql(table: &RefoldedTable, counted: &Counted, scope: &Scope) -> String {
    let keys: Vec<String> = (0..counted.cell.len()).map(|i| format!("k{i}")).collect();
    let group_by = keys.join(", ");
    let facts_keys: Vec<String> = counted
        .cell
        .iter()
        .enumerate()
        .map(|(i, (expr, _, kind))| format!("{} AS k{i}", kind.normalize(expr)))
        .collect();
    let table_keys: Vec<String> = counted
        .cell
        .iter()
        .enumerate()
        .map(|(i, (_, column, kind))| format!("{} AS k{i}", kind.normalize(column)))
        .collect();
    format!(
        "SELECT {group_by}, sum(d0) AS s0, sum(d_own) AS own FROM (\
         SELECT {facts_keys}, toInt64(count()) AS d0, toInt64(sum({own_rows})) AS d_own \
         FROM calls WHERE ({filter}) AND {facts} GROUP BY {group_by} \
         UNION ALL \
         SELECT {table_keys}, -toInt64({stored}) AS d0, toInt64(0) AS d_own \
         FROM {name} WHERE {cells} GROUP BY {group_by}\
         ) GROUP BY {group_by} HAVING s0 != 0",
        facts_keys = facts_keys.join(", "),
        own_rows = scope.own_rows(),
        filter = table.filter,
        facts = scope.facts(),
        table_keys = table_keys.join(", "),
        stored = counted.stored,
        name = table.table,
        cells = scope.cells(),
    )
}

/// The keys of the facts over the scope's teams and minutes that a
/// [`Covered`] table lacks, or whose bounds it does not cover; columns
/// `cells` and `calls` (0) as [`summary_sql`]'s. The table is read whole
/// (it has no minute): a key's bounds are over all time. One `?`.
pub fn covered_sql(table: &RefoldedTable, covered: &Covered, scope: &Scope) -> String {
    let numbered = |side: &str, each: &dyn Fn(&Bound) -> &str| -> String {
        covered
            .bounds
            .iter()
            .enumerate()
            .map(|(i, bound)| format!("{} AS {side}{i}", each(bound)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let uncovered: Vec<String> = covered
        .bounds
        .iter()
        .enumerate()
        .map(|(i, bound)| format!(" OR NOT (t{i} {} f{i})", bound.covers))
        .collect();
    format!(
        "SELECT count() AS cells, toInt64(0) AS calls FROM (\
         SELECT {keys}, {facts} FROM calls WHERE ({filter}) AND {range} GROUP BY {group_by}\
         ) AS facts ANY LEFT JOIN (\
         SELECT {group_by}, {stored}, 1 AS present FROM {name} GROUP BY {group_by}\
         ) AS stored USING ({group_by}) WHERE present = 0{uncovered}",
        keys = covered.keys,
        facts = numbered("f", &|b| b.facts),
        filter = table.filter,
        range = scope.facts(),
        group_by = table.group_by,
        stored = numbered("t", &|b| b.stored),
        name = table.table,
        uncovered = uncovered.concat(),
    )
}

/// The view's query run again over the batch's own rows, inserted: in a
/// counted table only into the cells short by exactly those rows (two
/// `?`), otherwise into every cell they fall in (none).
pub fn refold_sql(table: &RefoldedTable, scope: &Scope) -> String {
    let only_short = match &table.counted {
        None => String::new(),
        Some(counted) => {
            let cell: Vec<String> = counted
                .cell
                .iter()
                .map(|(expr, _, kind)| kind.normalize(expr))
                .collect();
            let keys: Vec<String> = (0..counted.cell.len()).map(|i| format!("k{i}")).collect();
            format!(
                " AND ({}) IN (SELECT {} FROM ({}) WHERE s0 = own)",
                cell.join(", "),
                keys.join(", "),
                cell_counts_sql(table, counted, scope)
            )
        }
    };
    format!(
        "INSERT INTO {} ({}) SELECT {} FROM calls WHERE ({}) AND {}{only_short} GROUP BY {}",
        table.table,
        table.columns.join(", "),
        table.select,
        table.filter,
        scope.own_rows(),
        table.group_by,
    )
}

/// What a view's table and the facts disagreed on before its repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    pub table: &'static str,
    /// Cells that differ from the facts.
    pub cells: u64,
    /// What the table lacks over them (facts minus table) of `measure`.
    pub calls: i64,
    /// What `calls` counts: the table's first sum, or its calls.
    pub measure: &'static str,
}

#[derive(Debug, Row, Deserialize)]
struct Summary {
    cells: u64,
    calls: i64,
}

/// Bind the teams to each `?` of `sql` (there is none for every team).
fn with_teams(client: &Client, sql: &str, scope: &Scope) -> clickhouse::query::Query {
    let query = client.query(sql);
    match &scope.teams {
        None => query,
        Some(teams) => (0..sql.matches('?').count()).fold(query, |q, _| q.bind(teams)),
    }
}

/// Where `table` differs from the facts over the scope's cells (nothing
/// to ask for a [`RefoldedTable`] declared neither counted nor covered).
pub fn check_sql(table: &ViewTable, scope: &Scope) -> Option<String> {
    match table {
        ViewTable::Summed(t) => Some(summary_sql(&difference_sql(t, scope))),
        ViewTable::Refolded(t) => match (&t.counted, &t.covered) {
            (Some(counted), _) => Some(summary_sql(&cell_counts_sql(t, counted, scope))),
            (None, Some(covered)) => Some(covered_sql(t, covered, scope)),
            (None, None) => None,
        },
    }
}

/// How `table` differs from the facts over `scope`.
pub async fn check(
    client: &Client,
    table: &ViewTable,
    scope: &Scope,
) -> clickhouse::error::Result<Option<Shortfall>> {
    let Some(sql) = check_sql(table, scope) else {
        return Ok(None);
    };
    let summary: Summary = with_teams(client, &sql, scope).fetch_one().await?;
    Ok((summary.cells > 0).then_some(Shortfall {
        table: table.table(),
        cells: summary.cells,
        calls: summary.calls,
        measure: table.measure(),
    }))
}

/// Insert what `table` lacks over `scope` ([`ViewTable::repair_sql`]).
pub async fn repair(
    client: &Client,
    table: &ViewTable,
    scope: &Scope,
) -> clickhouse::error::Result<()> {
    with_teams(client, &table.repair_sql(scope), scope)
        .execute()
        .await
}

/// Check each table over the scope's cells and repair what it lacks;
/// returns what was found before the repairs, and the tables that still
/// disagree after theirs (a shortfall the batch does not explain, or a
/// table holding more than the facts). Exact only while no insert into
/// these cells is under way (see the module's doc).
pub async fn level(
    client: &Client,
    tables: &[ViewTable],
    scope: &Scope,
) -> clickhouse::error::Result<(Vec<Shortfall>, Vec<&'static str>)> {
    let mut found = Vec::new();
    let mut still = Vec::new();
    for table in tables {
        let before = check(client, table, scope).await?;
        if before.is_some() || table.idempotent() {
            repair(client, table, scope).await?;
        }
        if let Some(before) = before {
            if check(client, table, scope).await?.is_some() {
                still.push(table.table());
            }
            found.push(before);
        }
    }
    Ok((found, still))
}

/// The statements, with sample values, for the SQL compatibility check.
pub fn catalog(tables: &[ViewTable]) -> Vec<(String, String)> {
    let scope = Scope {
        teams: Some(vec!["search".into(), "ads".into()]),
        from: 1_773_100_800,
        to: 1_773_101_040,
        offsets: Some(vec![(0, 10, 42), (3, 7, 7)]),
    };
    let display = |name: String, sql: String| {
        let bound = with_teams(&Client::default(), &sql, &scope)
            .sql_display()
            .to_string();
        (name, bound)
    };
    tables
        .iter()
        .flat_map(|table| {
            let name = table.table();
            let repair = table.repair_sql(&scope);
            check_sql(table, &scope)
                .map(|sql| display(format!("view_repair.check.{name}"), sql))
                .into_iter()
                .chain([display(format!("view_repair.repair.{name}"), repair)])
        })
        .collect()
}

#[cfg(test)]
mod tests;
