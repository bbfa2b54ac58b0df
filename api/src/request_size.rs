//! Requests too large to read, answered like every other API error (JSON
//! naming what was too large) instead of axum's plain text 413 or an
//! empty 414 (a trial found both): every `/api/...` route goes through
//! [`limited`] ([`crate::routes`]).
//!
//! - A query string longer than [`MAX_QUERY_BYTES`] is a 414 naming
//!   `query`, before the route reads it. hyper itself refuses a request
//!   line longer than 64 KiB with an empty 414 before any route runs
//!   (its fixed limit); the limit here is far below that, so a query
//!   string up to hyper's limit gets this answer, and no audit or report
//!   query string needs more than a few KiB.
//! - A body larger than a route reads (axum's 2 MiB, or the route's own
//!   limit) is a 413 naming `body`.
//! - A body that stops arriving for the server's body timeout (30 s,
//!   `tollgate_control::http_server`) is a 408 naming `body`, as on the
//!   ingest API and the proxy.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The longest query string an API route reads, in bytes.
pub const MAX_QUERY_BYTES: usize = 16 * 1024;

/// The most of a refusal's plain text kept in the JSON error.
const MAX_REASON_BYTES: usize = 1024;

/// The middleware ([`tollgate_access::Routes::through`]).
pub fn limited(request: Request, next: Next) -> Pin<Box<dyn Future<Output = Response> + Send>> {
    Box::pin(async move {
        let query_bytes = request.uri().query().map_or(0, str::len);
        if query_bytes > MAX_QUERY_BYTES {
            return ApiError::QueryTooLong {
                bytes: query_bytes,
                limit: MAX_QUERY_BYTES,
            }
            .into_response();
        }
        // A body that stops arriving fails the route's extractor, which
        // answers 400 (a plain-text one for `Json`): the body is watched,
        // and such an answer becomes the 408 the other servers give.
        let stalled = Arc::new(AtomicBool::new(false));
        let request = {
            let stalled = stalled.clone();
            request.map(|body| {
                axum::body::Body::from_stream(body.into_data_stream().map(move |piece| {
                    if let Err(err) = &piece {
                        if tollgate_control::http_server::is_body_timeout(err) {
                            stalled.store(true, Ordering::Relaxed);
                        }
                    }
                    piece
                }))
            })
        };
        let response = next.run(request).await;
        if stalled.load(Ordering::Relaxed) && response.status().is_client_error() {
            return ApiError::BodyTimeout {
                secs: tollgate_control::http_server::DEFAULT_READ_TIMEOUTS
                    .body
                    .as_secs(),
            }
            .into_response();
        }
        if response.status() != StatusCode::PAYLOAD_TOO_LARGE || is_json(&response) {
            return response;
        }
        let text = axum::body::to_bytes(response.into_body(), MAX_REASON_BYTES)
            .await
            .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
            .unwrap_or_default();
        ApiError::BodyTooLarge {
            reason: if text.is_empty() {
                "larger than this route reads".into()
            } else {
                text
            },
        }
        .into_response()
    })
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}
