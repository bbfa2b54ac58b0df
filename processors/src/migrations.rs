//! The ClickHouse migration runner. Owns the list of migration files (embedded
//! at compile time, so the binary carries its schema), how a file is split
//! into statements, and the `schema_migrations` bookkeeping table that makes
//! `tollgate migrate` safe to re-run.
//!
//! Conventions for migration files (`migrations/clickhouse/NNNN_name.sql`):
//! statements end with `;` at the end of a line; `--` comments are ignored;
//! every statement is idempotent (`CREATE ... IF NOT EXISTS`), because
//! ClickHouse has no transactional DDL: a file interrupted half-way is simply
//! applied again. A file that was applied must never change: the runner
//! compares SHA-256 checksums and refuses to go on, naming the file.

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clickhouse::{ensure_database, error};
use crate::cluster_ddl::{cluster_form, ClusterTarget};
use crate::error::{Error, Result};
use tollgate_control::clickhouse::client;
use tollgate_control::config::ClickHouseConfig;

/// Every ClickHouse migration, in version order: (file name, contents).
/// Adding a migration means adding a line here; a unit test checks that this
/// list and the directory agree.
const CLICKHOUSE_MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_calls.sql",
        include_str!("../../migrations/clickhouse/0001_calls.sql"),
    ),
    (
        "0002_latency_minute.sql",
        include_str!("../../migrations/clickhouse/0002_latency_minute.sql"),
    ),
    (
        "0003_audit_chain.sql",
        include_str!("../../migrations/clickhouse/0003_audit_chain.sql"),
    ),
    (
        "0020_call_costs.sql",
        include_str!("../../migrations/clickhouse/0020_call_costs.sql"),
    ),
    (
        "0021_cost_daily.sql",
        include_str!("../../migrations/clickhouse/0021_cost_daily.sql"),
    ),
    (
        "0022_fold_progress.sql",
        include_str!("../../migrations/clickhouse/0022_fold_progress.sql"),
    ),
    (
        "0023_cost_daily_tags.sql",
        include_str!("../../migrations/clickhouse/0023_cost_daily_tags.sql"),
    ),
    (
        "0024_calls_input_estimated.sql",
        include_str!("../../migrations/clickhouse/0024_calls_input_estimated.sql"),
    ),
    (
        "0025_call_priced_as.sql",
        include_str!("../../migrations/clickhouse/0025_call_priced_as.sql"),
    ),
    (
        "0026_latency_minute_hist.sql",
        include_str!("../../migrations/clickhouse/0026_latency_minute_hist.sql"),
    ),
    (
        "0028_audit_checkpoints_v2.sql",
        include_str!("../../migrations/clickhouse/0028_audit_checkpoints_v2.sql"),
    ),
    (
        "0030_calls_error_patterns.sql",
        include_str!("../../migrations/clickhouse/0030_calls_error_patterns.sql"),
    ),
    (
        "0031_error_patterns.sql",
        include_str!("../../migrations/clickhouse/0031_error_patterns.sql"),
    ),
    (
        "0032_alert_transitions.sql",
        include_str!("../../migrations/clickhouse/0032_alert_transitions.sql"),
    ),
    (
        "0033_pipeline_health.sql",
        include_str!("../../migrations/clickhouse/0033_pipeline_health.sql"),
    ),
    (
        "0034_calls_span_id.sql",
        include_str!("../../migrations/clickhouse/0034_calls_span_id.sql"),
    ),
    (
        "0035_audit_chain_v2_entries.sql",
        include_str!("../../migrations/clickhouse/0035_audit_chain_v2_entries.sql"),
    ),
    (
        "0036_latency_minute_buckets.sql",
        include_str!("../../migrations/clickhouse/0036_latency_minute_buckets.sql"),
    ),
    (
        "0037_cost_daily_by_team.sql",
        include_str!("../../migrations/clickhouse/0037_cost_daily_by_team.sql"),
    ),
    (
        "0038_audit_search.sql",
        include_str!("../../migrations/clickhouse/0038_audit_search.sql"),
    ),
    (
        "0039_cost_daily_by_user_and_key.sql",
        include_str!("../../migrations/clickhouse/0039_cost_daily_by_user_and_key.sql"),
    ),
    (
        "0040_latency_errors_leave_out_cancelled.sql",
        include_str!("../../migrations/clickhouse/0040_latency_errors_leave_out_cancelled.sql"),
    ),
];

const CREATE_SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations
(
    version UInt32,
    name String,
    checksum String,
    applied_at DateTime
)
ENGINE = MergeTree()
ORDER BY version";

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    pub name: String,
    pub checksum: String,
    pub statements: Vec<String>,
}

impl Migration {
    /// Whether a statement of this file copies rows from tables the folds
    /// write (`INSERT INTO … SELECT`): a backfill that counts a row twice,
    /// or misses it, when a fold inserts while the file is applied (each
    /// such file says which). `tollgate migrate` applies these only while
    /// no processor runs.
    pub fn backfills(&self) -> bool {
        self.statements.iter().any(|statement| {
            let mut words = statement.split_whitespace();
            matches!(
                (words.next(), words.next()),
                (Some(insert), Some(into))
                    if insert.eq_ignore_ascii_case("INSERT") && into.eq_ignore_ascii_case("INTO")
            )
        })
    }
}

/// What [`migrate`] did to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied { name: String, statements: usize },
    AlreadyApplied { name: String },
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct AppliedRow {
    version: u32,
    name: String,
    checksum: String,
    applied_at: u32,
}

/// The embedded migrations, parsed.
pub fn migrations() -> Result<Vec<Migration>> {
    let mut out: Vec<Migration> = Vec::with_capacity(CLICKHOUSE_MIGRATIONS.len());
    for (name, sql) in CLICKHOUSE_MIGRATIONS {
        let migration = parse(name, sql)?;
        if let Some(prev) = out.last() {
            if migration.version <= prev.version {
                return Err(Error::Migration {
                    file: migration.name,
                    reason: format!(
                        "version {} does not come after {} ({})",
                        migration.version, prev.version, prev.name
                    ),
                });
            }
        }
        out.push(migration);
    }
    Ok(out)
}

/// Every statement of every migration, in the order they are applied, named
/// `<file>#<n>` (1-based), plus the bookkeeping table. Used by the SQL
/// compatibility check against current ClickHouse.
pub fn clickhouse_statements() -> Vec<(String, String)> {
    let mut out = vec![(
        "schema_migrations".to_string(),
        CREATE_SCHEMA_MIGRATIONS.to_string(),
    )];
    for (name, sql) in CLICKHOUSE_MIGRATIONS {
        for (i, statement) in split_statements(sql).into_iter().enumerate() {
            out.push((format!("{name}#{}", i + 1), statement));
        }
    }
    out
}

/// Parse one file: the version is the number before the first `_`.
pub fn parse(name: &str, sql: &str) -> Result<Migration> {
    let version = name
        .split_once('_')
        .and_then(|(v, _)| v.parse::<u32>().ok())
        .ok_or_else(|| Error::Migration {
            file: name.to_string(),
            reason: "file name must start with a version number and `_` (e.g. 0003_costs.sql)"
                .into(),
        })?;
    let statements = split_statements(sql);
    if statements.is_empty() {
        return Err(Error::Migration {
            file: name.to_string(),
            reason: "no SQL statements".into(),
        });
    }
    Ok(Migration {
        version,
        name: name.to_string(),
        checksum: hex::encode(Sha256::digest(sql.as_bytes())),
        statements,
    })
}

/// Split SQL into statements: `--` comments (outside string literals) are
/// removed, and a `;` that ends a line ends a statement. Text after the last
/// `;` is a statement too.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let line = strip_comment(line).trim_end();
        if line.trim().is_empty() {
            if !current.is_empty() {
                current.push('\n');
            }
            continue;
        }
        if !current.is_empty() {
            current.push('\n');
        }
        match line.strip_suffix(';') {
            Some(body) => {
                current.push_str(body);
                push_statement(&mut statements, &mut current);
            }
            None => current.push_str(line),
        }
    }
    push_statement(&mut statements, &mut current);
    statements
}

fn push_statement(statements: &mut Vec<String>, current: &mut String) {
    let statement = current.trim();
    if !statement.is_empty() {
        statements.push(statement.to_string());
    }
    current.clear();
}

/// The part of `line` before a `--` that is not inside a `'...'` literal.
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_string => i += 1,
            b'\'' => in_string = !in_string,
            b'-' if !in_string && bytes.get(i + 1) == Some(&b'-') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

/// The migrations of this build the database has not applied yet, in
/// order (creating the database and its bookkeeping table if needed).
pub async fn pending(config: &ClickHouseConfig) -> Result<Vec<Migration>> {
    let migrations = migrations()?;
    let applied = applied(config, &client(config), &migrations).await?;
    Ok(migrations
        .into_iter()
        .filter(|m| !applied.iter().any(|a| a.version == m.version))
        .collect())
}

/// Create the database and `schema_migrations` if needed, and read which
/// migrations were applied; refuses when an applied file changed.
async fn applied(
    config: &ClickHouseConfig,
    client: &Client,
    migrations: &[Migration],
) -> Result<Vec<AppliedRow>> {
    ensure_database(config).await?;
    client
        .query_raw(&statement_for(
            config,
            "schema_migrations",
            CREATE_SCHEMA_MIGRATIONS,
        )?)
        .execute()
        .await
        .map_err(|e| error(config, "cannot create schema_migrations", e))?;
    let applied: Vec<AppliedRow> = client
        .query("SELECT ?fields FROM schema_migrations ORDER BY version")
        .fetch_all()
        .await
        .map_err(|e| error(config, "cannot read schema_migrations", e))?;
    check_applied(migrations, &applied)?;
    Ok(applied)
}

/// Create the database if needed and apply every migration not applied yet.
/// `progress` is called once per file with what happened to it.
pub async fn migrate(
    config: &ClickHouseConfig,
    mut progress: impl FnMut(&Outcome),
) -> Result<Vec<Outcome>> {
    let migrations = migrations()?;
    let client = client(config);
    let applied = applied(config, &client, &migrations).await?;
    let mut outcomes = Vec::with_capacity(migrations.len());
    for migration in migrations {
        let outcome = if applied.iter().any(|a| a.version == migration.version) {
            Outcome::AlreadyApplied {
                name: migration.name.clone(),
            }
        } else {
            apply(config, &client, &migration).await?;
            Outcome::Applied {
                name: migration.name.clone(),
                statements: migration.statements.len(),
            }
        };
        progress(&outcome);
        outcomes.push(outcome);
    }
    if !config.cluster.is_empty() {
        crate::distributed_tables::sync_read_tables(config, &client).await?;
    }
    Ok(outcomes)
}

/// `statement` as sent to the configured server or cluster.
fn statement_for(config: &ClickHouseConfig, file: &str, statement: &str) -> Result<String> {
    if config.cluster.is_empty() {
        return Ok(statement.to_string());
    }
    cluster_form(
        file,
        statement,
        ClusterTarget {
            cluster: &config.cluster,
            database: &config.database,
        },
    )
}

/// Refuse to go on when an applied file changed or disappeared.
fn check_applied(migrations: &[Migration], applied: &[AppliedRow]) -> Result<()> {
    for row in applied {
        match migrations.iter().find(|m| m.version == row.version) {
            None => {
                return Err(Error::Migration {
                    file: row.name.clone(),
                    reason: format!(
                        "was applied (version {}) but this build does not have it; is this binary older than the database?",
                        row.version
                    ),
                })
            }
            Some(m) if m.checksum != row.checksum => {
                return Err(Error::Migration {
                    file: m.name.clone(),
                    reason: format!(
                        "changed after it was applied (checksum {} in the database, {} now); add a new migration instead of editing an applied one",
                        short(&row.checksum),
                        short(&m.checksum)
                    ),
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Whether `statement` is an `ALTER TABLE ... ADD COLUMN` that failed only
/// because its columns exist already (the statement adds them all at once).
fn is_rerun_of_add_column(statement: &str, error: &str) -> bool {
    let upper = statement.to_ascii_uppercase();
    upper.trim_start().starts_with("ALTER TABLE")
        && upper.contains("ADD COLUMN")
        && !upper.contains("DROP COLUMN")
        && !upper.contains("MODIFY COLUMN")
        && (error.contains("already exists") || error.contains("DUPLICATE_COLUMN"))
}

fn short(checksum: &str) -> &str {
    checksum.get(..12).unwrap_or(checksum)
}

async fn apply(config: &ClickHouseConfig, client: &Client, migration: &Migration) -> Result<()> {
    for (i, statement) in migration.statements.iter().enumerate() {
        let statement = &statement_for(config, &migration.name, statement)?;
        let result = client.query_raw(statement).execute().await;
        if let Err(e) = &result {
            if is_rerun_of_add_column(statement, &e.to_string()) {
                // 18.16 has no ADD COLUMN IF NOT EXISTS: a file interrupted
                // after its ALTER succeeded is applied again.
                continue;
            }
        }
        result.map_err(|e| Error::Migration {
            file: migration.name.clone(),
            reason: format!(
                "statement {} failed on clickhouse at {}: {e}",
                i + 1,
                config.url
            ),
        })?;
    }
    let mut insert = client
        .insert::<AppliedRow>("schema_migrations")
        .await
        .map_err(|e| error(config, "cannot record migration", e))?;
    let row = AppliedRow {
        version: migration.version,
        name: migration.name.clone(),
        checksum: migration.checksum.clone(),
        applied_at: u32::try_from(chrono::Utc::now().timestamp()).unwrap_or(0),
    };
    insert
        .write(&row)
        .await
        .map_err(|e| error(config, "cannot record migration", e))?;
    insert
        .end()
        .await
        .map_err(|e| error(config, "cannot record migration", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backfill_is_a_file_with_an_insert() {
        let backfilling: Vec<String> = migrations()
            .unwrap()
            .into_iter()
            .filter(Migration::backfills)
            .map(|m| m.name)
            .collect();
        assert_eq!(
            backfilling,
            [
                "0023_cost_daily_tags.sql",
                "0026_latency_minute_hist.sql",
                "0036_latency_minute_buckets.sql",
                "0037_cost_daily_by_team.sql",
                "0038_audit_search.sql",
                "0039_cost_daily_by_user_and_key.sql",
            ]
        );
        let view = parse(
            "0099_v.sql",
            "CREATE MATERIALIZED VIEW v TO t AS SELECT 1 FROM calls;\n-- INSERT INTO t SELECT 1\n",
        )
        .unwrap();
        assert!(
            !view.backfills(),
            "a view inserts later, and a comment is no statement"
        );
        let lower = parse("0099_b.sql", "insert  into t\nSELECT * FROM calls;").unwrap();
        assert!(lower.backfills());
    }

    #[test]
    fn splits_on_semicolon_at_end_of_line_and_strips_comments() {
        let sql = "-- header\nCREATE TABLE a (x String DEFAULT '--not a comment;') -- trailing\nENGINE = Log;\n\n-- between\nCREATE VIEW v AS SELECT 1;  \nSELECT 'a;b'";
        let statements = split_statements(sql);
        assert_eq!(
            statements,
            vec![
                "CREATE TABLE a (x String DEFAULT '--not a comment;')\nENGINE = Log".to_string(),
                "CREATE VIEW v AS SELECT 1".to_string(),
                "SELECT 'a;b'".to_string(),
            ]
        );
    }

    #[test]
    fn embedded_migrations_parse_in_order() {
        let all = migrations().unwrap();
        assert!(all.len() >= 2);
        assert_eq!(all[0].version, 1);
        assert!(all.windows(2).all(|w| w[0].version < w[1].version));
        assert!(all.iter().all(|m| m.checksum.len() == 64));
        // 0002 has a table and a materialized view.
        assert_eq!(all[1].statements.len(), 2);
        assert!(all[1].statements[1].starts_with("CREATE MATERIALIZED VIEW"));
    }

    #[test]
    fn list_matches_directory() {
        // As cargo gives it to the running test, not the compile-time path
        // (a binary from a shared build cache keeps its builder's checkout).
        let dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
            .join("../migrations/clickhouse");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        on_disk.sort();
        let listed: Vec<String> = CLICKHOUSE_MIGRATIONS
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(
            listed, on_disk,
            "add new files to CLICKHOUSE_MIGRATIONS in processors/src/migrations.rs"
        );
    }

    #[test]
    fn statements_list_names_every_statement() {
        let statements = clickhouse_statements();
        assert_eq!(statements[0].0, "schema_migrations");
        assert!(statements.iter().any(
            |(n, s)| n == "0001_calls.sql#1" && s.contains("CREATE TABLE IF NOT EXISTS calls")
        ));
        assert!(statements.iter().all(|(_, s)| !s.trim_end().ends_with(';')));
    }

    #[test]
    fn changed_file_is_named() {
        let all = migrations().unwrap();
        let applied = vec![AppliedRow {
            version: 1,
            name: "0001_calls.sql".into(),
            checksum: "0".repeat(64),
            applied_at: 0,
        }];
        let err = check_applied(&all, &applied).unwrap_err().to_string();
        assert!(
            err.contains("0001_calls.sql") && err.contains("changed"),
            "{err}"
        );
        let ok = vec![AppliedRow {
            version: 1,
            name: "0001_calls.sql".into(),
            checksum: all[0].checksum.clone(),
            applied_at: 0,
        }];
        check_applied(&all, &ok).unwrap();
    }

    #[test]
    fn rerun_of_add_column_is_recognised() {
        let alter =
            "ALTER TABLE calls\n    ADD COLUMN cost Decimal(38, 12),\n    ADD COLUMN priced UInt8";
        assert!(is_rerun_of_add_column(
            alter,
            "Code: 44, e.displayText() = DB::Exception: Cannot add column cost: column with this name already exists"
        ));
        assert!(!is_rerun_of_add_column(
            alter,
            "Code: 60, Table doesn't exist"
        ));
        assert!(!is_rerun_of_add_column(
            "CREATE TABLE t (x UInt8) ENGINE = Log",
            "already exists"
        ));
    }

    #[test]
    fn bad_names_are_rejected() {
        assert!(parse("calls.sql", "SELECT 1").is_err());
        assert!(parse("0003_empty.sql", "-- nothing\n").is_err());
    }
}
