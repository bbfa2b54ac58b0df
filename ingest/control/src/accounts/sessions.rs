//! Sessions of signed-in people in `sessions`: started at sign-in, found
//! by the cookie's token (only its SHA-256 is stored), ended at sign-out,
//! after `session_ttl_secs` or `session_idle_secs` without a request, and
//! when the account is disabled. Each carries the form token (CSRF) of its
//! pages.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{AuthPolicy, Grant, User};
use crate::error::ControlError;
use crate::keys::{hash_secret, random_string, RANDOM_ALPHABET};

/// Length of a session token and of a form token.
const TOKEN_LEN: usize = 43;

/// A session just started; `token` exists only here and in the cookie.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

/// Who a live session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    pub user: User,
    pub grants: Vec<Grant>,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct SessionStore {
    pool: PgPool,
    policy: AuthPolicy,
}

impl SessionStore {
    pub fn new(pool: PgPool, policy: AuthPolicy) -> Self {
        Self { pool, policy }
    }

    pub fn policy(&self) -> &AuthPolicy {
        &self.policy
    }

    /// Start a session for `user_id`.
    pub async fn start(&self, user_id: Uuid) -> Result<Session, ControlError> {
        let token = random_string(RANDOM_ALPHABET, TOKEN_LEN)?;
        let csrf = random_string(RANDOM_ALPHABET, TOKEN_LEN)?;
        let expires_at = Utc::now() + self.policy.session_ttl();
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, csrf, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(hash_secret(&token).as_slice())
        .bind(user_id)
        .bind(&csrf)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| ControlError::postgres("starting a session", e))?;
        Ok(Session {
            token,
            csrf,
            expires_at,
        })
    }

    /// The person behind `token`, if the session is live (not expired, not
    /// idle too long, account not disabled); marks it seen.
    pub async fn resolve(&self, token: &str) -> Result<Option<SignedIn>, ControlError> {
        if token.is_empty() || token.len() > 256 {
            return Ok(None);
        }
        let now = Utc::now();
        let idle_since = now - self.policy.session_idle();
        let row: Option<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(
            "UPDATE sessions s SET last_seen_at = $2 FROM users u \
             WHERE s.token_hash = $1 AND u.id = s.user_id AND u.disabled_at IS NULL \
               AND s.expires_at > $2 AND s.last_seen_at > $3 \
             RETURNING s.user_id, s.csrf, s.expires_at",
        )
        .bind(hash_secret(token).as_slice())
        .bind(now)
        .bind(idle_since)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| ControlError::postgres("reading a session", e))?;
        let Some((user_id, csrf, expires_at)) = row else {
            return Ok(None);
        };
        let accounts = super::AccountStore::new(self.pool.clone(), self.policy.clone());
        Ok(accounts.user(user_id).await?.map(|u| SignedIn {
            user: u.user,
            grants: u.grants,
            csrf,
            expires_at,
        }))
    }

    /// End the session behind `token` (sign-out).
    pub async fn end(&self, token: &str) -> Result<(), ControlError> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(hash_secret(token).as_slice())
            .execute(&self.pool)
            .await
            .map_err(|e| ControlError::postgres("ending a session", e))?;
        Ok(())
    }

    /// Forget sessions that can no longer be used.
    pub async fn purge_expired(&self) -> Result<u64, ControlError> {
        let idle_since = Utc::now() - self.policy.session_idle();
        Ok(
            sqlx::query("DELETE FROM sessions WHERE expires_at <= now() OR last_seen_at <= $1")
                .bind(idle_since)
                .execute(&self.pool)
                .await
                .map_err(|e| ControlError::postgres("purging sessions", e))?
                .rows_affected(),
        )
    }
}
