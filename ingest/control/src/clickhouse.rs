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

/// A client bound to the configured database.
pub fn client(config: &ClickHouseConfig) -> Client {
    server_client(config)
        .with_database(&config.database)
        .with_product_info(PRODUCT, &config.database)
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
