//! `GET /api/v1/overview?org=`: the overview page's figures as JSON (spend
//! today and this month against budgets, error rate and p95 of the last
//! hour against the same hour yesterday, firing alerts, budgets near their
//! limit, the newest error patterns); `tollgate_queries::home` reads them.
//! With `org`, everything is that org's share.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use chrono::Utc;
use tollgate_access::{Identity, ALERT_READERS, COST_READERS, SRE_READERS};
use tollgate_queries::home::{Home, HomeQuery, Sections, Stored};
use tollgate_queries::params::{Expected, QueryParams};

use crate::alerts::store_error;
use crate::error::ApiError;
use crate::finance::org_budgets;
use crate::{query_pairs, ApiState};

/// The sections `identity` may read: those of the reports it may read.
pub fn sections_of(identity: &Identity) -> Sections {
    Sections {
        cost: identity.may(COST_READERS),
        health: identity.may(SRE_READERS),
        alerts: identity.may(ALERT_READERS),
    }
}

/// `GET /api/v1/overview?org=`: the sections the caller may read (the
/// others are `null`).
pub async fn overview(
    State(state): State<ApiState>,
    identity: Identity,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Home>, ApiError> {
    let params = QueryParams::parse(&query_pairs(query)?, &Expected::names(&["org"]))?;
    let org = params.text("org").map(str::to_string);
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
    Ok(Json(state.read_models.home(&query, stored).await?))
}
