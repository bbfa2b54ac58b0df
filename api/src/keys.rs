//! API key administration for programs: `GET /api/v1/admin/keys` (every
//! key the caller may administer, revoked ones included; never a secret),
//! `POST /api/v1/admin/keys` (`{"name", "role", "org_id"?}`: 201 with the
//! key and its `secret`, the only time the secret is ever shown) and
//! `DELETE /api/v1/admin/keys/{prefix}` (revoke). An `admin` key scoped to
//! an org sees and manages only keys of that org and creates only such
//! keys; another org's key is a 404, as if it did not exist. The list
//! follows the org the request is pinned to (`?org=`).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use tollgate_access::{Identity, OrgScope, ADMINS};
use tollgate_control::keys::{ApiKey, KeyStore};
use tollgate_control::ControlError;

use crate::error::ApiError;
use crate::ApiState;

/// Body of `POST /api/v1/admin/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    pub name: String,
    pub role: String,
    /// The org the key is limited to; absent or `null`: every org (only
    /// an all-orgs admin may create such a key).
    #[serde(default)]
    pub org_id: Option<String>,
}

fn store(state: &ApiState) -> Result<&KeyStore, ApiError> {
    state.keys.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "key administration needs postgres; this server runs without it".into(),
        )
    })
}

/// Whether `identity` administers keys of `org` (`None`: keys of every
/// org, which only an admin of every org administers).
pub fn administers(identity: &Identity, org: Option<&str>) -> bool {
    match org {
        Some(org) => identity.sees(ADMINS, org),
        None => identity.org_scope(ADMINS) == Some(OrgScope::All),
    }
}

/// Whether `key` is listed for `identity`: administered by it, and of the
/// org the request is pinned to, if any.
pub fn lists(identity: &Identity, key: &ApiKey) -> bool {
    administers(identity, key.org_id.as_deref())
        && identity
            .scope()
            .is_none_or(|pinned| key.org_id.as_deref() == Some(pinned))
}

fn control_error(err: ControlError) -> ApiError {
    match err {
        // The store names the org `org`; the body calls it `org_id`.
        ControlError::InvalidInput { field, reason } => ApiError::InvalidField {
            field: if field == "org" { "org_id" } else { field }.into(),
            reason,
        },
        other => ApiError::Unavailable(other.to_string()),
    }
}

/// `GET /api/v1/admin/keys`
pub async fn list(State(state): State<ApiState>, identity: Identity) -> Result<Response, ApiError> {
    let keys = store(&state)?;
    let all = keys.list().await.map_err(control_error)?;
    let visible: Vec<ApiKey> = all.into_iter().filter(|k| lists(&identity, k)).collect();
    Ok(Json(visible).into_response())
}

/// `POST /api/v1/admin/keys`: 201 with `key` and `secret`.
pub async fn create(
    State(state): State<ApiState>,
    identity: Identity,
    body: Result<Json<NewKeyBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let keys = store(&state)?;
    let Json(body) = body.map_err(|e| ApiError::InvalidField {
        field: "body".into(),
        reason: e.body_text(),
    })?;
    if !administers(&identity, body.org_id.as_deref()) {
        return Err(ApiError::Forbidden(format!(
            "{} administers some orgs only; a new key must be scoped to one of them (org_id)",
            identity.who()
        )));
    }
    let created = keys
        .create(&body.name, body.org_id.as_deref(), &body.role)
        .await
        .map_err(control_error)?;
    let key = keys
        .find(&created.prefix)
        .await
        .map_err(control_error)?
        .ok_or_else(|| ApiError::Unavailable("the new key was not found again".into()))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "key": key, "secret": created.secret })),
    )
        .into_response())
}

/// `DELETE /api/v1/admin/keys/{prefix}`: 200 with the revoked key; 404 for
/// an unknown prefix, another org's key or a key revoked before.
pub async fn revoke(
    State(state): State<ApiState>,
    identity: Identity,
    Path(prefix): Path<String>,
) -> Result<Response, ApiError> {
    let keys = store(&state)?;
    let no_such = || ApiError::NoSuch(format!("no active key with prefix {prefix}"));
    let key = keys
        .find(&prefix)
        .await
        .map_err(control_error)?
        .filter(|k| administers(&identity, k.org_id.as_deref()))
        .ok_or_else(no_such)?;
    let revoked = keys
        .revoke_id(key.id)
        .await
        .map_err(control_error)?
        .ok_or_else(no_such)?;
    Ok(Json(json!({ "revoked": revoked })).into_response())
}
