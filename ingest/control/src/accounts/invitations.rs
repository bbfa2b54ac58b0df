//! Invitations: an admin invites an email address with a role in an org;
//! the link (its token shown once, only its SHA-256 stored) lets that
//! person choose a password and creates the account, once, before it
//! expires.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::users::SignIn;
use super::users::{commit, insert_user, replace_grants};
use super::{normalize_email, password, AccountStore, Grant, Role, User};
use crate::error::ControlError;
use crate::keys::{hash_secret, random_string, RANDOM_ALPHABET};

/// An invitation just made; `token` exists only here (and in the link).
#[derive(Debug, Clone)]
pub struct CreatedInvitation {
    pub token: String,
    pub email: String,
    pub expires_at: DateTime<Utc>,
}

/// A stored invitation, without its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invitation {
    pub email: String,
    pub grant: Grant,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
}

type InvitationRow = (
    String,
    Option<String>,
    String,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

fn invitation_of(row: InvitationRow) -> Option<Invitation> {
    let (email, org_id, role, created_by, created_at, expires_at, accepted_at) = row;
    Some(Invitation {
        email,
        grant: Grant {
            org_id,
            role: Role::parse(&role).ok()?,
        },
        created_by,
        created_at,
        expires_at,
        accepted_at,
    })
}

const INVITATION_COLUMNS: &str =
    "email, org_id, role, created_by, created_at, expires_at, accepted_at";

impl AccountStore {
    /// Invite `email` with `grant`.
    pub async fn invite(
        &self,
        email: &str,
        grant: &Grant,
        actor: &str,
    ) -> Result<CreatedInvitation, ControlError> {
        let email = normalize_email(email).map_err(|reason| ControlError::InvalidInput {
            field: "email",
            reason,
        })?;
        let token = random_string(RANDOM_ALPHABET, 43)?;
        let expires_at = Utc::now() + self.policy().invitation_ttl();
        sqlx::query(
            "INSERT INTO invitations (token_hash, email, org_id, role, created_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(hash_secret(&token).as_slice())
        .bind(&email)
        .bind(&grant.org_id)
        .bind(grant.role.as_str())
        .bind(actor)
        .bind(expires_at)
        .execute(self.pool())
        .await
        .map_err(|e| ControlError::postgres("inviting a user", e))?;
        tracing::info!(%email, grant = %grant.describe(), actor, "user invited");
        Ok(CreatedInvitation {
            token,
            email,
            expires_at,
        })
    }

    /// The open invitation behind `token` (not accepted, not expired).
    pub async fn invitation(&self, token: &str) -> Result<Option<Invitation>, ControlError> {
        let row: Option<InvitationRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations \
             WHERE token_hash = $1 AND accepted_at IS NULL AND expires_at > now()"
        )))
        .bind(hash_secret(token).as_slice())
        .fetch_optional(self.pool())
        .await
        .map_err(|e| ControlError::postgres("reading an invitation", e))?;
        Ok(row.and_then(invitation_of))
    }

    /// Whether `email` (as an invitation stores it) has an account: its
    /// invitation then asks for that account's current password.
    pub async fn has_account(&self, email: &str) -> Result<bool, ControlError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE email = $1)")
            .bind(email)
            .fetch_one(self.pool())
            .await
            .map_err(|e| ControlError::postgres("reading an account", e))
    }

    /// Every invitation, newest first.
    pub async fn invitations(&self) -> Result<Vec<Invitation>, ControlError> {
        let rows: Vec<InvitationRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations ORDER BY created_at DESC"
        )))
        .fetch_all(self.pool())
        .await
        .map_err(|e| ControlError::postgres("listing invitations", e))?;
        Ok(rows.into_iter().filter_map(invitation_of).collect())
    }

    /// Accept the invitation behind `token`: create the account with the
    /// chosen password and the invited grant. An account that exists gets
    /// the grant added only when `password` is its current one (checked
    /// as a sign-in is, failures counted and locked alike), and keeps its
    /// password and name: an invitation is no way into an account (an org
    /// admin inviting an admin of every org's address, or anyone holding
    /// the link, set that account's password and signed in as it).
    /// `Ok(None)`: no open invitation (unknown, used or expired).
    pub async fn accept_invitation(
        &self,
        token: &str,
        display_name: &str,
        password: &str,
    ) -> Result<Option<User>, ControlError> {
        let Some(open) = self.invitation(token).await? else {
            return Ok(None);
        };
        let existing: Option<Uuid> = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
            .bind(&open.email)
            .fetch_optional(self.pool())
            .await
            .map_err(|e| ControlError::postgres("accepting an invitation", e))?;
        let refused = |reason: String| ControlError::InvalidInput {
            field: "password",
            reason,
        };
        let new_account = match existing {
            Some(_) => match self.sign_in(&open.email, password).await? {
                SignIn::Ok(_) => None,
                SignIn::Refused => {
                    return Err(refused(format!(
                        "{} already has an account: enter its current password to add this access \
                         (the password is not changed). An account that signs in with single \
                         sign-on has none: ask an admin to grant the access",
                        open.email
                    )))
                }
                SignIn::Locked(until) => {
                    return Err(refused(format!(
                        "too many wrong passwords for {}: try again after {}",
                        open.email,
                        until.format("%H:%M UTC")
                    )))
                }
                SignIn::Disabled => {
                    return Err(ControlError::InvalidInput {
                        field: "email",
                        reason: format!("the account of {} is disabled", open.email),
                    })
                }
            },
            None => {
                password::check_strength(password)?;
                Some(password::hash(password).await?)
            }
        };
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(|e| ControlError::postgres("accepting an invitation", e))?;
        let row: Option<InvitationRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE invitations SET accepted_at = now() \
             WHERE token_hash = $1 AND accepted_at IS NULL AND expires_at > now() \
             RETURNING {INVITATION_COLUMNS}"
        )))
        .bind(hash_secret(token).as_slice())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| ControlError::postgres("accepting an invitation", e))?;
        let Some(invitation) = row.and_then(invitation_of) else {
            return Ok(None);
        };
        let user_id = match (existing, new_account) {
            (Some(id), _) => id,
            (None, hash) => {
                let name = if display_name.trim().is_empty() {
                    invitation.email.clone()
                } else {
                    display_name.trim().chars().take(200).collect()
                };
                // Created meanwhile under the same address: the insert
                // fails on the unique email, and nothing is accepted.
                insert_user(&mut tx, &invitation.email, &name, hash.as_deref())
                    .await?
                    .id
            }
        };
        let mut grants: Vec<(Option<String>, String)> =
            sqlx::query_as("SELECT org_id, role FROM user_grants WHERE user_id = $1")
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| ControlError::postgres("accepting an invitation", e))?;
        grants.push((
            invitation.grant.org_id.clone(),
            invitation.grant.role.as_str().to_string(),
        ));
        let grants: Vec<Grant> = grants
            .into_iter()
            .filter_map(|(org_id, role)| {
                Some(Grant {
                    org_id,
                    role: Role::parse(&role).ok()?,
                })
            })
            .collect();
        replace_grants(&mut tx, user_id, &grants, &invitation.created_by).await?;
        commit(tx, "accepting an invitation").await?;
        tracing::info!(email = %invitation.email, "invitation accepted");
        Ok(self.user(user_id).await?.map(|u| u.user))
    }
}
