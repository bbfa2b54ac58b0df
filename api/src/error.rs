//! The API's one error type and its mapping to HTTP: whose fault it is
//! decides the status (caller: 4xx; ClickHouse down or not migrated: 503;
//! our bug: 500), and every error body is JSON `{"error": "..."}`, with
//! `"parameter"` naming the offending query parameter, or `"field"` the
//! offending field of a JSON body, on a 400 (and `"parameter": "query"` on
//! a 414, `"field": "body"` on a 413: [`crate::request_size`]).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tollgate_queries::{InvalidParameter, ReadModelError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The caller sent a parameter we cannot use. Not retryable as is.
    #[error("invalid parameter `{parameter}`: {reason}")]
    InvalidParameter { parameter: String, reason: String },
    /// A field of a JSON request body is missing, unknown or unusable (or
    /// `body` when the body itself is not usable JSON). Not retryable as is.
    #[error("invalid field `{field}`: {reason}")]
    InvalidField { field: String, reason: String },
    /// The query string is longer than the API reads (414, naming
    /// `query`).
    #[error("the query string is {bytes} bytes, longer than the {limit} an API request may have")]
    QueryTooLong { bytes: usize, limit: usize },
    /// The request body is larger than the route reads (413, naming
    /// `body`).
    #[error("the request body is too large: {reason}")]
    BodyTooLarge { reason: String },
    /// The request body stopped arriving for longer than the server waits
    /// (408, naming `body`; `tollgate_control::http_server`).
    #[error("the request body stopped arriving for more than {secs} s; send it at once")]
    BodyTimeout { secs: u64 },
    #[error("not found")]
    NotFound,
    /// The thing named in the path does not exist.
    #[error("{0}")]
    NoSuch(String),
    /// The request conflicts with the current state (a stale version, a
    /// name already taken). Retryable after reading the state again.
    #[error("{0}")]
    Conflict(String),
    /// No or an unknown API key.
    #[error("{0}")]
    Unauthorized(String),
    /// The key's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// A service this request needs (PostgreSQL, Kafka) is unavailable.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    ReadModel(#[from] ReadModelError),
}

/// The access rules' refusals as the API answers them.
impl From<tollgate_access::Refusal> for ApiError {
    fn from(refusal: tollgate_access::Refusal) -> Self {
        use tollgate_access::Refusal;
        match refusal {
            Refusal::Unauthenticated(m) => Self::Unauthorized(m),
            Refusal::Forbidden(m) => Self::Forbidden(m),
            Refusal::NotFound(m) => Self::NoSuch(m),
            Refusal::InvalidParameter { parameter, reason } => {
                Self::InvalidParameter { parameter, reason }
            }
            Refusal::Unavailable(m) | Refusal::Misconfigured(m) => Self::Unavailable(m),
        }
    }
}

impl From<InvalidParameter> for ApiError {
    fn from(err: InvalidParameter) -> Self {
        Self::InvalidParameter {
            parameter: err.field,
            reason: err.reason,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidParameter { .. } | Self::InvalidField { .. } => StatusCode::BAD_REQUEST,
            Self::QueryTooLong { .. } => StatusCode::URI_TOO_LONG,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::NotFound | Self::NoSuch(_) => StatusCode::NOT_FOUND,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::ReadModel(err) => {
                StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(err = %self, status = status.as_u16(), "request failed");
        }
        let parameter = match &self {
            Self::InvalidParameter { parameter, .. } => Some(parameter.clone()),
            Self::QueryTooLong { .. } => Some("query".to_string()),
            _ => None,
        };
        let field = match &self {
            Self::InvalidField { field, .. } => Some(field.clone()),
            Self::BodyTooLarge { .. } | Self::BodyTimeout { .. } => Some("body".to_string()),
            _ => None,
        };
        let body = Json(ErrorBody {
            error: self.to_string(),
            parameter,
            field,
        });
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // ClickHouse may come back; tell clients when to try again.
            (status, [(header::RETRY_AFTER, "5")], body).into_response()
        } else {
            (status, body).into_response()
        }
    }
}
