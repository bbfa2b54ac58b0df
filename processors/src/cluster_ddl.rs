//! The cluster form of a migration statement (`clickhouse.cluster` set).
//!
//! Each table's SQL has one source, the single-server statement in
//! `migrations/clickhouse/` (what the chDB suite checks against current
//! ClickHouse); `tollgate migrate` rewrites it when it applies it to a
//! cluster:
//!
//! - `CREATE TABLE IF NOT EXISTS t (…) ENGINE = XMergeTree(args)` becomes
//!   `CREATE TABLE IF NOT EXISTS db.t ON CLUSTER c (…) ENGINE =
//!   ReplicatedXMergeTree('/clickhouse/tables/{shard}/db/t', '{replica}',
//!   args)` (18.16 takes the ZooKeeper path and replica name as explicit
//!   arguments; current ClickHouse accepts them too; the macros come from
//!   each server's `<macros>`);
//! - `CREATE MATERIALIZED VIEW` and `DROP TABLE` get `ON CLUSTER c`;
//! - `ALTER TABLE t` becomes `ALTER TABLE db.t`, sent to one replica: the
//!   table is replicated and its ALTER replicates through ZooKeeper (every
//!   active replica applies it before the statement returns; one that is
//!   down applies it when it is back);
//! - `INSERT … SELECT` (a backfill) stays as it is: it runs on the replica
//!   `tollgate migrate` talks to, and replication copies its rows.
//!
//! Table names in a statement sent `ON CLUSTER` are qualified with the
//! database: each server runs it in its own session, whose database is
//! the server's default, and 18.16 qualifies only the created table, not
//! the tables a view's `SELECT` reads.

use crate::error::{Error, Result};

/// Where the cluster form puts things.
#[derive(Debug, Clone, Copy)]
pub struct ClusterTarget<'a> {
    /// The cluster's name in the servers' `remote_servers`.
    pub cluster: &'a str,
    /// The database the tables live in.
    pub database: &'a str,
}

/// The ZooKeeper path of a replicated table (`{shard}` is a macro).
pub fn zookeeper_path(database: &str, table: &str) -> String {
    format!("/clickhouse/tables/{{shard}}/{database}/{table}")
}

/// The statement to send for `statement` (of `file`) on a cluster.
pub fn cluster_form(file: &str, statement: &str, target: ClusterTarget<'_>) -> Result<String> {
    let fail = |reason: &str| Error::Migration {
        file: file.to_string(),
        reason: format!("cannot run on cluster {}: {reason}", target.cluster),
    };
    let tokens = Tokens::new(statement);
    let head = tokens.leading_keywords(6);
    let starts =
        |words: &[&str]| head.len() >= words.len() && head.iter().zip(words).all(|(a, b)| a == b);
    if starts(&["INSERT"]) {
        return Ok(statement.to_string());
    }
    let name_words = if starts(&["CREATE", "TABLE", "IF", "NOT", "EXISTS"])
        || starts(&["CREATE", "MATERIALIZED", "VIEW", "IF", "NOT", "EXISTS"])
    {
        head.iter().position(|w| w == "EXISTS").map(|i| i + 1)
    } else if starts(&["DROP", "TABLE", "IF", "EXISTS"]) {
        Some(4)
    } else if starts(&["ALTER", "TABLE"]) {
        Some(2)
    } else {
        None
    };
    let Some(name_index) = name_words else {
        return Err(fail(&format!(
            "only CREATE TABLE IF NOT EXISTS, CREATE MATERIALIZED VIEW IF NOT EXISTS, ALTER TABLE, DROP TABLE IF EXISTS and INSERT have a cluster form, not `{}`",
            head.join(" ")
        )));
    };
    let Some(name) = tokens.words.get(name_index) else {
        return Err(fail("the statement names no table"));
    };
    if name.text.contains('.') {
        return Err(fail(&format!(
            "table {} is qualified with a database; migrations name tables alone",
            name.text
        )));
    }
    let table = name.text;
    let mut out = String::with_capacity(statement.len() + 128);
    out.push_str(&statement[..name.start]);
    out.push_str(&format!("{}.{table}", target.database));
    // Every table is replicated, and an ALTER of a replicated table
    // replicates itself: sent once, to this replica. `ON CLUSTER` would
    // run it on every replica, which 18.16 races (both replicas execute
    // it, the second fails on the columns the first added and leaves the
    // DDL task unfinished: the statement hangs for
    // `distributed_ddl_task_timeout`, seen on the dev cluster).
    if !starts(&["ALTER"]) {
        out.push_str(&format!(" ON CLUSTER {}", target.cluster));
    }
    let rest = &statement[name.end..];
    let rest = qualify_sources(rest, target.database);
    let rest = if starts(&["CREATE", "TABLE"]) {
        replicate_engine(&rest, target.database, table).map_err(|r| fail(&r))?
    } else {
        rest
    };
    out.push_str(&rest);
    Ok(out)
}

/// `ENGINE = XMergeTree(args)` → the replicated engine with its path.
fn replicate_engine(sql: &str, database: &str, table: &str) -> std::result::Result<String, String> {
    let tokens = Tokens::new(sql);
    let Some(engine_at) = tokens
        .words
        .iter()
        .position(|w| w.text.eq_ignore_ascii_case("ENGINE"))
    else {
        return Err(format!("table {table} has no ENGINE clause"));
    };
    let Some(engine) = tokens.words.get(engine_at + 1) else {
        return Err(format!("table {table}: ENGINE names no engine"));
    };
    if !engine.text.ends_with("MergeTree") || engine.text.starts_with("Replicated") {
        return Err(format!(
            "table {table}: engine {} is not a MergeTree engine to replicate",
            engine.text
        ));
    }
    let after = &sql[engine.end..];
    let Some(open) = after.find('(').filter(|i| after[..*i].trim().is_empty()) else {
        return Err(format!(
            "table {table}: engine {} has no argument list",
            engine.text
        ));
    };
    let replication = format!("'{}', '{{replica}}'", zookeeper_path(database, table));
    let args_start = engine.end + open + 1;
    let has_args = !sql[args_start..].trim_start().starts_with(')');
    let mut out = String::with_capacity(sql.len() + 96);
    out.push_str(&sql[..engine.start]);
    out.push_str("Replicated");
    out.push_str(engine.text);
    out.push('(');
    out.push_str(&replication);
    if has_args {
        out.push_str(", ");
    }
    out.push_str(sql[args_start..].trim_start());
    Ok(out)
}

/// Qualify the table after every `FROM`, `JOIN` and `TO` with `database`,
/// unless it is a subquery, a table function or already qualified.
fn qualify_sources(sql: &str, database: &str) -> String {
    let tokens = Tokens::new(sql);
    let mut out = String::with_capacity(sql.len() + 64);
    let mut copied = 0;
    for (i, pair) in tokens.words.windows(2).enumerate() {
        let (keyword, name) = (&pair[0], &pair[1]);
        // `ARRAY JOIN` names columns, not a table.
        let array_join = keyword.text.eq_ignore_ascii_case("JOIN")
            && i > 0
            && tokens.words[i - 1].text.eq_ignore_ascii_case("ARRAY");
        let is_source = !array_join
            && ["FROM", "JOIN", "TO"]
                .iter()
                .any(|k| keyword.text.eq_ignore_ascii_case(k));
        let between = &sql[keyword.end..name.start];
        let next = sql[name.end..].trim_start();
        if is_source
            && between.trim().is_empty()
            && !name.text.contains('.')
            && !next.starts_with('(')
            && !next.starts_with('.')
            && is_identifier(name.text)
        {
            out.push_str(&sql[copied..name.start]);
            out.push_str(database);
            out.push('.');
            out.push_str(name.text);
            copied = name.end;
        }
    }
    out.push_str(&sql[copied..]);
    out
}

fn is_identifier(word: &str) -> bool {
    let mut chars = word.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A word of SQL outside string literals, with its byte range.
#[derive(Debug)]
struct Word<'a> {
    text: &'a str,
    start: usize,
    end: usize,
}

/// The words (identifiers, keywords, dotted names) of a statement, string
/// literals skipped.
struct Tokens<'a> {
    words: Vec<Word<'a>>,
}

impl<'a> Tokens<'a> {
    fn new(sql: &'a str) -> Self {
        let bytes = sql.as_bytes();
        let mut words = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'\'' {
                i += 1;
                while i < bytes.len() && bytes[i] != b'\'' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            } else if b.is_ascii_alphabetic() || b == b'_' {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.')
                {
                    i += 1;
                }
                words.push(Word {
                    text: &sql[start..i],
                    start,
                    end: i,
                });
            } else {
                i += 1;
            }
        }
        Self { words }
    }

    /// The first `n` words, upper-cased.
    fn leading_keywords(&self, n: usize) -> Vec<String> {
        self.words
            .iter()
            .take(n)
            .map(|w| w.text.to_ascii_uppercase())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::clickhouse_statements;

    const TARGET: ClusterTarget<'static> = ClusterTarget {
        cluster: "tollgate",
        database: "tg",
    };

    fn form(sql: &str) -> String {
        cluster_form("test.sql", sql, TARGET).unwrap()
    }

    #[test]
    fn tables_become_replicated_with_their_path() {
        assert_eq!(
            form("CREATE TABLE IF NOT EXISTS calls\n(\n    a String\n)\nENGINE = MergeTree()\nORDER BY a"),
            "CREATE TABLE IF NOT EXISTS tg.calls ON CLUSTER tollgate\n(\n    a String\n)\nENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/tg/calls', '{replica}')\nORDER BY a"
        );
        assert!(form(
            "CREATE TABLE IF NOT EXISTS f (o UInt64) ENGINE = ReplacingMergeTree(o) ORDER BY o"
        )
        .contains(
            "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tg/f', '{replica}', o) ORDER BY o"
        ));
        assert!(form(
            "CREATE TABLE IF NOT EXISTS e (a UInt64, b UInt64) ENGINE = SummingMergeTree((a, b)) ORDER BY a"
        )
        .contains("ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/tg/e', '{replica}', (a, b)) ORDER BY a"));
    }

    #[test]
    fn views_read_qualified_tables() {
        assert_eq!(
            form("CREATE MATERIALIZED VIEW IF NOT EXISTS v TO t AS\nSELECT a FROM calls ARRAY JOIN x AS y WHERE b IN (SELECT b FROM other) AND c = 'FROM x'"),
            "CREATE MATERIALIZED VIEW IF NOT EXISTS tg.v ON CLUSTER tollgate TO tg.t AS\nSELECT a FROM tg.calls ARRAY JOIN x AS y WHERE b IN (SELECT b FROM tg.other) AND c = 'FROM x'"
        );
    }

    #[test]
    fn alters_drops_and_inserts() {
        assert_eq!(
            form("ALTER TABLE calls ADD COLUMN x String DEFAULT ''"),
            "ALTER TABLE tg.calls ADD COLUMN x String DEFAULT ''"
        );
        assert_eq!(
            form("DROP TABLE IF EXISTS old_mv"),
            "DROP TABLE IF EXISTS tg.old_mv ON CLUSTER tollgate"
        );
        let insert = "INSERT INTO t SELECT a FROM calls";
        assert_eq!(form(insert), insert);
    }

    #[test]
    fn statements_without_a_cluster_form_are_refused_by_name() {
        let err = cluster_form(
            "0099_x.sql",
            "CREATE TABLE t (a String) ENGINE = Log",
            TARGET,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("0099_x.sql"), "{err}");
        assert!(err.contains("cannot run on cluster tollgate"), "{err}");
        let err = cluster_form(
            "0099_x.sql",
            "CREATE TABLE IF NOT EXISTS t (a String) ENGINE = Log",
            TARGET,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("engine Log is not a MergeTree engine"),
            "{err}"
        );
    }

    #[test]
    fn every_embedded_statement_has_a_cluster_form() {
        for (name, sql) in clickhouse_statements() {
            let cluster = cluster_form(&name, &sql, TARGET).unwrap();
            if sql.starts_with("CREATE TABLE") {
                assert!(cluster.contains("ENGINE = Replicated"), "{name}: {cluster}");
            }
            if sql.starts_with("INSERT") || sql.starts_with("ALTER") {
                assert!(!cluster.contains(" ON CLUSTER "), "{name}: {cluster}");
            } else {
                assert!(
                    cluster.contains(" ON CLUSTER tollgate"),
                    "{name}: {cluster}"
                );
            }
        }
    }
}
