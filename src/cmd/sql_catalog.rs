//! `tollgate sql-catalog`: print every SQL statement the project sends to
//! ClickHouse, as a JSON array of `{"name": ..., "sql": ...}`: the
//! ClickHouse migrations first, in order, then every query with sample
//! values bound. `tests/sql_compat` runs them in one fresh chDB database, so
//! nothing only works on the 18.16 dev server.

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {}

/// The ClickHouse migrations, in order. When `tollgate migrate` embeds its
/// own list, this should read from it instead.
const MIGRATIONS: [(&str, &str); 2] = [
    (
        "0001_calls",
        include_str!("../../migrations/clickhouse/0001_calls.sql"),
    ),
    (
        "0002_latency_minute",
        include_str!("../../migrations/clickhouse/0002_latency_minute.sql"),
    ),
];

pub async fn run(_args: Args, _config: &Config) -> anyhow::Result<()> {
    let migrations = MIGRATIONS.iter().flat_map(|(name, text)| {
        statements(text)
            .into_iter()
            .enumerate()
            .map(move |(i, sql)| (format!("migration.{name}#{i}"), sql))
    });
    let statements: Vec<serde_json::Value> = migrations
        .chain(tollgate_processors::read_models::sql_catalog())
        .map(|(name, sql)| serde_json::json!({ "name": name, "sql": sql }))
        .collect();
    println!("{}", serde_json::to_string_pretty(&statements)?);
    Ok(())
}

/// Split a migration file into statements: drop `--` comment lines, split
/// on `;` (the migrations contain no string literal with a `;`).
fn statements(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    code.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}
