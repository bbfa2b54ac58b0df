//! `GET /api/v1/overview?org=`: the overview page's figures as JSON (spend
//! today and this month against budgets, error rate and p95 of the last
//! hour against the same hour yesterday, firing alerts, budgets near their
//! limit, the newest error patterns); `tollgate_queries::home` reads them.
//! With `org`, everything is that org's share. `format=csv&table=<name>`
//! answers one of the page's tables as CSV instead
//! (`tollgate_queries::home_tables`), for the sections the caller may read.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use tollgate_access::{Identity, ALERT_READERS, COST_READERS, SRE_READERS};
use tollgate_queries::home::{HomeQuery, Sections, Stored};
use tollgate_queries::home_tables::HomeTable;
use tollgate_queries::params::{Expected, QueryParams};

use crate::alerts::store_error;
use crate::error::ApiError;
use crate::finance::{csv_download, org_budgets, Format};
use crate::{query_pairs, ApiState};

/// The sections `identity` may read: those of the reports it may read.
pub fn sections_of(identity: &Identity) -> Sections {
    Sections {
        cost: identity.may(COST_READERS),
        health: identity.may(SRE_READERS),
        alerts: identity.may(ALERT_READERS),
    }
}

/// `GET /api/v1/overview?org=&format=json|csv&table=`: the sections the
/// caller may read (the others are `null`), or with `format=csv` the table
/// named by `table` (403 when its section is not the caller's to read).
pub async fn overview(
    State(state): State<ApiState>,
    identity: Identity,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(
        &query_pairs(query)?,
        &Expected::names(&["org", "format", "table"]),
    )?;
    let org = params.text("org").map(str::to_string);
    let table = match (
        Format::of(&params)?,
        params.choice("table", &HomeTable::ALL)?,
    ) {
        (Format::Json, None) => None,
        (Format::Csv, Some(table)) => Some(table),
        (Format::Json, Some(_)) => {
            return Err(invalid("table", "only with format=csv"));
        }
        (Format::Csv, None) => {
            let names: Vec<&str> = HomeTable::ALL.iter().map(|(n, _)| *n).collect();
            return Err(invalid(
                "table",
                &format!("required with format=csv: one of {}", names.join(", ")),
            ));
        }
    };
    let budgets = match state.budgets {
        Some(_) => Some(org_budgets(&state, org.as_deref()).await?),
        None => None,
    };
    let states = match &state.alerts {
        Some(store) => Some(store.states(org.as_deref()).await.map_err(store_error)?),
        None => None,
    };
    let query = HomeQuery {
        now: Utc::now(),
        org,
        sections: sections_of(&identity),
    };
    let stored = Stored {
        budgets: budgets.as_deref(),
        alert_states: states.as_deref(),
    };
    let home = state.read_models.home(&query, stored).await?;
    let Some(table) = table else {
        return Ok(Json(home).into_response());
    };
    let rows = table.of(&home).ok_or_else(|| {
        ApiError::Forbidden(format!(
            "the {} table needs a role that reads {} (and its store on this server)",
            table.name(),
            table.section()
        ))
    })?;
    Ok(csv_download(
        &rows,
        &format!("overview-{}.csv", table.name()),
    ))
}

fn invalid(parameter: &str, reason: &str) -> ApiError {
    ApiError::InvalidParameter {
        parameter: parameter.into(),
        reason: reason.into(),
    }
}
