//! Building ClickHouse clients from [`ClickHouseConfig`]. Every client
//! Tollgate uses (the folds' sinks, the read side, the budget spend query)
//! is built here, so the one setting that makes the `clickhouse` crate work
//! with ClickHouse 18.16 (validation off: plain `RowBinary` instead of
//! `RowBinaryWithNamesAndTypes`) lives in one place.

use clickhouse::Client;

use crate::config::ClickHouseConfig;

/// A client bound to the configured database.
pub fn client(config: &ClickHouseConfig) -> Client {
    server_client(config).with_database(&config.database)
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
