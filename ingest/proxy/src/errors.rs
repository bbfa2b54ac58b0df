//! Errors the proxy itself answers with (bad key, bad body, unknown model,
//! a gate's refusal, an upstream that timed out), in the wire format of the
//! API the client called, so an OpenAI or Anthropic SDK raises its usual
//! exception type (`AuthenticationError`, `RateLimitError`, ...).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::observe::Dialect;

/// Tells the OpenAI and Anthropic SDKs not to retry (they obey it before
/// looking at the status or `Retry-After`).
pub const SHOULD_RETRY: &str = "x-should-retry";

/// One refusal: status, provider-style error type, message, Retry-After.
#[derive(Debug, Clone)]
pub struct ProxyError {
    pub status: StatusCode,
    /// OpenAI `error.type` / Anthropic `error.type`.
    pub kind: &'static str,
    /// OpenAI `error.code`.
    pub code: Option<&'static str>,
    /// OpenAI `error.param`: the request member refused, when one is.
    pub param: Option<&'static str>,
    pub message: String,
    pub retry_after_secs: Option<u64>,
    /// Tell the SDKs not to retry (`x-should-retry: false`, which the
    /// OpenAI and Anthropic SDKs read before `Retry-After`): a refusal the
    /// proxy decided and a retry would only meet again (a spent budget, a
    /// denial, an open breaker), however far off its `Retry-After` is. The
    /// Anthropic SDK sleeps whatever `Retry-After` says: a budget's period
    /// end, hours away, held a trial's call for hours.
    pub final_answer: bool,
}

impl ProxyError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            code: None,
            param: None,
            message: message.into(),
            retry_after_secs: None,
            final_answer: false,
        }
    }

    /// Not to be retried by the client (see [`ProxyError::final_answer`]).
    pub fn final_answer(mut self) -> Self {
        self.final_answer = true;
        self
    }

    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The request member refused (OpenAI's `error.param`).
    pub fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub fn retry_after(mut self, secs: Option<u64>) -> Self {
        self.retry_after_secs = secs;
        self
    }

    pub fn missing_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing API key: send your Tollgate key as Authorization: Bearer <key> or x-api-key",
        )
        .code("invalid_api_key")
    }

    pub fn invalid_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid API key: unknown, revoked, or not allowed to use the proxy (role proxy or admin)",
        )
        .code("invalid_api_key")
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("request body is larger than the proxy's limit of {limit} bytes (proxy.max_body_bytes)"),
        )
        .code("request_too_large")
    }

    /// The client stopped sending its body (`proxy.body_read_timeout_secs`).
    pub fn body_read_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "the request body stopped arriving for longer than proxy.body_read_timeout_secs",
        )
        .code("request_timeout")
    }

    pub fn unknown_model(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("the model {model:?} does not exist or no provider of this API serves it"),
        )
        .code("model_not_found")
    }

    /// A path or method the proxy does not serve, naming what it does.
    /// `status`: 404 for a path, 405 for a method.
    pub fn unknown_route(status: StatusCode, method: &str, path: &str) -> Self {
        let path: String = path.chars().take(200).collect();
        Self::new(
            status,
            "invalid_request_error",
            format!(
                "the Tollgate proxy does not serve {method} {path:?}; it serves {}",
                crate::SERVED_ROUTES
            ),
        )
        .code("unknown_url")
    }

    /// A 429 in the providers' rate-limit shape, retried after at least a
    /// second (the per-second guard and the per-minute tiers).
    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
            .code("rate_limit_exceeded")
            .retry_after(Some(retry_after_secs.max(1)))
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", message).retry_after(Some(1))
    }

    /// The Anthropic type matching this error's status.
    fn anthropic_kind(&self) -> &'static str {
        match self.status.as_u16() {
            400 => "invalid_request_error",
            413 => "request_too_large",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            504 => "timeout_error",
            529 => "overloaded_error",
            _ => "api_error",
        }
    }

    pub fn into_response(self, dialect: Dialect) -> Response {
        let body = match dialect {
            Dialect::OpenAi => json!({"error": {
                "message": self.message, "type": self.kind, "param": self.param, "code": self.code
            }}),
            Dialect::Anthropic => json!({"type": "error", "error": {
                "type": self.anthropic_kind(), "message": self.message
            }}),
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert("retry-after", value);
            }
        }
        if self.final_answer {
            response
                .headers_mut()
                .insert(SHOULD_RETRY, HeaderValue::from_static("false"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_the_dialect() {
        let r = ProxyError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "tollgate_throttled",
            "slow down",
        )
        .retry_after(Some(3))
        .into_response(Dialect::Anthropic);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "3");
        assert!(r.headers().get("x-should-retry").is_none());
        let r = ProxyError::new(StatusCode::TOO_MANY_REQUESTS, "tollgate_denied", "spent")
            .retry_after(Some(59_540))
            .final_answer()
            .into_response(Dialect::OpenAi);
        assert_eq!(r.headers()["retry-after"], "59540");
        assert_eq!(r.headers()["x-should-retry"], "false");
        let r = ProxyError::invalid_key().into_response(Dialect::OpenAi);
        assert_eq!(r.status(), 401);
    }

    #[test]
    fn a_refused_member_is_named_in_param_and_413_is_anthropics_own_type() {
        let openai = |e: ProxyError| {
            let r = e.into_response(Dialect::OpenAi);
            let bytes = futures::executor::block_on(axum::body::to_bytes(r.into_body(), 1 << 20));
            serde_json::from_slice::<serde_json::Value>(&bytes.unwrap()).unwrap()
        };
        let body = openai(ProxyError::bad_request("missing `model`").param("model"));
        assert_eq!(body["error"]["param"], "model");
        let body = openai(ProxyError::bad_request("not valid JSON"));
        assert!(body["error"]["param"].is_null());
        assert_eq!(
            ProxyError::too_large(10).anthropic_kind(),
            "request_too_large"
        );
    }
}
