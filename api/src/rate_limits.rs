//! Rate-limit administration: `POST /api/v1/admin/rate_limits` (create or
//! replace the limit of one key, user, team or org), `GET
//! /api/v1/admin/rate_limits` (the limits of the orgs the caller
//! administers) and `DELETE /api/v1/admin/rate_limits/{id}`, for callers
//! with role `admin` (the gate's rule). Each change commits together with
//! its `admin.rate_limit.set` / `admin.rate_limit.deleted` event in the
//! outbox, through the same store calls as `tollgate ratelimits`
//! (`tollgate_control::rate_limits::admin`); the answer comes once that
//! transaction committed, and a relay puts the event on Kafka.

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tollgate_access::{Identity, ADMINS};
use tollgate_control::keys::KeyStore;
use tollgate_control::rate_limits::admin::{parse_body, SetOutcome};
use tollgate_control::rate_limits::{rate_limit_json, InvalidRateLimit, RateLimitStore};
use tollgate_queries::params::{Expected, QueryParams};

use crate::admin::{sees_owner, set_answer};
use crate::alerts::path_id;
use crate::error::ApiError;
use crate::{query_pairs, ApiState};

fn store(state: &ApiState) -> Result<&RateLimitStore, ApiError> {
    state.rate_limits.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "rate-limit administration needs postgres; this server runs without it".into(),
        )
    })
}

fn invalid(e: InvalidRateLimit) -> ApiError {
    ApiError::InvalidField {
        field: e.field,
        reason: e.reason,
    }
}

fn unavailable(e: tollgate_control::ControlError) -> ApiError {
    ApiError::Unavailable(format!("cannot change rate limits: {e}"))
}

/// `GET /api/v1/admin/rate_limits[?org=]`: the limits of the org the
/// request is pinned to (every limit for a caller of every org without
/// `org`), by scope.
pub async fn list(
    State(state): State<ApiState>,
    identity: Identity,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    QueryParams::parse(&query_pairs(query)?, &Expected::names(&["org"]))?;
    let limits = store(&state)?
        .in_org(identity.scope())
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot read rate limits: {e}")))?;
    let body: Vec<_> = limits.iter().map(rate_limit_json).collect();
    Ok(Json(body).into_response())
}

/// `POST /api/v1/admin/rate_limits`: 201 with the new limit, or 200 when
/// it replaced the limit of the same scope; both name the `event_id` of
/// the `admin.rate_limit.set` event. 409 when the scope's limit belongs to
/// an org the caller does not administer.
pub async fn set(
    State(state): State<ApiState>,
    identity: Identity,
    body: Bytes,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let (spec, body_org) = parse_body(&body).map_err(invalid)?;
    let org = body_org
        .or_else(|| spec.org_id.clone())
        .or_else(|| identity.scope().map(str::to_string));
    let spec = match &org {
        Some(org) => {
            // A malformed org is the body's fault before it is a 404.
            let spec = spec.in_org(org).map_err(invalid)?;
            identity.require_org(ADMINS, org, "set rate limits")?;
            spec
        }
        None if identity.is_admin() => spec,
        None => {
            return Err(invalid(InvalidRateLimit::new(
                "org_id",
                "is required: name the org the limit belongs to",
            )))
        }
    };
    let spec = spec
        .naming_key(&KeyStore::new(store.pool().clone()))
        .await
        .map_err(unavailable)?
        .map_err(invalid)?;
    let may_change = |owner: Option<&str>| sees_owner(&identity, ADMINS, owner);
    let set = match store
        .set(&spec, &identity.actor, may_change)
        .await
        .map_err(unavailable)?
    {
        SetOutcome::Stored(set) => set,
        SetOutcome::HeldByOtherOrg(_) => {
            return Err(ApiError::Conflict(format!(
                "{} {} already has a rate limit that belongs to an org you do not administer; \
                 an admin of that org can change it",
                spec.scope_kind.name(),
                spec.scope_id
            )))
        }
    };
    Ok(set_answer(
        "rate_limit",
        rate_limit_json(&set.limit),
        set.previous.as_ref().map(rate_limit_json),
        &set.event,
    ))
}

/// `DELETE /api/v1/admin/rate_limits/{id}`: 200 with the deleted limit and
/// the `event_id` of its `admin.rate_limit.deleted` event; 404 for an
/// unknown id or another org's limit.
pub async fn delete(
    State(state): State<ApiState>,
    identity: Identity,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let id = path_id(id, "rate limit")?;
    let may_change = |owner: Option<&str>| sees_owner(&identity, ADMINS, owner);
    let deleted = store
        .delete(id, &identity.actor, may_change)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::NoSuch(format!("no rate limit with id {id}")))?;
    Ok(Json(json!({
        "deleted": rate_limit_json(&deleted.limit),
        "event_id": deleted.event.event_id,
    }))
    .into_response())
}
