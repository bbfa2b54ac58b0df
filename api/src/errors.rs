//! SRE failure endpoints: `GET /api/v1/reports/errors` (the failure
//! patterns of a window), `GET /api/v1/reports/errors/{signature}` (one
//! pattern's drill-down; CSV: `table=recovery`, the default, or
//! `table=samples`, the sample messages) and
//! `GET /api/v1/reports/breakers` (breaker states and transitions; CSV:
//! `table=transitions`, the default, or `table=states`). JSON by default,
//! CSV with `format=csv`; every parameter is read with the one parser, so
//! a bad one is a 400 naming it.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use chrono::Utc;
use tollgate_queries::{breakers, errors};

use crate::error::ApiError;
use crate::finance::Format;
use crate::{query_pairs, ApiState};

/// `GET /api/v1/reports/errors?from=&to=&bucket=&provider=&model=&team=&org=&format=json|csv`
pub async fn list(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(query)?;
    let (query, params) = errors::parse_params(&pairs, Utc::now(), &["format"])?;
    let format = Format::of(&params)?;
    let report = state.read_models.errors(&query).await?;
    Ok(format.respond(&report, "errors.csv", errors::table))
}

/// Which table of a pattern's drill-down a CSV holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatternTable {
    Recovery,
    Samples,
}

/// `GET /api/v1/reports/errors/{signature}?<the list's parameters>&table=recovery|samples`:
/// 404 when the pattern was never recorded.
pub async fn pattern(
    State(state): State<ApiState>,
    Path(signature): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let signature = errors::parse_signature(&signature)?;
    let pairs = query_pairs(query)?;
    let (query, params) = errors::parse_params(&pairs, Utc::now(), &["format", "table"])?;
    let format = Format::of(&params)?;
    let table = params
        .choice(
            "table",
            &[
                ("recovery", PatternTable::Recovery),
                ("samples", PatternTable::Samples),
            ],
        )?
        .unwrap_or(PatternTable::Recovery);
    let report = state
        .read_models
        .error_pattern(&query, signature)
        .await?
        .ok_or_else(|| {
            ApiError::NoSuch(format!(
                "no failure with signature {signature} was ever recorded"
            ))
        })?;
    Ok(match table {
        PatternTable::Recovery => format.respond(
            &report,
            &format!("errors-{signature}-recovery.csv"),
            errors::recovery_table,
        ),
        PatternTable::Samples => format.respond(
            &report,
            &format!("errors-{signature}-samples.csv"),
            errors::samples_table,
        ),
    })
}

/// Which table of the breakers report a CSV holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BreakerTable {
    Transitions,
    States,
}

/// `GET /api/v1/reports/breakers?from=&to=&provider=&model=&format=json|csv&table=transitions|states`
pub async fn breakers(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(query)?;
    let (query, params) = breakers::parse_params(&pairs, Utc::now(), &["format", "table"])?;
    let format = Format::of(&params)?;
    let table = params
        .choice(
            "table",
            &[
                ("transitions", BreakerTable::Transitions),
                ("states", BreakerTable::States),
            ],
        )?
        .unwrap_or(BreakerTable::Transitions);
    let report = state.read_models.breakers(&query).await?;
    Ok(match table {
        BreakerTable::Transitions => format.respond(
            &report,
            "breaker-transitions.csv",
            breakers::transitions_table,
        ),
        BreakerTable::States => {
            format.respond(&report, "breaker-states.csv", breakers::states_table)
        }
    })
}
