//! The status a page answers with when its read of ClickHouse failed
//! ([`ReadModelError::http_status`]): 503 while ClickHouse is away, 422 or
//! 504 for a read over its limits (the page says to ask for less), 500,
//! logged, for a fault of ours.

use axum::http::StatusCode;
use tollgate_queries::ReadModelError;

/// `err`'s status; a fault of ours is logged with the `page` it broke.
pub(crate) fn status(err: &ReadModelError, page: &'static str) -> StatusCode {
    let status =
        StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(%err, page, "page query failed");
    }
    status
}
