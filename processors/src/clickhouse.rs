//! Creating the ClickHouse database, naming the server in ClickHouse
//! errors, and the one RowBinary insert every sink uses. The clients
//! themselves are built by `tollgate_control::clickhouse`.

use std::time::Duration;

use clickhouse::{Client, RowWrite};

use crate::error::{Error, Result};
use crate::rowbinary::EncodedRow;
use tollgate_control::clickhouse::server_client;
use tollgate_control::config::ClickHouseConfig;

/// Wrap a ClickHouse error with the server address and what we were doing.
pub fn error(
    config: &ClickHouseConfig,
    context: impl Into<String>,
    source: clickhouse::error::Error,
) -> Error {
    Error::ClickHouse {
        url: config.url.clone(),
        context: context.into(),
        source,
    }
}

/// Insert `rows` into `table` in one RowBinary request, in the order given
/// (Kafka order within each partition, for the folds' sinks). `timeout`
/// (`clickhouse.insert_timeout_secs`) bounds the sending of each chunk and
/// the wait for the answer after the last; past it the insert fails with
/// the `clickhouse` crate's `TimedOut`.
pub async fn insert_rows<T>(
    client: &Client,
    table: &str,
    rows: &[T],
    timeout: Option<Duration>,
) -> clickhouse::error::Result<()>
where
    T: RowWrite + for<'a> clickhouse::Row<Value<'a> = T>,
{
    let mut insert = client
        .insert::<T>(table)
        .await?
        .with_timeouts(timeout, timeout);
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}

/// Most bytes sent in one chunk of an encoded insert (the `clickhouse`
/// crate's typed insert sends chunks of the same size).
const CHUNK_BYTES: usize = 256 * 1024;

/// Insert rows already encoded as RowBinary (see [`crate::rowbinary`]) in
/// one request, in the order given: `sql` is
/// [`crate::rowbinary::insert_sql`] of the rows' type. The bytes go out in
/// chunks as they are copied, like the typed insert's. `timeout` as for
/// [`insert_rows`].
pub async fn insert_encoded<M: Sync>(
    client: &Client,
    sql: &str,
    rows: &[EncodedRow<M>],
    timeout: Option<Duration>,
) -> clickhouse::error::Result<()> {
    let mut insert = client
        .insert_formatted_with(sql)
        .with_timeouts(timeout, timeout);
    let mut chunk = bytes::BytesMut::with_capacity(CHUNK_BYTES);
    for row in rows {
        chunk.extend_from_slice(row.bytes());
        if chunk.len() >= CHUNK_BYTES {
            insert.send(chunk.split().freeze()).await?;
        }
    }
    if !chunk.is_empty() {
        insert.send(chunk.freeze()).await?;
    }
    insert.end().await
}

/// Each step of the processor's talk with ClickHouse that is not an
/// insert is bounded by `clickhouse.query_timeout_secs` through this. A
/// repair's `INSERT … SELECT` cut this way may still run in ClickHouse:
/// the callers retry only after the insert fence, which waits for it.
pub use tollgate_control::clickhouse::within;

/// `CREATE DATABASE IF NOT EXISTS <database>`; returns the server version.
pub async fn ensure_database(config: &ClickHouseConfig) -> Result<String> {
    if !is_identifier(&config.database) {
        return Err(Error::Config(format!(
            "clickhouse.database {:?} must be letters, digits and underscores, not starting with a digit",
            config.database
        )));
    }
    let server = server_client(config);
    let version: String = server
        .query("SELECT version()")
        .fetch_one()
        .await
        .map_err(|e| {
            error(
                config,
                "cannot reach the server (is it running? `dev/stack up` starts one)",
                e,
            )
        })?;
    let on_cluster = if config.cluster.is_empty() {
        String::new()
    } else {
        check_cluster(config, &server).await?;
        format!(" ON CLUSTER {}", config.cluster)
    };
    server
        .query_raw(&format!(
            "CREATE DATABASE IF NOT EXISTS {}{on_cluster}",
            config.database
        ))
        .execute()
        .await
        .map_err(|e| {
            error(
                config,
                format!("cannot create database {}", config.database),
                e,
            )
        })?;
    Ok(version)
}

/// `clickhouse.cluster` must name a cluster the server knows.
async fn check_cluster(config: &ClickHouseConfig, server: &Client) -> Result<()> {
    if !is_identifier(&config.cluster) {
        return Err(Error::Config(format!(
            "clickhouse.cluster {:?} must be letters, digits and underscores, not starting with a digit (or empty for a single server)",
            config.cluster
        )));
    }
    let known: Vec<String> = server
        .query("SELECT DISTINCT cluster FROM system.clusters ORDER BY cluster")
        .fetch_all()
        .await
        .map_err(|e| error(config, "cannot list the server's clusters", e))?;
    if known.iter().any(|c| c == &config.cluster) {
        return Ok(());
    }
    Err(Error::Config(format!(
        "clickhouse.cluster {:?}: the server at {} has no such cluster in its remote_servers (it has: {})",
        config.cluster,
        config.url,
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    )))
}

/// Whether `name` can be used unquoted as a ClickHouse database name.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(is_identifier("tollgate"));
        assert!(is_identifier("t_proc_0a1b2c3d"));
        assert!(!is_identifier("1abc"));
        assert!(!is_identifier("a-b"));
        assert!(!is_identifier("a; DROP"));
        assert!(!is_identifier(""));
    }
}
