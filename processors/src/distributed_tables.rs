//! The `Distributed` tables reports read in cluster mode
//! (`clickhouse.cluster` set): one per replicated table of the database,
//! with the same name, in `<database>_dist`
//! (`tollgate_control::clickhouse::read_database`).
//!
//! They hold no rows (nothing inserts into them: the folds write the
//! replicated tables of the replica they talk to), so `tollgate migrate`
//! derives them from the tables after every run: created when missing,
//! dropped and created again when a migration changed the table's columns.
//! A report running at that moment fails once with "table doesn't exist".

use clickhouse::{Client, Row};
use serde::Deserialize;

use crate::clickhouse::error;
use crate::error::Result;
use tollgate_control::clickhouse::read_database;
use tollgate_control::config::ClickHouseConfig;

/// The replicated tables of a database (not the migrations' bookkeeping,
/// which no report reads).
pub const REPLICATED_TABLES_SQL: &str = "SELECT name FROM system.tables \
     WHERE database = ? AND engine LIKE 'Replicated%' AND name != 'schema_migrations' ORDER BY name";

/// A table's columns, in an order that does not depend on the table.
pub const COLUMNS_SQL: &str =
    "SELECT name, type FROM system.columns WHERE database = ? AND table = ? ORDER BY name";

#[derive(Debug, Row, Deserialize, PartialEq, Eq)]
struct Column {
    name: String,
    r#type: String,
}

/// The `Distributed` table over `database.table` on `cluster`, in `read_db`.
pub fn create_sql(cluster: &str, database: &str, read_db: &str, table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {read_db}.{table} ON CLUSTER {cluster} AS {database}.{table} \
         ENGINE = Distributed({cluster}, {database}, {table})"
    )
}

/// Make `<database>_dist` hold a `Distributed` table with the columns of
/// each replicated table; returns the tables created or re-created.
pub async fn sync_read_tables(config: &ClickHouseConfig, client: &Client) -> Result<Vec<String>> {
    let cluster = &config.cluster;
    let database = &config.database;
    let read_db = read_database(config);
    client
        .query_raw(&format!(
            "CREATE DATABASE IF NOT EXISTS {read_db} ON CLUSTER {cluster}"
        ))
        .execute()
        .await
        .map_err(|e| error(config, format!("cannot create database {read_db}"), e))?;
    let tables: Vec<String> = client
        .query(REPLICATED_TABLES_SQL)
        .bind(database)
        .fetch_all()
        .await
        .map_err(|e| error(config, "cannot list the replicated tables", e))?;
    let mut changed = Vec::new();
    for table in tables {
        let columns = |db: String| {
            let table = table.clone();
            async move {
                client
                    .query(COLUMNS_SQL)
                    .bind(db)
                    .bind(table)
                    .fetch_all::<Column>()
                    .await
            }
        };
        let local = columns(database.clone())
            .await
            .map_err(|e| error(config, format!("cannot read the columns of {table}"), e))?;
        let read = columns(read_db.clone()).await.map_err(|e| {
            error(
                config,
                format!("cannot read the columns of {read_db}.{table}"),
                e,
            )
        })?;
        if read == local {
            continue;
        }
        if !read.is_empty() {
            client
                .query_raw(&format!(
                    "DROP TABLE IF EXISTS {read_db}.{table} ON CLUSTER {cluster}"
                ))
                .execute()
                .await
                .map_err(|e| error(config, format!("cannot drop {read_db}.{table}"), e))?;
        }
        client
            .query_raw(&create_sql(cluster, database, &read_db, &table))
            .execute()
            .await
            .map_err(|e| error(config, format!("cannot create {read_db}.{table}"), e))?;
        changed.push(table);
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_table_points_at_the_local_one() {
        assert_eq!(
            create_sql("tollgate", "tg", "tg_dist", "calls"),
            "CREATE TABLE IF NOT EXISTS tg_dist.calls ON CLUSTER tollgate AS tg.calls ENGINE = Distributed(tollgate, tg, calls)"
        );
    }
}
