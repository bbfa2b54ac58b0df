//! Provider-faithful error replies: OpenAI's `{"error": {...}}` and
//! Anthropic's `{"type": "error", "error": {...}}`, with the statuses and
//! headers (Retry-After on 429) the real APIs send.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Which provider's wire format a route speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

/// A failure injected into one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Answer with this HTTP status and the provider's error body.
    Status(u16),
    /// Hold the request open (longer than any sane client timeout).
    Timeout,
    /// Answer 200 with a body that is not valid JSON / SSE.
    Malformed,
    /// Send part of the reply, then drop the connection.
    Disconnect,
    /// Stream part of the reply, then the provider's in-stream `error`
    /// event, and end the stream (no end marker, no usage).
    StreamError,
    /// Answer with one of the real providers' error bodies ([`ErrorShape`]),
    /// its status and its variable parts drawn afresh per request.
    Shape(ErrorShape),
}

impl FailMode {
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().to_ascii_lowercase();
        match text.as_str() {
            "timeout" => Some(Self::Timeout),
            "malformed" => Some(Self::Malformed),
            "disconnect" => Some(Self::Disconnect),
            "stream_error" => Some(Self::StreamError),
            _ if ErrorShape::parse(&text).is_some() => ErrorShape::parse(&text).map(Self::Shape),
            _ => {
                let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
                match digits.parse::<u16>() {
                    Ok(code) if (400..600).contains(&code) => Some(Self::Status(code)),
                    _ => None,
                }
            }
        }
    }
}

fn body(dialect: Dialect, kind: &str, message: &str, code: Option<&str>) -> serde_json::Value {
    match dialect {
        Dialect::OpenAi => {
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
        Dialect::Anthropic => json!({"type": "error", "error": {"type": kind, "message": message}}),
    }
}

/// The SSE event a provider sends when a stream fails after it started.
pub fn stream_error_event(dialect: Dialect) -> axum::body::Bytes {
    let text = match dialect {
        Dialect::OpenAi => format!(
            "data: {}\n\n",
            body(
                dialect,
                "server_error",
                "The server had an error while processing your request.",
                None
            )
        ),
        Dialect::Anthropic => format!(
            "event: error\ndata: {}\n\n",
            body(dialect, "overloaded_error", "Overloaded", None)
        ),
    };
    axum::body::Bytes::from(text)
}

/// Error replies of the real APIs, word for word as they send them, with
/// what varies in them (organization and request ids, token counts, waits,
/// UUIDs) drawn at random for each request: a signature must not depend on
/// them. The body is the shape's own provider format (whatever route it is
/// served on) and the status is the one the provider uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// 429, `tokens` / `rate_limit_exceeded`: "Rate limit reached for gpt-4o
    /// in organization org-… on tokens per min (TPM): Limit 30000, Used …".
    OpenaiTpm,
    /// 429, `requests` / `rate_limit_exceeded`: the same on requests per min.
    OpenaiRpm,
    /// 429, `insufficient_quota`: "You exceeded your current quota, …".
    OpenaiQuota,
    /// 400, `invalid_request_error` / `context_length_exceeded`.
    OpenaiContextLength,
    /// 500, `server_error`, with "the request ID req_…" in the message.
    OpenaiServerErrorRequestId,
    /// 529, `overloaded_error`: "Overloaded".
    AnthropicOverloaded,
    /// 429, `rate_limit_error`, with the organization's UUID and its limit.
    AnthropicRateLimit,
    /// 400, `invalid_request_error`: "prompt is too long: N tokens > M maximum".
    AnthropicPromptTooLong,
    /// 500, `api_error`: "Internal server error".
    AnthropicApiError,
}

impl ErrorShape {
    pub const ALL: [ErrorShape; 9] = [
        ErrorShape::OpenaiTpm,
        ErrorShape::OpenaiRpm,
        ErrorShape::OpenaiQuota,
        ErrorShape::OpenaiContextLength,
        ErrorShape::OpenaiServerErrorRequestId,
        ErrorShape::AnthropicOverloaded,
        ErrorShape::AnthropicRateLimit,
        ErrorShape::AnthropicPromptTooLong,
        ErrorShape::AnthropicApiError,
    ];

    /// The name used in `x-mock-error-shape`, `x-mock-fail`, `fail-<name>`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorShape::OpenaiTpm => "openai_tpm",
            ErrorShape::OpenaiRpm => "openai_rpm",
            ErrorShape::OpenaiQuota => "openai_quota",
            ErrorShape::OpenaiContextLength => "openai_context_length",
            ErrorShape::OpenaiServerErrorRequestId => "openai_server_error_request_id",
            ErrorShape::AnthropicOverloaded => "anthropic_overloaded",
            ErrorShape::AnthropicRateLimit => "anthropic_rate_limit",
            ErrorShape::AnthropicPromptTooLong => "anthropic_prompt_too_long",
            ErrorShape::AnthropicApiError => "anthropic_api_error",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().to_ascii_lowercase();
        // The longest name that prefixes the text, so `fail-openai_tpm-x` works.
        Self::ALL
            .into_iter()
            .filter(|shape| text.starts_with(shape.name()))
            .max_by_key(|shape| shape.name().len())
    }

    pub fn status(self) -> u16 {
        match self {
            ErrorShape::OpenaiTpm
            | ErrorShape::OpenaiRpm
            | ErrorShape::OpenaiQuota
            | ErrorShape::AnthropicRateLimit => 429,
            ErrorShape::OpenaiContextLength | ErrorShape::AnthropicPromptTooLong => 400,
            ErrorShape::OpenaiServerErrorRequestId | ErrorShape::AnthropicApiError => 500,
            ErrorShape::AnthropicOverloaded => 529,
        }
    }

    fn dialect(self) -> Dialect {
        match self {
            ErrorShape::AnthropicOverloaded
            | ErrorShape::AnthropicRateLimit
            | ErrorShape::AnthropicPromptTooLong
            | ErrorShape::AnthropicApiError => Dialect::Anthropic,
            _ => Dialect::OpenAi,
        }
    }

    /// (type, message, code) with fresh variable parts.
    pub fn error(self) -> (&'static str, String, Option<&'static str>) {
        let n = |lo: u64, hi: u64| rand::random_range(lo..=hi);
        match self {
            ErrorShape::OpenaiTpm => {
                let used = n(20_000, 29_999);
                (
                    "tokens",
                    format!(
                        "Rate limit reached for gpt-4o in organization org-{} on tokens per min (TPM): Limit 30000, Used {used}, Requested {}. Please try again in {}.{:03}s. Visit https://platform.openai.com/account/rate-limits to learn more.",
                        random_id(24),
                        n(500, 12_000),
                        n(0, 9),
                        n(0, 999)
                    ),
                    Some("rate_limit_exceeded"),
                )
            }
            ErrorShape::OpenaiRpm => (
                "requests",
                format!(
                    "Rate limit reached for gpt-4o in organization org-{} on requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again in {}ms. Visit https://platform.openai.com/account/rate-limits to learn more.",
                    random_id(24),
                    n(20, 999)
                ),
                Some("rate_limit_exceeded"),
            ),
            ErrorShape::OpenaiQuota => (
                "insufficient_quota",
                "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.".to_string(),
                Some("insufficient_quota"),
            ),
            ErrorShape::OpenaiContextLength => (
                "invalid_request_error",
                format!(
                    "This model's maximum context length is 128000 tokens. However, your messages resulted in {} tokens. Please reduce the length of the messages.",
                    n(128_001, 400_000)
                ),
                Some("context_length_exceeded"),
            ),
            ErrorShape::OpenaiServerErrorRequestId => (
                "server_error",
                format!(
                    "The server had an error while processing your request. Sorry about that! You can retry your request, or contact us through our help center at help.openai.com if the error persists. (Please include the request ID req_{} in your message.)",
                    random_hex(32)
                ),
                None,
            ),
            ErrorShape::AnthropicOverloaded => ("overloaded_error", "Overloaded".to_string(), None),
            ErrorShape::AnthropicRateLimit => (
                "rate_limit_error",
                format!(
                    "This request would exceed the rate limit for your organization ({}) of {} input tokens per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss your options for a rate limit increase.",
                    random_uuid(),
                    group_thousands(n(2, 80) * 10_000)
                ),
                None,
            ),
            ErrorShape::AnthropicPromptTooLong => (
                "invalid_request_error",
                format!(
                    "prompt is too long: {} tokens > 200000 maximum",
                    n(200_001, 400_000)
                ),
                None,
            ),
            ErrorShape::AnthropicApiError => ("api_error", "Internal server error".to_string(), None),
        }
    }

    /// The whole reply: the shape's status, body and the provider's headers
    /// (request id; on a 429 the wait hints and rate-limit headers).
    pub fn response(self, hint: RetryHint<'_>) -> Response {
        let (kind, message, code) = self.error();
        let dialect = self.dialect();
        let mut value = body(dialect, kind, &message, code);
        let request_id = format!("req_{}", random_id(24));
        if dialect == Dialect::Anthropic {
            value["request_id"] = json!(request_id);
        } else if self == ErrorShape::OpenaiContextLength {
            value["error"]["param"] = json!("messages");
        }
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(value)).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            rate_limit_headers(&mut response, dialect, hint);
        }
        let name = match dialect {
            Dialect::OpenAi => "x-request-id",
            Dialect::Anthropic => "request-id",
        };
        if let Ok(v) = request_id.parse() {
            response.headers_mut().insert(name, v);
        }
        response
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn random_id(len: usize) -> String {
    (0..len)
        .map(|_| char::from(ALNUM[rand::random_range(0..ALNUM.len())]))
        .collect()
}

fn random_hex(len: usize) -> String {
    (0..len)
        .map(|_| char::from(b"0123456789abcdef"[rand::random_range(0..16)]))
        .collect()
}

fn random_uuid() -> String {
    let h = random_hex(32);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..]
    )
}

/// `50000` -> `50,000`, as Anthropic writes its limits.
fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A 429's wait hints and the provider's rate-limit headers.
fn rate_limit_headers(response: &mut Response, dialect: Dialect, hint: RetryHint<'_>) {
    let headers = response.headers_mut();
    let value = hint.seconds.unwrap_or("1");
    if let Ok(value) = value.parse() {
        headers.insert("retry-after", value);
    }
    if let Some(Ok(value)) = hint.millis.map(str::parse) {
        headers.insert("retry-after-ms", value);
    }
    let limits: [(&'static str, &'static str); 3] = match dialect {
        Dialect::OpenAi => [
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "1s"),
        ],
        Dialect::Anthropic => [
            ("anthropic-ratelimit-requests-limit", "60"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2026-01-01T00:00:01Z"),
        ],
    };
    for (name, value) in limits {
        headers.insert(name, axum::http::HeaderValue::from_static(value));
    }
}

/// How long a client should wait before retrying an injected 429: seconds
/// (`retry-after`) and, when given, milliseconds (`retry-after-ms`, which
/// the OpenAI and Anthropic SDKs prefer).
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryHint<'a> {
    pub seconds: Option<&'a str>,
    pub millis: Option<&'a str>,
}

/// The error reply for an injected status. A 429 carries the wait hints and
/// the provider's rate-limit headers (`x-ratelimit-*` for OpenAI,
/// `anthropic-ratelimit-*` for Anthropic).
pub fn status_error(dialect: Dialect, status: u16, hint: RetryHint<'_>) -> Response {
    let (kind, message, code) = match (dialect, status) {
        (Dialect::OpenAi, 429) => (
            "requests",
            "Rate limit reached for requests (mock-upstream).",
            Some("rate_limit_exceeded"),
        ),
        (Dialect::OpenAi, 500) => (
            "server_error",
            "The server had an error while processing your request. Sorry about that!",
            None,
        ),
        (Dialect::OpenAi, 503) => (
            "server_error",
            "The engine is currently overloaded, please try again later.",
            None,
        ),
        (Dialect::OpenAi, 504) => ("timeout", "Request timed out.", None),
        (Dialect::OpenAi, 401) => (
            "invalid_request_error",
            "Incorrect API key provided.",
            Some("invalid_api_key"),
        ),
        (Dialect::OpenAi, _) => (
            "invalid_request_error",
            "Mock-upstream injected error.",
            None,
        ),
        (Dialect::Anthropic, 429) => (
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit (mock-upstream).",
            None,
        ),
        (Dialect::Anthropic, 529) => ("overloaded_error", "Overloaded", None),
        (Dialect::Anthropic, 401) => ("authentication_error", "invalid x-api-key", None),
        (Dialect::Anthropic, s) if s >= 500 => ("api_error", "Internal server error", None),
        (Dialect::Anthropic, _) => (
            "invalid_request_error",
            "Mock-upstream injected error.",
            None,
        ),
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(body(dialect, kind, message, code))).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        rate_limit_headers(&mut response, dialect, hint);
    }
    if dialect == Dialect::Anthropic {
        response.headers_mut().insert(
            "request-id",
            axum::http::HeaderValue::from_static("req_mock"),
        );
    }
    response
}

pub fn unauthorized(dialect: Dialect) -> Response {
    status_error(dialect, 401, RetryHint::default())
}

pub fn invalid_json(dialect: Dialect) -> Response {
    let message = match dialect {
        Dialect::OpenAi => "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
        Dialect::Anthropic => "There was an issue with your request body: it is not valid JSON.",
    };
    (
        StatusCode::BAD_REQUEST,
        Json(body(dialect, "invalid_request_error", message, None)),
    )
        .into_response()
}

pub fn missing_field(dialect: Dialect, field: &str) -> Response {
    let message = match dialect {
        Dialect::OpenAi => format!("you must provide a {field} parameter"),
        Dialect::Anthropic => format!("{field}: Field required"),
    };
    (
        StatusCode::BAD_REQUEST,
        Json(body(dialect, "invalid_request_error", &message, None)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!(FailMode::parse("429"), Some(FailMode::Status(429)));
        assert_eq!(FailMode::parse("503-x"), Some(FailMode::Status(503)));
        assert_eq!(FailMode::parse("Timeout"), Some(FailMode::Timeout));
        assert_eq!(FailMode::parse("stream_error"), Some(FailMode::StreamError));
        assert_eq!(FailMode::parse("200"), None);
        assert_eq!(FailMode::parse("nope"), None);
        assert_eq!(
            FailMode::parse("openai_tpm"),
            Some(FailMode::Shape(ErrorShape::OpenaiTpm))
        );
        assert_eq!(
            FailMode::parse("anthropic_overloaded-2"),
            Some(FailMode::Shape(ErrorShape::AnthropicOverloaded))
        );
    }

    #[test]
    fn shapes_parse_by_name_and_vary_their_numbers_and_ids() {
        // That they keep one signature is checked through the proxy
        // (tests/it/proxy_recovery.rs).
        for shape in ErrorShape::ALL {
            assert_eq!(ErrorShape::parse(shape.name()), Some(shape));
            let (kind, a, _) = shape.error();
            let (_, b, _) = shape.error();
            assert!(!kind.is_empty());
            if a.chars().any(|c| c.is_ascii_digit()) {
                assert_ne!(a, b, "{}: nothing varies", shape.name());
            }
        }
        assert_eq!(group_thousands(50_000), "50,000");
        assert_eq!(group_thousands(800_000), "800,000");
    }
}
