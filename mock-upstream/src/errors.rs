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
}

impl FailMode {
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().to_ascii_lowercase();
        match text.as_str() {
            "timeout" => Some(Self::Timeout),
            "malformed" => Some(Self::Malformed),
            "disconnect" => Some(Self::Disconnect),
            "stream_error" => Some(Self::StreamError),
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
    }
}
