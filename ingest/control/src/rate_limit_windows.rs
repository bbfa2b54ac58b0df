//! The shared capacity pool of the rate-limit tiers, in PostgreSQL's
//! `rate_limit_windows` (`docs/proxy.md`, "Rate-limit tiers"): per limited
//! scope and UTC minute, how much of the requests and tokens limits the
//! proxies have claimed. A proxy claims a block with one statement that
//! grants `min(block, limit - claimed)` of each, so in one window the
//! grants of every proxy together never sum above the limit the claimers
//! passed. Windows [`KEEP_MINUTES`] old are deleted by the claimers
//! ([`WindowPool::forget_before`]).

use sqlx::PgPool;

use crate::ControlError;

/// Windows older than this many minutes (before the claimer's current one)
/// are deleted.
pub const KEEP_MINUTES: i64 = 5;

/// Claim up to the wanted amounts of a window, each capped by what the
/// limit leaves; `$5`/`$7` are the limits (0 where the scope has none, with
/// 0 wanted). Returns what this statement granted.
const CLAIM_SQL: &str = "INSERT INTO rate_limit_windows AS w
    (scope_kind, scope_id, minute, requests_claimed, tokens_claimed, last_requests_grant, last_tokens_grant)
VALUES ($1, $2, $3, LEAST($4, $5), LEAST($6, $7), LEAST($4, $5), LEAST($6, $7))
ON CONFLICT (scope_kind, scope_id, minute) DO UPDATE SET
    requests_claimed = w.requests_claimed + LEAST($4, GREATEST($5 - w.requests_claimed, 0)),
    tokens_claimed = w.tokens_claimed + LEAST($6, GREATEST($7 - w.tokens_claimed, 0)),
    last_requests_grant = LEAST($4, GREATEST($5 - w.requests_claimed, 0)),
    last_tokens_grant = LEAST($6, GREATEST($7 - w.tokens_claimed, 0))
RETURNING last_requests_grant, last_tokens_grant";

const FORGET_SQL: &str = "DELETE FROM rate_limit_windows WHERE minute < $1";

const CLAIMED_SQL: &str = "SELECT requests_claimed, tokens_claimed FROM rate_limit_windows
WHERE scope_kind = $1 AND scope_id = $2 AND minute = $3";

/// One claim: a scope's window, and per limit what is wanted of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// `key`, `user`, `team` or `org`.
    pub scope_kind: String,
    pub scope_id: String,
    /// Unix seconds / 60 (UTC) on the claimer's clock.
    pub minute: i64,
    pub requests: Want,
    pub tokens: Want,
}

/// What a claim asks of one limit: `amount` (a block), under `limit` per
/// window. `Want::NONE` for a limit the scope does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Want {
    pub amount: u64,
    pub limit: u64,
}

impl Want {
    pub const NONE: Want = Want {
        amount: 0,
        limit: 0,
    };
}

/// What a claim got: at most what was wanted; less when the window's pool
/// ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Grant {
    pub requests: u64,
    pub tokens: u64,
}

fn to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn from_sql(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The pool's table.
#[derive(Debug, Clone)]
pub struct WindowPool {
    pool: PgPool,
}

impl WindowPool {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Claim a block of a window's requests and tokens (one statement,
    /// atomic against every other claimer).
    pub async fn claim(&self, claim: &Claim) -> Result<Grant, ControlError> {
        let (requests, tokens): (i64, i64) = sqlx::query_as(CLAIM_SQL)
            .bind(&claim.scope_kind)
            .bind(&claim.scope_id)
            .bind(claim.minute)
            .bind(to_sql(claim.requests.amount))
            .bind(to_sql(claim.requests.limit))
            .bind(to_sql(claim.tokens.amount))
            .bind(to_sql(claim.tokens.limit))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ControlError::postgres("claiming rate-limit capacity", e))?;
        Ok(Grant {
            requests: from_sql(requests),
            tokens: from_sql(tokens),
        })
    }

    /// Delete the windows before `minute` - [`KEEP_MINUTES`] (any claimer
    /// may; harmless if two do).
    pub async fn forget_before(&self, minute: i64) -> Result<u64, ControlError> {
        let done = sqlx::query(FORGET_SQL)
            .bind(minute - KEEP_MINUTES)
            .execute(&self.pool)
            .await
            .map_err(|e| ControlError::postgres("deleting old rate-limit windows", e))?;
        Ok(done.rows_affected())
    }

    /// What the proxies together have claimed of a window (requests,
    /// tokens); (0, 0) when nobody has.
    pub async fn claimed(
        &self,
        scope_kind: &str,
        scope_id: &str,
        minute: i64,
    ) -> Result<(u64, u64), ControlError> {
        let row: Option<(i64, i64)> = sqlx::query_as(CLAIMED_SQL)
            .bind(scope_kind)
            .bind(scope_id)
            .bind(minute)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| ControlError::postgres("reading a rate-limit window", e))?;
        Ok(row.map_or((0, 0), |(r, t)| (from_sql(r), from_sql(t))))
    }
}
