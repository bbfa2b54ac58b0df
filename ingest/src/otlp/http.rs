//! OTLP/HTTP: `POST /v1/traces` with `application/x-protobuf` or
//! `application/json` (OTLP/JSON), optionally `Content-Encoding: gzip`, on
//! the ingest API's listener. The answer is an `ExportTraceServiceResponse`
//! (with its partial success) in the request's encoding; errors are a
//! `google.rpc.Status` in that encoding (JSON: `{"code", "message",
//! "field"}`), with the HTTP status the JSON API gives the same error.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::json;

use super::{export, precount, ExportError};
use crate::content_encoding;
use crate::error::IngestError;
use crate::http::{bearer_token, read_body, verify_secret, IngestState};
use crate::metrics::{Api, Refusal};

/// The two OTLP/HTTP encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// The encoding a `Content-Type` names; `None` for anything else.
    pub fn from_content_type(content_type: Option<&str>) -> Option<Self> {
        let media = content_type?
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// The gRPC code of an HTTP status, for the `code` of an error body.
pub fn grpc_code(status: StatusCode) -> tonic::Code {
    match status {
        StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
        StatusCode::FORBIDDEN => tonic::Code::PermissionDenied,
        StatusCode::PAYLOAD_TOO_LARGE => tonic::Code::ResourceExhausted,
        StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
        s if s.is_server_error() => tonic::Code::Internal,
        _ => tonic::Code::InvalidArgument,
    }
}

fn error_response(
    encoding: Option<Encoding>,
    status: StatusCode,
    message: String,
    field: Option<&str>,
) -> Response {
    let code = grpc_code(status) as i32;
    let mut response = match encoding {
        Some(Encoding::Protobuf) => (
            status,
            [(header::CONTENT_TYPE, Encoding::Protobuf.content_type())],
            RpcStatus { code, message }.encode_to_vec(),
        )
            .into_response(),
        _ => {
            let mut body = json!({ "code": code, "message": message });
            if let Some(field) = field {
                body["field"] = json!(field);
            }
            (status, axum::Json(body)).into_response()
        }
    };
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// The answer to a request refused whole, counted by its reason.
fn ingest_error(state: &IngestState, encoding: Option<Encoding>, err: IngestError) -> Response {
    state.metrics.refused(Api::OtlpHttp, err.refusal());
    let field = match &err {
        IngestError::BadRequest { field, .. } => Some(field.clone()),
        IngestError::UnsupportedEncoding { .. } => Some("content-encoding".to_string()),
        _ => None,
    };
    tracing::info!(%err, "otlp export refused");
    error_response(
        encoding,
        err.status_code(),
        err.to_string(),
        field.as_deref(),
    )
}

/// The ingest key an OTLP exporter sends: `Authorization: Bearer <key>`
/// (`OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20<key>`) or
/// `x-api-key: <key>`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    bearer_token(headers)
        .or_else(|| {
            headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        })
        .filter(|s| !s.is_empty())
}

pub async fn post_traces(
    State(state): State<Arc<IngestState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let Some(encoding) = Encoding::from_content_type(content_type) else {
        state
            .metrics
            .refused(Api::OtlpHttp, Refusal::UnsupportedMediaType);
        return error_response(
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content type {:?} is not OTLP/HTTP; send application/x-protobuf or application/json",
                content_type.unwrap_or("(none)")
            ),
            Some("content-type"),
        );
    };
    let key = match verify_secret(&state, presented_key(&headers)).await {
        Ok(key) => key,
        Err(err) => return ingest_error(&state, Some(encoding), err),
    };
    let raw = match read_body(body, &headers, state.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(err) => return ingest_error(&state, Some(encoding), err),
    };
    let bytes = match content_encoding::decode(&headers, raw, state.max_body_bytes) {
        Ok(bytes) => bytes,
        Err(err) => return ingest_error(&state, Some(encoding), err),
    };
    let request = match decode(encoding, &bytes, &state) {
        Ok(request) => request,
        Err(err) => return ingest_error(&state, Some(encoding), err),
    };
    match export(&state, Api::OtlpHttp, &key, &request).await {
        Ok(partial) => {
            let response = partial.response();
            let body = match encoding {
                Encoding::Protobuf => response.encode_to_vec(),
                // Fields at their default are left out in OTLP/JSON: `{}`
                // when nothing was refused, not `"partialSuccess": null`.
                Encoding::Json => match &response.partial_success {
                    Some(partial) => serde_json::to_vec(&json!({ "partialSuccess": partial })),
                    None => serde_json::to_vec(&json!({})),
                }
                .unwrap_or_default(),
            };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, encoding.content_type())],
                body,
            )
                .into_response()
        }
        Err(ExportError::Ingest(err)) => ingest_error(&state, Some(encoding), err),
        Err(err @ ExportError::Unavailable { .. }) => {
            state.metrics.refused(Api::OtlpHttp, Refusal::Unavailable);
            error_response(
                Some(encoding),
                StatusCode::SERVICE_UNAVAILABLE,
                err.to_string(),
                None,
            )
        }
    }
}

/// Count, then decode, the request; both refusals name the problem.
fn decode(
    encoding: Encoding,
    bytes: &[u8],
    state: &IngestState,
) -> Result<ExportTraceServiceRequest, IngestError> {
    let counts = match encoding {
        Encoding::Protobuf => precount::protobuf(bytes).map_err(|err| {
            IngestError::bad_request(
                "body",
                format!("not a valid OTLP protobuf ExportTraceServiceRequest: {err}"),
            )
        })?,
        Encoding::Json => precount::json(bytes).map_err(|err| {
            IngestError::bad_request(
                "body",
                format!("not a valid OTLP/JSON ExportTraceServiceRequest: {err}"),
            )
        })?,
    };
    super::check_counts(counts, state.max_events_per_request)?;
    match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(bytes).map_err(|err| {
            IngestError::bad_request(
                "body",
                format!("not a valid OTLP protobuf ExportTraceServiceRequest: {err}"),
            )
        }),
        Encoding::Json => json_request(bytes),
    }
}

/// An OTLP/JSON request, a refusal naming the member where decoding
/// stopped as the JSON spells it (`resourceSpans[0].scopeSpans[0].spans[1].spanId`),
/// so the exporter's owner finds the span among hundreds.
fn json_request(bytes: &[u8]) -> Result<ExportTraceServiceRequest, IngestError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let request: ExportTraceServiceRequest =
        serde_path_to_error::deserialize(&mut de).map_err(|err| {
            let path = err.path().to_string();
            let field = if path.is_empty() || path == "." {
                "body".to_string()
            } else {
                path
            };
            IngestError::bad_request(
                field,
                format!(
                    "not a valid OTLP/JSON ExportTraceServiceRequest: {}",
                    err.into_inner()
                ),
            )
        })?;
    de.end().map_err(|err| {
        IngestError::bad_request(
            "body",
            format!("not a valid OTLP/JSON ExportTraceServiceRequest: {err}"),
        )
    })?;
    Ok(request)
}
