//! Provider credential administration (`docs/proxy.md`, "Provider
//! credentials"): `GET /api/v1/admin/providers` (every stored credential's
//! provider, master key id, fingerprint and times), `GET`, `PUT`
//! (`{"credential": "..."}`) and `DELETE /api/v1/admin/providers/{provider}`.
//! A credential goes in and is never returned: what comes back is the
//! same description the list gives. Credentials serve every org, so only
//! an admin of every org manages them. Re-encrypting under a new master
//! key is the CLI's (`tollgate providers rotate-key`): the new key should
//! not travel over HTTP.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use tollgate_access::Identity;
use tollgate_control::provider_credentials::{CredentialStore, Keyring, SecretsError};

use crate::error::ApiError;
use crate::ApiState;

/// What the provider endpoints need: the table, and the master key that
/// seals what `PUT` stores (`None`: this server has none configured).
#[derive(Clone)]
pub struct ProviderAdmin {
    pub store: CredentialStore,
    pub keyring: Option<Keyring>,
}

/// Body of `PUT /api/v1/admin/providers/{provider}`. `Debug` shows no
/// credential (`SecretString` redacts it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialBody {
    pub credential: SecretString,
}

fn admin<'a>(state: &'a ApiState, identity: &Identity) -> Result<&'a ProviderAdmin, ApiError> {
    if !identity.is_admin() {
        return Err(ApiError::Forbidden(format!(
            "{} may not manage provider credentials: they serve every org, so only an admin of every org manages them",
            identity.who()
        )));
    }
    state.providers.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "provider credential administration needs postgres; this server runs without it".into(),
        )
    })
}

fn secrets_error(err: SecretsError) -> ApiError {
    match err {
        SecretsError::InvalidInput { field, reason } => ApiError::InvalidField {
            field: field.into(),
            reason,
        },
        other => ApiError::Unavailable(other.to_string()),
    }
}

/// `GET /api/v1/admin/providers`
pub async fn list(State(state): State<ApiState>, identity: Identity) -> Result<Response, ApiError> {
    let admin = admin(&state, &identity)?;
    let all = admin.store.list().await.map_err(secrets_error)?;
    Ok(Json(all).into_response())
}

/// `GET /api/v1/admin/providers/{provider}`: 404 when none is stored.
pub async fn get(
    State(state): State<ApiState>,
    identity: Identity,
    Path(provider): Path<String>,
) -> Result<Response, ApiError> {
    let admin = admin(&state, &identity)?;
    let info = admin
        .store
        .get(&provider)
        .await
        .map_err(secrets_error)?
        .ok_or_else(|| ApiError::NoSuch(format!("no credential stored for provider {provider}")))?;
    Ok(Json(info).into_response())
}

/// `PUT /api/v1/admin/providers/{provider}`: store or replace; 200 with
/// the stored credential's description.
pub async fn set(
    State(state): State<ApiState>,
    identity: Identity,
    Path(provider): Path<String>,
    body: Result<Json<CredentialBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let admin = admin(&state, &identity)?;
    let Json(body) = body.map_err(|e| ApiError::InvalidField {
        field: "body".into(),
        reason: e.body_text(),
    })?;
    let keyring = admin.keyring.as_ref().ok_or_else(|| {
        secrets_error(SecretsError::MasterKeyMissing {
            needed_for: format!(
                "encrypt provider {provider}'s credential (give it to `tollgate api`)"
            ),
        })
    })?;
    let (info, _event) = admin
        .store
        .set(keyring, &provider, &body.credential, &identity.actor)
        .await
        .map_err(secrets_error)?;
    tracing::info!(%provider, key_id = %info.key_id, fingerprint = %info.fingerprint, actor = %identity.actor, "provider credential stored");
    Ok(Json(info).into_response())
}

/// `DELETE /api/v1/admin/providers/{provider}`: 200 with what was removed;
/// 404 when none was stored.
pub async fn remove(
    State(state): State<ApiState>,
    identity: Identity,
    Path(provider): Path<String>,
) -> Result<Response, ApiError> {
    let admin = admin(&state, &identity)?;
    let (info, _event) = admin
        .store
        .remove(&provider, &identity.actor)
        .await
        .map_err(secrets_error)?
        .ok_or_else(|| ApiError::NoSuch(format!("no credential stored for provider {provider}")))?;
    tracing::info!(%provider, actor = %identity.actor, "provider credential removed");
    Ok(Json(json!({ "removed": info })).into_response())
}
