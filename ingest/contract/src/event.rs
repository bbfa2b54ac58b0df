//! The versioned event types: what one AI call (or control-plane change) looks
//! like on `tollgate.events`. Serde and the JSON Schema are both derived from
//! these types, so the schema served at `GET /v1/schema` cannot drift from what
//! the code accepts.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::kind::EventKind;
use crate::signature::SignatureId;

/// The only schema version this build accepts and emits.
pub const SCHEMA_VERSION: u16 = 1;

/// One event on `tollgate.events`, schema version 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "Tollgate event",
    description = "One AI call or control-plane change, as carried on the tollgate.events Kafka topic."
)]
pub struct Event {
    /// Version of this contract; this build accepts 1.
    #[schemars(range(min = 1, max = 1))]
    pub schema_version: u16,
    /// UUIDv7; the idempotency key of the event.
    pub event_id: Uuid,
    /// `ai.call.completed`, `ai.call.failed`, `ai.call.blocked`, `ai.call.started`,
    /// `ai.call.first_token`, or `admin.<change>`.
    pub kind: EventKind,
    /// When the call finished (or the change happened), UTC, RFC 3339 with milliseconds.
    pub occurred_at: DateTime<Utc>,
    #[schemars(length(min = 1, max = 128))]
    pub org_id: String,
    #[schemars(length(min = 1, max = 128))]
    pub team_id: String,
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub user_id: String,
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub api_key_id: String,
    /// Present for `ai.call.*` kinds, absent for `admin.*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<Call>,
    /// Present for `admin.*` kinds: what changed, free-form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<serde_json::Value>,
    /// Free-form tags (feature, experiment, variant, ...).
    // A key given twice is refused (`duplicate_keys`).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "crate::duplicate_keys::unique_map"
    )]
    pub tags: BTreeMap<String, String>,
    /// Cost the emitter computed, decimal USD as a string, for reconciliation only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,26}(\.[0-9]{1,12})?$"))]
    pub reported_cost: Option<String>,
}

/// The AI call an `ai.call.*` event describes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Call {
    /// Identifies one logical call across its lifecycle events and attempts.
    #[schemars(length(min = 1, max = 128))]
    pub call_id: String,
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub trace_id: String,
    /// W3C span id (16 lowercase hex digits) of the span that made the call:
    /// the span of an OTLP GenAI span, or the client span of the proxied
    /// request's `traceparent`. Empty when unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 16))]
    pub span_id: String,
    /// Provider that served (or would have served) the call: `openai`, `anthropic`, ...
    #[schemars(length(min = 1, max = 64))]
    pub provider: String,
    /// Model that served the call.
    #[schemars(length(min = 1, max = 256))]
    pub model: String,
    /// Model the client asked for; differs from `model` after a reroute or alias.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub requested_model: String,
    /// 1 for the first attempt.
    #[serde(default = "first_attempt")]
    #[schemars(range(min = 1))]
    pub attempt: u16,
    /// `call_id` of the call this one is a fallback for.
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub fallback_of: String,
    pub operation: Operation,
    #[serde(default)]
    pub stream: bool,
    /// Wall time of the call in milliseconds.
    pub duration_ms: u32,
    /// Time to first token in milliseconds, for streamed calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u32>,
    #[serde(default)]
    pub usage: Usage,
    pub outcome: Outcome,
    /// HTTP status the provider (or the gate) answered with; 0 if none.
    #[serde(default)]
    pub http_status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ProviderError>,
    #[serde(default)]
    pub cache_hit: bool,
    /// SHA-256 (hex) of the prompt body; bodies never travel on the bus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[0-9a-f]{64}$"))]
    pub prompt_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[0-9a-f]{64}$"))]
    pub response_sha256: Option<String>,
    /// Where this attempt stands among the call's attempts (retries and
    /// fallbacks), for the error-pattern fold and the recovery learner.
    /// Absent: the event is the call's only attempt (as if `sequence` 1,
    /// `strategy` `first`, `last` true). `docs/error-patterns.md`,
    /// "Recovery facts".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
}

/// One attempt's place in its call: which attempt it is, what failure it
/// recovers from, how, after what wait, and whether it is the last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recovery {
    /// Position of this attempt among every attempt of the logical call,
    /// across retries and fallback models, from 1.
    #[schemars(range(min = 1))]
    pub sequence: u16,
    /// Milliseconds between the end of the previous attempt and the start
    /// of this one (backoff, `Retry-After`); 0 for the first attempt.
    #[serde(default)]
    #[schemars(range(max = 86_400_000))]
    pub wait_ms: u32,
    /// How this attempt relates to the call's first failed attempt.
    pub strategy: Strategy,
    /// Signature of the call's first failed attempt's error: the failure
    /// this attempt recovers from. Absent on the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", regex(pattern = "^[0-9a-f]{16}$"))]
    pub from_signature: Option<SignatureId>,
    /// Provider of the call's first failed attempt ('' on the first attempt).
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub from_provider: String,
    /// Model of the call's first failed attempt ('' on the first attempt).
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub from_model: String,
    /// This is the call's last attempt: its outcome is the call's outcome.
    #[serde(default)]
    pub last: bool,
}

/// What an attempt after a failure tried, relative to the failed attempt.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The call's first attempt.
    First,
    /// The same provider and model again.
    Retry,
    /// Another model of the same provider.
    FallbackModel,
    /// A model of another provider.
    FallbackProvider,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::First => "first",
            Strategy::Retry => "retry",
            Strategy::FallbackModel => "fallback_model",
            Strategy::FallbackProvider => "fallback_provider",
        }
    }

    /// The strategy of an attempt on `provider`/`model` after a failure on
    /// `from_provider`/`from_model`.
    pub fn between(from_provider: &str, from_model: &str, provider: &str, model: &str) -> Self {
        if from_provider != provider {
            Strategy::FallbackProvider
        } else if from_model != model {
            Strategy::FallbackModel
        } else {
            Strategy::Retry
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "first" => Ok(Strategy::First),
            "retry" => Ok(Strategy::Retry),
            "fallback_model" => Ok(Strategy::FallbackModel),
            "fallback_provider" => Ok(Strategy::FallbackProvider),
            other => Err(format!(
                "unknown strategy {other:?} (first, retry, fallback_model, fallback_provider)"
            )),
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn first_attempt() -> u16 {
    1
}

/// The most tokens any one count of one call may carry (10^9): a hundred
/// times the largest context window offered today, and small enough that
/// 9.2 billion such calls still sum inside a signed 64-bit rollup column.
/// Larger counts are not physically possible and are rejected at ingest.
pub const MAX_TOKENS_PER_CALL: u64 = 1_000_000_000;

/// Token and media usage as reported by the provider, in the contract's one
/// token convention (OpenAI's; `docs/ingest-api.md`, "The numbers in an event"):
/// `cached_input_tokens + cache_write_tokens <= input_tokens` and
/// `reasoning_tokens <= output_tokens`. Every producer (the proxy, the
/// simulator, SDKs) converts the provider's own usage to it, and the cost
/// formula reads it so.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// Every input (prompt) token, including those read from or written to
    /// the provider's prompt cache.
    #[serde(default)]
    #[schemars(range(max = 1_000_000_000))]
    pub input_tokens: u64,
    /// `input_tokens` is the reporter's estimate, not the provider's count:
    /// the provider received the prompt (and bills it) but its usage report
    /// never arrived (a stream cancelled, cut or failed before its usage).
    #[serde(default, skip_serializing_if = "is_false")]
    pub input_tokens_estimated: bool,
    /// Every output token, including reasoning (thinking) tokens.
    #[serde(default)]
    #[schemars(range(max = 1_000_000_000))]
    pub output_tokens: u64,
    /// Input tokens read from the provider's prompt cache (part of `input_tokens`).
    #[serde(default)]
    #[schemars(range(max = 1_000_000_000))]
    pub cached_input_tokens: u64,
    /// Input tokens written to the provider's prompt cache (part of
    /// `input_tokens`, disjoint from `cached_input_tokens`).
    #[serde(default)]
    #[schemars(range(max = 1_000_000_000))]
    pub cache_write_tokens: u64,
    /// Reasoning (thinking) tokens (part of `output_tokens`).
    #[serde(default)]
    #[schemars(range(max = 1_000_000_000))]
    pub reasoning_tokens: u64,
    /// Images the call generated (priced per image; images sent in the
    /// prompt are part of `input_tokens`).
    #[serde(default)]
    pub images: u32,
    /// Seconds of audio, millisecond precision.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 86400.0))]
    pub audio_seconds: f64,
}

impl Usage {
    /// Audio seconds (millisecond precision) as whole milliseconds, the
    /// only form any price touches.
    pub fn audio_ms(&self) -> u64 {
        let seconds = self.audio_seconds;
        if !seconds.is_finite() || seconds <= 0.0 {
            return 0;
        }
        // Bounded to 86 400 s by validation (and clamped here), so the cast
        // cannot overflow.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let ms = (seconds.min(86_400.0) * 1000.0).round() as u64;
        ms
    }

    /// The usage a cost is computed from; `completed` calls also pay the
    /// per-request fee.
    pub fn billable(&self, completed: bool) -> crate::BillableUsage {
        crate::BillableUsage {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cached_input_tokens: self.cached_input_tokens,
            cache_write_tokens: self.cache_write_tokens,
            reasoning_tokens: self.reasoning_tokens,
            images: u64::from(self.images),
            audio_ms: self.audio_ms(),
            requests: u64::from(completed),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Chat,
    Completion,
    Embedding,
    Messages,
    Image,
    Audio,
    Moderation,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Error,
    Timeout,
    Cancelled,
    Blocked,
    RateLimited,
}

/// [`Outcome::is_failure`] as SQL over `calls.outcome`: the error counts of
/// the latency rollup (migration 0040), of the latency reads from `calls`,
/// and so of error-rate alerts.
pub const FAILED_OUTCOME_SQL: &str = "outcome NOT IN ('success', 'cancelled')";

impl Outcome {
    /// Whether a call with this outcome counts as an error in error counts
    /// and rates: every outcome but success and cancelled. A cancelled call
    /// is one whose client hung up; nothing says the provider failed it.
    pub fn is_failure(self) -> bool {
        !matches!(self, Outcome::Success | Outcome::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
            Outcome::Blocked => "blocked",
            Outcome::RateLimited => "rate_limited",
        }
    }
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::Completion => "completion",
            Operation::Embedding => "embedding",
            Operation::Messages => "messages",
            Operation::Image => "image",
            Operation::Audio => "audio",
            Operation::Moderation => "moderation",
            Operation::Other => "other",
        }
    }
}

/// The provider's (or gate's) error, when the call did not succeed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderError {
    /// Provider error type, e.g. `rate_limit_error`, `server_error`, `timeout`.
    #[schemars(length(min = 1, max = 128))]
    #[serde(rename = "type")]
    pub error_type: String,
    #[serde(default)]
    #[schemars(length(max = 2048))]
    pub message: String,
    /// The error's signature (`crate::signature::signature` of the call's
    /// provider, `http_status`, this type and message), as the reporter
    /// computed it. Optional: the processors compute it either way, and
    /// ingest rejects a value that differs from theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", regex(pattern = "^[0-9a-f]{16}$"))]
    pub signature: Option<SignatureId>,
}

impl Event {
    /// Kafka message key: events are keyed by team so one team's events keep
    /// their order and land on one partition.
    pub fn partition_key(&self) -> &str {
        &self.team_id
    }

    pub fn is_call(&self) -> bool {
        self.kind.is_call()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sql_of_failed_outcomes_leaves_out_what_is_failure_leaves_out() {
        let all = [
            Outcome::Success,
            Outcome::Error,
            Outcome::Timeout,
            Outcome::Cancelled,
            Outcome::Blocked,
            Outcome::RateLimited,
        ];
        let not_failures: Vec<String> = all
            .iter()
            .filter(|o| !o.is_failure())
            .map(|o| format!("'{}'", o.as_str()))
            .collect();
        assert_eq!(
            FAILED_OUTCOME_SQL,
            format!("outcome NOT IN ({})", not_failures.join(", "))
        );
        assert!(Outcome::Timeout.is_failure());
        assert!(!Outcome::Cancelled.is_failure());
    }
}
