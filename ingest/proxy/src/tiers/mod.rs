//! Rate-limit tiers: requests and tokens per minute per key, user, team and
//! org, stored in PostgreSQL (`tollgate ratelimits set`) and held across
//! every proxy (`docs/proxy.md`, "Rate-limit tiers").
//!
//! Each limit is counted in windows of one UTC minute (this proxy's clock).
//! The proxies share each window's limit through a pool in PostgreSQL
//! ([`pool`]): a proxy claims blocks of it ([`allowance::block`]) and
//! admits calls against what it has claimed ([`allowance::Allowance`]);
//! the pool never grants more than the limit per window in total, so the
//! proxies together admit at most the limit, however the calls spread.
//! Requests count one at admission; tokens reserve the call's token bound
//! at admission (prompt bytes plus template, plus the output maximum) and
//! settle on the tokens its attempts used when the call ends, the surplus
//! returning to this proxy's allowance.
//!
//! Calls do not wait for PostgreSQL while this proxy holds an allowance: a
//! new block is claimed in the background when what remains falls under
//! one block. A call that finds none waits for one claim, at most
//! `proxy.tiers.claim_wait_ms`, and is refused when the pool is spent, the
//! claim fails, or it does not come in time. With a fixed share
//! (`proxy.budgets.share`) the proxy stays out of the pool and admits its
//! share of each limit by itself. The limits are reloaded in the background.

pub mod allowance;
pub mod pool;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tollgate_control::rate_limit_windows::{Claim, Grant, Want};
use tollgate_control::rate_limits::{RateLimit, RateLimitStore};
use tollgate_control::ControlError;

use crate::shares::Shares;
use allowance::{block, Allowance};
use pool::CapacityPool;

/// After a failed claim, a scope's next claim waits this long (calls that
/// find no allowance meanwhile are refused at once).
const CLAIM_RETRY_AFTER_FAILURE: Duration = Duration::from_millis(500);

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

/// A call's scopes: (`key`, id), (`user`, id), (`team`, id), (`org`, id),
/// each id as a [`tollgate_control::rate_limits::tier_id`] (a key, user or
/// team twice: in the call's org and in every org).
pub type Scope = (&'static str, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limit {
    requests_per_minute: Option<u64>,
    tokens_per_minute: Option<u64>,
}

/// A limited scope's window on this proxy.
#[derive(Debug)]
struct Window {
    minute: i64,
    limit: Limit,
    requests: Allowance,
    tokens: Allowance,
    /// A claim of this window is in flight.
    claiming: bool,
    failed_at: Option<Instant>,
}

impl Window {
    fn new(minute: i64, limit: Limit, fixed: Option<crate::shares::Share>) -> Self {
        let allowance = |per_minute: Option<u64>| match fixed {
            Some(share) => Allowance::fixed(per_minute.map_or(0, |l| share.of_count(l))),
            None => Allowance::default(),
        };
        Self {
            minute,
            limit,
            requests: allowance(limit.requests_per_minute),
            tokens: allowance(limit.tokens_per_minute),
            claiming: false,
            failed_at: None,
        }
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The window's limit is admitted: the pool is spent (or this proxy's
    /// fixed share of it).
    Spent,
    /// The call alone may use more tokens than the whole limit.
    TooLarge,
    /// No allowance came from the pool in time (the claim failed, or took
    /// longer than `proxy.tiers.claim_wait_ms`).
    NoClaim { wait_ms: u64 },
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateRefusal {
    pub scope: &'static str,
    pub scope_id: String,
    pub limit: LimitKind,
    pub per_minute: u64,
    pub cause: Cause,
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
        let head = format!(
            "rate limit of {} {what} per minute for {}",
            self.per_minute,
            tollgate_control::rate_limits::tier_words(self.scope, &self.scope_id)
        );
        let call = if self.limit == LimitKind::tokens {
            format!("; this call may use up to {} tokens", self.estimate)
        } else {
            String::new()
        };
        match self.cause {
            Cause::Spent => format!("{head} reached (all of it is admitted this minute{call})"),
            Cause::TooLarge => format!(
                "{head} reached (this call may use up to {} tokens, its input and the maximum output it asks for, more than the whole limit: lower max_tokens)",
                self.estimate
            ),
            Cause::NoClaim { wait_ms } => format!(
                "{head}: this proxy's allowance is spent and no more could be claimed from the shared pool within {wait_ms} ms{call}"
            ),
        }
    }
}

/// Counters of the claims (the proxy's metrics).
#[derive(Debug, Clone, Default)]
pub struct ClaimCounters {
    pub refusals: Family<RefusalLabels, Counter>,
    pub claims: Counter,
    pub failures: Counter,
    pub timeouts: Counter,
}

type ScopeKey = (String, String);

/// The tiers in force, this proxy's allowances, and its claims.
#[derive(Debug)]
pub struct RateTiers {
    limits: RwLock<HashMap<ScopeKey, Limit>>,
    count: AtomicUsize,
    windows: Mutex<HashMap<ScopeKey, Window>>,
    shares: Arc<Shares>,
    pool: Arc<dyn CapacityPool>,
    claim_wait: Duration,
    /// Bumped after every claim's answer (waiting calls look again).
    answered: watch::Sender<u64>,
    /// The last minute old windows were deleted before.
    forgotten: AtomicI64,
    counters: ClaimCounters,
}

/// What one look at the allowances found.
enum Step {
    Admitted(Option<RateHold>),
    Refused(RateRefusal),
    /// Claims are in flight; this refusal applies if they do not help.
    Wait(RateRefusal),
}

impl RateTiers {
    pub fn new(
        shares: Arc<Shares>,
        pool: Arc<dyn CapacityPool>,
        claim_wait: Duration,
        counters: ClaimCounters,
    ) -> Self {
        Self {
            limits: RwLock::new(HashMap::new()),
            count: AtomicUsize::new(0),
            windows: Mutex::new(HashMap::new()),
            shares,
            pool,
            claim_wait,
            answered: watch::Sender::new(0),
            forgotten: AtomicI64::new(i64::MIN),
            counters,
        }
    }

    fn windows(&self) -> MutexGuard<'_, HashMap<ScopeKey, Window>> {
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replace the limits in force.
    pub fn set_limits(&self, limits: &[RateLimit]) {
        let map: HashMap<ScopeKey, Limit> = limits
            .iter()
            .map(|l| {
                (
                    (l.scope_kind.name().to_string(), l.tier_id()),
                    Limit {
                        requests_per_minute: l.requests_per_minute,
                        tokens_per_minute: l.tokens_per_minute,
                    },
                )
            })
            .collect();
        self.count.store(map.len(), Ordering::Relaxed);
        let kept: HashSet<ScopeKey> = map.keys().cloned().collect();
        // One lock at a time: admissions take the limits, then the windows.
        *self.limits.write().unwrap_or_else(|e| e.into_inner()) = map;
        self.windows().retain(|k, _| kept.contains(k));
    }

    /// Whether any limit is in force (else calls skip the locks).
    pub fn is_active(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    /// Admit a call of at most `tokens` tokens in the window of `now`, or
    /// say which limit it would pass. Waits only when this proxy holds no
    /// allowance for it: for claims, at most `claim_wait`. The hold settles
    /// when dropped.
    pub async fn admit(
        self: &Arc<Self>,
        scopes: &[Scope],
        tokens: u64,
        now: DateTime<Utc>,
    ) -> Result<Option<RateHold>, RateRefusal> {
        if !self.is_active() {
            return Ok(None);
        }
        let deadline = tokio::time::Instant::now() + self.claim_wait;
        loop {
            // Subscribed before looking, so no answer is missed.
            let mut answered = self.answered.subscribe();
            match self.step(scopes, tokens, now) {
                Step::Admitted(hold) => return Ok(hold),
                Step::Refused(refusal) => return Err(self.refused(refusal)),
                Step::Wait(refusal) => {
                    let waited = tokio::time::timeout_at(deadline, answered.changed()).await;
                    if waited.is_err() {
                        self.counters.timeouts.inc();
                        return Err(self.refused(refusal));
                    }
                }
            }
        }
    }

    /// One look: admit, refuse, or start the claims the call waits for.
    fn step(self: &Arc<Self>, scopes: &[Scope], tokens: u64, now: DateTime<Utc>) -> Step {
        let fixed = self.shares.is_fixed().then(|| self.shares.current());
        let live = self.shares.live();
        let minute = now.timestamp().div_euclid(60);
        let retry_after_secs = u64::try_from(60 - now.timestamp().rem_euclid(60)).unwrap_or(1);
        let wait_ms = u64::try_from(self.claim_wait.as_millis()).unwrap_or(u64::MAX);
        let limits = self.limits.read().unwrap_or_else(|e| e.into_inner());
        let mut windows = self.windows();
        let mut held = Vec::new();
        let mut claims = Vec::new();
        let mut waiting: Option<RateRefusal> = None;
        let mut refused: Option<RateRefusal> = None;
        for (scope, id) in scopes {
            let key = ((*scope).to_string(), id.clone());
            let Some(&limit) = limits.get(&key) else {
                continue;
            };
            let window = windows
                .entry(key.clone())
                .or_insert_with(|| Window::new(minute, limit, fixed));
            if window.minute != minute || window.limit != limit {
                // A new window; or the limit changed: a fixed share is
                // recomputed, and the pool may have more to give.
                if window.minute != minute || fixed.is_some() {
                    *window = Window::new(minute, limit, fixed);
                } else {
                    window.limit = limit;
                    window.requests.exhausted = false;
                    window.tokens.exhausted = false;
                }
            }
            let refusal = |kind, per_minute, cause| RateRefusal {
                scope,
                scope_id: id.clone(),
                limit: kind,
                per_minute,
                cause,
                estimate: tokens,
                retry_after_secs: match cause {
                    Cause::NoClaim { .. } => 1,
                    _ => retry_after_secs,
                },
            };
            let mut lacking = None;
            let mut want = (0, 0);
            if let Some(rpm) = limit.requests_per_minute {
                if !window.requests.fits(1) {
                    want.0 = window.requests.wanted_for(1, block(rpm, live));
                    lacking = Some(refusal(LimitKind::requests, rpm, Cause::Spent));
                }
            }
            if let Some(tpm) = limit.tokens_per_minute {
                if tokens > tpm {
                    refused = Some(refusal(LimitKind::tokens, tpm, Cause::TooLarge));
                    break;
                }
                if !window.tokens.fits(tokens) {
                    want.1 = window.tokens.wanted_for(tokens, block(tpm, live));
                    lacking = lacking.or(Some(refusal(LimitKind::tokens, tpm, Cause::Spent)));
                }
            }
            let Some(mut refusal) = lacking else {
                held.push((key, limit.tokens_per_minute.is_some()));
                continue;
            };
            let spent_requests = limit.requests_per_minute.is_some()
                && !window.requests.fits(1)
                && window.requests.exhausted;
            let spent_tokens = limit.tokens_per_minute.is_some()
                && !window.tokens.fits(tokens)
                && window.tokens.exhausted;
            if spent_requests || spent_tokens {
                // The pool has nothing more this window.
                if spent_tokens && !spent_requests {
                    refusal.limit = LimitKind::tokens;
                    refusal.per_minute = limit.tokens_per_minute.unwrap_or(0);
                }
                refused = Some(refusal);
                break;
            }
            refusal.cause = Cause::NoClaim { wait_ms };
            refusal.retry_after_secs = 1;
            if !window.claiming {
                let failed_lately = window
                    .failed_at
                    .is_some_and(|at| at.elapsed() < CLAIM_RETRY_AFTER_FAILURE);
                if failed_lately {
                    refused = Some(refusal);
                    break;
                }
                window.claiming = true;
                claims.push(claim(&key, minute, limit, want));
            }
            waiting = waiting.or(Some(refusal));
        }
        if refused.is_some() || waiting.is_some() {
            drop(windows);
            drop(limits);
            // Claims started for other scopes go on: they refill those.
            self.start(claims);
            return match (refused, waiting) {
                (Some(refusal), _) => Step::Refused(refusal),
                (None, Some(refusal)) => Step::Wait(refusal),
                (None, None) => Step::Admitted(None),
            };
        }
        if held.is_empty() {
            return Step::Admitted(None);
        }
        for (key, with_tokens) in &held {
            let Some(window) = windows.get_mut(key) else {
                continue;
            };
            window.requests.take(1);
            if *with_tokens {
                window.tokens.take(tokens);
            }
            // Under the low-water mark: claim the next block in the background.
            let want = (
                window
                    .limit
                    .requests_per_minute
                    .map_or(0, |l| window.requests.refill(block(l, live))),
                window
                    .limit
                    .tokens_per_minute
                    .map_or(0, |l| window.tokens.refill(block(l, live))),
            );
            let failed_lately = window
                .failed_at
                .is_some_and(|at| at.elapsed() < CLAIM_RETRY_AFTER_FAILURE);
            if want != (0, 0) && !window.claiming && !failed_lately {
                window.claiming = true;
                claims.push(claim(key, minute, window.limit, want));
            }
        }
        drop(windows);
        drop(limits);
        self.start(claims);
        Step::Admitted(Some(RateHold {
            tiers: self.clone(),
            scopes: held,
            minute,
            reserved: tokens,
            used: AtomicU64::new(0),
        }))
    }

    /// Send claims off, each in its own task.
    fn start(self: &Arc<Self>, claims: Vec<(ScopeKey, Claim)>) {
        for (key, claim) in claims {
            let tiers = self.clone();
            tokio::spawn(async move { tiers.run_claim(key, claim).await });
        }
    }

    async fn run_claim(self: Arc<Self>, key: ScopeKey, claim: Claim) {
        let minute = claim.minute;
        let result = self.pool.claim(claim.clone()).await;
        self.answer(&key, &claim, result);
        if self.forgotten.fetch_max(minute, Ordering::Relaxed) < minute {
            if let Err(err) = self.pool.forget_before(minute).await {
                tracing::debug!(%err, "cannot delete old rate-limit windows");
            }
        }
    }

    /// A claim's answer: add its grant to the window it was for (if this
    /// proxy is still in it), then wake the calls waiting.
    fn answer(&self, key: &ScopeKey, claim: &Claim, result: Result<Grant, ControlError>) {
        {
            let mut windows = self.windows();
            let window = windows.get_mut(key).filter(|w| w.minute == claim.minute);
            match result {
                Ok(grant) => {
                    self.counters.claims.inc();
                    if let Some(window) = window {
                        window.claiming = false;
                        window.failed_at = None;
                        window
                            .requests
                            .granted(claim.requests.amount, grant.requests);
                        window.tokens.granted(claim.tokens.amount, grant.tokens);
                    }
                }
                Err(err) => {
                    self.counters.failures.inc();
                    tracing::warn!(%err, scope = %key.0, id = %key.1, "cannot claim rate-limit capacity; this proxy admits only what it has claimed");
                    if let Some(window) = window {
                        window.claiming = false;
                        window.failed_at = Some(Instant::now());
                    }
                }
            }
        }
        self.answered.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn refused(&self, refusal: RateRefusal) -> RateRefusal {
        self.counters
            .refusals
            .get_or_create(&RefusalLabels {
                scope: refusal.scope.to_string(),
                limit: refusal.limit,
            })
            .inc();
        refusal
    }

    /// This window's (requests, tokens) allowances of a scope on this proxy.
    pub fn allowances(&self, scope: &str, id: &str) -> Option<(Allowance, Allowance)> {
        self.windows()
            .get(&(scope.to_string(), id.to_string()))
            .map(|w| (w.requests, w.tokens))
    }

    fn settle(&self, hold: &RateHold) {
        let used = hold.used.load(Ordering::Relaxed);
        let mut windows = self.windows();
        for (key, with_tokens) in &hold.scopes {
            if let Some(window) = windows.get_mut(key) {
                // A window that rolled over meanwhile counts nothing of it.
                if *with_tokens && window.minute == hold.minute {
                    window.tokens.settle(hold.reserved, used);
                }
            }
        }
    }
}

/// The claim of `want` (requests, tokens) of a scope's window.
fn claim(key: &ScopeKey, minute: i64, limit: Limit, want: (u64, u64)) -> (ScopeKey, Claim) {
    let of = |amount: u64, per_minute: Option<u64>| match per_minute {
        Some(limit) if amount > 0 => Want { amount, limit },
        _ => Want::NONE,
    };
    (
        key.clone(),
        Claim {
            scope_kind: key.0.clone(),
            scope_id: key.1.clone(),
            minute,
            requests: of(want.0, limit.requests_per_minute),
            tokens: of(want.1, limit.tokens_per_minute),
        },
    )
}

/// A call's hold on its rate limits: its reservation of tokens, settled
/// with the tokens its attempts used when dropped (the call has ended).
#[derive(Debug)]
pub struct RateHold {
    tiers: Arc<RateTiers>,
    /// The scopes held, and whether tokens were reserved in each.
    scopes: Vec<(ScopeKey, bool)>,
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
    use std::sync::atomic::AtomicBool;

    use chrono::TimeZone;
    use futures::future::BoxFuture;
    use tollgate_control::budgets::SubjectKind;

    use super::pool::MemoryPool;
    use super::*;

    /// The in-memory pool, which can be made to fail or to never answer.
    #[derive(Debug, Default)]
    struct TestPool {
        inner: MemoryPool,
        fail: AtomicBool,
        stall: AtomicBool,
    }

    impl CapacityPool for TestPool {
        fn claim(&self, claim: Claim) -> BoxFuture<'static, Result<Grant, ControlError>> {
            if self.stall.load(Ordering::Relaxed) {
                return Box::pin(futures::future::pending());
            }
            if self.fail.load(Ordering::Relaxed) {
                return Box::pin(async {
                    Err(ControlError::Internal("postgresql is down".into()))
                });
            }
            self.inner.claim(claim)
        }

        fn forget_before(&self, minute: i64) -> BoxFuture<'static, Result<u64, ControlError>> {
            self.inner.forget_before(minute)
        }
    }

    fn limit(kind: SubjectKind, id: &str, rpm: Option<u64>, tpm: Option<u64>) -> RateLimit {
        RateLimit {
            id: 1,
            scope_kind: kind,
            scope_id: id.into(),
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
            org_id: Some("o".into()),
            updated_by: "test".into(),
            updated_at: Utc::now(),
        }
    }

    /// A proxy among `live` claiming from `pool`, with `limits`.
    fn proxy(live: usize, pool: &Arc<TestPool>, limits: &[RateLimit]) -> Arc<RateTiers> {
        let shares = Arc::new(Shares::derived());
        shares.apply(live, false, Instant::now(), Duration::from_secs(3600));
        let t = Arc::new(RateTiers::new(
            shares,
            pool.clone(),
            Duration::from_millis(2000),
            ClaimCounters::default(),
        ));
        t.set_limits(limits);
        t
    }

    /// The scopes of a call of org `o` (its limits are `o`'s).
    fn scopes() -> Vec<Scope> {
        vec![
            ("key", "o/k1".into()),
            ("user", "o/u".into()),
            ("team", "o/t".into()),
            ("org", "o/o".into()),
        ]
    }

    fn at(secs: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, 4, 0, 0).unwrap() + chrono::Duration::seconds(secs.into())
    }

    /// The window of [`at`]`(0)`.
    const MINUTE: i64 = 29_937_840;

    #[tokio::test]
    async fn one_proxy_of_three_admits_the_whole_limit_when_every_call_reaches_it() {
        let pool = Arc::new(TestPool::default());
        let limits = [limit(SubjectKind::Team, "t", Some(30), None)];
        let a = proxy(3, &pool, &limits);
        let mut holds = Vec::new();
        for s in 0..30 {
            holds.push(a.admit(&scopes(), 5, at(s)).await.unwrap().unwrap());
        }
        let refused = a.admit(&scopes(), 5, at(59)).await.unwrap_err();
        assert_eq!(
            (
                refused.scope,
                refused.limit,
                refused.cause,
                refused.retry_after_secs
            ),
            ("team", LimitKind::requests, Cause::Spent, 1)
        );
        assert_eq!(
            refused.reason(),
            "rate limit of 30 requests per minute for team t of org o reached (all of it is admitted this minute)"
        );
        let minute = at(0).timestamp() / 60;
        assert_eq!(pool.inner.claimed("team", "o/t", minute), (30, 0));
        // The next window is new.
        drop(holds);
        assert!(a.admit(&scopes(), 5, at(60)).await.unwrap().is_some());
        assert_eq!(
            a.counters
                .refusals
                .get_or_create(&RefusalLabels {
                    scope: "team".into(),
                    limit: LimitKind::requests
                })
                .get(),
            1
        );
        assert!(a.counters.claims.get() >= 15, "{}", a.counters.claims.get());
        assert_eq!(MINUTE, minute);
    }

    #[tokio::test]
    async fn proxies_sharing_a_pool_admit_exactly_the_limit_even_below_their_number() {
        let pool = Arc::new(TestPool::default());
        let limits = [limit(SubjectKind::Key, "k1", Some(2), None)];
        let proxies: Vec<_> = (0..3).map(|_| proxy(3, &pool, &limits)).collect();
        let mut admitted = 0;
        let mut holds = Vec::new();
        for i in 0..12 {
            match proxies[i % 3].admit(&scopes(), 0, at(10)).await {
                Ok(hold) => {
                    admitted += 1;
                    holds.push(hold);
                }
                Err(refusal) => assert_eq!(refusal.cause, Cause::Spent),
            }
        }
        assert_eq!(admitted, 2);
        assert_eq!(pool.inner.claimed("key", "o/k1", MINUTE), (2, 0));
        // 7 + 7 + 7 calls for a limit of 20 over three proxies: the pool
        // grants exactly 20; what a proxy claimed and did not spend (at
        // most two blocks less one, here 1) is not admitted elsewhere.
        let pool = Arc::new(TestPool::default());
        let limits = [limit(SubjectKind::Key, "k1", Some(20), None)];
        let proxies: Vec<_> = (0..3).map(|_| proxy(3, &pool, &limits)).collect();
        let mut admitted = 0;
        for p in &proxies {
            for _ in 0..7 {
                if p.admit(&scopes(), 0, at(10)).await.is_ok() {
                    admitted += 1;
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while pool.inner.claimed("key", "o/k1", MINUTE).0 < 20 {
            assert!(Instant::now() < deadline, "the pool was never spent");
            tokio::task::yield_now().await;
        }
        let stranded: u64 = proxies
            .iter()
            .map(|p| {
                let (requests, _) = p.allowances("key", "o/k1").unwrap();
                assert!(requests.remaining() < 2 * block(20, 3));
                requests.remaining()
            })
            .sum();
        assert_eq!(admitted + stranded, 20);
        assert!(admitted >= 20 - 3 * (2 * block(20, 3) - 1), "{admitted}");
    }

    #[tokio::test]
    async fn tokens_reserve_the_bound_and_a_surplus_returns_to_this_proxy_not_the_pool() {
        let pool = Arc::new(TestPool::default());
        let a = proxy(1, &pool, &[limit(SubjectKind::Key, "k1", None, Some(1000))]);
        let first = a.admit(&scopes(), 600, at(0)).await.unwrap().unwrap();
        let refused = a.admit(&scopes(), 401, at(1)).await.unwrap_err();
        assert_eq!(
            refused.reason(),
            "rate limit of 1000 tokens per minute for key k1 of org o reached (all of it is admitted this minute; this call may use up to 401 tokens)"
        );
        let (_, tokens) = a.allowances("key", "o/k1").unwrap();
        assert_eq!((tokens.claimed, tokens.spent), (1000, 600));
        first.used(120);
        first.used(30);
        drop(first);
        let (_, tokens) = a.allowances("key", "o/k1").unwrap();
        assert_eq!((tokens.claimed, tokens.spent), (1000, 150));
        assert_eq!(pool.inner.claimed("key", "o/k1", MINUTE), (0, 1000));
        let b = a.admit(&scopes(), 850, at(2)).await.unwrap().unwrap();
        assert!(a.admit(&scopes(), 1, at(3)).await.is_err());
        // A new window: b's reservation stays in the old one.
        let c = a.admit(&scopes(), 900, at(61)).await.unwrap().unwrap();
        b.used(500);
        drop(b);
        let (_, tokens) = a.allowances("key", "o/k1").unwrap();
        assert_eq!(tokens.spent, 900);
        c.used(10);
        drop(c);
        let (_, tokens) = a.allowances("key", "o/k1").unwrap();
        assert_eq!(tokens.spent, 10);
        // A call larger than the whole limit never fits.
        let refused = a.admit(&scopes(), 1001, at(62)).await.unwrap_err();
        assert_eq!(refused.cause, Cause::TooLarge);
        assert_eq!(
            refused.reason(),
            "rate limit of 1000 tokens per minute for key k1 of org o reached (this call may use up to 1001 tokens, its input and the maximum output it asks for, more than the whole limit: lower max_tokens)"
        );
    }

    #[tokio::test]
    async fn the_next_block_is_claimed_in_the_background_under_the_low_water_mark() {
        let pool = Arc::new(TestPool::default());
        // 3 proxies: blocks of 1200 / 12 = 100 requests.
        let a = proxy(3, &pool, &[limit(SubjectKind::Org, "o", Some(1200), None)]);
        let _h = a.admit(&scopes(), 0, at(5)).await.unwrap();
        // The first call waited for one block (plus the refill it started).
        let deadline = Instant::now() + Duration::from_secs(60);
        while pool.inner.claimed("org", "o/o", MINUTE).0 < 200 {
            assert!(Instant::now() < deadline, "no background refill");
            tokio::task::yield_now().await;
        }
        // 100 remaining after the first call's 1 of 200: admissions down
        // to one block left claim nothing more.
        for _ in 0..99 {
            a.admit(&scopes(), 0, at(6)).await.unwrap();
        }
        assert_eq!(pool.inner.claimed("org", "o/o", MINUTE).0, 200);
        // Under one block left: the next block comes without anyone waiting.
        a.admit(&scopes(), 0, at(7)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while pool.inner.claimed("org", "o/o", MINUTE).0 < 300 {
            assert!(
                Instant::now() < deadline,
                "no refill under the low-water mark"
            );
            tokio::task::yield_now().await;
        }
        let (requests, _) = a.allowances("org", "o/o").unwrap();
        assert_eq!((requests.claimed, requests.spent), (300, 101));
    }

    #[tokio::test]
    async fn without_postgresql_a_proxy_spends_what_it_claimed_and_nothing_more() {
        let pool = Arc::new(TestPool::default());
        let a = proxy(1, &pool, &[limit(SubjectKind::User, "u", Some(40), None)]);
        // Blocks of 10: the first call claims 10, its refill 10 more.
        a.admit(&scopes(), 0, at(0)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while a.allowances("user", "o/u").unwrap().0.claimed < 20 {
            assert!(Instant::now() < deadline, "no refill");
            tokio::task::yield_now().await;
        }
        pool.fail.store(true, Ordering::Relaxed);
        let mut admitted = 1;
        let refusal = loop {
            match a.admit(&scopes(), 0, at(1)).await {
                Ok(_) => admitted += 1,
                Err(refusal) => break refusal,
            }
        };
        assert_eq!(admitted, 20);
        assert_eq!(refusal.cause, Cause::NoClaim { wait_ms: 2000 });
        assert_eq!(refusal.retry_after_secs, 1);
        assert_eq!(
            refusal.reason(),
            "rate limit of 40 requests per minute for user u of org o: this proxy's allowance is spent and no more could be claimed from the shared pool within 2000 ms"
        );
        assert!(a.counters.failures.get() >= 1);
        // Right after a failure no claim is tried: refused at once.
        assert_eq!(
            a.admit(&scopes(), 0, at(2)).await.unwrap_err().cause,
            Cause::NoClaim { wait_ms: 2000 }
        );
    }

    #[tokio::test]
    async fn a_claim_that_does_not_come_in_time_refuses_the_call() {
        let pool = Arc::new(TestPool::default());
        pool.stall.store(true, Ordering::Relaxed);
        let shares = Arc::new(Shares::derived());
        shares.apply(2, false, Instant::now(), Duration::from_secs(3600));
        let a = Arc::new(RateTiers::new(
            shares,
            pool.clone(),
            Duration::from_millis(30),
            ClaimCounters::default(),
        ));
        a.set_limits(&[limit(SubjectKind::Key, "k1", Some(5), Some(100))]);
        let refused = a.admit(&scopes(), 10, at(0)).await.unwrap_err();
        assert_eq!(
            (refused.limit, refused.cause),
            (LimitKind::requests, Cause::NoClaim { wait_ms: 30 })
        );
        assert_eq!(a.counters.timeouts.get(), 1);
        assert_eq!(pool.inner.claimed("key", "o/k1", MINUTE), (0, 0));
    }

    #[tokio::test]
    async fn a_fixed_share_admits_its_part_of_each_limit_without_claiming() {
        let pool = Arc::new(TestPool::default());
        let shares = Arc::new(Shares::fixed("0.3".parse().unwrap()));
        let a = Arc::new(RateTiers::new(
            shares,
            pool.clone(),
            Duration::from_millis(30),
            ClaimCounters::default(),
        ));
        a.set_limits(&[limit(SubjectKind::Team, "t", Some(10), None)]);
        for _ in 0..3 {
            a.admit(&scopes(), 0, at(0)).await.unwrap();
        }
        assert_eq!(
            a.admit(&scopes(), 0, at(0)).await.unwrap_err().cause,
            Cause::Spent
        );
        assert_eq!(pool.inner.claimed("team", "o/t", MINUTE), (0, 0));
        assert_eq!(a.counters.claims.get(), 0);
    }

    #[tokio::test]
    async fn a_limit_of_one_orgs_team_leaves_another_orgs_team_of_that_id_alone() {
        let pool = Arc::new(TestPool::default());
        // Org o's team t: one request a minute.
        let a = proxy(1, &pool, &[limit(SubjectKind::Team, "t", Some(1), None)]);
        let of_org = |org: &str| -> Vec<Scope> {
            vec![
                (
                    "team",
                    tollgate_control::rate_limits::tier_id(SubjectKind::Team, Some(org), "t"),
                ),
                (
                    "team",
                    tollgate_control::rate_limits::tier_id(SubjectKind::Team, None, "t"),
                ),
            ]
        };
        assert!(a.admit(&of_org("o"), 1, at(0)).await.unwrap().is_some());
        assert!(a.admit(&of_org("o"), 1, at(1)).await.is_err());
        for second in 2..6 {
            assert!(a
                .admit(&of_org("p"), 1, at(second))
                .await
                .unwrap()
                .is_none());
        }
        // A limit of team t set for every org counts both orgs' calls.
        let mut every = limit(SubjectKind::Team, "t", Some(3), None);
        every.org_id = None;
        let b = proxy(1, &pool, &[every]);
        for (second, org) in [(0, "o"), (1, "p"), (2, "p")] {
            assert!(b.admit(&of_org(org), 1, at(second)).await.is_ok());
        }
        let refused = b.admit(&of_org("o"), 1, at(3)).await.unwrap_err();
        assert!(
            refused.reason().contains("for team t reached"),
            "{}",
            refused.reason()
        );
    }

    #[tokio::test]
    async fn without_limits_nothing_is_held_and_unlimited_scopes_are_skipped() {
        let pool = Arc::new(TestPool::default());
        let t = proxy(1, &pool, &[]);
        assert!(t.admit(&scopes(), 10, at(0)).await.unwrap().is_none());
        t.set_limits(&[limit(SubjectKind::User, "other", Some(1), None)]);
        assert!(t.admit(&scopes(), 10, at(0)).await.unwrap().is_none());
        t.set_limits(&[]);
        assert!(!t.is_active());
    }
}
