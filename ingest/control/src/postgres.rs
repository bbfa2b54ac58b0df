//! Connecting to the control-plane PostgreSQL, with an error that names the
//! server (never the password) when it cannot be reached.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

use crate::config::PostgresConfig;
use crate::error::ControlError;

/// How long a connection may take to open. A refused connection fails at
/// once; this bounds a server that answers slowly, and is generous because a
/// SCRAM handshake on a loaded two-core machine took over 5 s (a processor
/// started beside busy builds died at start-up with 5 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Open a pool, after one direct connection has proved the server answers
/// (a pool's own error would only say that it timed out).
pub async fn connect(config: &PostgresConfig) -> Result<PgPool, ControlError> {
    let address = redact_url(&config.url);
    let unreachable = |reason: String| ControlError::PostgresUnreachable {
        address: address.clone(),
        reason,
    };
    let probe = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(&config.url))
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())))?
        .map_err(|err| unreachable(err.to_string()))?;
    if let Err(err) = probe.close().await {
        tracing::debug!(%err, "closing the probe connection failed");
    }
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect(&config.url)
        .await
        .map_err(|err| unreachable(err.to_string()))
}

/// `postgres://user:secret@host:5433/db` -> `postgres://user@host:5433/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn password_is_not_shown() {
        assert_eq!(
            redact_url("postgres://tollgate:s3cret@127.0.0.1:5433/tollgate"),
            "postgres://tollgate@127.0.0.1:5433/tollgate"
        );
        assert_eq!(
            redact_url("postgres://127.0.0.1/db"),
            "postgres://127.0.0.1/db"
        );
    }
}
