//! Seeded generator of events. Deterministic for a seed, so a test or a
//! benchmark can regenerate exactly what it sent.

use chrono::{DateTime, Duration, Utc};
use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use uuid::Uuid;

use tollgate_contract::{
    Call, Event, EventKind, Operation, Outcome, ProviderError, Usage, SCHEMA_VERSION,
};

use super::cast::{callers, Caller, ModelProfile, MODELS};

/// What traffic to generate.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    pub seed: u64,
    /// `occurred_at` is spread over `[end - span, end]`, in order.
    pub span: Duration,
    pub end: DateTime<Utc>,
    /// Total events; needed to spread timestamps evenly.
    pub events: u64,
    /// Fraction of calls that fail (0..1).
    pub error_rate: f64,
    /// Fraction of chat calls that stream.
    pub stream_rate: f64,
}

impl WorkloadSpec {
    pub fn new(events: u64, span: Duration, seed: u64) -> Self {
        Self {
            seed,
            span,
            end: Utc::now(),
            events,
            error_rate: 0.04,
            stream_rate: 0.6,
        }
    }
}

/// An iterator of events following a [`WorkloadSpec`].
pub struct Workload {
    spec: WorkloadSpec,
    rng: StdRng,
    callers: Vec<Caller>,
    caller_index: WeightedIndex<f64>,
    model_index: WeightedIndex<f64>,
    produced: u64,
}

impl Workload {
    pub fn new(spec: WorkloadSpec) -> anyhow::Result<Self> {
        let callers = callers();
        let caller_index = WeightedIndex::new(callers.iter().map(|c| c.weight))?;
        let model_index = WeightedIndex::new(MODELS.iter().map(|m| m.weight))?;
        Ok(Self {
            rng: StdRng::seed_from_u64(spec.seed),
            spec,
            callers,
            caller_index,
            model_index,
            produced: 0,
        })
    }

    fn occurred_at(&mut self) -> DateTime<Utc> {
        let span_ms = self.spec.span.num_milliseconds().max(1);
        let step = span_ms as f64 / self.spec.events.max(1) as f64;
        let jitter = self.rng.random_range(0.0..step.max(1.0));
        let offset = (self.produced as f64 * step + jitter).min(span_ms as f64) as i64;
        self.spec.end - self.spec.span + Duration::milliseconds(offset)
    }

    fn event(&mut self) -> Event {
        let occurred_at = self.occurred_at();
        let caller = self.callers[self.caller_index.sample(&mut self.rng)].clone();
        let profile = MODELS[self.model_index.sample(&mut self.rng)];
        let call = self.call(&profile, occurred_at);
        let kind = if call.outcome == Outcome::Success {
            EventKind::CallCompleted
        } else {
            EventKind::CallFailed
        };
        let mut tags = std::collections::BTreeMap::new();
        tags.insert(
            "feature".to_string(),
            ["chat", "summarize", "search", "classify"][self.rng.random_range(0..4)].to_string(),
        );
        if self.rng.random_bool(0.2) {
            tags.insert("experiment".to_string(), "prompt-v2".to_string());
            tags.insert(
                "variant".to_string(),
                if self.rng.random_bool(0.5) { "a" } else { "b" }.to_string(),
            );
        }
        Event {
            schema_version: SCHEMA_VERSION,
            event_id: uuid_v7_at(occurred_at, &mut self.rng),
            kind,
            occurred_at,
            org_id: caller.org_id,
            team_id: caller.team_id,
            user_id: caller.user_id,
            api_key_id: caller.api_key_id,
            call: Some(call),
            admin: None,
            tags,
            reported_cost: None,
        }
    }

    fn call(&mut self, profile: &ModelProfile, occurred_at: DateTime<Utc>) -> Call {
        let rng = &mut self.rng;
        let stream = !profile.embedding && rng.random_bool(self.spec.stream_rate);
        // An incident: in the last sixth of the window one provider slows down 3x.
        let incident =
            profile.provider == "anthropic" && occurred_at > self.spec.end - self.spec.span / 6;
        let slowdown = if incident { 3.0 } else { 1.0 };
        let mut duration_ms = lognormal(rng, profile.median_duration_ms * slowdown, 0.55)
            .clamp(20.0, 120_000.0) as u32;
        let mut ttft_ms = stream.then(|| {
            let ttft = lognormal(rng, profile.median_ttft_ms * slowdown, 0.45) as u32;
            ttft.clamp(5, duration_ms)
        });
        let input_tokens = lognormal(rng, profile.median_input_tokens, 0.8).max(1.0) as u64;
        let mut output_tokens = if profile.embedding {
            0
        } else {
            lognormal(rng, profile.median_output_tokens, 0.7).max(1.0) as u64
        };
        let cached_input_tokens = if profile.prompt_cache && rng.random_bool(0.35) {
            input_tokens * rng.random_range(30..90) / 100
        } else {
            0
        };
        let cache_write_tokens =
            if profile.provider == "anthropic" && cached_input_tokens == 0 && rng.random_bool(0.15)
            {
                input_tokens / 2
            } else {
                0
            };
        let reasoning_tokens = if profile.reasoning {
            output_tokens * rng.random_range(20..70) / 100
        } else {
            0
        };
        let error_rate = if incident {
            self.spec.error_rate * 2.5
        } else {
            self.spec.error_rate
        };
        let (outcome, http_status, error) = if rng.random_bool(error_rate.clamp(0.0, 1.0)) {
            let (outcome, status, kind, message) = match rng.random_range(0..10) {
                0..=3 => (
                    Outcome::RateLimited,
                    429,
                    "rate_limit_error",
                    "Rate limit reached for requests per minute",
                ),
                4..=5 => (
                    Outcome::Error,
                    500,
                    "server_error",
                    "The server had an error while processing your request",
                ),
                6 => (Outcome::Error, 529, "overloaded_error", "Overloaded"),
                7 => (
                    Outcome::Error,
                    400,
                    "context_length_exceeded",
                    "This model's maximum context length is 128000 tokens",
                ),
                8 => (
                    Outcome::Timeout,
                    504,
                    "timeout",
                    "Request timed out after 30000 ms",
                ),
                _ => (
                    Outcome::Error,
                    503,
                    "service_unavailable",
                    "Service temporarily unavailable",
                ),
            };
            if outcome == Outcome::Timeout {
                duration_ms = 30_000;
            } else {
                duration_ms = duration_ms.min(lognormal(rng, 300.0, 0.6) as u32 + 20);
            }
            output_tokens = 0;
            ttft_ms = None;
            (
                outcome,
                status,
                Some(ProviderError {
                    error_type: kind.to_string(),
                    message: message.to_string(),
                    signature: None,
                }),
            )
        } else {
            (Outcome::Success, 200, None)
        };
        let failed = outcome != Outcome::Success;
        Call {
            call_id: format!("call_{}", Uuid::from_u128(rng.random())),
            trace_id: format!("{:032x}", rng.random::<u128>()),
            span_id: String::new(),
            provider: profile.provider.to_string(),
            model: profile.model.to_string(),
            requested_model: profile.model.to_string(),
            attempt: 1,
            fallback_of: String::new(),
            operation: if profile.embedding {
                Operation::Embedding
            } else if profile.provider == "anthropic" {
                Operation::Messages
            } else {
                Operation::Chat
            },
            stream,
            duration_ms,
            ttft_ms,
            usage: Usage {
                input_tokens,
                input_tokens_estimated: false,
                output_tokens,
                cached_input_tokens: if failed { 0 } else { cached_input_tokens },
                cache_write_tokens: if failed { 0 } else { cache_write_tokens },
                reasoning_tokens: if failed {
                    0
                } else {
                    reasoning_tokens.min(output_tokens)
                },
                images: 0,
                audio_seconds: 0.0,
            },
            outcome,
            http_status,
            error,
            cache_hit: false,
            prompt_sha256: Some(format!("{:064x}", rng.random::<u128>())),
            response_sha256: (!failed).then(|| format!("{:064x}", rng.random::<u128>())),
            recovery: None,
        }
    }
}

impl Iterator for Workload {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        if self.produced >= self.spec.events {
            return None;
        }
        let event = self.event();
        self.produced += 1;
        Some(event)
    }
}

fn lognormal(rng: &mut StdRng, median: f64, sigma: f64) -> f64 {
    match LogNormal::new(median.max(1e-9).ln(), sigma) {
        Ok(dist) => dist.sample(rng),
        Err(_) => median,
    }
}

/// A UUIDv7 whose timestamp is `at`, with seeded random bits (so a seed
/// reproduces the same ids).
fn uuid_v7_at(at: DateTime<Utc>, rng: &mut StdRng) -> Uuid {
    let millis = at.timestamp_millis().max(0) as u64;
    let random: [u8; 10] = rng.random();
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_contract::{parse_event, Limits};

    #[test]
    fn events_are_valid_ordered_and_reproducible() {
        let spec = WorkloadSpec::new(2_000, Duration::minutes(30), 7);
        let a: Vec<Event> = Workload::new(spec.clone()).unwrap().collect();
        let b: Vec<Event> = Workload::new(spec).unwrap().collect();
        assert_eq!(a.len(), 2_000);
        assert_eq!(a, b, "same seed, same events");
        let now = Utc::now();
        for e in &a {
            let value = serde_json::to_value(e).unwrap();
            parse_event(value, now, &Limits::default()).unwrap();
        }
        assert!(a
            .windows(2)
            .all(|w| w[0].occurred_at <= w[1].occurred_at + Duration::milliseconds(2000)));
        let errors = a.iter().filter(|e| e.kind == EventKind::CallFailed).count();
        assert!(
            (20..300).contains(&errors),
            "a few percent errors, got {errors}"
        );
        let providers: std::collections::BTreeSet<_> = a
            .iter()
            .map(|e| e.call.as_ref().unwrap().provider.clone())
            .collect();
        assert!(providers.len() >= 3);
        let streamed = a
            .iter()
            .filter(|e| e.call.as_ref().unwrap().ttft_ms.is_some())
            .count();
        assert!(streamed > 500);
    }
}
