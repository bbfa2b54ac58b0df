//! Failed calls of real error shapes, with the parts a provider varies
//! (ids, numbers, durations, request ids) drawn at random, and the
//! recovery facts of calls that retried or fell back.

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, RngCore};
use tollgate_contract::signature::{signature, ErrorInput, SignatureId};
use tollgate_contract::{Event, Outcome, ProviderError, Recovery, Strategy, Usage};

use super::events::call_event;

/// One failure shape: where it happens and how its message is made.
#[derive(Clone, Copy)]
pub struct Shape {
    pub name: &'static str,
    pub provider: &'static str,
    pub model: &'static str,
    pub status: u16,
    pub error_type: &'static str,
    pub message: fn(&mut StdRng) -> String,
}

fn alnum(rng: &mut StdRng, n: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..n)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

fn hex(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
        .collect()
}

fn openai_tpm(rng: &mut StdRng) -> String {
    let model = ["gpt-4o", "gpt-4o-mini", "gpt-4.1"][rng.random_range(0..3)];
    let wait = match rng.random_range(0..4) {
        0 => format!("{}.{}s", rng.random_range(1..9), rng.random_range(100..999)),
        1 => format!("{}ms", rng.random_range(10..999)),
        2 => format!("{}m{}s", rng.random_range(1..9), rng.random_range(0..59)),
        _ => format!("{}s", rng.random_range(1..60)),
    };
    format!(
        "Rate limit reached for {model} in organization org-{} on tokens per min (TPM): Limit {}, Used {}, Requested {}. Please try again in {wait}. Visit https://platform.openai.com/account/rate-limits to learn more.",
        alnum(rng, 24),
        [30000, 450000, 10000][rng.random_range(0..3)],
        rng.random_range(1000..30000),
        rng.random_range(1..5000),
    )
}

fn context_length(rng: &mut StdRng) -> String {
    let max = [8192, 128000, 16385][rng.random_range(0..3)];
    format!(
        "This model's maximum context length is {max} tokens. However, your messages resulted in {} tokens. Please reduce the length of the messages.",
        max + rng.random_range(1..50_000)
    )
}

fn server_error(rng: &mut StdRng) -> String {
    format!(
        "The server had an error while processing your request. Sorry about that! You can retry your request, or contact us through our help center at help.openai.com if the error persists. (Please include the request ID req_{} in your message.)",
        hex(rng, 32)
    )
}

fn timeout(rng: &mut StdRng) -> String {
    format!(
        "no response from upstream within {} ms",
        [30000, 60000, 12500][rng.random_range(0..3)]
    )
}

fn disconnect(rng: &mut StdRng) -> String {
    format!(
        "upstream closed the connection after {} bytes ({} events)",
        rng.random_range(1..100_000),
        rng.random_range(1..500)
    )
}

fn google_quota(rng: &mut StdRng) -> String {
    format!(
        "Quota exceeded for quota metric 'Generate Content API requests per minute' and limit 'GenerateContent request limit per minute for a region' of service 'generativelanguage.googleapis.com' for consumer 'project_number:{}'.",
        rng.random_range(100_000_000_000u64..999_999_999_999)
    )
}

/// The shapes of the tests: each must be exactly one signature.
pub const SHAPES: [Shape; 6] = [
    Shape {
        name: "openai TPM rate limit",
        provider: "openai",
        model: "gpt-4o",
        status: 429,
        error_type: "tokens",
        message: openai_tpm,
    },
    Shape {
        name: "anthropic overloaded",
        provider: "anthropic",
        model: "claude-3-5-sonnet-20241022",
        status: 529,
        error_type: "overloaded_error",
        message: |_| "Overloaded".to_string(),
    },
    Shape {
        name: "context length exceeded",
        provider: "openai",
        model: "gpt-4o",
        status: 400,
        error_type: "invalid_request_error",
        message: context_length,
    },
    Shape {
        name: "500 with a request id",
        provider: "openai",
        model: "gpt-4o-mini",
        status: 500,
        error_type: "server_error",
        message: server_error,
    },
    Shape {
        name: "timeout",
        provider: "openai",
        model: "gpt-4o",
        status: 0,
        error_type: "timeout",
        message: timeout,
    },
    Shape {
        name: "disconnect",
        provider: "anthropic",
        model: "claude-3-5-haiku-20241022",
        status: 200,
        error_type: "upstream_disconnected",
        message: disconnect,
    },
];

/// A shape that appears only later in a test.
pub const LATE_SHAPE: Shape = Shape {
    name: "google quota",
    provider: "google",
    model: "gemini-1.5-pro",
    status: 429,
    error_type: "RESOURCE_EXHAUSTED",
    message: google_quota,
};

/// Three signatures masking keeps apart (the model is a plain word) that
/// the Drain tree merges into one pattern.
pub const MERGED_FAMILY: [&str; 3] = [
    "The model davinci does not exist or you do not have access to it.",
    "The model babbage does not exist or you do not have access to it.",
    "The model curie does not exist or you do not have access to it.",
];

/// The signature of a message of `shape`.
pub fn shape_signature(shape: &Shape, message: &str) -> SignatureId {
    signature(&ErrorInput {
        provider: shape.provider,
        http_status: shape.status,
        error_type: shape.error_type,
        message,
    })
    .id
}

/// A failed call of `team` with `shape`'s error, a fresh message.
pub fn failed(team: &str, shape: &Shape, rng: &mut StdRng, at: DateTime<Utc>) -> Event {
    let message = (shape.message)(rng);
    failed_with(team, shape, &message, at)
}

/// A failed call of `team` with `shape`'s class and `message`.
pub fn failed_with(team: &str, shape: &Shape, message: &str, at: DateTime<Utc>) -> Event {
    let mut event = call_event(
        team,
        shape.provider,
        shape.model,
        at,
        Usage::default(),
        Outcome::Error,
    );
    if let Some(call) = event.call.as_mut() {
        call.http_status = shape.status;
        call.duration_ms = 1 + (rand::rng().next_u32() % 2000);
        call.error = Some(ProviderError {
            error_type: shape.error_type.into(),
            message: message.into(),
            signature: None,
        });
    }
    event
}

/// The attempt `sequence` of a call whose first attempt failed with `from`
/// on `from_provider`/`from_model`, on `provider`/`model`.
pub fn attempt(
    mut event: Event,
    sequence: u16,
    wait_ms: u32,
    from: SignatureId,
    (from_provider, from_model): (&str, &str),
    last: bool,
) -> Event {
    if let Some(call) = event.call.as_mut() {
        let strategy = if sequence == 1 {
            Strategy::First
        } else {
            Strategy::between(from_provider, from_model, &call.provider, &call.model)
        };
        call.recovery = Some(Recovery {
            sequence,
            wait_ms: if sequence == 1 { 0 } else { wait_ms },
            strategy,
            from_signature: (sequence > 1).then_some(from),
            from_provider: if sequence > 1 {
                from_provider.into()
            } else {
                String::new()
            },
            from_model: if sequence > 1 {
                from_model.into()
            } else {
                String::new()
            },
            last,
        });
    }
    event
}

/// Events as the (key, JSON) pairs `kafka::produce_all` sends.
pub fn messages(events: &[Event]) -> Vec<(String, Vec<u8>)> {
    events
        .iter()
        .map(|e| {
            (
                e.partition_key().to_string(),
                serde_json::to_vec(e).unwrap(),
            )
        })
        .collect()
}
