//! Leases with fencing tokens in PostgreSQL: exactly one replica at a time
//! does a singleton job (the alert evaluator), and whatever it writes is
//! refused once it no longer holds the lease.
//!
//! - [`Lease::acquire`] takes the lease when it is free or expired (or
//!   renews it when this holder has it), in one statement on the database's
//!   clock. A new holder gets a token one above the last; a renewal keeps it.
//! - A holder renews well before `ttl` runs out (e.g. every `ttl / 3`); if
//!   it stops (crash, pause, partition), another replica takes over within
//!   `ttl` plus its own retry interval: the bound on takeover.
//! - Every write a holder makes goes through [`Fence::check`] inside the
//!   write's transaction: it locks the lease row (`FOR SHARE`) and fails
//!   with [`LeaseError::Fenced`] unless the row still carries this token,
//!   this holder and an unexpired time. A holder paused past its expiry
//!   therefore cannot overwrite its successor's state: the successor's
//!   token is higher, and the check runs in the same transaction as the
//!   write, so they commit or fail together.

use std::time::Duration;

use sqlx::PgPool;

/// Why the lease could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease {name}: held by {holder} until it expires")]
    Held { name: String, holder: String },
    #[error("lease {name}: token {token} of {holder} is no longer current (another replica holds the lease)")]
    Fenced {
        name: String,
        holder: String,
        token: i64,
    },
    #[error("lease {name}: postgresql: {source}")]
    Postgres {
        name: String,
        #[source]
        source: sqlx::Error,
    },
}

/// One replica's claim on a named lease.
#[derive(Debug, Clone)]
pub struct Lease {
    pub name: String,
    /// Who this replica is (host, pid, a random suffix): unique per process.
    pub holder: String,
    pub ttl: Duration,
}

/// Proof of holding a lease, to check inside each write's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub name: String,
    pub holder: String,
    pub token: i64,
}

/// Take a free or expired lease, or renew our own; `token` + 1 on a change
/// of holder. Returns the token when this holder has the lease afterwards.
const ACQUIRE_SQL: &str = "INSERT INTO leases (name, holder, token, expires_at)
VALUES ($1, $2, 1, now() + make_interval(secs => $3))
ON CONFLICT (name) DO UPDATE SET
    token = CASE WHEN leases.holder = EXCLUDED.holder THEN leases.token ELSE leases.token + 1 END,
    acquired_at = CASE WHEN leases.holder = EXCLUDED.holder THEN leases.acquired_at ELSE now() END,
    holder = EXCLUDED.holder,
    expires_at = EXCLUDED.expires_at
WHERE leases.holder = EXCLUDED.holder OR leases.expires_at < now()
RETURNING token";

const HOLDER_SQL: &str = "SELECT holder FROM leases WHERE name = $1";

const RELEASE_SQL: &str =
    "UPDATE leases SET expires_at = now() - interval '1 second' WHERE name = $1 AND holder = $2 AND token = $3";

const CHECK_SQL: &str = "SELECT (holder = $2 AND token = $3 AND expires_at > now()) AS current
FROM leases WHERE name = $1 FOR SHARE";

impl Lease {
    pub fn new(name: impl Into<String>, holder: impl Into<String>, ttl: Duration) -> Self {
        Self {
            name: name.into(),
            holder: holder.into(),
            ttl,
        }
    }

    fn postgres(&self, source: sqlx::Error) -> LeaseError {
        LeaseError::Postgres {
            name: self.name.clone(),
            source,
        }
    }

    /// Take (or renew) the lease for `ttl` from now.
    pub async fn acquire(&self, pool: &PgPool) -> Result<Fence, LeaseError> {
        let token: Option<i64> = sqlx::query_scalar(ACQUIRE_SQL)
            .bind(&self.name)
            .bind(&self.holder)
            .bind(self.ttl.as_secs_f64())
            .fetch_optional(pool)
            .await
            .map_err(|e| self.postgres(e))?;
        match token {
            Some(token) => Ok(Fence {
                name: self.name.clone(),
                holder: self.holder.clone(),
                token,
            }),
            None => {
                let holder: Option<String> = sqlx::query_scalar(HOLDER_SQL)
                    .bind(&self.name)
                    .fetch_optional(pool)
                    .await
                    .map_err(|e| self.postgres(e))?;
                Err(LeaseError::Held {
                    name: self.name.clone(),
                    holder: holder.unwrap_or_default(),
                })
            }
        }
    }

    /// Give the lease up at once (at shutdown), so a successor need not
    /// wait for it to expire. Does nothing if it changed hands already.
    pub async fn release(&self, pool: &PgPool, fence: &Fence) -> Result<(), LeaseError> {
        sqlx::query(RELEASE_SQL)
            .bind(&self.name)
            .bind(&self.holder)
            .bind(fence.token)
            .execute(pool)
            .await
            .map_err(|e| self.postgres(e))?;
        Ok(())
    }
}

impl Fence {
    /// Inside `tx`: fail unless this fence is still the lease's current
    /// holder and token, and keep the row locked until `tx` ends.
    pub async fn check(&self, tx: &mut sqlx::PgConnection) -> Result<(), LeaseError> {
        let current: Option<bool> = sqlx::query_scalar(CHECK_SQL)
            .bind(&self.name)
            .bind(&self.holder)
            .bind(self.token)
            .fetch_optional(tx)
            .await
            .map_err(|source| LeaseError::Postgres {
                name: self.name.clone(),
                source,
            })?;
        if current == Some(true) {
            Ok(())
        } else {
            Err(LeaseError::Fenced {
                name: self.name.clone(),
                holder: self.holder.clone(),
                token: self.token,
            })
        }
    }
}
