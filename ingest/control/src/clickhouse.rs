//! Building ClickHouse clients from [`ClickHouseConfig`]. Every client
//! Tollgate uses (the folds' sinks, the read side, the budget spend query)
//! is built here, so the one setting that makes the `clickhouse` crate work
//! with ClickHouse 18.16 (validation off: plain `RowBinary` instead of
//! `RowBinaryWithNamesAndTypes`) lives in one place.

use clickhouse::Client;

use crate::config::ClickHouseConfig;

/// The product every Tollgate client names in its `User-Agent`, with the
/// database it writes to as the "version": `tollgate-db/<database> …`.
/// ClickHouse lists it in `system.processes.http_user_agent` (18.16 and
/// current), which is how the insert fence (`processors::insert_fence`)
/// tells our inserts into one database from anyone else's.
pub const PRODUCT: &str = "tollgate-db";

/// The start of the `User-Agent` a client bound to `database` sends.
pub fn user_agent_tag(database: &str) -> String {
    format!("{PRODUCT}/{database} ")
}

/// A client bound to the configured database. On a cluster its inserts ask
/// for replicated block deduplication (`insert_deduplicate`, ClickHouse's
/// default for replicated tables, stated here because effectively-once
/// counts on it as a second guard: a block identical to one of the table's
/// last 100 is dropped; `docs/processor.md`, "On a ClickHouse cluster").
pub fn client(config: &ClickHouseConfig) -> Client {
    let client = server_client(config)
        .with_database(&config.database)
        .with_product_info(PRODUCT, &config.database);
    if config.cluster.is_empty() {
        client
    } else {
        client.with_setting("insert_deduplicate", "1")
    }
}

/// `step` (one or more ClickHouse requests), failed with the `clickhouse`
/// crate's `TimedOut` when it takes longer than `limit` (`None`: no
/// limit). Dropping the step drops its connection, so the next attempt
/// opens a new one: a server that accepts connections but never answers,
/// or a connection that died without a reset, does not hold the caller
/// for ever. A statement that writes may still run in ClickHouse after
/// its step timed out.
pub async fn within<T, E>(
    limit: Option<std::time::Duration>,
    step: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E>
where
    E: From<clickhouse::error::Error>,
{
    match limit {
        None => step.await,
        Some(limit) => tokio::time::timeout(limit, step)
            .await
            .unwrap_or_else(|_| Err(clickhouse::error::Error::TimedOut.into())),
    }
}

/// A client without a database (for `CREATE DATABASE` and server checks).
pub fn server_client(config: &ClickHouseConfig) -> Client {
    let mut client = Client::default()
        .with_url(&config.url)
        .with_user(&config.user)
        .with_validation(false);
    if !config.password.is_empty() {
        client = client.with_password(&config.password);
    }
    client
}

/// The database the reports read: the configured one on a single server;
/// with `clickhouse.cluster` set, `<database>_dist`, which holds a
/// `Distributed` table over the cluster for every replicated table, with
/// the same name (`tollgate migrate` keeps them in step).
pub fn read_database(config: &ClickHouseConfig) -> String {
    if config.cluster.is_empty() {
        config.database.clone()
    } else {
        format!("{}{DISTRIBUTED_SUFFIX}", config.database)
    }
}

/// What `read_database` appends to the database name in cluster mode.
pub const DISTRIBUTED_SUFFIX: &str = "_dist";

/// A client for reports: bound to [`read_database`]. In cluster mode a
/// subquery over another table (`IN (SELECT … FROM calls)`) reads that
/// table's local copy on the replica the query runs on
/// (`distributed_product_mode = 'local'`; the cluster has one shard, so
/// each replica holds every row), instead of being refused as a
/// distributed query inside a distributed query.
pub fn read_client(config: &ClickHouseConfig) -> Client {
    let client = server_client(config)
        .with_database(read_database(config))
        .with_product_info(PRODUCT, &config.database);
    if config.cluster.is_empty() {
        client
    } else {
        client.with_setting("distributed_product_mode", "local")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_go_to_the_distributed_database_only_in_cluster_mode() {
        let single = ClickHouseConfig::default();
        assert_eq!(read_database(&single), "tollgate");
        let cluster = ClickHouseConfig {
            cluster: "tollgate".into(),
            ..ClickHouseConfig::default()
        };
        assert_eq!(read_database(&cluster), "tollgate_dist");
    }
}
