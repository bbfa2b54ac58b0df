//! Where the tiers claim capacity: the shared pool in PostgreSQL
//! ([`tollgate_control::rate_limit_windows`]) behind a small trait, so the
//! bookkeeping's tests can claim from one in memory.

#[cfg(test)]
use std::collections::HashMap;
#[cfg(test)]
use std::sync::Mutex;

use futures::future::BoxFuture;
use tollgate_control::rate_limit_windows::{Claim, Grant, WindowPool};
use tollgate_control::ControlError;

/// A pool of per-window capacity that grants claims atomically, never
/// more than a claim's limit in total per window.
pub trait CapacityPool: Send + Sync + std::fmt::Debug + 'static {
    fn claim(&self, claim: Claim) -> BoxFuture<'static, Result<Grant, ControlError>>;
    /// Delete windows older than a few minutes before `minute`.
    fn forget_before(&self, minute: i64) -> BoxFuture<'static, Result<u64, ControlError>>;
}

impl CapacityPool for WindowPool {
    fn claim(&self, claim: Claim) -> BoxFuture<'static, Result<Grant, ControlError>> {
        let pool = self.clone();
        Box::pin(async move { pool.claim(&claim).await })
    }

    fn forget_before(&self, minute: i64) -> BoxFuture<'static, Result<u64, ControlError>> {
        let pool = self.clone();
        Box::pin(async move { pool.forget_before(minute).await })
    }
}

/// (scope kind, scope id, minute).
#[cfg(test)]
type WindowKey = (String, String, i64);

/// A pool in memory with the same grant rule, for the tiers' tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MemoryPool {
    claimed: Mutex<HashMap<WindowKey, (u64, u64)>>,
}

#[cfg(test)]
impl MemoryPool {
    /// What has been claimed of a window (requests, tokens).
    pub fn claimed(&self, scope_kind: &str, scope_id: &str, minute: i64) -> (u64, u64) {
        self.claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(scope_kind.to_string(), scope_id.to_string(), minute))
            .copied()
            .unwrap_or_default()
    }

    /// The grant rule of `rate_limit_windows`: min(wanted, limit - claimed).
    pub fn grant(&self, claim: &Claim) -> Grant {
        let mut map = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
        let row = map
            .entry((
                claim.scope_kind.clone(),
                claim.scope_id.clone(),
                claim.minute,
            ))
            .or_default();
        let requests = claim
            .requests
            .amount
            .min(claim.requests.limit.saturating_sub(row.0));
        let tokens = claim
            .tokens
            .amount
            .min(claim.tokens.limit.saturating_sub(row.1));
        row.0 += requests;
        row.1 += tokens;
        Grant { requests, tokens }
    }
}

#[cfg(test)]
impl CapacityPool for MemoryPool {
    fn claim(&self, claim: Claim) -> BoxFuture<'static, Result<Grant, ControlError>> {
        let grant = self.grant(&claim);
        Box::pin(async move { Ok(grant) })
    }

    fn forget_before(&self, minute: i64) -> BoxFuture<'static, Result<u64, ControlError>> {
        let mut map = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
        let before = map.len();
        map.retain(|(_, _, m), _| {
            *m >= minute - tollgate_control::rate_limit_windows::KEEP_MINUTES
        });
        let gone = (before - map.len()) as u64;
        Box::pin(async move { Ok(gone) })
    }
}
