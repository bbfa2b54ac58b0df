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

/// How a finance endpoint answers: `format=json` (the default) or `csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

impl Format {
    fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value.unwrap_or("json") {
            "json" => Ok(Self::Json),
            "csv" => Ok(Self::Csv),
            other => Err(ApiError::InvalidParameter {
                parameter: "format".into(),
                reason: format!("`{other}` is not json or csv"),
            }),
        }
    }

    /// The `format` among the extra parameters `parse_params` passed through.
    fn of_extras(extras: &[(&str, String)]) -> Result<Self, ApiError> {
        Self::parse(
            extras
                .iter()
                .find(|(n, _)| *n == "format")
                .map(|(_, v)| v.as_str()),
        )
    }

    /// `body` as JSON, or `csv(body)` as a download named `filename`.
    fn respond<T: serde::Serialize>(
        self,
        body: &T,
        filename: &str,
        csv: impl FnOnce(&T) -> String,
    ) -> Response {
        match self {
            Self::Json => Json(body).into_response(),
            Self::Csv => (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{filename}\""),
                    ),
                ],
                csv(body),
            )
                .into_response(),
        }
    }
}

/// The query string's pairs, or a 400 naming `query`.
fn query_pairs(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Vec<(String, String)>, ApiError> {
    query
        .map(|Query(pairs)| pairs)
        .map_err(|err| ApiError::InvalidParameter {
            parameter: "query".into(),
            reason: err.body_text(),
        })
}

/// The price catalog from PostgreSQL; `None` when the server runs without it.
async fn price_catalog(state: &ApiState) -> Result<Option<PriceCatalog>, ApiError> {
    match &state.prices {
        Some(admin) => Ok(Some(PriceCatalog::new(admin.store.all().await.map_err(
            |e| ApiError::Unavailable(format!("cannot read the price catalog: {e}")),
        )?))),
        None => Ok(None),
    }
}

/// Every budget, or 503 when the server runs without PostgreSQL.
async fn all_budgets(
    state: &ApiState,
) -> Result<Vec<tollgate_processors::cost::budgets::Budget>, ApiError> {
    let store = state.budgets.as_ref().ok_or_else(|| {
        ApiError::Unavailable("budgets need postgres; this server runs without it".into())
    })?;
    store
        .all()
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot read budgets: {e}")))
}

/// `GET /api/v1/reports/cost?from=&to=&group_by=&<dimension>=&format=json|csv`
pub async fn cost(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(query)?;
    let (query, extras) = parse_params(&pairs, Utc::now().date_naive(), &["format"])?;
    let format = Format::of_extras(&extras)?;
    let report = state.read_models.cost(&query).await?;
    Ok(format.respond(&report, "cost.csv", to_csv))
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
    let pairs = query_pairs(query)?;
    let today = Utc::now().date_naive();
    let (query, extras) = parse_params(&pairs, today, &["format"])?;
    let format = Format::of_extras(&extras)?;
    let catalog = price_catalog(&state).await?;
    let overview = state
        .read_models
        .cost_overview(&query, catalog.as_ref(), today)
        .await?;
    Ok(format.respond(&overview, "cost-top-spenders.csv", overview::top_csv))
}

/// `GET /api/v1/finance/statement?team=&month=YYYY-MM&format=json|csv`
pub async fn statement(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(query)?;
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
    let format = Format::parse(format.as_deref())?;
    let today = Utc::now().date_naive();
    let month = month.unwrap_or_else(|| today.format("%Y-%m").to_string());
    let team = team.unwrap_or_default();
    let query = statement::statement_query(&team, &month)?;
    let report = state.read_models.cost(&query).await?;
    let repricing = state.read_models.statement_repricing(&team, &month).await?;
    let catalog = price_catalog(&state).await?.unwrap_or_default();
    let statement = statement::assemble(&team, &month, &report, &repricing, &catalog, today);
    Ok(format.respond(&statement, "statement.csv", statement::to_csv))
}

/// `GET /api/v1/finance/budgets?format=json|csv`: every budget with the
/// spend of its running period, percent used, state and forecast.
pub async fn budgets(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(query)?;
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
    let format = Format::parse(Some(&format))?;
    let budgets = all_budgets(&state).await?;
    let statuses = state
        .read_models
        .budget_status(&budgets, Utc::now())
        .await?;
    Ok(format.respond(&statuses, "budgets.csv", |s: &Vec<_>| {
        tollgate_processors::cost::budgets::to_csv(s)
    }))
}

/// `GET /api/v1/finance/budgets/{id}/burndown?format=json|csv`: the
/// budget's running period, one point per day (monthly budgets) or hour
/// (daily budgets); 404 for an unknown id.
pub async fn burndown(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(query)?;
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
    let format = Format::parse(format.as_deref())?;
    let id: i64 = id.parse().map_err(|_| ApiError::InvalidParameter {
        parameter: "id".into(),
        reason: format!("`{id}` is not a budget id (an integer)"),
    })?;
    let budget = all_budgets(&state)
        .await?
        .into_iter()
        .find(|b| b.id == id)
        .ok_or(ApiError::NotFound)?;
    let now = tollgate_processors::read_models::burndown::clock(Utc::now());
    let report = state.read_models.budget_burndown(&budget, now).await?;
    Ok(format.respond(
        &report,
        "burndown.csv",
        tollgate_processors::read_models::burndown::to_csv,
    ))
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
