//! `POST /api/v1/audit/erasures`: erase one person's personal data on
//! request (GDPR art. 17) and answer the receipt (`docs/audit.md`,
//! "Erasure"). Body: `{"org": "...", "user": "...", "reason": "..."}`.
//! Roles `compliance` and `admin`; a caller who sees only some orgs gets
//! 404 for another org. The work is `tollgate_control::erasure`, which
//! `tollgate erase` runs too.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tollgate_access::{Identity, AUDITORS};
use tollgate_contract::json_body;
use tollgate_control::erasure::{ErasureError, ErasureRequest};

use crate::error::ApiError;
use crate::ApiState;

/// Largest body read: far above any org, user id and reason.
const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    org: String,
    user: String,
    reason: String,
}

pub async fn erase(
    State(state): State<ApiState>,
    identity: Identity,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: Body =
        json_body::parse(&body, MAX_BODY_BYTES).map_err(|refused| ApiError::InvalidField {
            field: refused.field,
            reason: refused.reason,
        })?;
    identity.require_org(AUDITORS, &body.org, "erase personal data")?;
    let Some(eraser) = &state.erasure else {
        return Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "5")],
            Json(serde_json::json!({"error": "erasure needs postgresql, which was unreachable when the server started"})),
        )
            .into_response());
    };
    let request = ErasureRequest {
        org_id: body.org,
        user_id: body.user,
        reason: body.reason,
        actor: identity.actor.clone(),
    };
    match eraser.erase(&request).await {
        Ok(receipt) => Ok(Json(receipt).into_response()),
        Err(ErasureError::Invalid { field, reason }) => Err(ApiError::InvalidField {
            field: field.into(),
            reason,
        }),
        Err(nothing @ ErasureError::NothingHeld { .. }) => {
            Err(ApiError::NoSuch(nothing.to_string()))
        }
        Err(err) => {
            tracing::error!(%err, "erasure failed");
            Ok((
                StatusCode::SERVICE_UNAVAILABLE,
                [(axum::http::header::RETRY_AFTER, "5")],
                Json(serde_json::json!({ "error": err.to_string() })),
            )
                .into_response())
        }
    }
}
