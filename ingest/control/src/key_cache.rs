//! The edges' cache of verified API keys (ingest and the proxy): a key
//! checked against PostgreSQL is trusted for `fresh` without asking again
//! (a revocation takes effect within that), and, while PostgreSQL does not
//! answer, for up to `stale` after its last successful check, so that an
//! outage of the control plane does not stop traffic from keys seen
//! recently. A key never verified gets the outage's error (a 503 at the
//! edges, never a 401); a secret found unknown or revoked is asked about
//! again after a few seconds, and while PostgreSQL does not answer stays
//! refused for the same `stale` time.
//!
//! While PostgreSQL is known to be unreachable (since a lookup failed, until
//! one succeeds), one lookup per [`RETRY_INTERVAL`] is sent to it, and it
//! waits at most [`KeyCachePolicy::lookup_timeout`]; every other request is
//! answered at once, from the cache or with the error, instead of each
//! waiting for the pool's own timeout. A lookup made for a key that could be
//! served stale also waits at most `lookup_timeout`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use tollgate_contract::Fault;

use crate::error::ControlError;
use crate::keys::hash_secret;

/// How often a lookup is tried while PostgreSQL is known to be down.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// How long an unknown secret is remembered as unknown (never longer than a
/// known one).
const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Entries kept before the cache starts over (a bound on memory when
/// clients send many different secrets).
const MAX_CACHED: usize = 100_000;

/// How long verified keys are trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCachePolicy {
    /// Trusted without asking PostgreSQL again (`*.key_cache_secs`).
    pub fresh: Duration,
    /// Trusted, after its last successful check, while PostgreSQL does not
    /// answer (`*.key_cache_stale_secs`); zero serves nothing stale.
    pub stale: Duration,
    /// The longest a lookup may take when a stale copy could answer instead.
    pub lookup_timeout: Duration,
}

impl KeyCachePolicy {
    /// `fresh_secs` and `stale_secs` as the config gives them, with the
    /// default lookup timeout of 2 s.
    pub fn from_secs(fresh_secs: u64, stale_secs: u64) -> Self {
        Self {
            fresh: Duration::from_secs(fresh_secs),
            stale: Duration::from_secs(stale_secs),
            lookup_timeout: Duration::from_secs(2),
        }
    }
}

struct Entry<K> {
    key: Option<K>,
    checked: Instant,
}

/// While PostgreSQL is believed to be down: why, and when a lookup was
/// last sent to it.
struct Outage {
    last_probe: Instant,
    reason: String,
}

/// Verified keys by the SHA-256 of their secret (the secret itself is never
/// kept). `K` is what an edge needs of a key.
pub struct KeyCache<K> {
    policy: KeyCachePolicy,
    /// The server's address as errors name it (no password).
    address: String,
    entries: RwLock<HashMap<[u8; 32], Entry<K>>>,
    outage: Mutex<Option<Outage>>,
    served_stale: AtomicU64,
}

impl<K: Clone> KeyCache<K> {
    /// `address` names PostgreSQL in errors (e.g. from
    /// [`crate::postgres::redact_url`]).
    pub fn new(policy: KeyCachePolicy, address: impl Into<String>) -> Self {
        Self {
            policy,
            address: address.into(),
            entries: RwLock::new(HashMap::new()),
            outage: Mutex::new(None),
            served_stale: AtomicU64::new(0),
        }
    }

    pub fn policy(&self) -> KeyCachePolicy {
        self.policy
    }

    /// How many requests were answered with a stale key since start.
    pub fn served_stale(&self) -> u64 {
        self.served_stale.load(Ordering::Relaxed)
    }

    /// The key `secret` belongs to (`None`: unknown, revoked, or refused by
    /// `lookup`), from the cache or from `lookup` (PostgreSQL).
    pub async fn get<F, Fut>(&self, secret: &str, lookup: F) -> Result<Option<K>, ControlError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<K>, ControlError>>,
    {
        let hash = hash_secret(secret);
        let now = Instant::now();
        let (fresh, stale) = match self.entries.read() {
            Ok(entries) => match entries.get(&hash) {
                Some(entry) => {
                    let age = now.saturating_duration_since(entry.checked);
                    let ttl = if entry.key.is_some() {
                        self.policy.fresh
                    } else {
                        NEGATIVE_TTL.min(self.policy.fresh)
                    };
                    let fresh = (age < ttl).then(|| entry.key.clone());
                    // What was last known, a refusal included (a revoked
                    // key stays refused through an outage).
                    let stale = (age < self.policy.stale).then(|| (entry.key.clone(), age));
                    (fresh, stale)
                }
                None => (None, None),
            },
            Err(_) => (None, None),
        };
        if let Some(key) = fresh {
            return Ok(key);
        }
        let outage = self.outage_probe(now);
        if let Some((reason, false)) = outage {
            return match stale {
                Some((key, age)) => Ok(self.serve_stale(key, age, &reason)),
                None => Err(self.unreachable(reason)),
            };
        }
        let bounded = stale.is_some() || outage.is_some();
        let looked_up = match bounded {
            true => tokio::time::timeout(self.policy.lookup_timeout, lookup())
                .await
                .unwrap_or_else(|_| {
                    Err(self.unreachable(format!(
                        "no answer within {} ms",
                        self.policy.lookup_timeout.as_millis()
                    )))
                }),
            false => lookup().await,
        };
        match looked_up {
            Ok(key) => {
                self.recovered();
                self.insert(hash, key.clone());
                Ok(key)
            }
            Err(err) if err.fault() == Fault::External => {
                self.failed(&err);
                match stale {
                    Some((key, age)) => Ok(self.serve_stale(key, age, &err.to_string())),
                    None => Err(err),
                }
            }
            Err(err) => Err(err),
        }
    }

    fn insert(&self, hash: [u8; 32], key: Option<K>) {
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= MAX_CACHED {
                entries.clear();
            }
            entries.insert(
                hash,
                Entry {
                    key,
                    checked: Instant::now(),
                },
            );
        }
    }

    /// While PostgreSQL is believed down: its reason, and whether this
    /// request is the one lookup of the current [`RETRY_INTERVAL`].
    fn outage_probe(&self, now: Instant) -> Option<(String, bool)> {
        let mut outage = self.outage.lock().ok()?;
        let outage = outage.as_mut()?;
        let probe = now.saturating_duration_since(outage.last_probe) >= RETRY_INTERVAL;
        if probe {
            outage.last_probe = now;
        }
        Some((outage.reason.clone(), probe))
    }

    fn failed(&self, err: &ControlError) {
        if let Ok(mut outage) = self.outage.lock() {
            if outage.is_none() {
                tracing::warn!(%err, stale_secs = self.policy.stale.as_secs(), "cannot check API keys: keys verified recently keep working, others are refused with 503");
            }
            *outage = Some(Outage {
                last_probe: Instant::now(),
                reason: err.to_string(),
            });
        }
    }

    fn recovered(&self) {
        if let Ok(mut outage) = self.outage.lock() {
            if outage.take().is_some() {
                tracing::info!("API keys can be checked again");
            }
        }
    }

    fn serve_stale(&self, key: Option<K>, age: Duration, reason: &str) -> Option<K> {
        let n = self.served_stale.fetch_add(1, Ordering::Relaxed);
        if n.is_power_of_two() || n == 0 {
            tracing::warn!(
                age_secs = age.as_secs(),
                served_stale = n + 1,
                reason,
                "serving a key verified earlier while its check fails"
            );
        }
        key
    }

    fn unreachable(&self, reason: String) -> ControlError {
        ControlError::PostgresUnreachable {
            address: self.address.clone(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(fresh_ms: u64, stale_ms: u64) -> KeyCachePolicy {
        KeyCachePolicy {
            fresh: Duration::from_millis(fresh_ms),
            stale: Duration::from_millis(stale_ms),
            lookup_timeout: Duration::from_millis(200),
        }
    }

    fn down() -> ControlError {
        ControlError::PostgresUnreachable {
            address: "pg".into(),
            reason: "connection refused".into(),
        }
    }

    #[tokio::test]
    async fn fresh_keys_are_not_looked_up_again() {
        let cache = KeyCache::new(policy(60_000, 60_000), "pg");
        let got = cache.get("s", || async { Ok(Some(1u32)) }).await.unwrap();
        assert_eq!(got, Some(1));
        let got = cache
            .get("s", || async { panic!("looked up a fresh key") })
            .await
            .unwrap();
        assert_eq!(got, Some(1));
    }

    #[tokio::test]
    async fn a_revocation_counts_once_the_entry_is_no_longer_fresh() {
        let cache = KeyCache::new(policy(0, 60_000), "pg");
        assert_eq!(
            cache.get("s", || async { Ok(Some(1u32)) }).await.unwrap(),
            Some(1)
        );
        // PostgreSQL answers that the key is gone: no stale copy is served.
        assert_eq!(cache.get("s", || async { Ok(None) }).await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_outage_serves_known_keys_and_refuses_unknown_ones_at_once() {
        let cache = KeyCache::new(policy(0, 60_000), "pg");
        cache
            .get("known", || async { Ok(Some(7u32)) })
            .await
            .unwrap();
        let got = cache.get("known", || async { Err(down()) }).await.unwrap();
        assert_eq!(got, Some(7));
        assert_eq!(cache.served_stale(), 1);
        // Within the retry interval nothing is looked up.
        let err = cache
            .get("unknown", || async {
                panic!("looked up during a known outage")
            })
            .await
            .unwrap_err();
        assert_eq!(err.fault(), Fault::External);
        assert!(err.to_string().contains("connection refused"), "{err}");
        let got = cache
            .get("known", || async {
                panic!("looked up during a known outage")
            })
            .await
            .unwrap();
        assert_eq!(got, Some(7));
    }

    #[tokio::test]
    async fn a_refused_secret_stays_refused_through_an_outage() {
        let cache: KeyCache<u32> = KeyCache::new(policy(0, 60_000), "pg");
        assert_eq!(
            cache.get("revoked", || async { Ok(None) }).await.unwrap(),
            None
        );
        let got = cache.get("revoked", || async { Err(down()) }).await;
        assert_eq!(got.unwrap(), None);
    }

    #[tokio::test]
    async fn a_lookup_that_hangs_is_cut_short_when_a_stale_copy_can_answer() {
        let cache = KeyCache::new(policy(0, 60_000), "pg");
        cache
            .get("known", || async { Ok(Some(7u32)) })
            .await
            .unwrap();
        let started = Instant::now();
        let got = cache.get("known", std::future::pending).await.unwrap();
        assert_eq!(got, Some(7));
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[tokio::test]
    async fn stale_copies_expire() {
        let cache = KeyCache::new(policy(0, 0), "pg");
        cache
            .get("known", || async { Ok(Some(7u32)) })
            .await
            .unwrap();
        let err = cache.get("known", || async { Err(down()) }).await;
        assert!(err.is_err());
    }

    #[tokio::test]
    async fn errors_that_are_not_an_outage_are_not_hidden() {
        let cache = KeyCache::new(policy(0, 60_000), "pg");
        cache
            .get("known", || async { Ok(Some(7u32)) })
            .await
            .unwrap();
        let err = cache
            .get("known", || async {
                Err(ControlError::Internal("broken".into()))
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("broken"));
    }
}
