//! Report endpoints under `/api/v1/reports/`. Each handler checks the query
//! string (unknown or repeated parameters are errors, so a typo never
//! silently changes a report), validates it through the read model's
//! parameter type, and returns the read model's report as JSON.

use std::collections::HashSet;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use chrono::Utc;
use tollgate_queries::{LatencyParams, LatencyReport};

use crate::error::ApiError;
use crate::ApiState;

/// `GET /api/v1/reports/latency?from=&to=&bucket=&group_by=&provider=&model=&team=&org=`
pub async fn latency(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<LatencyReport>, ApiError> {
    let Query(pairs) = query.map_err(|err| ApiError::InvalidParameter {
        parameter: "query".into(),
        reason: err.body_text(),
    })?;
    let params = latency_params(pairs)?;
    let query = params.to_query(Utc::now())?;
    Ok(Json(state.read_models.latency(&query).await?))
}

fn latency_params(pairs: Vec<(String, String)>) -> Result<LatencyParams, ApiError> {
    let mut seen = HashSet::new();
    let mut params = LatencyParams::default();
    for (name, value) in pairs {
        let slot = match name.as_str() {
            "from" => &mut params.from,
            "to" => &mut params.to,
            "bucket" => &mut params.bucket,
            "group_by" => &mut params.group_by,
            "provider" => &mut params.provider,
            "model" => &mut params.model,
            "team" => &mut params.team,
            "org" => &mut params.org,
            _ => {
                return Err(ApiError::InvalidParameter {
                    reason: format!(
                        "unknown parameter; expected one of {}",
                        LatencyParams::NAMES.join(", ")
                    ),
                    parameter: name,
                })
            }
        };
        if !seen.insert(name.clone()) {
            return Err(ApiError::InvalidParameter {
                parameter: name,
                reason: "given more than once".into(),
            });
        }
        *slot = Some(value);
    }
    Ok(params)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn known_parameters_are_collected() {
        let params =
            latency_params(pairs(&[("provider", "openai"), ("group_by", "model")])).unwrap();
        assert_eq!(params.provider.as_deref(), Some("openai"));
        assert_eq!(params.group_by.as_deref(), Some("model"));
        assert_eq!(params.from, None);
    }

    #[test]
    fn unknown_and_repeated_parameters_are_named() {
        match latency_params(pairs(&[("groupby", "model")])).unwrap_err() {
            ApiError::InvalidParameter { parameter, reason } => {
                assert_eq!(parameter, "groupby");
                assert!(reason.contains("group_by"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        match latency_params(pairs(&[("model", "a"), ("model", "b")])).unwrap_err() {
            ApiError::InvalidParameter { parameter, .. } => assert_eq!(parameter, "model"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_parameter_maps_to_400_json() {
        let err: ApiError = tollgate_queries::InvalidParameter {
            parameter: "bucket",
            reason: "too small".into(),
        }
        .into();
        assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(err.to_string(), "invalid parameter `bucket`: too small");
    }
}
