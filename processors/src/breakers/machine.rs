//! The breaker state machine: pure, no I/O, the clock passed in. One
//! [`Breaker`] per provider and per provider/model; [`Breakers`] holds them
//! all and routes each call outcome to its two breakers.
//!
//! ```text
//!            failure or slow-call rate >= threshold
//!            over >= minimum_calls in the window
//!   closed ─────────────────────────────────────────► open (generation + 1)
//!     ▲                                                 │ open_secs passed
//!     │ probes below threshold, or                      ▼
//!     │ no probe within max wait  ◄───────────────── half_open
//!     │                                                 │ probes at or above
//!     └──────────────────────── open (generation + 1) ◄─┘ threshold
//! ```
//!
//! The window is counted on arrival time, in 1-second buckets, as
//! resilience4j's time-based window: the rates need only sums, so memory is
//! one bucket per second whatever the traffic. A half-open breaker counts as
//! probes only calls that started after it went half-open: a call sent
//! before the breaker opened and failing late is old news, not a probe.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use tollgate_contract::decisions::CircuitState;
use tollgate_contract::signature::SignatureId;

use super::config::BreakersConfig;

/// One call that reached a provider, as the breaker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOutcome {
    /// 429, 5xx or no answer (timeout, connect error, disconnect).
    pub failed: bool,
    /// Took longer than `breakers.slow_call_ms`.
    pub slow: bool,
    /// The failure's signature, when it failed with an error.
    pub signature: Option<SignatureId>,
    /// When the call was sent (its end minus its duration).
    pub started_at: DateTime<Utc>,
}

/// Calls, failures, slow calls and failure signatures of a set of calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub calls: u64,
    pub failures: u64,
    pub slow: u64,
    signatures: BTreeMap<SignatureId, u64>,
}

impl Counts {
    /// Counts as a published decision records them: calls, failures and
    /// the most frequent signature (for every failure, as far as is known).
    pub fn recorded(calls: u64, failures: u64, signature: Option<SignatureId>) -> Self {
        let mut counts = Counts {
            calls,
            failures,
            ..Counts::default()
        };
        if let (Some(sig), true) = (signature, failures > 0) {
            counts.signatures.insert(sig, failures);
        }
        counts
    }

    fn add(&mut self, outcome: &CallOutcome) {
        self.calls += 1;
        self.failures += u64::from(outcome.failed);
        self.slow += u64::from(outcome.slow);
        if let (true, Some(sig)) = (outcome.failed, outcome.signature) {
            *self.signatures.entry(sig).or_default() += 1;
        }
    }

    fn subtract(&mut self, other: &Counts) {
        self.calls = self.calls.saturating_sub(other.calls);
        self.failures = self.failures.saturating_sub(other.failures);
        self.slow = self.slow.saturating_sub(other.slow);
        for (sig, n) in &other.signatures {
            if let Some(mine) = self.signatures.get_mut(sig) {
                *mine = mine.saturating_sub(*n);
                if *mine == 0 {
                    self.signatures.remove(sig);
                }
            }
        }
    }

    /// The failure signature seen most (the smallest id among equals, so
    /// every replica names the same one).
    pub fn top_signature(&self) -> Option<SignatureId> {
        let mut best: Option<(SignatureId, u64)> = None;
        for (sig, n) in &self.signatures {
            if best.is_none_or(|(_, m)| *n > m) {
                best = Some((*sig, *n));
            }
        }
        best.map(|(sig, _)| sig)
    }

    /// Why these counts trip a breaker, if they do: a failure rate or a
    /// slow-call rate at or above its threshold (integer arithmetic: 10 of
    /// 20 is exactly 50%).
    fn trips(&self, config: &BreakersConfig) -> Option<String> {
        if self.calls == 0 {
            return None;
        }
        let at_least = |part: u64, percent: u8| part * 100 >= u64::from(percent) * self.calls;
        if at_least(self.failures, config.failure_rate_percent) {
            Some(format!(
                "{} of {} calls failed ({}%, threshold {}%)",
                self.failures,
                self.calls,
                self.failures * 100 / self.calls,
                config.failure_rate_percent
            ))
        } else if at_least(self.slow, config.slow_call_rate_percent) {
            Some(format!(
                "{} of {} calls slower than {} ms ({}%, threshold {}%)",
                self.slow,
                self.calls,
                config.slow_call_ms,
                self.slow * 100 / self.calls,
                config.slow_call_rate_percent
            ))
        } else {
            None
        }
    }
}

/// Counts of the last `span_secs` seconds of arrivals, in 1-second buckets.
#[derive(Debug, Clone, Default)]
struct Window {
    buckets: VecDeque<(i64, Counts)>,
    total: Counts,
}

impl Window {
    fn add(&mut self, now: DateTime<Utc>, span_secs: i64, outcome: &CallOutcome) {
        self.expire(now, span_secs);
        let second = now.timestamp();
        match self.buckets.back_mut() {
            Some((s, counts)) if *s == second => counts.add(outcome),
            _ => {
                let mut counts = Counts::default();
                counts.add(outcome);
                self.buckets.push_back((second, counts));
            }
        }
        self.total.add(outcome);
    }

    /// Drop the buckets older than the window (the bucket of `now` and the
    /// `span_secs - 1` before it stay).
    fn expire(&mut self, now: DateTime<Utc>, span_secs: i64) {
        let oldest_kept = now.timestamp() - span_secs + 1;
        while let Some((second, _)) = self.buckets.front() {
            if *second >= oldest_kept {
                break;
            }
            if let Some((_, counts)) = self.buckets.pop_front() {
                self.total.subtract(&counts);
            }
        }
    }

    fn clear(&mut self) {
        self.buckets.clear();
        self.total = Counts::default();
    }
}

/// A change of a breaker's state, with the evidence for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub provider: String,
    /// '' for the provider's own breaker.
    pub model: String,
    pub from: CircuitState,
    pub to: CircuitState,
    pub at: DateTime<Utc>,
    pub generation: u64,
    /// The calls that decided it: the window's (closed -> open), the
    /// probes' (half-open -> closed / open), none (open -> half-open).
    pub calls: u64,
    pub failures: u64,
    pub slow: u64,
    pub signature: Option<SignatureId>,
    pub reason: String,
}

/// The breaker of one provider (model '') or provider/model.
#[derive(Debug, Clone)]
pub struct Breaker {
    pub provider: String,
    pub model: String,
    state: CircuitState,
    since: DateTime<Utc>,
    generation: u64,
    window: Window,
    probes: Counts,
    /// The counts of the last transition out of closed or half-open (what
    /// re-published decisions carry).
    evidence: Counts,
}

impl Breaker {
    /// A closed breaker that has seen nothing.
    pub fn new(provider: &str, model: &str, now: DateTime<Utc>) -> Self {
        Self::restore(provider, model, CircuitState::Closed, now, 0)
    }

    /// A breaker in the state a published decision records (after a
    /// restart): an open one stays open until `since + open_secs`, a
    /// half-open one waits for probes until `since + max wait`.
    pub fn restore(
        provider: &str,
        model: &str,
        state: CircuitState,
        since: DateTime<Utc>,
        generation: u64,
    ) -> Self {
        Self {
            provider: provider.to_string(),
            model: model.to_string(),
            state,
            since,
            generation,
            window: Window::default(),
            probes: Counts::default(),
            evidence: Counts::default(),
        }
    }

    /// Take on the state another replica published (`docs/breakers.md`,
    /// "Replicas"): its episode, since and generation. The window and the
    /// probes start again when the state changes; the same state is left
    /// as it is.
    pub fn adopt(
        &mut self,
        state: CircuitState,
        since: DateTime<Utc>,
        generation: u64,
        evidence: Counts,
    ) {
        if (self.state, self.generation) == (state, generation) {
            return;
        }
        self.state = state;
        self.since = since;
        self.generation = generation;
        self.window.clear();
        self.probes = Counts::default();
        if state != CircuitState::HalfOpen {
            self.evidence = evidence;
        }
    }

    /// The current state as a transition from `from` (a replica taking
    /// over publishes what it judged since the last published record).
    pub fn as_transition(&self, from: CircuitState, reason: String) -> Transition {
        Transition {
            provider: self.provider.clone(),
            model: self.model.clone(),
            from,
            to: self.state,
            at: self.since,
            generation: self.generation,
            calls: self.evidence.calls,
            failures: self.evidence.failures,
            slow: self.evidence.slow,
            signature: self.evidence.top_signature(),
            reason,
        }
    }

    pub fn state(&self) -> CircuitState {
        self.state
    }

    pub fn since(&self) -> DateTime<Utc> {
        self.since
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The counts behind the current state.
    pub fn evidence(&self) -> &Counts {
        &self.evidence
    }

    /// The window's counts now (closed breakers).
    pub fn window_counts(&self) -> &Counts {
        &self.window.total
    }

    /// The probe outcomes so far (half-open breakers).
    pub fn probe_counts(&self) -> &Counts {
        &self.probes
    }

    /// When the current state ends on its own: open -> half-open, half-open
    /// -> decided at the latest.
    pub fn state_deadline(&self, config: &BreakersConfig) -> Option<DateTime<Utc>> {
        match self.state {
            CircuitState::Closed => None,
            CircuitState::Open => Some(self.since + config.open_for()),
            CircuitState::HalfOpen => Some(self.since + config.max_wait_in_half_open()),
        }
    }

    /// Count one call that arrived at `now`.
    pub fn observe(
        &mut self,
        outcome: &CallOutcome,
        now: DateTime<Utc>,
        config: &BreakersConfig,
    ) -> Option<Transition> {
        match self.state {
            CircuitState::Closed => {
                let span = config.window().num_seconds();
                self.window.add(now, span, outcome);
                let counts = &self.window.total;
                if counts.calls < config.minimum_calls {
                    return None;
                }
                let why = counts.trips(config)?;
                let reason = format!(
                    "{why} in the last {} s; open for {} s",
                    config.window_secs, config.open_secs
                );
                let counts = counts.clone();
                Some(self.open(now, counts, reason))
            }
            // Stragglers sent before the breaker opened: the proxies were
            // told to stop; they say nothing new.
            CircuitState::Open => None,
            CircuitState::HalfOpen => {
                if outcome.started_at < self.since {
                    return None;
                }
                self.probes.add(outcome);
                if self.probes.calls < config.half_open_probes {
                    return None;
                }
                Some(self.decide_half_open(now, config, ""))
            }
        }
    }

    /// Let time pass: expire the window, end an open period, end a
    /// half-open period that waited long enough.
    pub fn tick(&mut self, now: DateTime<Utc>, config: &BreakersConfig) -> Option<Transition> {
        match self.state {
            CircuitState::Closed => {
                self.window.expire(now, config.window().num_seconds());
                None
            }
            CircuitState::Open => {
                if now < self.since + config.open_for() {
                    return None;
                }
                let reason = format!(
                    "open for {} s; letting {} probe outcomes decide ({} per proxy, at most {} s)",
                    config.open_secs,
                    config.half_open_probes,
                    config.probes_per_proxy,
                    config.max_wait_in_half_open_secs
                );
                self.probes = Counts::default();
                Some(self.go(CircuitState::HalfOpen, now, Counts::default(), reason))
            }
            CircuitState::HalfOpen => {
                if now < self.since + config.max_wait_in_half_open() {
                    return None;
                }
                if self.probes.calls == 0 {
                    let reason = format!(
                        "no probe outcome within {} s of half-open; closed so that live traffic judges it (it opens again after {} calls if still failing)",
                        config.max_wait_in_half_open_secs, config.minimum_calls
                    );
                    return Some(self.close(now, Counts::default(), reason));
                }
                let waited = format!(
                    "only {} of {} probe outcomes within {} s; decided on those: ",
                    self.probes.calls, config.half_open_probes, config.max_wait_in_half_open_secs
                );
                Some(self.decide_half_open(now, config, &waited))
            }
        }
    }

    fn decide_half_open(
        &mut self,
        now: DateTime<Utc>,
        config: &BreakersConfig,
        prefix: &str,
    ) -> Transition {
        let probes = std::mem::take(&mut self.probes);
        match probes.trips(config) {
            Some(why) => {
                let reason = format!(
                    "{prefix}probes: {why}; open again for {} s",
                    config.open_secs
                );
                self.open(now, probes, reason)
            }
            None => {
                let reason = format!(
                    "{prefix}probes: {} of {} succeeded ({} failed, {} slow; thresholds {}% and {}%)",
                    probes.calls - probes.failures,
                    probes.calls,
                    probes.failures,
                    probes.slow,
                    config.failure_rate_percent,
                    config.slow_call_rate_percent
                );
                self.close(now, probes, reason)
            }
        }
    }

    fn open(&mut self, now: DateTime<Utc>, counts: Counts, reason: String) -> Transition {
        self.generation += 1;
        self.window.clear();
        self.go(CircuitState::Open, now, counts, reason)
    }

    fn close(&mut self, now: DateTime<Utc>, counts: Counts, reason: String) -> Transition {
        // A fresh window: the calls before the episode are not evidence of
        // how the provider is now.
        self.window.clear();
        self.go(CircuitState::Closed, now, counts, reason)
    }

    fn go(
        &mut self,
        to: CircuitState,
        now: DateTime<Utc>,
        counts: Counts,
        reason: String,
    ) -> Transition {
        let from = self.state;
        self.state = to;
        self.since = now;
        let transition = Transition {
            provider: self.provider.clone(),
            model: self.model.clone(),
            from,
            to,
            at: now,
            generation: self.generation,
            calls: counts.calls,
            failures: counts.failures,
            slow: counts.slow,
            signature: counts.top_signature(),
            reason,
        };
        if to != CircuitState::HalfOpen {
            self.evidence = counts;
        }
        transition
    }
}

/// A breaker's state as a published decision records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub provider: String,
    pub model: String,
    pub state: CircuitState,
    pub since: DateTime<Utc>,
    pub generation: u64,
    pub evidence: Counts,
}

/// Every breaker, keyed by (provider, model); model '' is the provider's.
#[derive(Debug, Clone, Default)]
pub struct Breakers {
    by_subject: BTreeMap<(String, String), Breaker>,
}

impl Breakers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Count one call on `provider`/`model` in its model's breaker and, with
    /// `per_provider`, in its provider's.
    pub fn observe(
        &mut self,
        provider: &str,
        model: &str,
        outcome: &CallOutcome,
        now: DateTime<Utc>,
        config: &BreakersConfig,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        let mut subjects = vec![model];
        if config.per_provider && !model.is_empty() {
            subjects.push("");
        }
        for m in subjects {
            let breaker = self
                .by_subject
                .entry((provider.to_string(), m.to_string()))
                .or_insert_with(|| Breaker::new(provider, m, now));
            out.extend(breaker.observe(outcome, now, config));
        }
        out
    }

    /// Let time pass for every breaker.
    pub fn tick(&mut self, now: DateTime<Utc>, config: &BreakersConfig) -> Vec<Transition> {
        self.by_subject
            .values_mut()
            .filter_map(|b| b.tick(now, config))
            .collect()
    }

    /// Take on a state another replica (or this one before a restart)
    /// published for `provider`/`model`.
    pub fn adopt(&mut self, published: Published, now: DateTime<Utc>) {
        self.by_subject
            .entry((published.provider.clone(), published.model.clone()))
            .or_insert_with(|| Breaker::new(&published.provider, &published.model, now))
            .adopt(
                published.state,
                published.since,
                published.generation,
                published.evidence,
            );
    }

    pub fn get(&self, provider: &str, model: &str) -> Option<&Breaker> {
        self.by_subject
            .get(&(provider.to_string(), model.to_string()))
    }

    /// Whether calls to `provider`/`model` are kept out (its own breaker
    /// or its provider's is not closed).
    pub fn keeps_out(&self, provider: &str, model: &str) -> bool {
        [model, ""].iter().any(|m| {
            self.get(provider, m)
                .is_some_and(|b| b.state() != CircuitState::Closed)
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Breaker> {
        self.by_subject.values()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
