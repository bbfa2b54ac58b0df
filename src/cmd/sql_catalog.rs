//! `tollgate sql-catalog`: print every SQL statement the project sends to
//! ClickHouse, as a JSON array of `{"name": ..., "sql": ...}`: the
//! ClickHouse migrations first, in order, then every fold's statements (in
//! the order of the fold registry, `tollgate_processors::folds::FOLDS`),
//! then every report query with sample values bound, repricing and budgets.
//! `tests/sql_compat` runs them in one fresh chDB database, so nothing only
//! works on the 18.16 dev server.

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {}

pub async fn run(_args: Args, _config: &Config) -> anyhow::Result<()> {
    let statements: Vec<serde_json::Value> =
        tollgate_processors::migrations::clickhouse_statements()
            .into_iter()
            .chain(tollgate_processors::folds::catalog())
            .chain(tollgate_queries::sql_catalog())
            .chain(tollgate_queries::audit::sql_catalog())
            .chain(tollgate_processors::cost::reprice::catalog())
            .chain(tollgate_processors::cost::rollup_check::catalog())
            .chain(tollgate_control::budgets::catalog())
            .chain(tollgate_processors::retention::catalog())
            .chain(tollgate_control::erasure::catalog())
            .chain(super::bench::alerts::catalog())
            .chain(super::bench::reports::catalog()?)
            .map(|(name, sql)| serde_json::json!({ "name": name, "sql": sql }))
            .collect();
    println!("{}", serde_json::to_string_pretty(&statements)?);
    Ok(())
}
