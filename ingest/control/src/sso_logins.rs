//! Single sign-on logins in progress (table `oidc_logins`): what the start
//! of an OpenID Connect login must remember until the provider sends the
//! browser back — the PKCE verifier, the nonce and the local path to go to
//! afterwards — keyed by the `state` parameter (stored as its SHA-256).
//!
//! [`SsoLoginStore::take`] hands a login out once: it marks the row used in
//! the same statement that reads it, so two callbacks with one `state`
//! (a replay, a double click) cannot both sign in, and it says why a
//! `state` is refused (never issued, expired, already used). Expired rows
//! older than a day are deleted when a new login begins.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// A login between `/auth/oidc/start` and `/auth/oidc/callback`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSsoLogin {
    /// The PKCE code verifier (its challenge went to the provider).
    pub pkce_verifier: String,
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// The local path to go to once signed in.
    pub next: String,
    pub expires_at: DateTime<Utc>,
}

/// Why a callback's `state` does not continue a login.
#[derive(Debug, thiserror::Error)]
pub enum SsoLoginError {
    #[error("this sign-in was not started here (unknown state)")]
    Unknown,
    #[error("this sign-in expired at {expires_at}; start again")]
    Expired { expires_at: DateTime<Utc> },
    #[error(
        "this sign-in was already used at {used_at} (a callback is accepted once); start again"
    )]
    AlreadyUsed { used_at: DateTime<Utc> },
    #[error("postgresql query failed while {doing}: {source}")]
    Postgres {
        doing: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

const BEGIN_SQL: &str =
    "INSERT INTO oidc_logins (state_hash, pkce_verifier, nonce, next, expires_at)
VALUES ($1, $2, $3, $4, $5)";

const PURGE_SQL: &str = "DELETE FROM oidc_logins WHERE expires_at < now() - interval '1 day'";

/// Marks the login used and returns it, if it was neither used nor expired.
const TAKE_SQL: &str = "UPDATE oidc_logins SET used_at = now()
WHERE state_hash = $1 AND used_at IS NULL AND expires_at > now()
RETURNING pkce_verifier, nonce, next, expires_at";

const WHY_SQL: &str = "SELECT expires_at, used_at FROM oidc_logins WHERE state_hash = $1";

/// The `oidc_logins` table.
#[derive(Clone)]
pub struct SsoLoginStore {
    pool: PgPool,
}

fn failed(doing: &'static str) -> impl FnOnce(sqlx::Error) -> SsoLoginError {
    move |source| SsoLoginError::Postgres { doing, source }
}

fn state_hash(state: &str) -> Vec<u8> {
    Sha256::digest(state.as_bytes()).to_vec()
}

impl SsoLoginStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Remember a login started with `state`.
    pub async fn begin(&self, state: &str, login: &PendingSsoLogin) -> Result<(), SsoLoginError> {
        sqlx::query(PURGE_SQL)
            .execute(&self.pool)
            .await
            .map_err(failed("deleting expired sign-ins"))?;
        sqlx::query(BEGIN_SQL)
            .bind(state_hash(state))
            .bind(&login.pkce_verifier)
            .bind(&login.nonce)
            .bind(&login.next)
            .bind(login.expires_at)
            .execute(&self.pool)
            .await
            .map_err(failed("recording a sign-in"))?;
        Ok(())
    }

    /// The login started with `state`, once: a second call for the same
    /// `state` fails with [`SsoLoginError::AlreadyUsed`].
    pub async fn take(&self, state: &str) -> Result<PendingSsoLogin, SsoLoginError> {
        let hash = state_hash(state);
        let taken: Option<(String, String, String, DateTime<Utc>)> = sqlx::query_as(TAKE_SQL)
            .bind(&hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(failed("taking a sign-in"))?;
        if let Some((pkce_verifier, nonce, next, expires_at)) = taken {
            return Ok(PendingSsoLogin {
                pkce_verifier,
                nonce,
                next,
                expires_at,
            });
        }
        let why: Option<(DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(WHY_SQL)
            .bind(&hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(failed("reading a sign-in"))?;
        Err(match why {
            None => SsoLoginError::Unknown,
            Some((_, Some(used_at))) => SsoLoginError::AlreadyUsed { used_at },
            Some((expires_at, None)) => SsoLoginError::Expired { expires_at },
        })
    }
}
