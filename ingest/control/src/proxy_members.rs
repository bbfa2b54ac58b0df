//! The live set of proxies, in PostgreSQL's `proxy_members` (one row per
//! running proxy, renewed like a lease on the database's clock): what each
//! proxy's share of the hard budgets and rate limits is derived from
//! (`docs/cost.md`, "Shares among proxies").
//!
//! One [`Membership::refresh`] renews this proxy's row (a new join `seq`
//! when the row is new or had expired), reads the live rows, and returns
//! the [`View`] they give; once the caller has applied that view's share,
//! [`Membership::acknowledge`] records the highest join it has seen, which
//! is what lets a newcomer take its share ([`View::pending`]).

use std::time::Duration;

use sqlx::PgPool;

use crate::ControlError;

/// Renew (or create) this holder's row for `ttl` from now; a row that had
/// expired, or a new one, gets a new join number.
const RENEW_SQL: &str = "INSERT INTO proxy_members (holder, seq, expires_at)
VALUES ($1, nextval('proxy_members_seq'), now() + make_interval(secs => $2))
ON CONFLICT (holder) DO UPDATE SET
    seq = CASE WHEN proxy_members.expires_at < now() THEN nextval('proxy_members_seq') ELSE proxy_members.seq END,
    seen_seq = CASE WHEN proxy_members.expires_at < now() THEN 0 ELSE proxy_members.seen_seq END,
    expires_at = EXCLUDED.expires_at
RETURNING seq";

const LIVE_SQL: &str =
    "SELECT holder, seq, seen_seq FROM proxy_members WHERE expires_at > now() ORDER BY seq";

const ACK_SQL: &str = "UPDATE proxy_members SET seen_seq = GREATEST(seen_seq, $2)
WHERE holder = $1 AND expires_at > now()";

const LEAVE_SQL: &str = "DELETE FROM proxy_members WHERE holder = $1";

/// Rows that expired this long ago are deleted by whoever refreshes.
const FORGET_SQL: &str = "DELETE FROM proxy_members WHERE expires_at < now() - interval '1 hour'";

/// One live member as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub holder: String,
    pub seq: i64,
    pub seen_seq: i64,
}

/// What one refresh saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// This proxy's join number.
    pub seq: i64,
    /// Every live member, this one included.
    pub live: Vec<Member>,
}

impl View {
    /// How many proxies share the budgets.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// Whether some other live member has not yet applied this proxy's
    /// join (then this proxy's share is still 0).
    pub fn pending(&self, holder: &str) -> bool {
        self.live
            .iter()
            .any(|m| m.holder != holder && m.seen_seq < self.seq)
    }

    /// The highest join number among the live members.
    pub fn newest_seq(&self) -> i64 {
        self.live.iter().map(|m| m.seq).max().unwrap_or(self.seq)
    }
}

/// This proxy's membership.
#[derive(Debug, Clone)]
pub struct Membership {
    /// Unique per process (host, pid, a random suffix).
    pub holder: String,
    pub ttl: Duration,
}

impl Membership {
    pub fn new(holder: impl Into<String>, ttl: Duration) -> Self {
        Self {
            holder: holder.into(),
            ttl,
        }
    }

    /// Renew this proxy's row and read the live set.
    pub async fn refresh(&self, pool: &PgPool) -> Result<View, ControlError> {
        let seq: i64 = sqlx::query_scalar(RENEW_SQL)
            .bind(&self.holder)
            .bind(self.ttl.as_secs_f64())
            .fetch_one(pool)
            .await
            .map_err(|e| ControlError::postgres("renewing the proxy's membership", e))?;
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(LIVE_SQL)
            .fetch_all(pool)
            .await
            .map_err(|e| ControlError::postgres("reading the live proxies", e))?;
        Ok(View {
            seq,
            live: rows
                .into_iter()
                .map(|(holder, seq, seen_seq)| Member {
                    holder,
                    seq,
                    seen_seq,
                })
                .collect(),
        })
    }

    /// Record that this proxy's share now counts every join up to `seq`.
    pub async fn acknowledge(&self, pool: &PgPool, seq: i64) -> Result<(), ControlError> {
        sqlx::query(ACK_SQL)
            .bind(&self.holder)
            .bind(seq)
            .execute(pool)
            .await
            .map_err(|e| ControlError::postgres("acknowledging the live proxies", e))?;
        Ok(())
    }

    /// Delete long-expired rows (any member may; harmless if two do).
    pub async fn forget_expired(&self, pool: &PgPool) -> Result<(), ControlError> {
        sqlx::query(FORGET_SQL)
            .execute(pool)
            .await
            .map_err(|e| ControlError::postgres("forgetting expired proxies", e))?;
        Ok(())
    }

    /// Leave at shutdown: the others' shares grow at their next refresh.
    pub async fn leave(&self, pool: &PgPool) -> Result<(), ControlError> {
        sqlx::query(LEAVE_SQL)
            .bind(&self.holder)
            .execute(pool)
            .await
            .map_err(|e| ControlError::postgres("leaving the live proxies", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(holder: &str, seq: i64, seen_seq: i64) -> Member {
        Member {
            holder: holder.into(),
            seq,
            seen_seq,
        }
    }

    #[test]
    fn a_newcomer_is_pending_until_every_other_member_has_seen_it() {
        let view = View {
            seq: 7,
            live: vec![member("a", 3, 7), member("b", 5, 6), member("c", 7, 0)],
        };
        assert!(view.pending("c"));
        assert_eq!(view.newest_seq(), 7);
        let view = View {
            seq: 7,
            live: vec![member("a", 3, 7), member("b", 5, 9), member("c", 7, 0)],
        };
        assert!(!view.pending("c"));
        // Alone: nobody to wait for.
        let alone = View {
            seq: 1,
            live: vec![member("a", 1, 0)],
        };
        assert!(!alone.pending("a"));
        assert_eq!(alone.live_count(), 1);
    }
}
