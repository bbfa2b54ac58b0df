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
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use tollgate_contract::catalog::PriceCatalog;
use tollgate_control::prices::admin::PriceAdminError;
use tollgate_queries::cost::{self, parse_params};
use tollgate_queries::params::{Expected, QueryParams};
use tollgate_queries::{overview, statement, Table};

use tollgate_access::{Identity, COST_READERS};

use crate::error::ApiError;
use crate::{query_pairs, ApiState};

/// How a report endpoint answers: `format=json` (the default) or `csv`
/// (the finance, errors and breakers reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Csv,
}

impl Format {
    /// The request's `format` (`json` when not given).
    pub(crate) fn of(params: &QueryParams) -> Result<Self, ApiError> {
        Ok(params
            .choice("format", &[("json", Self::Json), ("csv", Self::Csv)])?
            .unwrap_or(Self::Json))
    }

    /// `body` as JSON, or its table `csv(body)` as a CSV download named
    /// `filename`.
    pub(crate) fn respond<T: serde::Serialize>(
        self,
        body: &T,
        filename: &str,
        csv: impl FnOnce(&T) -> Table,
    ) -> Response {
        match self {
            Self::Json => Json(body).into_response(),
            Self::Csv => csv_download(&csv(body), filename),
        }
    }
}

/// `table` as a CSV file download named `filename`: every CSV this API
/// serves goes through here.
pub(crate) fn csv_download(table: &Table, filename: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        table.to_csv(),
    )
        .into_response()
}

/// The `format` of an endpoint that takes no other parameter.
fn format_only(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Format, ApiError> {
    let params = QueryParams::parse(&query_pairs(query)?, &Expected::names(&["format"]))?;
    Format::of(&params)
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
/// The budgets of `org` (every budget for `None`).
pub(crate) async fn org_budgets(
    state: &ApiState,
    org: Option<&str>,
) -> Result<Vec<tollgate_control::budgets::Budget>, ApiError> {
    let store = state.budgets.as_ref().ok_or_else(|| {
        ApiError::Unavailable("budgets need postgres; this server runs without it".into())
    })?;
    store
        .in_org(org)
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot read budgets: {e}")))
}

async fn all_budgets(state: &ApiState) -> Result<Vec<tollgate_control::budgets::Budget>, ApiError> {
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
    let (query, params) = parse_params(&pairs, Utc::now().date_naive(), &["format"])?;
    let format = Format::of(&params)?;
    let report = state.read_models.cost(&query).await?;
    Ok(format.respond(&report, "cost.csv", cost::table))
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
    let now = Utc::now();
    let (query, params) = parse_params(&pairs, now.date_naive(), &["format"])?;
    let format = Format::of(&params)?;
    let catalog = price_catalog(&state).await?;
    let overview = state
        .read_models
        .cost_overview(&query, catalog.as_ref(), now)
        .await?;
    Ok(format.respond(&overview, "cost-top-spenders.csv", overview::top_table))
}

/// `GET /api/v1/finance/statement?team=&month=YYYY-MM&format=json|csv`
pub async fn statement(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(query)?;
    let now = Utc::now();
    let (request, params) = statement::parse_params(&pairs, now.date_naive(), &["format"])?;
    let format = Format::of(&params)?;
    let statement::StatementParams { team, month, org } = request;
    let query = statement::statement_query(&team, &month, org.as_deref())?;
    if org.is_none() {
        let orgs = state.read_models.statement_orgs(&team, &month).await?;
        statement::one_org(&team, &month, None, &orgs)?;
    }
    let report = state.read_models.cost(&query).await?;
    let repricing = state
        .read_models
        .statement_repricing(&team, org.as_deref(), &month)
        .await?;
    let catalog = price_catalog(&state).await?.unwrap_or_default();
    let mut statement = statement::assemble(&team, &month, &report, &repricing, &catalog, now);
    statement.late = state
        .read_models
        .statement_late(&team, org.as_deref(), &month)
        .await?;
    Ok(format.respond(&statement, "statement.csv", statement::table))
}

/// `GET /api/v1/finance/budgets?format=json|csv`: every budget with the
/// spend of its running period, percent used, state and forecast.
pub async fn budgets(
    State(state): State<ApiState>,
    identity: Identity,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(&query_pairs(query)?, &Expected::names(&["format", "org"]))?;
    let format = Format::of(&params)?;
    let budgets = org_budgets(&state, identity.scope()).await?;
    let statuses = state
        .read_models
        .budget_status(&budgets, Utc::now())
        .await?;
    Ok(format.respond(&statuses, "budgets.csv", |s: &Vec<_>| {
        tollgate_queries::budgets::table(s)
    }))
}

/// `GET /api/v1/finance/budgets/{id}/burndown?format=json|csv`: the
/// budget's running period, one point per day (monthly budgets) or hour
/// (daily budgets); 404 for an unknown id.
pub async fn burndown(
    State(state): State<ApiState>,
    identity: Identity,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let format = format_only(query)?;
    let id: i64 = id.parse().map_err(|_| ApiError::InvalidParameter {
        parameter: "id".into(),
        reason: format!("`{id}` is not a budget id (an integer)"),
    })?;
    if let Some(store) = &state.budgets {
        crate::admin::check_budget_org(store, &identity, COST_READERS, id).await?;
    }
    let budget = all_budgets(&state)
        .await?
        .into_iter()
        .find(|b| b.id == id)
        .ok_or(ApiError::NotFound)?;
    let now = tollgate_queries::burndown::clock(Utc::now());
    let report = state.read_models.budget_burndown(&budget, now).await?;
    Ok(format.respond(&report, "burndown.csv", tollgate_queries::burndown::table))
}

/// `POST /api/v1/admin/prices` with `Authorization: Bearer <admin key>`.
pub async fn add_prices(
    State(state): State<ApiState>,
    identity: Identity,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Some(admin) = &state.prices else {
        return Err(ApiError::Unavailable(
            "price administration needs postgres; this server runs without it".into(),
        ));
    };
    // The catalog is every org's: only an admin of every org changes it.
    if !identity.is_admin() {
        return Err(ApiError::Forbidden(format!(
            "{} may not change prices: the catalog is every org's, so that needs role admin in every org",
            identity.who()
        )));
    }
    let Json(body) = body.map_err(|e| ApiError::InvalidParameter {
        parameter: "body".into(),
        reason: e.body_text(),
    })?;
    let prices = tollgate_contract::catalog::new_prices_of_json(body).map_err(|r| {
        ApiError::InvalidField {
            field: r.field,
            reason: r.reason,
        }
    })?;
    let outcome = admin
        .add(
            &prices,
            &format!("api:{}", identity.actor),
            Some(&identity.actor),
        )
        .await
        .map_err(|e| match e {
            PriceAdminError::Invalid(invalid) => ApiError::InvalidField {
                field: invalid.field,
                reason: invalid.reason,
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
