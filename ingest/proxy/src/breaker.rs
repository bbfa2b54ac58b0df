//! Taking a failing provider or model out of a call's candidates: the
//! fleet breaker's `circuit/…` decisions (published by the processors from
//! every proxy's events) and this proxy's own small breaker, which covers
//! the time those decisions take to arrive. Both only ever skip a
//! candidate; what is tried instead is always one of the configured
//! fallbacks (`forward`). `docs/proxy.md`, "Breakers", says how the two
//! interact.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tollgate_contract::signature::SignatureId;

use crate::config::LocalBreakerConfig;
use crate::decisions::FleetVerdict;
use crate::routing::Route;
use crate::ProxyState;

/// Whether a call may try `route` now. The fleet breaker's open or
/// half-open circuit decides when there is one (it sees every proxy's
/// calls); otherwise this proxy's local breaker does, since a closed or
/// missing fleet record is also what a lagging fleet breaker looks like.
pub fn admit(state: &ProxyState, route: &Route) -> Result<(), Skipped> {
    match state
        .decisions
        .breaker_verdict(&route.provider, &route.model)
    {
        FleetVerdict::Skip(skipped) => Err(skipped),
        FleetVerdict::Probe => Ok(()),
        FleetVerdict::NoOpinion => state.breakers.admit(&route.provider, &route.model),
    }
}

/// Why a candidate is skipped, with what the answer needs when nothing is
/// left (the circuit to name, its Retry-After) and what to try instead.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// `circuit/<provider>[/<model>]`.
    pub subject: String,
    /// The fleet breaker's decision (else this proxy's local breaker).
    pub fleet: bool,
    pub retry_after_secs: u64,
    /// The fleet decision's `reroute_to`.
    pub reroute_to: Option<String>,
    /// The failure that opened it: fallbacks are ordered by its learned recovery.
    pub signature: Option<SignatureId>,
}

/// Half-open probes this proxy let through, per circuit subject and
/// generation: each half-open episode (a new `generation`) starts a new
/// count, so a proxy sends at most `probes_per_proxy` probes per episode.
#[derive(Debug, Default)]
pub struct ProbeCounter {
    taken: HashMap<String, (u64, u32)>,
}

impl ProbeCounter {
    /// Take one probe slot of `subject` in `generation` if fewer than
    /// `limit` were taken.
    pub fn take(&mut self, subject: &str, generation: u64, limit: u32) -> bool {
        let entry = self
            .taken
            .entry(subject.to_string())
            .or_insert((generation, 0));
        if entry.0 != generation {
            *entry = (generation, 0);
        }
        if entry.1 < limit {
            entry.1 += 1;
            true
        } else {
            false
        }
    }

    /// Forget subjects whose breaker is no longer half-open.
    pub fn forget(&mut self, subject: &str) {
        self.taken.remove(subject);
    }
}

/// One provider/model's local breaker: closed (no entry), open until a
/// time, then half-open with at most one probe in flight.
#[derive(Debug, Clone, Default, PartialEq)]
struct Local {
    consecutive: u32,
    open_until: Option<Instant>,
    /// When the half-open probe in flight was let through.
    probe_since: Option<Instant>,
    signature: Option<SignatureId>,
}

impl Local {
    /// `Err(time left)` when the call must skip it; may claim the probe.
    fn admit(&mut self, now: Instant, open: Duration) -> Result<(), Duration> {
        let Some(until) = self.open_until else {
            return Ok(());
        };
        if now < until {
            return Err(until - now);
        }
        // Half-open: one probe at a time; a probe that never reports (the
        // call ended before its attempt) frees its slot after `open`.
        match self.probe_since {
            Some(since) if now.duration_since(since) < open => {
                Err(open - now.duration_since(since))
            }
            _ => {
                self.probe_since = Some(now);
                Ok(())
            }
        }
    }

    fn failure(
        &mut self,
        now: Instant,
        config: &LocalBreakerConfig,
        signature: Option<SignatureId>,
    ) {
        self.consecutive = self.consecutive.saturating_add(1);
        if signature.is_some() {
            self.signature = signature;
        }
        let probing = self.open_until.is_some_and(|until| now >= until);
        if probing || (self.open_until.is_none() && self.consecutive >= config.failures) {
            self.open_until = Some(now + Duration::from_millis(config.open_ms));
            self.probe_since = None;
        }
    }
}

/// This proxy's breakers, by provider and model; only failing ones have an
/// entry, so the common case is one lock and a miss.
#[derive(Debug, Default)]
pub struct LocalBreakers {
    config: LocalBreakerConfig,
    states: Mutex<HashMap<(String, String), Local>>,
}

impl LocalBreakers {
    pub fn new(config: LocalBreakerConfig) -> Self {
        Self {
            config,
            states: Mutex::default(),
        }
    }

    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Local>> {
        match self.states.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Whether a call may try `provider`/`model` now (claiming the probe
    /// when half-open).
    pub fn admit(&self, provider: &str, model: &str) -> Result<(), Skipped> {
        if self.config.failures == 0 {
            return Ok(());
        }
        let mut states = self.states();
        if states.is_empty() {
            return Ok(()); // the common case, without building a key
        }
        let Some(local) = states.get_mut(&(provider.to_string(), model.to_string())) else {
            return Ok(());
        };
        let open = Duration::from_millis(self.config.open_ms);
        local.admit(Instant::now(), open).map_err(|left| Skipped {
            subject: tollgate_contract::decisions::circuit_subject(provider, model),
            fleet: false,
            retry_after_secs: left.as_secs() + u64::from(left.subsec_nanos() > 0),
            reroute_to: None,
            signature: local.signature,
        })
    }

    /// An attempt got an answer that says the provider works (2xx, or a
    /// 4xx that is the request's fault): the breaker closes.
    pub fn success(&self, provider: &str, model: &str) {
        if self.config.failures == 0 {
            return;
        }
        let mut states = self.states();
        if !states.is_empty() {
            states.remove(&(provider.to_string(), model.to_string()));
        }
    }

    /// An attempt failed with 429, 5xx, a timeout or a connect error.
    pub fn failure(&self, provider: &str, model: &str, signature: Option<SignatureId>) {
        if self.config.failures == 0 {
            return;
        }
        let now = Instant::now();
        let mut states = self.states();
        let local = states
            .entry((provider.to_string(), model.to_string()))
            .or_default();
        local.failure(now, &self.config, signature);
        if local.open_until.is_some_and(|until| until > now) && local.probe_since.is_none() {
            tracing::info!(
                provider,
                model,
                failures = local.consecutive,
                "local breaker open"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_counted_per_generation() {
        let mut probes = ProbeCounter::default();
        assert!(probes.take("circuit/p/m", 1, 2));
        assert!(probes.take("circuit/p/m", 1, 2));
        assert!(!probes.take("circuit/p/m", 1, 2));
        assert!(probes.take("circuit/p", 1, 2), "subjects count apart");
        assert!(
            probes.take("circuit/p/m", 2, 2),
            "a new episode starts over"
        );
        assert!(!probes.take("circuit/p/x", 1, 0), "no probes allowed");
        probes.forget("circuit/p/m");
        assert!(probes.take("circuit/p/m", 2, 1));
    }

    #[test]
    fn local_breaker_opens_probes_one_at_a_time_and_closes_or_reopens() {
        let config = LocalBreakerConfig {
            failures: 3,
            open_ms: 1_000,
        };
        let open = Duration::from_millis(config.open_ms);
        let t0 = Instant::now();
        let mut local = Local::default();
        for i in 0..2 {
            local.failure(t0, &config, None);
            assert_eq!(
                local.admit(t0, open),
                Ok(()),
                "closed after {} failures",
                i + 1
            );
        }
        local.failure(t0, &config, Some(SignatureId(7)));
        assert_eq!(local.admit(t0, open), Err(open), "open after the third");
        let half = t0 + Duration::from_millis(500);
        assert_eq!(local.admit(half, open), Err(Duration::from_millis(500)));
        // Half-open: one probe, the next call skips while it is in flight.
        let t1 = t0 + open;
        assert_eq!(local.admit(t1, open), Ok(()));
        assert!(local.admit(t1, open).is_err());
        // The probe fails: open again for the whole period.
        local.failure(t1, &config, None);
        assert_eq!(local.admit(t1, open), Err(open));
        assert_eq!(local.signature, Some(SignatureId(7)));
        // A probe that never reports frees its slot after `open`.
        let t2 = t1 + open;
        assert_eq!(local.admit(t2, open), Ok(()));
        assert_eq!(local.admit(t2 + open, open), Ok(()));

        let breakers = LocalBreakers::new(config);
        for _ in 0..3 {
            assert!(breakers.admit("p", "m").is_ok());
            breakers.failure("p", "m", None);
        }
        let skipped = breakers.admit("p", "m").unwrap_err();
        assert_eq!(skipped.subject, "circuit/p/m");
        assert_eq!(skipped.retry_after_secs, 1);
        assert!(breakers.admit("p", "other").is_ok());
        breakers.success("p", "m");
        assert!(breakers.admit("p", "m").is_ok(), "a success closes it");
        let off = LocalBreakers::new(LocalBreakerConfig {
            failures: 0,
            open_ms: 1,
        });
        for _ in 0..10 {
            off.failure("p", "m", None);
        }
        assert!(off.admit("p", "m").is_ok());
    }
}
