//! The audit endpoints: `GET /api/v1/audit/public-key` (open: the key that
//! signs checkpoints), `GET /api/v1/audit/verify?org=&team=` and
//! `GET /api/v1/audit/export?org=&team=` (NDJSON). The last two need an API
//! key (`Authorization: Bearer`) with role `compliance` or `admin`; a key
//! scoped to an org gets 404 for any other org, as if it did not exist.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tollgate_ingest::keys::{ApiKey, KeyStore};
use tollgate_processors::audit::checkpoint::parse_public_key;
use tollgate_processors::audit::trail::export;
use tollgate_processors::audit::verify::verify;
use tollgate_processors::clickhouse::client;
use tollgate_processors::config::ClickHouseConfig;

/// Roles that may read audit trails.
pub const AUDIT_ROLES: [&str; 2] = ["compliance", "admin"];

/// What the audit endpoints need.
#[derive(Clone)]
pub struct AuditState {
    pub clickhouse: ClickHouseConfig,
    /// Hex Ed25519 public key of the configured checkpoint signing key.
    pub public_key: Option<String>,
    /// API keys; `None` when PostgreSQL was unreachable at start (503).
    pub keys: Option<KeyStore>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrailParams {
    pub org: String,
    #[serde(default)]
    pub team: Option<String>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// The caller's key, if it may read `org`'s trail; the response otherwise.
pub async fn authorize(
    keys: Option<&KeyStore>,
    headers: &HeaderMap,
    org: &str,
) -> Result<ApiKey, Response> {
    let Some(keys) = keys else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "api keys are unavailable (postgresql was unreachable when the server started)",
        ));
    };
    let secret = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            error(
                StatusCode::UNAUTHORIZED,
                "missing API key: send Authorization: Bearer <key>",
            )
        })?;
    let key = match keys.verify(secret).await {
        Ok(Some(key)) => key,
        Ok(None) => return Err(error(StatusCode::UNAUTHORIZED, "invalid API key")),
        Err(err) => {
            tracing::error!(%err, "cannot check an API key");
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot check the API key",
            ));
        }
    };
    if !AUDIT_ROLES.contains(&key.role.as_str()) {
        return Err(error(
            StatusCode::FORBIDDEN,
            format!(
                "role {} may not read audit trails (compliance or admin may)",
                key.role
            ),
        ));
    }
    if key.org_id.as_deref().is_some_and(|scope| scope != org) {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no audit trail for org {org}"),
        ));
    }
    Ok(key)
}

pub async fn public_key(State(state): State<AuditState>) -> Response {
    match &state.public_key {
        Some(key) => Json(serde_json::json!({
            "algorithm": "ed25519",
            "public_key": key,
        }))
        .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "no checkpoint signing key is configured",
        ),
    }
}

pub async fn verify_trail(
    State(state): State<AuditState>,
    headers: HeaderMap,
    Query(params): Query<TrailParams>,
) -> Response {
    if let Err(response) = authorize(state.keys.as_ref(), &headers, &params.org).await {
        return response;
    }
    let trusted = state.public_key.as_deref().and_then(parse_public_key);
    let ch = client(&state.clickhouse);
    match verify(&ch, &params.org, params.team.as_deref(), trusted.as_ref()).await {
        Ok(report) => Json(report).into_response(),
        Err(err) => {
            tracing::error!(%err, "audit verification failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the audit chain: {err}"),
            )
        }
    }
}

pub async fn export_trail(
    State(state): State<AuditState>,
    headers: HeaderMap,
    Query(params): Query<TrailParams>,
) -> Response {
    if let Err(response) = authorize(state.keys.as_ref(), &headers, &params.org).await {
        return response;
    }
    let ch = client(&state.clickhouse);
    // Buffered: an export that fails half-way must not look like a short one.
    let mut body: Vec<u8> = Vec::new();
    match export(
        &ch,
        &params.org,
        params.team.as_deref(),
        state.public_key.as_deref(),
        &mut body,
    )
    .await
    {
        Ok(_) => (
            [
                (header::CONTENT_TYPE, "application/x-ndjson"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"audit-export.ndjson\"",
                ),
            ],
            body,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(%err, "audit export failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot export the audit chain: {err}"),
            )
        }
    }
}
