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
//!
//! A provider's breaker (model '') also keeps, per bucket, the calls,
//! failures and slow calls of each of its models. It opens only when its
//! whole window trips and, leaving out the model failing most (or slow
//! most often), the calls of its other models still fail (or are slow) at
//! or above the threshold: the provider as a whole is failing. One model
//! failing alone is its own breaker's job. Otherwise a same-provider
//! fallback (`gpt-4o` -> `gpt-4o-mini`) opens it: every call's retries fail
//! on the broken model and one attempt succeeds on the fallback, 75 %
//! failures, and the open provider takes the healthy fallback out for
//! everyone. Counting only how many models failed is not enough: one stray
//! 429 of the healthy fallback makes two failing models.

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
    /// 20 is exactly 50%). With `by_model` (a provider's window, these
    /// counts its totals), a rate trips only when it also does for at least
    /// `rest_minimum` calls of the other models than the one failing (or
    /// slow) most; the words saying so are the [`Trip`]'s `rest`.
    fn trips(
        &self,
        config: &BreakersConfig,
        by_model: Option<&ByModel>,
        rest_minimum: u64,
    ) -> Option<Trip> {
        let failed = Rate {
            part: |c: &ModelCounts| c.failures,
            percent: config.failure_rate_percent,
            most: "failing most",
            rest_minimum,
        };
        let slow = Rate {
            part: |c: &ModelCounts| c.slow,
            percent: config.slow_call_rate_percent,
            most: "slow most often",
            rest_minimum,
        };
        let totals = ModelCounts {
            calls: self.calls,
            failures: self.failures,
            slow: self.slow,
        };
        if let Some(rest) = failed.trips(&totals, by_model) {
            return Some(Trip {
                rate: format!(
                    "{} of {} calls failed ({}%, threshold {}%)",
                    self.failures,
                    self.calls,
                    self.failures * 100 / self.calls,
                    config.failure_rate_percent
                ),
                rest,
            });
        }
        let rest = slow.trips(&totals, by_model)?;
        Some(Trip {
            rate: format!(
                "{} of {} calls slower than {} ms ({}%, threshold {}%)",
                self.slow,
                self.calls,
                config.slow_call_ms,
                self.slow * 100 / self.calls,
                config.slow_call_rate_percent
            ),
            rest,
        })
    }
}

/// Why counts trip a breaker, in words: the rate (`10 of 20 calls failed
/// (50%, threshold 50%)`) and, for a provider's window, the rate leaving
/// out its worst model (`, 6 of 7 (85%) leaving out gpt-4o, the model
/// failing most`; empty for a model's breaker).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Trip {
    rate: String,
    rest: String,
}

/// One of the two rates a breaker trips on: failures or slow calls.
struct Rate {
    /// The failures or the slow calls of some counts.
    part: fn(&ModelCounts) -> u64,
    percent: u8,
    /// How the reason names the model left out.
    most: &'static str,
    /// Fewest calls of the other models that can trip a provider's
    /// breaker: one stray 429 of a quiet sibling is not its failing.
    rest_minimum: u64,
}

impl Rate {
    fn at_least(&self, counts: &ModelCounts) -> bool {
        counts.calls > 0 && (self.part)(counts) * 100 >= u64::from(self.percent) * counts.calls
    }

    /// Whether `totals` trip at this rate; with `by_model` (a provider's
    /// window), only when the calls of the models other than the one with
    /// the most failures (or slow calls) trip too, and then the words
    /// saying so. None when it does not trip.
    fn trips(&self, totals: &ModelCounts, by_model: Option<&ByModel>) -> Option<String> {
        if !self.at_least(totals) {
            return None;
        }
        let Some(by_model) = by_model else {
            return Some(String::new());
        };
        let (worst, counts) = by_model.most(self.part)?;
        let rest = ModelCounts {
            calls: totals.calls.saturating_sub(counts.calls),
            failures: totals.failures.saturating_sub(counts.failures),
            slow: totals.slow.saturating_sub(counts.slow),
        };
        if rest.calls < self.rest_minimum || !self.at_least(&rest) {
            return None;
        }
        let part = (self.part)(&rest);
        Some(format!(
            ", {part} of {} ({}%) leaving out {worst}, the model {}",
            rest.calls,
            part * 100 / rest.calls,
            self.most
        ))
    }
}

/// Calls, failures and slow calls of one model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ModelCounts {
    calls: u64,
    failures: u64,
    slow: u64,
}

/// The calls, failures and slow calls of a set of calls, per model (a
/// provider's breaker): a small map of the provider's models.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ByModel(BTreeMap<String, ModelCounts>);

impl ByModel {
    fn add(&mut self, model: &str, outcome: &CallOutcome) {
        let counts = match self.0.get_mut(model) {
            Some(counts) => counts,
            None => self.0.entry(model.to_string()).or_default(),
        };
        counts.calls += 1;
        counts.failures += u64::from(outcome.failed);
        counts.slow += u64::from(outcome.slow);
    }

    fn subtract(&mut self, other: &ByModel) {
        for (model, n) in &other.0 {
            if let Some(mine) = self.0.get_mut(model) {
                mine.calls = mine.calls.saturating_sub(n.calls);
                mine.failures = mine.failures.saturating_sub(n.failures);
                mine.slow = mine.slow.saturating_sub(n.slow);
                if mine.calls == 0 {
                    self.0.remove(model);
                }
            }
        }
    }

    /// The model with the most of `part` (failures or slow calls) and its
    /// counts; among equals the smallest name, so every replica leaves out
    /// the same one. None when no model has any.
    fn most(&self, part: fn(&ModelCounts) -> u64) -> Option<(&str, &ModelCounts)> {
        let mut best: Option<(&str, &ModelCounts)> = None;
        for (model, counts) in &self.0 {
            if part(counts) > 0 && best.is_none_or(|(_, b)| part(counts) > part(b)) {
                best = Some((model.as_str(), counts));
            }
        }
        best
    }
}

/// The calls that arrived in one second.
#[derive(Debug, Clone, Default)]
struct Bucket {
    second: i64,
    counts: Counts,
    /// Per model; empty but for a provider's breaker.
    by_model: ByModel,
}

impl Bucket {
    fn add(&mut self, outcome: &CallOutcome, model: Option<&str>) {
        self.counts.add(outcome);
        if let Some(model) = model {
            self.by_model.add(model, outcome);
        }
    }
}

/// Counts of the last `span_secs` seconds of arrivals, in 1-second buckets.
#[derive(Debug, Clone, Default)]
struct Window {
    buckets: VecDeque<Bucket>,
    total: Counts,
    /// The buckets' counts per model (a provider's breaker).
    by_model: ByModel,
}

impl Window {
    /// Count a call; `model` is the call's model when the window keeps
    /// counts per model (a provider's breaker), else None.
    fn add(
        &mut self,
        now: DateTime<Utc>,
        span_secs: i64,
        outcome: &CallOutcome,
        model: Option<&str>,
    ) {
        self.expire(now, span_secs);
        let second = now.timestamp();
        match self.buckets.back_mut() {
            Some(bucket) if bucket.second == second => bucket.add(outcome, model),
            _ => {
                let mut bucket = Bucket {
                    second,
                    ..Bucket::default()
                };
                bucket.add(outcome, model);
                self.buckets.push_back(bucket);
            }
        }
        self.total.add(outcome);
        if let Some(model) = model {
            self.by_model.add(model, outcome);
        }
    }

    /// Drop the buckets older than the window (the bucket of `now` and the
    /// `span_secs - 1` before it stay).
    fn expire(&mut self, now: DateTime<Utc>, span_secs: i64) {
        let oldest_kept = now.timestamp() - span_secs + 1;
        while let Some(bucket) = self.buckets.front() {
            if bucket.second >= oldest_kept {
                break;
            }
            if let Some(bucket) = self.buckets.pop_front() {
                self.total.subtract(&bucket.counts);
                self.by_model.subtract(&bucket.by_model);
            }
        }
    }

    fn clear(&mut self) {
        self.buckets.clear();
        self.total = Counts::default();
        self.by_model = ByModel::default();
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
    /// The probes' counts per model (a provider's breaker).
    probe_models: ByModel,
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
            probe_models: ByModel::default(),
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
        self.probe_models = ByModel::default();
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

    /// Whether this is a provider's breaker (model '').
    pub fn is_provider(&self) -> bool {
        self.model.is_empty()
    }

    /// Count one call to this breaker's model that arrived at `now`. A
    /// provider's breaker is fed with [`Breaker::observe_call_to`], which
    /// names the call's model.
    pub fn observe(
        &mut self,
        outcome: &CallOutcome,
        now: DateTime<Utc>,
        config: &BreakersConfig,
    ) -> Option<Transition> {
        self.count(None, outcome, now, config)
    }

    /// Count one call to `model` that arrived at `now`. A provider's
    /// breaker keeps the counts of each of its models: it opens only when
    /// its calls fail (or are slow) at the threshold even leaving out the
    /// model failing (or slow) most. A model's breaker counts it as
    /// [`Breaker::observe`] does.
    pub fn observe_call_to(
        &mut self,
        model: &str,
        outcome: &CallOutcome,
        now: DateTime<Utc>,
        config: &BreakersConfig,
    ) -> Option<Transition> {
        self.count(Some(model), outcome, now, config)
    }

    fn count(
        &mut self,
        model: Option<&str>,
        outcome: &CallOutcome,
        now: DateTime<Utc>,
        config: &BreakersConfig,
    ) -> Option<Transition> {
        match self.state {
            CircuitState::Closed => {
                let span = config.window().num_seconds();
                // Only a provider's breaker keeps the calls' models (a call
                // fed without one counts as of model '').
                let model = self.is_provider().then(|| model.unwrap_or(""));
                self.window.add(now, span, outcome, model);
                let counts = &self.window.total;
                if counts.calls < config.minimum_calls {
                    return None;
                }
                let by_model = self.is_provider().then_some(&self.window.by_model);
                // The other models' calls must be evidence, not a stray: a
                // quarter of the breaker's minimum, and at least two.
                let rest_minimum = (config.minimum_calls / 4).max(2);
                let Trip { rate, rest } = counts.trips(config, by_model, rest_minimum)?;
                let reason = format!(
                    "{rate} in the last {} s{rest}; open for {} s",
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
                if self.is_provider() {
                    self.probe_models.add(model.unwrap_or(""), outcome);
                }
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
                self.probe_models = ByModel::default();
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
        let probe_models = std::mem::take(&mut self.probe_models);
        // A provider's probes reopen it as its window opened it: only when
        // the probes of its other models than the one failing most fail at
        // the threshold too (one of them is enough: probes are few), so
        // probes that fail on one broken model and succeed on its siblings
        // close it. Probes that all went to one model are judged as they
        // are: nothing tells that model from the provider (in an outage
        // the traffic, and so the probes, often go to one model whose own
        // breaker has not opened).
        let by_model = (self.is_provider() && probe_models.0.len() > 1).then_some(&probe_models);
        match probes.trips(config, by_model, 1) {
            Some(Trip { rate: why, rest }) => {
                let reason = format!(
                    "{prefix}probes: {why}{rest}; open again for {} s",
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
    /// `per_provider`, in its provider's (which opens only when its calls
    /// fail at the threshold even leaving out the model failing most).
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
            out.extend(breaker.observe_call_to(model, outcome, now, config));
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
