//! Keeps this proxy's membership of the live proxies renewed in the
//! background and its [`Shares`] derived from what each refresh sees
//! (`docs/cost.md`, "Shares among proxies"). Nothing here runs on a
//! call's path: calls read the share [`Shares`] holds.
//!
//! Each refresh (every `proxy.shares.renew_ms`): renew the row, read the
//! live set, apply the new share (shrinking at once when a proxy joined),
//! then acknowledge the newest join so the newcomer may take its share. A
//! failed refresh changes nothing until the lease of the last good one runs
//! out; then the share is 0. At shutdown the row is deleted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tollgate_control::proxy_members::Membership;

use crate::shares::Shares;

/// A unique name for this process: host, pid, random suffix.
pub fn holder_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "proxy".into());
    format!(
        "{host}/{}/{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// One refresh: renew, read, apply, acknowledge.
pub async fn refresh(
    membership: &Membership,
    pool: &PgPool,
    shares: &Shares,
) -> Result<(), tollgate_control::ControlError> {
    let started = Instant::now();
    let view = membership.refresh(pool).await?;
    let pending = view.pending(&membership.holder);
    shares.apply(view.live_count(), pending, started, membership.ttl);
    membership.acknowledge(pool, view.newest_seq()).await?;
    Ok(())
}

/// Refresh every `every` until `stop`, then leave.
pub async fn keep_renewed(
    membership: Membership,
    pool: PgPool,
    shares: Arc<Shares>,
    every: Duration,
    failures: Counter,
    stop: CancellationToken,
) {
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        match refresh(&membership, &pool, &shares).await {
            Ok(()) => {
                ticks += 1;
                if ticks.is_multiple_of(1000) {
                    if let Err(err) = membership.forget_expired(&pool).await {
                        tracing::debug!(%err, "cannot forget expired proxies");
                    }
                }
            }
            Err(err) => {
                failures.inc();
                tracing::warn!(%err, "cannot renew this proxy's membership; its share of budgets drops to 0 when its lease runs out");
                shares.publish();
            }
        }
    }
    match membership.leave(&pool).await {
        Ok(()) => tracing::info!(holder = %membership.holder, "left the live proxies"),
        Err(err) => {
            tracing::warn!(%err, "cannot leave the live proxies; the others take this proxy's share when its lease expires")
        }
    }
}
