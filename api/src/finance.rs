//! Finance endpoints: `GET /api/v1/reports/cost` (JSON, or CSV with
//! `format=csv`) over the cost rollup, and `POST /api/v1/admin/prices` to
//! add or correct price versions (admin keys only; each change is also an
//! `admin.price.*` event on the events topic).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use tollgate_processors::cost::admin::PriceAdminError;
use tollgate_processors::cost::NewPrice;
use tollgate_processors::read_models::cost::{parse_params, to_csv};

use crate::error::ApiError;
use crate::ApiState;

/// `GET /api/v1/reports/cost?from=&to=&group_by=&<dimension>=&format=json|csv`
pub async fn cost(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(pairs) = query.map_err(|err| ApiError::InvalidParameter {
        parameter: "query".into(),
        reason: err.body_text(),
    })?;
    let (query, extras) = parse_params(&pairs, Utc::now().date_naive(), &["format"])?;
    let format = extras
        .iter()
        .find(|(n, _)| *n == "format")
        .map(|(_, v)| v.as_str())
        .unwrap_or("json");
    let report = state.read_models.cost(&query).await?;
    match format {
        "json" => Ok(Json(report).into_response()),
        "csv" => Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"cost.csv\"",
                ),
            ],
            to_csv(&report),
        )
            .into_response()),
        other => Err(ApiError::InvalidParameter {
            parameter: "format".into(),
            reason: format!("`{other}` is not json or csv"),
        }),
    }
}

/// Body of `POST /api/v1/admin/prices`: one price or a list.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum PricesBody {
    One(NewPrice),
    Many(Vec<NewPrice>),
}

/// `POST /api/v1/admin/prices` with `Authorization: Bearer <admin key>`.
pub async fn add_prices(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<PricesBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Some(admin) = &state.prices else {
        return Err(ApiError::Unavailable(
            "price administration needs postgres and kafka; this server runs without them".into(),
        ));
    };
    let secret = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized(
            "missing API key: send Authorization: Bearer <admin key>".into(),
        ))?;
    let key = state
        .keys
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("no key store".into()))?
        .verify(secret.trim())
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .ok_or_else(|| ApiError::Unauthorized("invalid API key: unknown or revoked".into()))?;
    if key.role != "admin" {
        return Err(ApiError::Forbidden(format!(
            "key {} has role `{}`; changing prices needs role `admin`",
            key.prefix, key.role
        )));
    }
    let Json(body) = body.map_err(|e| ApiError::InvalidParameter {
        parameter: "body".into(),
        reason: e.body_text(),
    })?;
    let prices = match body {
        PricesBody::One(p) => vec![p],
        PricesBody::Many(p) => p,
    };
    let actor = format!("key:{}", key.prefix);
    let outcome = admin
        .add(&prices, &format!("api:{}", key.prefix), &actor)
        .await
        .map_err(|e| match e {
            PriceAdminError::Invalid { field, reason } => ApiError::InvalidParameter {
                parameter: field.into(),
                reason,
            },
            other => ApiError::Unavailable(other.to_string()),
        })?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(serde_json::json!({
            "added": outcome.added,
            "unchanged": outcome.unchanged,
        })),
    )
        .into_response())
}
