//! `POST /api/v1/alerts/backtest`: when a rule would have fired over a past
//! period, before it is saved. The body is the rule as it would be saved
//! (validated as `POST /api/v1/alerts/rules` validates it; 400 naming the
//! field); the query string takes `from`, `to` (RFC 3339, default the last
//! 24 hours), `step_secs` (default the evaluator's interval, 60 s; at most
//! 1,500 steps) and `format=json|csv`. The answer is the measured series
//! and the transitions the evaluator would have made
//! (`tollgate_queries::alert_signals`, `docs/alerting-signals.md`).

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use chrono::{Duration, Utc};
use tollgate_contract::alerts::RuleSpec;
use tollgate_queries::alert_signals::{self, SignalSources, DEFAULT_STEP_SECS};
use tollgate_queries::params::{Expected, QueryParams};

use crate::error::ApiError;
use crate::finance::Format;
use crate::{query_pairs, ApiState};
use tollgate_access::{Identity, ALERT_READERS};

/// `POST /api/v1/alerts/backtest?from=&to=&step_secs=&format=json|csv`
pub async fn backtest(
    State(state): State<ApiState>,
    identity: Identity,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(
        &query_pairs(query)?,
        &Expected::names(&["from", "to", "step_secs", "format"]),
    )?;
    let format = Format::of(&params)?;
    let spec = RuleSpec::from_json(&body).map_err(|r| ApiError::InvalidField {
        field: r.field,
        reason: r.reason,
    })?;
    identity.require_org(ALERT_READERS, &spec.org_id, "backtest alert rules")?;
    // As saving the rule would: a budget of another org is none of this
    // rule's (its spend is not the caller's to read).
    if let (Some(id), Some(budgets)) = (spec.signal.budget_id(), state.budgets.as_ref()) {
        let budget = budgets.get(id).await.map_err(|e| {
            tracing::warn!(%e, "cannot read a budget for a backtest");
            ApiError::Unavailable(format!("postgres: cannot read budget {id}"))
        })?;
        tollgate_control::alerts::admin::rule_may_read(budget.as_ref(), id, &spec.org_id).map_err(
            |r| ApiError::InvalidField {
                field: r.field,
                reason: r.reason,
            },
        )?;
    }
    let to = params.time("to")?.unwrap_or_else(Utc::now);
    let from = params
        .time("from")?
        .unwrap_or_else(|| to - Duration::hours(24));
    let step_secs = match params.text("step_secs") {
        None => DEFAULT_STEP_SECS,
        Some(v) => v
            .parse()
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| ApiError::InvalidParameter {
                parameter: "step_secs".into(),
                reason: format!("`{v}` is not a positive number of seconds"),
            })?,
    };
    let sources = SignalSources {
        read: &state.read_models,
        budgets: state.budgets.as_ref(),
    };
    let result = alert_signals::backtest(sources, &spec, from, to, step_secs)
        .await?
        .map_err(|e| ApiError::InvalidParameter {
            parameter: e.parameter.into(),
            reason: e.reason,
        })?;
    Ok(format.respond(&result, "alert-backtest.csv", alert_signals::table))
}
