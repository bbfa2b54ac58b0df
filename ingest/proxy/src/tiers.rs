//! Rate-limit tiers: requests and tokens per minute per key, user, team and
//! org, stored in PostgreSQL (`tollgate ratelimits set`) and held across
//! every proxy (`docs/proxy.md`, "Rate-limit tiers").
//!
//! Each limit is counted in windows of one UTC minute. In a window this
//! proxy admits at most its share of the limit (rounded down): requests
//! count one at admission; tokens reserve the call's token bound at
//! admission (prompt bytes plus template, plus the output maximum) and
//! settle on the tokens its attempts really used when the call ends. The
//! share of a window is the smallest this proxy held during it: a share
//! that shrinks (a proxy joined) applies at once, one that grows (a proxy
//! left or died) from the next window, so the shares in force within one
//! window never sum above 1 and the proxies together admit at most the
//! limit per window. The limits are reloaded in the background; calls never
//! wait for PostgreSQL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tollgate_control::rate_limits::{RateLimit, RateLimitStore};

use crate::shares::{Share, Shares};

/// Which limit refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum LimitKind {
    requests,
    tokens,
}

/// Labels of `tollgate_proxy_rate_limit_refusals_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `key`, `user`, `team` or `org`.
    pub scope: String,
    pub limit: LimitKind,
}

/// A call's scopes: (`key`, id), (`user`, id), (`team`, id), (`org`, id).
pub type Scope = (&'static str, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limit {
    requests_per_minute: Option<u64>,
    tokens_per_minute: Option<u64>,
}

#[derive(Debug)]
struct Window {
    minute: i64,
    share: Share,
    requests: u64,
    tokens_used: u64,
    tokens_reserved: u64,
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateRefusal {
    pub scope: &'static str,
    pub scope_id: String,
    pub limit: LimitKind,
    pub per_minute: u64,
    pub share: Share,
    /// What this proxy may admit of it in this window.
    pub allowance: u64,
    /// Tokens this call may use (its reservation).
    pub estimate: u64,
    pub retry_after_secs: u64,
}

impl RateRefusal {
    /// The message the client sees.
    pub fn reason(&self) -> String {
        let what = match self.limit {
            LimitKind::requests => "requests",
            LimitKind::tokens => "tokens",
        };
        let mut message = format!(
            "rate limit of {} {what} per minute for {} {} reached (this proxy's share {} of it is {} this minute",
            self.per_minute,
            self.scope,
            self.scope_id,
            self.share,
            self.allowance
        );
        if self.limit == LimitKind::tokens {
            message.push_str(&format!(
                "; this call may use up to {} tokens",
                self.estimate
            ));
        }
        message.push(')');
        message
    }
}

/// The tiers in force and this proxy's counts.
#[derive(Debug)]
pub struct RateTiers {
    limits: RwLock<HashMap<(String, String), Limit>>,
    count: AtomicUsize,
    windows: Mutex<HashMap<(String, String), Window>>,
    shares: Arc<Shares>,
    refusals: Family<RefusalLabels, Counter>,
}

impl RateTiers {
    pub fn new(shares: Arc<Shares>, refusals: Family<RefusalLabels, Counter>) -> Self {
        Self {
            limits: RwLock::new(HashMap::new()),
            count: AtomicUsize::new(0),
            windows: Mutex::new(HashMap::new()),
            shares,
            refusals,
        }
    }

    fn windows(&self) -> MutexGuard<'_, HashMap<(String, String), Window>> {
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replace the limits in force.
    pub fn set_limits(&self, limits: &[RateLimit]) {
        let map: HashMap<(String, String), Limit> = limits
            .iter()
            .map(|l| {
                (
                    (l.scope_kind.name().to_string(), l.scope_id.clone()),
                    Limit {
                        requests_per_minute: l.requests_per_minute,
                        tokens_per_minute: l.tokens_per_minute,
                    },
                )
            })
            .collect();
        self.count.store(map.len(), Ordering::Relaxed);
        let mut windows = self.windows();
        windows.retain(|k, _| map.contains_key(k));
        *self.limits.write().unwrap_or_else(|e| e.into_inner()) = map;
    }

    /// Whether any limit is in force (else calls skip the locks).
    pub fn is_active(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    /// Admit a call of at most `tokens` tokens in the window of `now`, or
    /// say which limit it would pass. The hold settles when dropped.
    pub fn admit(
        self: &Arc<Self>,
        scopes: &[Scope],
        tokens: u64,
        now: DateTime<Utc>,
    ) -> Result<Option<RateHold>, RateRefusal> {
        if !self.is_active() {
            return Ok(None);
        }
        let share_now = self.shares.current();
        let minute = now.timestamp().div_euclid(60);
        let retry_after_secs = u64::try_from(60 - now.timestamp().rem_euclid(60)).unwrap_or(1);
        let limits = self.limits.read().unwrap_or_else(|e| e.into_inner());
        let mut windows = self.windows();
        let mut held = Vec::new();
        for (scope, id) in scopes {
            let key = ((*scope).to_string(), id.clone());
            let Some(limit) = limits.get(&key) else {
                continue;
            };
            let window = windows.entry(key.clone()).or_insert(Window {
                minute,
                share: share_now,
                requests: 0,
                tokens_used: 0,
                tokens_reserved: 0,
            });
            if window.minute != minute {
                *window = Window {
                    minute,
                    share: share_now,
                    requests: 0,
                    tokens_used: 0,
                    tokens_reserved: 0,
                };
            } else {
                window.share = window.share.min(share_now);
            }
            let refusal = |limit_kind, per_minute, allowance| RateRefusal {
                scope,
                scope_id: id.clone(),
                limit: limit_kind,
                per_minute,
                share: window.share,
                allowance,
                estimate: tokens,
                retry_after_secs,
            };
            if let Some(rpm) = limit.requests_per_minute {
                let allowance = window.share.of_count(rpm);
                if window.requests + 1 > allowance {
                    return Err(self.refused(refusal(LimitKind::requests, rpm, allowance)));
                }
            }
            if let Some(tpm) = limit.tokens_per_minute {
                let allowance = window.share.of_count(tpm);
                let outstanding = window.tokens_used.saturating_add(window.tokens_reserved);
                if outstanding.saturating_add(tokens) > allowance {
                    return Err(self.refused(refusal(LimitKind::tokens, tpm, allowance)));
                }
            }
            held.push(key);
        }
        if held.is_empty() {
            return Ok(None);
        }
        for key in &held {
            if let Some(window) = windows.get_mut(key) {
                window.requests += 1;
                window.tokens_reserved = window.tokens_reserved.saturating_add(tokens);
            }
        }
        Ok(Some(RateHold {
            tiers: self.clone(),
            scopes: held,
            minute,
            reserved: tokens,
            used: AtomicU64::new(0),
        }))
    }

    fn refused(&self, refusal: RateRefusal) -> RateRefusal {
        self.refusals
            .get_or_create(&RefusalLabels {
                scope: refusal.scope.to_string(),
                limit: refusal.limit,
            })
            .inc();
        refusal
    }

    /// This window's (requests, tokens used, tokens reserved) of a scope.
    pub fn counts(&self, scope: &str, id: &str) -> (u64, u64, u64) {
        self.windows()
            .get(&(scope.to_string(), id.to_string()))
            .map(|w| (w.requests, w.tokens_used, w.tokens_reserved))
            .unwrap_or_default()
    }

    fn settle(&self, hold: &RateHold) {
        let used = hold.used.load(Ordering::Relaxed);
        let mut windows = self.windows();
        for key in &hold.scopes {
            if let Some(window) = windows.get_mut(key) {
                // A window that rolled over meanwhile counts nothing of it.
                if window.minute == hold.minute {
                    window.tokens_reserved = window.tokens_reserved.saturating_sub(hold.reserved);
                    window.tokens_used = window.tokens_used.saturating_add(used);
                }
            }
        }
    }
}

/// A call's hold on its rate limits: its reservation of tokens, settled
/// with the tokens its attempts used when dropped (the call has ended).
#[derive(Debug)]
pub struct RateHold {
    tiers: Arc<RateTiers>,
    scopes: Vec<(String, String)>,
    minute: i64,
    reserved: u64,
    used: AtomicU64,
}

impl RateHold {
    /// An attempt used `tokens` (input plus output).
    pub fn used(&self, tokens: u64) {
        self.used.fetch_add(tokens, Ordering::Relaxed);
    }
}

impl Drop for RateHold {
    fn drop(&mut self) {
        self.tiers.settle(self);
    }
}

/// Load the limits now (start-up), then every `every` until `stop`.
pub async fn keep_fresh(
    tiers: Arc<RateTiers>,
    pool: PgPool,
    every: Duration,
    stop: CancellationToken,
) {
    let store = RateLimitStore::new(pool);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        load(&tiers, &store).await;
    }
}

/// One load; a failure keeps the limits last loaded.
pub async fn load(tiers: &RateTiers, store: &RateLimitStore) {
    match store.all().await {
        Ok(limits) => tiers.set_limits(&limits),
        Err(err) => {
            tracing::warn!(%err, "cannot reload the rate limits; the last ones loaded stay in force")
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;
    use tollgate_control::budgets::SubjectKind;

    use super::*;

    fn limit(kind: SubjectKind, id: &str, rpm: Option<u64>, tpm: Option<u64>) -> RateLimit {
        RateLimit {
            id: 1,
            scope_kind: kind,
            scope_id: id.into(),
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
            org_id: None,
            updated_by: "test".into(),
            updated_at: Utc::now(),
        }
    }

    fn tiers(live: usize) -> Arc<RateTiers> {
        let shares = Arc::new(Shares::derived());
        shares.apply(
            live,
            false,
            std::time::Instant::now(),
            Duration::from_secs(3600),
        );
        Arc::new(RateTiers::new(shares, Family::default()))
    }

    fn scopes() -> Vec<Scope> {
        vec![
            ("key", "k1".into()),
            ("user", "u".into()),
            ("team", "t".into()),
            ("org", "o".into()),
        ]
    }

    fn at(secs: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, 4, 0, 0).unwrap() + chrono::Duration::seconds(secs.into())
    }

    #[test]
    fn requests_per_minute_admit_the_share_of_the_limit_per_window() {
        let t = tiers(3);
        t.set_limits(&[limit(SubjectKind::Team, "t", Some(10), None)]);
        let holds: Vec<_> = (0..3)
            .map(|_| t.admit(&scopes(), 5, at(1)).unwrap().unwrap())
            .collect();
        let refused = t.admit(&scopes(), 5, at(59)).unwrap_err();
        assert_eq!(
            (
                refused.scope,
                refused.limit,
                refused.allowance,
                refused.retry_after_secs
            ),
            ("team", LimitKind::requests, 3, 1)
        );
        assert_eq!(
            refused.reason(),
            "rate limit of 10 requests per minute for team t reached (this proxy's share 1/3 of it is 3 this minute)"
        );
        drop(holds);
        // Ended calls still count in their window; the next window is new.
        assert!(t.admit(&scopes(), 5, at(30)).is_err());
        assert!(t.admit(&scopes(), 5, at(60)).unwrap().is_some());
        assert_eq!(
            t.refusals
                .get_or_create(&RefusalLabels {
                    scope: "team".into(),
                    limit: LimitKind::requests
                })
                .get(),
            2
        );
    }

    #[test]
    fn tokens_reserve_the_bound_and_settle_on_what_was_used() {
        let t = tiers(1);
        t.set_limits(&[limit(SubjectKind::Key, "k1", None, Some(1000))]);
        let a = t.admit(&scopes(), 600, at(0)).unwrap().unwrap();
        let refused = t.admit(&scopes(), 401, at(1)).unwrap_err();
        assert_eq!(
            refused.reason(),
            "rate limit of 1000 tokens per minute for key k1 reached (this proxy's share 1 of it is 1000 this minute; this call may use up to 401 tokens)"
        );
        assert_eq!(t.counts("key", "k1"), (1, 0, 600));
        a.used(120);
        a.used(30);
        drop(a);
        assert_eq!(t.counts("key", "k1"), (1, 150, 0));
        let b = t.admit(&scopes(), 850, at(2)).unwrap().unwrap();
        assert!(t.admit(&scopes(), 1, at(3)).is_err());
        // A new window: b's reservation stays in the old one.
        let c = t.admit(&scopes(), 900, at(61)).unwrap().unwrap();
        assert_eq!(t.counts("key", "k1"), (1, 0, 900));
        b.used(500);
        drop(b);
        assert_eq!(t.counts("key", "k1"), (1, 0, 900));
        c.used(10);
        drop(c);
        assert_eq!(t.counts("key", "k1"), (1, 10, 0));
    }

    #[test]
    fn a_share_that_grows_applies_from_the_next_window_and_one_that_shrinks_at_once() {
        let shares = Arc::new(Shares::derived());
        let t = Arc::new(RateTiers::new(shares.clone(), Family::default()));
        t.set_limits(&[limit(SubjectKind::Org, "o", Some(6), None)]);
        let now = std::time::Instant::now();
        let lease = Duration::from_secs(3600);
        shares.apply(3, false, now, lease);
        let _h: Vec<_> = (0..2)
            .map(|_| t.admit(&scopes(), 0, at(0)).unwrap().unwrap())
            .collect();
        assert!(t.admit(&scopes(), 0, at(1)).is_err());
        // A proxy died: the share grows to 1/2, but not in this window.
        shares.apply(2, false, now, lease);
        let refused = t.admit(&scopes(), 0, at(2)).unwrap_err();
        assert_eq!((refused.share, refused.allowance), (Share::OneOf(3), 2));
        let next: Vec<_> = (0..3)
            .map(|_| t.admit(&scopes(), 0, at(60)).unwrap().unwrap())
            .collect();
        assert_eq!(next.len(), 3);
        // A proxy joined: 1/3 applies at once (3 admitted already: none more).
        shares.apply(3, false, now, lease);
        let refused = t.admit(&scopes(), 0, at(62)).unwrap_err();
        assert_eq!((refused.share, refused.allowance), (Share::OneOf(3), 2));
        // Joining (or the lease ran out): nothing.
        shares.apply(3, true, now, lease);
        assert_eq!(t.admit(&scopes(), 0, at(120)).unwrap_err().allowance, 0);
    }

    #[test]
    fn without_limits_nothing_is_held_and_unlimited_scopes_are_skipped() {
        let t = tiers(1);
        assert!(t.admit(&scopes(), 10, at(0)).unwrap().is_none());
        t.set_limits(&[limit(SubjectKind::User, "other", Some(1), None)]);
        assert!(t.admit(&scopes(), 10, at(0)).unwrap().is_none());
        t.set_limits(&[]);
        assert!(!t.is_active());
    }
}
