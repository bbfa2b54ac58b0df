//! Finance endpoints: `GET /api/v1/reports/cost` (JSON, or CSV with
//! `format=csv`) over the cost rollups (per tag with `group_by=tag:<key>`
//! or `tag.<key>=`), `GET /api/v1/reports/cost/overview` (top spenders,
//! cache savings and month-end forecast of the same period and filters),
//! `GET /api/v1/finance/statement` (a team's monthly
//! statement), `GET /api/v1/finance/budgets`,
//! `GET /api/v1/finance/budgets/{id}/burndown` (one budget's running period
//! bucket by bucket), and `POST /api/v1/admin/prices` to add or correct
//! price versions (admin keys only; each change is also an `admin.price.*`
//! event on the events topic).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use tollgate_processors::cost::admin::PriceAdminError;
use tollgate_processors::cost::NewPrice;
use tollgate_processors::cost::PriceCatalog;
use tollgate_processors::read_models::cost::{parse_params, to_csv};
use tollgate_processors::read_models::{overview, statement};

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

/// `GET /api/v1/reports/cost/overview?<the cost report's parameters>&format=json|csv`:
/// the five users and keys with the highest cost, the savings from cached
/// input and the month-end forecast for the report's period and filters.
/// `group_by` is accepted (so a report's query string can be reused) and
/// only matters through the tag key it may name. CSV: the top spenders.
pub async fn cost_overview(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(pairs) = query.map_err(|err| ApiError::InvalidParameter {
        parameter: "query".into(),
        reason: err.body_text(),
    })?;
    let today = Utc::now().date_naive();
    let (query, extras) = parse_params(&pairs, today, &["format"])?;
    let format = extras
        .iter()
        .find(|(n, _)| *n == "format")
        .map(|(_, v)| v.as_str())
        .unwrap_or("json");
    if format != "json" && format != "csv" {
        return Err(ApiError::InvalidParameter {
            parameter: "format".into(),
            reason: format!("`{format}` is not json or csv"),
        });
    }
    let catalog = match &state.prices {
        Some(admin) => Some(PriceCatalog::new(admin.store.all().await.map_err(|e| {
            ApiError::Unavailable(format!("cannot read the price catalog: {e}"))
        })?)),
        None => None,
    };
    let overview = state
        .read_models
        .cost_overview(&query, catalog.as_ref(), today)
        .await?;
    if format == "csv" {
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"cost-top-spenders.csv\"",
                ),
            ],
            overview::top_csv(&overview),
        )
            .into_response());
    }
    Ok(Json(overview).into_response())
}

/// `GET /api/v1/finance/statement?team=&month=YYYY-MM&format=json|csv`
pub async fn statement(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(pairs) = query.map_err(|err| ApiError::InvalidParameter {
        parameter: "query".into(),
        reason: err.body_text(),
    })?;
    let mut team = None;
    let mut month = None;
    let mut format = None;
    for (name, value) in pairs {
        let slot = match name.as_str() {
            "team" => &mut team,
            "month" => &mut month,
            "format" => &mut format,
            _ => {
                return Err(ApiError::InvalidParameter {
                    parameter: name,
                    reason: "unknown parameter; expected team, month, format".into(),
                })
            }
        };
        if slot.replace(value).is_some() {
            return Err(ApiError::InvalidParameter {
                parameter: name,
                reason: "given more than once".into(),
            });
        }
    }
    let today = Utc::now().date_naive();
    let month = month.unwrap_or_else(|| today.format("%Y-%m").to_string());
    let team = team.unwrap_or_default();
    let query = statement::statement_query(&team, &month)?;
    let report = state.read_models.cost(&query).await?;
    let catalog =
        match &state.prices {
            Some(admin) => PriceCatalog::new(admin.store.all().await.map_err(|e| {
                ApiError::Unavailable(format!("cannot read the price catalog: {e}"))
            })?),
            None => PriceCatalog::default(),
        };
    let statement = statement::assemble(&team, &month, &report, &catalog, today);
    match format.as_deref().unwrap_or("json") {
        "json" => Ok(Json(statement).into_response()),
        "csv" => Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"statement.csv\"",
                ),
            ],
            statement::to_csv(&statement),
        )
            .into_response()),
        other => Err(ApiError::InvalidParameter {
            parameter: "format".into(),
            reason: format!("`{other}` is not json or csv"),
        }),
    }
}

/// `GET /api/v1/finance/budgets?format=json|csv`: every budget with the
/// spend of its running period, percent used, state and forecast.
pub async fn budgets(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(pairs) = query.map_err(|err| ApiError::InvalidParameter {
        parameter: "query".into(),
        reason: err.body_text(),
    })?;
    let mut format = "json".to_string();
    for (name, value) in pairs {
        match name.as_str() {
            "format" => format = value,
            _ => {
                return Err(ApiError::InvalidParameter {
                    parameter: name,
                    reason: "unknown parameter; expected format".into(),
                })
            }
        }
    }
    let store = state.budgets.as_ref().ok_or_else(|| {
        ApiError::Unavailable("budgets need postgres; this server runs without it".into())
    })?;
    let budgets = store
        .all()
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot read budgets: {e}")))?;
    let statuses = state
        .read_models
        .budget_status(&budgets, Utc::now())
        .await?;
    match format.as_str() {
        "json" => Ok(Json(statuses).into_response()),
        "csv" => Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"budgets.csv\"",
                ),
            ],
            tollgate_processors::cost::budgets::to_csv(&statuses),
        )
            .into_response()),
        other => Err(ApiError::InvalidParameter {
            parameter: "format".into(),
            reason: format!("`{other}` is not json or csv"),
        }),
    }
}

/// `GET /api/v1/finance/budgets/{id}/burndown?format=json|csv`: the
/// budget's running period, one point per day (monthly budgets) or hour
/// (daily budgets); 404 for an unknown id.
pub async fn burndown(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(pairs) = query.map_err(|err| ApiError::InvalidParameter {
        parameter: "query".into(),
        reason: err.body_text(),
    })?;
    let mut format = None;
    for (name, value) in pairs {
        match name.as_str() {
            "format" if format.is_none() => format = Some(value),
            "format" => {
                return Err(ApiError::InvalidParameter {
                    parameter: name,
                    reason: "given more than once".into(),
                })
            }
            _ => {
                return Err(ApiError::InvalidParameter {
                    parameter: name,
                    reason: "unknown parameter; expected format".into(),
                })
            }
        }
    }
    let format = format.unwrap_or_else(|| "json".into());
    if format != "json" && format != "csv" {
        return Err(ApiError::InvalidParameter {
            parameter: "format".into(),
            reason: format!("`{format}` is not json or csv"),
        });
    }
    let id: i64 = id.parse().map_err(|_| ApiError::InvalidParameter {
        parameter: "id".into(),
        reason: format!("`{id}` is not a budget id (an integer)"),
    })?;
    let store = state.budgets.as_ref().ok_or_else(|| {
        ApiError::Unavailable("budgets need postgres; this server runs without it".into())
    })?;
    let budget = store
        .all()
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot read budgets: {e}")))?
        .into_iter()
        .find(|b| b.id == id)
        .ok_or(ApiError::NotFound)?;
    let now = tollgate_processors::read_models::burndown::clock(Utc::now());
    let report = state.read_models.budget_burndown(&budget, now).await?;
    if format == "csv" {
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"burndown.csv\"",
                ),
            ],
            tollgate_processors::read_models::burndown::to_csv(&report),
        )
            .into_response());
    }
    Ok(Json(report).into_response())
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
            "price administration needs postgres; this server runs without it".into(),
        ));
    };
    let key = crate::admin::require_admin(&state, &headers, "changing prices").await?;
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
        .add(&prices, &format!("api:{}", key.prefix), Some(&actor))
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
