//! Building ClickHouse clients from [`ClickHouseConfig`], and creating the
//! database. Every client Tollgate uses is built here, so the one setting that
//! makes the `clickhouse` crate work with ClickHouse 18.16 (validation off:
//! plain `RowBinary` instead of `RowBinaryWithNamesAndTypes`) lives in one place.

use clickhouse::Client;

use crate::config::ClickHouseConfig;
use crate::error::{Error, Result};

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
    server
        .query_raw(&format!(
            "CREATE DATABASE IF NOT EXISTS {}",
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

/// Whether `name` can be used unquoted as a ClickHouse database name.
fn is_identifier(name: &str) -> bool {
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
