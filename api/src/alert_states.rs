//! What the alerts are doing, under `/api/v1/alerts`: the alerts firing
//! and pending now (`GET /api/v1/alerts`), every transition over a range
//! (`GET /api/v1/alerts/transitions`) and the notifications no receiver
//! took (`GET /api/v1/alerts/dead-letters`). Roles and org scope as for
//! the rules (`alerts.rs`): `admin`, `sre` and `finance` read; a key
//! scoped to an org sees only that org. Each answers JSON or, with
//! `format=csv`, the same rows as CSV (`tollgate_queries::alert_timeline`
//! builds both from one table, as the Alerts page does).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use chrono::Utc;
use tollgate_queries::alert_timeline::{
    self, current_alerts, TimelineQuery, MAX_DEAD_LETTERS, TIMELINE_PARAMS,
};
use tollgate_queries::params::{Expected, QueryParams};

use crate::alerts::{store, store_error};
use crate::error::ApiError;
use crate::finance::Format;
use crate::{query_pairs, ApiState};
use tollgate_access::Identity;

type Pairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// `GET /api/v1/alerts?org=&format=json|csv`: firing first, then pending.
pub async fn current(
    State(state): State<ApiState>,
    identity: Identity,
    query: Pairs,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(&query_pairs(query)?, &Expected::names(&["org", "format"]))?;
    let format = Format::of(&params)?;
    let org = identity.scope();
    let states = store(&state)?.states(org).await.map_err(store_error)?;
    let alerts = current_alerts(&states);
    Ok(format.respond(&alerts, "alerts.csv", alert_timeline::current_table))
}

/// `GET /api/v1/alerts/transitions?from=&to=&rule_id=&org=&format=json|csv`
/// (default the last 24 hours; newest first, at most 1,000, `truncated`
/// when there were more). A `rule_id` of another org is a 404.
pub async fn transitions(
    State(state): State<ApiState>,
    identity: Identity,
    query: Pairs,
) -> Result<Response, ApiError> {
    let names: Vec<&str> = TIMELINE_PARAMS
        .iter()
        .copied()
        .chain(["org", "format"])
        .collect();
    let params = QueryParams::parse(&query_pairs(query)?, &Expected::names(&names))?;
    let format = Format::of(&params)?;
    let org = identity.scope().map(str::to_string);
    let q = TimelineQuery::from_params(&params, org, Utc::now())?;
    if let (Some(id), Some(store)) = (q.rule_id, state.alerts.as_ref()) {
        // Another org's rule (or none) is a 404, as for `rules/{id}`.
        store
            .rule(q.org.as_deref(), id)
            .await
            .map_err(store_error)?;
    }
    let timeline = state.read_models.alert_timeline(&q).await?;
    Ok(format.respond(
        &timeline,
        "alert-transitions.csv",
        alert_timeline::timeline_table,
    ))
}

/// `GET /api/v1/alerts/dead-letters?org=&format=json|csv`: newest first,
/// at most 500.
pub async fn dead_letters(
    State(state): State<ApiState>,
    identity: Identity,
    query: Pairs,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(&query_pairs(query)?, &Expected::names(&["org", "format"]))?;
    let format = Format::of(&params)?;
    let org = identity.scope();
    let letters = tollgate_control::alert_deliveries::list_dead_letters(
        store(&state)?.pool(),
        org,
        MAX_DEAD_LETTERS,
    )
    .await
    .map_err(|e| ApiError::Unavailable(format!("dead letters: {e}")))?;
    Ok(format.respond(
        &letters,
        "alert-dead-letters.csv",
        alert_timeline::dead_letters_table,
    ))
}
