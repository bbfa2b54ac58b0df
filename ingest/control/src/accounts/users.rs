//! Accounts in `users` and their grants in `user_grants`: creating a person
//! (the first admin from the CLI, others by invitation or single sign-on),
//! signing in with a password (with lockout after repeated failures),
//! listing, changing grants and disabling.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{normalize_email, password, AuthPolicy, Grant, Role};
use crate::error::ControlError;

/// A person's account, without secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub locked_until: Option<DateTime<Utc>>,
    /// Signed in through single sign-on (no password here).
    pub sso_issuer: Option<String>,
}

/// An account and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserWithGrants {
    #[serde(flatten)]
    pub user: User,
    pub grants: Vec<Grant>,
}

/// The outcome of a password sign-in. Unknown addresses and wrong passwords
/// are told apart only here (for the log); the page says the same for both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignIn {
    Ok(User),
    /// No such account, or a wrong password.
    Refused,
    /// Too many failures: locked until then (the right password too).
    Locked(DateTime<Utc>),
    Disabled,
}

/// id, password hash, locked until, disabled at.
type PasswordRow = (
    Uuid,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

const USER_COLUMNS: &str =
    "id, email, display_name, created_at, disabled_at, locked_until, sso_issuer";

/// People in PostgreSQL.
#[derive(Clone)]
pub struct AccountStore {
    pool: PgPool,
    policy: AuthPolicy,
}

impl AccountStore {
    pub fn new(pool: PgPool, policy: AuthPolicy) -> Self {
        Self { pool, policy }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn policy(&self) -> &AuthPolicy {
        &self.policy
    }

    /// Create a person with `grants` (a password is optional: people who
    /// sign in only through SSO have none). `actor` is recorded on grants.
    pub async fn create_user(
        &self,
        email: &str,
        display_name: &str,
        password: Option<&str>,
        grants: &[Grant],
        actor: &str,
    ) -> Result<User, ControlError> {
        let email = normalize_email(email).map_err(|reason| ControlError::InvalidInput {
            field: "email",
            reason,
        })?;
        let display_name = display_name_or(display_name, &email)?;
        let hash = match password {
            Some(p) => {
                password::check_strength(p)?;
                Some(password::hash(p).await?)
            }
            None => None,
        };
        let mut tx = self.begin("creating a user").await?;
        let user = insert_user(&mut tx, &email, &display_name, hash.as_deref()).await?;
        replace_grants(&mut tx, user.id, grants, actor).await?;
        commit(tx, "creating a user").await?;
        tracing::info!(user = %user.email, grants = %described(grants), actor, "user created");
        Ok(user)
    }

    /// Check an email and password; counts failures and locks the account
    /// at `lockout_attempts` for `lockout_secs` (the policy).
    pub async fn sign_in(&self, email: &str, password: &str) -> Result<SignIn, ControlError> {
        let Ok(email) = normalize_email(email) else {
            return Ok(SignIn::Refused);
        };
        let row: Option<PasswordRow> = sqlx::query_as(
            "SELECT id, password_hash, locked_until, disabled_at FROM users WHERE email = $1",
        )
        .bind(&email)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| ControlError::postgres("reading an account", e))?;
        let now = Utc::now();
        let Some((id, hash, locked_until, disabled_at)) = row else {
            return self.sign_in_unknown(&email, password, now).await;
        };
        if let Some(until) = locked_until.filter(|until| *until > now) {
            return Ok(SignIn::Locked(until));
        }
        let matches = match hash {
            Some(hash) => password::verify(password, &hash).await?,
            None => false,
        };
        // Only the right password learns that the account is disabled: a
        // guess is refused as any other, so it tells nothing.
        if matches && disabled_at.is_some() {
            return Ok(SignIn::Disabled);
        }
        if matches {
            let user: User = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE users SET failed_attempts = 0, locked_until = NULL WHERE id = $1 RETURNING {USER_COLUMNS}"
            )))
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ControlError::postgres("recording a sign-in", e))?;
            return Ok(SignIn::Ok(user));
        }
        let lock_until = now + self.policy.lockout();
        let locked: Option<DateTime<Utc>> = sqlx::query_scalar(
            "UPDATE users SET failed_attempts = failed_attempts + 1, \
                 locked_until = CASE WHEN failed_attempts + 1 >= $2 THEN $3 ELSE NULL END \
             WHERE id = $1 RETURNING locked_until",
        )
        .bind(id)
        .bind(i32::try_from(self.policy.lockout_attempts).unwrap_or(i32::MAX))
        .bind(lock_until)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ControlError::postgres("recording a failed sign-in", e))?;
        Ok(match locked {
            Some(until) => {
                tracing::warn!(%email, %until, "account locked after repeated failed sign-ins");
                SignIn::Locked(until)
            }
            None => SignIn::Refused,
        })
    }

    /// A sign-in with an address that has no account: answered as a wrong
    /// password is, in as much time (a password check against a stand-in
    /// hash), and counted and locked as an account's failures are
    /// (`sign_in_failures`), so neither the answer, nor its time, nor a
    /// lockout after repeated guesses tells which addresses have accounts.
    async fn sign_in_unknown(
        &self,
        email: &str,
        password: &str,
        now: DateTime<Utc>,
    ) -> Result<SignIn, ControlError> {
        let key = Sha256::digest(email.as_bytes()).to_vec();
        let locked: Option<Option<DateTime<Utc>>> =
            sqlx::query_scalar("SELECT locked_until FROM sign_in_failures WHERE email_sha256 = $1")
                .bind(&key)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| ControlError::postgres("reading failed sign-ins", e))?;
        if let Some(until) = locked.flatten().filter(|until| *until > now) {
            return Ok(SignIn::Locked(until));
        }
        let _ = password::verify(password, DUMMY_HASH).await;
        let locked: Option<DateTime<Utc>> = sqlx::query_scalar(
            "INSERT INTO sign_in_failures AS f (email_sha256, failed_attempts, locked_until) \
             VALUES ($1, 1, CASE WHEN 1 >= $2 THEN $3 END) \
             ON CONFLICT (email_sha256) DO UPDATE SET \
                 failed_attempts = f.failed_attempts + 1, \
                 locked_until = CASE WHEN f.failed_attempts + 1 >= $2 THEN $3 ELSE NULL END \
             RETURNING locked_until",
        )
        .bind(&key)
        .bind(i32::try_from(self.policy.lockout_attempts).unwrap_or(i32::MAX))
        .bind(now + self.policy.lockout())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ControlError::postgres("recording a failed sign-in", e))?;
        Ok(locked.map_or(SignIn::Refused, SignIn::Locked))
    }

    /// One account and its grants.
    pub async fn user(&self, id: Uuid) -> Result<Option<UserWithGrants>, ControlError> {
        let user: Option<User> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| ControlError::postgres("reading an account", e))?;
        match user {
            Some(user) => {
                let grants = self.grants(id).await?;
                Ok(Some(UserWithGrants { user, grants }))
            }
            None => Ok(None),
        }
    }

    /// Every account with its grants, by email.
    pub async fn list_users(&self) -> Result<Vec<UserWithGrants>, ControlError> {
        let users: Vec<User> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY email"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| ControlError::postgres("listing accounts", e))?;
        let grants: Vec<(Uuid, Option<String>, String)> = sqlx::query_as(
            "SELECT user_id, org_id, role FROM user_grants ORDER BY org_id NULLS FIRST, role",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| ControlError::postgres("listing grants", e))?;
        Ok(users
            .into_iter()
            .map(|user| {
                let grants = grants
                    .iter()
                    .filter(|(id, _, _)| *id == user.id)
                    .filter_map(|(_, org, role)| grant_of(org.clone(), role))
                    .collect();
                UserWithGrants { user, grants }
            })
            .collect())
    }

    /// A person's grants.
    pub async fn grants(&self, user_id: Uuid) -> Result<Vec<Grant>, ControlError> {
        let rows: Vec<(Option<String>, String)> = sqlx::query_as(
            "SELECT org_id, role FROM user_grants WHERE user_id = $1 ORDER BY org_id NULLS FIRST, role",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| ControlError::postgres("reading grants", e))?;
        Ok(rows
            .into_iter()
            .filter_map(|(org, role)| grant_of(org, &role))
            .collect())
    }

    /// Replace a person's grants; their sessions see the change on the
    /// next request.
    pub async fn set_grants(
        &self,
        user_id: Uuid,
        grants: &[Grant],
        actor: &str,
    ) -> Result<(), ControlError> {
        let mut tx = self.begin("changing grants").await?;
        replace_grants(&mut tx, user_id, grants, actor).await?;
        commit(tx, "changing grants").await?;
        tracing::info!(%user_id, grants = %described(grants), actor, "grants changed");
        Ok(())
    }

    /// Set an account's password (checked against the policy as at
    /// creation), lift a lockout and end its sessions, so whoever signed in
    /// with the old password is signed out (`false`: no such account).
    pub async fn set_password(
        &self,
        user_id: Uuid,
        password: &str,
        actor: &str,
    ) -> Result<bool, ControlError> {
        password::check_strength(password)?;
        let hash = password::hash(password).await?;
        let mut tx = self.begin("setting a password").await?;
        let changed = sqlx::query(
            "UPDATE users SET password_hash = $2, failed_attempts = 0, locked_until = NULL WHERE id = $1",
        )
        .bind(user_id)
        .bind(&hash)
        .execute(&mut *tx)
        .await
        .map_err(|e| ControlError::postgres("setting a password", e))?
        .rows_affected()
            > 0;
        end_sessions(&mut tx, user_id).await?;
        commit(tx, "setting a password").await?;
        tracing::info!(%user_id, actor, "password set");
        Ok(changed)
    }

    /// Disable an account and end its sessions (`false`: no such account).
    pub async fn disable(&self, user_id: Uuid, actor: &str) -> Result<bool, ControlError> {
        let mut tx = self.begin("disabling a user").await?;
        let changed = sqlx::query(
            "UPDATE users SET disabled_at = now() WHERE id = $1 AND disabled_at IS NULL",
        )
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| ControlError::postgres("disabling a user", e))?
        .rows_affected()
            > 0;
        end_sessions(&mut tx, user_id).await?;
        commit(tx, "disabling a user").await?;
        tracing::info!(%user_id, actor, "user disabled");
        Ok(changed)
    }

    /// The account of a single sign-on subject (issuer and subject),
    /// created on first sign-in, and its grants replaced by what the
    /// provider's claim maps to. An account made earlier with the same
    /// address is linked only when it has no other way in; otherwise this
    /// is refused, naming `email`.
    pub async fn upsert_sso_user(
        &self,
        issuer: &str,
        subject: &str,
        email: &str,
        display_name: &str,
        grants: &[Grant],
    ) -> Result<User, ControlError> {
        let email = normalize_email(email).map_err(|reason| ControlError::InvalidInput {
            field: "email",
            reason,
        })?;
        let display_name = display_name_or(display_name, &email)?;
        let mut tx = self.begin("signing in through SSO").await?;
        let pg = |e| ControlError::postgres("signing in through SSO", e);
        // The provider's subject is the person; an address is only linked
        // to an account that has no other way in (no password, no other
        // provider's identity), so a provider cannot take over an account
        // that exists by naming its address.
        let by_subject: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM users WHERE sso_issuer = $1 AND sso_subject = $2")
                .bind(issuer)
                .bind(subject)
                .fetch_optional(&mut *tx)
                .await
                .map_err(pg)?;
        let by_email: Option<(Uuid, bool)> = sqlx::query_as(
            "SELECT id, password_hash IS NULL AND sso_issuer IS NULL FROM users WHERE email = $1",
        )
        .bind(&email)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg)?;
        let id = match (by_subject, by_email) {
            (Some(id), Some((other, _))) if other != id => {
                return Err(ControlError::InvalidInput {
                    field: "email",
                    reason: format!("{email} belongs to another account"),
                })
            }
            (Some(id), _) => id,
            (None, Some((id, true))) => id,
            (None, Some((_, false))) => {
                return Err(ControlError::InvalidInput {
                    field: "email",
                    reason: format!(
                        "an account for {email} already exists and signs in another way \
                         (a password, or another provider); it is not linked to single sign-on"
                    ),
                })
            }
            (None, None) => Uuid::now_v7(),
        };
        let user: User = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO users (id, email, display_name, sso_issuer, sso_subject) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, display_name = EXCLUDED.display_name, \
                 sso_issuer = EXCLUDED.sso_issuer, sso_subject = EXCLUDED.sso_subject \
             RETURNING {USER_COLUMNS}"
        )))
        .bind(id)
        .bind(&email)
        .bind(&display_name)
        .bind(issuer)
        .bind(subject)
        .fetch_one(&mut *tx)
        .await
        .map_err(pg)?;
        replace_grants(&mut tx, user.id, grants, &format!("sso:{issuer}")).await?;
        commit(tx, "signing in through SSO").await?;
        Ok(user)
    }

    async fn begin(
        &self,
        doing: &'static str,
    ) -> Result<Transaction<'static, Postgres>, ControlError> {
        self.pool
            .begin()
            .await
            .map_err(|e| ControlError::postgres(doing, e))
    }
}

/// A stored hash of a random password, checked against for unknown
/// addresses so they take as long as known ones.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Q0uZ0X3A9n5b1rTq2VqLxk7rM8mJ8nq2d6i1aZpZb2Q";

fn grant_of(org: Option<String>, role: &str) -> Option<Grant> {
    Role::parse(role)
        .ok()
        .map(|role| Grant { org_id: org, role })
}

fn display_name_or(display_name: &str, email: &str) -> Result<String, ControlError> {
    let name = display_name.trim();
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ControlError::InvalidInput {
            field: "display_name",
            reason: "must be at most 200 characters, without control characters".into(),
        });
    }
    Ok(if name.is_empty() {
        email.to_string()
    } else {
        name.to_string()
    })
}

pub(super) async fn insert_user(
    tx: &mut Transaction<'static, Postgres>,
    email: &str,
    display_name: &str,
    password_hash: Option<&str>,
) -> Result<User, ControlError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO users (id, email, display_name, password_hash) VALUES ($1, $2, $3, $4) RETURNING {USER_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(email)
    .bind(display_name)
    .bind(password_hash)
    .fetch_one(&mut **tx)
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(db) if db.is_unique_violation() => ControlError::InvalidInput {
            field: "email",
            reason: format!("an account for {email} already exists"),
        },
        e => ControlError::postgres("creating a user", e),
    })
}

/// End every session of `user_id` (its sign-in no longer holds).
async fn end_sessions(
    tx: &mut Transaction<'static, Postgres>,
    user_id: Uuid,
) -> Result<(), ControlError> {
    sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await
        .map_err(|e| ControlError::postgres("ending a user's sessions", e))?;
    Ok(())
}

pub(super) async fn replace_grants(
    tx: &mut Transaction<'static, Postgres>,
    user_id: Uuid,
    grants: &[Grant],
    actor: &str,
) -> Result<(), ControlError> {
    for grant in grants {
        if let Some(org) = &grant.org_id {
            if org.trim().is_empty() || org.len() > 128 {
                return Err(ControlError::InvalidInput {
                    field: "org",
                    reason: "an org id is 1 to 128 characters".into(),
                });
            }
        }
    }
    sqlx::query("DELETE FROM user_grants WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await
        .map_err(|e| ControlError::postgres("replacing grants", e))?;
    for grant in grants {
        sqlx::query(
            "INSERT INTO user_grants (user_id, org_id, role, granted_by) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(user_id)
        .bind(&grant.org_id)
        .bind(grant.role.as_str())
        .bind(actor)
        .execute(&mut **tx)
        .await
        .map_err(|e| ControlError::postgres("granting a role", e))?;
    }
    Ok(())
}

pub(super) async fn commit(
    tx: Transaction<'static, Postgres>,
    doing: &'static str,
) -> Result<(), ControlError> {
    tx.commit()
        .await
        .map_err(|e| ControlError::postgres(doing, e))
}

/// Grants as a log line shows them: `finance in acme, admin in every
/// org`, not Rust's Debug text of the values.
fn described(grants: &[Grant]) -> String {
    grants
        .iter()
        .map(Grant::describe)
        .collect::<Vec<_>>()
        .join(", ")
}
