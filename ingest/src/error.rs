//! The ingest crate's one error type. Every variant knows whose fault it is
//! (the client's, an external service's, or ours), whether retrying the same
//! request can help, and which HTTP status it becomes; handlers turn it into a
//! JSON body `{"error": "..."}` with one mapping, here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

pub use tollgate_contract::Fault;
use tollgate_control::ControlError;

use crate::metrics::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("missing API key: send Authorization: Bearer <key>")]
    MissingApiKey,

    #[error("invalid API key: the key is unknown or has been revoked")]
    InvalidApiKey,

    #[error(
        "API key {prefix} has role {role:?}, which may not send events (roles that may: {allowed})"
    )]
    Forbidden {
        prefix: String,
        role: String,
        allowed: String,
    },

    /// The client stopped sending its body for longer than
    /// `ingest.body_read_timeout_secs`.
    #[error("the request body stopped arriving for longer than ingest.body_read_timeout_secs; the connection is closed")]
    BodyReadTimeout,

    /// A `Content-Encoding` the server does not decode.
    #[error("content encoding {encoding:?} is not supported; send gzip or none")]
    UnsupportedEncoding { encoding: String },

    #[error("request body is larger than the limit of {limit} bytes (ingest.max_body_bytes); split the batch")]
    BodyTooLarge { limit: usize },

    /// The body as a whole cannot be used (malformed JSON array, empty, too
    /// many events); `refusal` says which kind of problem it is.
    #[error("{reason}")]
    BadRequest {
        field: String,
        reason: String,
        refusal: Refusal,
    },

    /// The control plane failed (PostgreSQL, the key store, the producer) or
    /// refused its input (`ControlError::InvalidInput` names the field).
    #[error(transparent)]
    Control(#[from] ControlError),

    /// PostgreSQL does not answer and the key was not verified recently
    /// enough to be trusted without it.
    #[error("cannot check the API key right now ({reason}); retry later")]
    KeysUnavailable { reason: String },

    #[error("kafka did not acknowledge any event of the request: {reason}")]
    NothingProduced { reason: String },
}

impl IngestError {
    /// A body that cannot be read or decoded.
    pub fn bad_request(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::refused(Refusal::Malformed, field, reason)
    }

    /// A 400 of another kind than a malformed body (too many events, an
    /// unsupported encoding).
    pub fn refused(refusal: Refusal, field: impl Into<String>, reason: impl Into<String>) -> Self {
        IngestError::BadRequest {
            field: field.into(),
            reason: reason.into(),
            refusal,
        }
    }

    /// Why the request was refused, as `tollgate_ingest_rejected_requests_total`
    /// counts it.
    pub fn refusal(&self) -> Refusal {
        match self {
            IngestError::MissingApiKey | IngestError::InvalidApiKey => Refusal::Unauthenticated,
            IngestError::Forbidden { .. } => Refusal::Forbidden,
            IngestError::BodyTooLarge { .. } => Refusal::TooLarge,
            IngestError::BodyReadTimeout => Refusal::SlowBody,
            IngestError::UnsupportedEncoding { .. } => Refusal::UnsupportedEncoding,
            IngestError::BadRequest { refusal, .. } => *refusal,
            other => match other.fault() {
                Fault::Caller => Refusal::Malformed,
                Fault::External => Refusal::Unavailable,
                Fault::Internal => Refusal::Internal,
            },
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            IngestError::MissingApiKey
            | IngestError::InvalidApiKey
            | IngestError::Forbidden { .. }
            | IngestError::BodyTooLarge { .. }
            | IngestError::BodyReadTimeout
            | IngestError::UnsupportedEncoding { .. }
            | IngestError::BadRequest { .. } => Fault::Caller,
            IngestError::NothingProduced { .. } | IngestError::KeysUnavailable { .. } => {
                Fault::External
            }
            IngestError::Control(err) => err.fault(),
        }
    }

    /// Whether sending the same request again, later, can succeed.
    pub fn is_retryable(&self) -> bool {
        self.fault() == Fault::External
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            IngestError::MissingApiKey | IngestError::InvalidApiKey => StatusCode::UNAUTHORIZED,
            IngestError::Forbidden { .. } => StatusCode::FORBIDDEN,
            IngestError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::BodyReadTimeout => StatusCode::REQUEST_TIMEOUT,
            IngestError::UnsupportedEncoding { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            IngestError::NothingProduced { .. } | IngestError::KeysUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            IngestError::Control(err) => match err.fault() {
                Fault::Caller => StatusCode::BAD_REQUEST,
                Fault::External => StatusCode::SERVICE_UNAVAILABLE,
                Fault::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// The JSON body a client sees: `{"error": ...}`, plus `field` when one
    /// field is to blame and `retryable: true` when retrying can help.
    pub fn to_json(&self) -> serde_json::Value {
        let mut body = json!({ "error": self.to_string() });
        match self {
            IngestError::BadRequest { field, .. } => body["field"] = json!(field),
            IngestError::UnsupportedEncoding { .. } => body["field"] = json!("content-encoding"),
            IngestError::Control(ControlError::InvalidInput { field, .. }) => {
                body["field"] = json!(field)
            }
            _ => {}
        }
        if self.is_retryable() {
            body["retryable"] = json!(true);
        }
        body
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        match self.fault() {
            Fault::Caller => tracing::debug!(%status, err = %self, "request refused"),
            Fault::External => tracing::warn!(%status, err = %self, "dependency failed"),
            Fault::Internal => tracing::error!(%status, err = %self, "internal error"),
        }
        let mut response = (status, Json(self.to_json())).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_are_not_retryable_and_map_to_4xx() {
        let err = IngestError::MissingApiKey;
        assert_eq!(err.fault(), Fault::Caller);
        assert!(!err.is_retryable());
        assert_eq!(err.status_code(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            err.to_json(),
            json!({"error": "missing API key: send Authorization: Bearer <key>"})
        );
        let err = IngestError::BodyTooLarge { limit: 1024 };
        assert_eq!(err.status_code(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(err.to_string().contains("1024 bytes"));
        let err = IngestError::bad_request("body", "no events in the request body");
        assert_eq!(
            err.to_json(),
            json!({"error": "no events in the request body", "field": "body"})
        );
        assert_eq!(err.refusal(), Refusal::Malformed);
        assert_eq!(
            IngestError::InvalidApiKey.refusal(),
            Refusal::Unauthenticated
        );
        assert_eq!(
            IngestError::BodyTooLarge { limit: 1 }.refusal(),
            Refusal::TooLarge
        );
        let err = IngestError::refused(Refusal::TooManyEvents, "body", "3 events");
        assert_eq!(err.status_code(), StatusCode::BAD_REQUEST);
        assert_eq!(err.refusal(), Refusal::TooManyEvents);
    }

    #[test]
    fn external_errors_are_retryable_503() {
        let err = IngestError::Control(ControlError::KafkaUnreachable {
            brokers: "127.0.0.1:9092".into(),
            reason: "timed out".into(),
        });
        assert!(err.is_retryable());
        assert_eq!(err.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(err.to_string().contains("127.0.0.1:9092"));
        assert_eq!(err.to_json()["retryable"], json!(true));
        assert_eq!(err.refusal(), Refusal::Unavailable);
    }
}
