//! Report endpoints under `/api/v1/reports/`. Each handler reads the query
//! string with the read side's one parser (`tollgate_queries::params`:
//! unknown or repeated parameters are errors, so a typo never silently
//! changes a report), validates it through the report's parameter type, and
//! returns the report as JSON.

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
    let pairs = crate::query_pairs(query)?;
    let query = LatencyParams::parse(&pairs)?.to_query(Utc::now())?;
    Ok(Json(state.read_models.latency(&query).await?))
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
            LatencyParams::parse(&pairs(&[("provider", "openai"), ("group_by", "model")])).unwrap();
        assert_eq!(params.provider.as_deref(), Some("openai"));
        assert_eq!(params.group_by.as_deref(), Some("model"));
        assert_eq!(params.from, None);
    }

    #[test]
    fn unknown_and_repeated_parameters_are_named() {
        match ApiError::from(LatencyParams::parse(&pairs(&[("groupby", "model")])).unwrap_err()) {
            ApiError::InvalidParameter { parameter, reason } => {
                assert_eq!(parameter, "groupby");
                assert!(reason.contains("group_by"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        match ApiError::from(
            LatencyParams::parse(&pairs(&[("model", "a"), ("model", "b")])).unwrap_err(),
        ) {
            ApiError::InvalidParameter { parameter, .. } => assert_eq!(parameter, "model"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_parameter_maps_to_400_json() {
        let err: ApiError = tollgate_queries::InvalidParameter::new("bucket", "too small").into();
        assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(err.to_string(), "invalid parameter `bucket`: too small");
    }
}
