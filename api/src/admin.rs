//! Admin endpoints: who may call them ([`require_admin`]: a Bearer key with
//! role `admin`; 401 without a usable key, 403 for other roles) and budget
//! administration: `POST /api/v1/admin/budgets` (create or replace the
//! budget of a subject and period) and `DELETE /api/v1/admin/budgets/{id}`.
//! Each change commits together with its `admin.budget.set` /
//! `admin.budget.deleted` event in the outbox; the answer comes once that
//! transaction committed, and a relay puts the event on Kafka.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use tollgate_access::{Identity, OrgScope, Role, ADMINS};
use tollgate_control::budgets::admin::{budget_json, BudgetSpec};
use tollgate_control::keys::KeyStore;
use tollgate_control::outbox::Enqueued;

use crate::error::ApiError;
use crate::ApiState;

/// Whether a caller with `roles` sees what belongs to `org`; what belongs
/// to no org is seen by callers of every org only.
pub fn sees_owner(identity: &Identity, roles: &[Role], org: Option<&str>) -> bool {
    match org {
        Some(org) => identity.sees(roles, org),
        None => identity.org_scope(roles) == Some(OrgScope::All),
    }
}

/// Budget `id` must belong to an org where the caller holds one of
/// `roles`; another org's budget (or none) is a 404. A budget without an
/// org is seen by callers of every org only.
pub async fn check_budget_org(
    store: &tollgate_control::budgets::BudgetStore,
    identity: &Identity,
    roles: &[Role],
    id: i64,
) -> Result<(), ApiError> {
    let no_such = || ApiError::NoSuch(format!("no budget with id {id}"));
    let org = store
        .org_of(id)
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot read budgets: postgres: {e}")))?
        .ok_or_else(no_such)?;
    if sees_owner(identity, roles, org.as_deref()) {
        Ok(())
    } else {
        Err(no_such())
    }
}

/// Body of `POST /api/v1/admin/budgets`. Money is a decimal string.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetBody {
    pub subject_kind: String,
    pub subject_id: String,
    #[serde(default = "default_period")]
    pub period: String,
    pub limit_usd: String,
    #[serde(default = "default_enforcement")]
    pub enforcement: String,
    /// Percent of the limit; absent or `null`: 50, 80, 100.
    #[serde(default)]
    pub thresholds: Option<Vec<i64>>,
    /// The org the budget belongs to (an org subject's own id when not
    /// given; a caller who administers only some orgs must name one of
    /// theirs, or gets their first).
    #[serde(default)]
    pub org_id: Option<String>,
}

const BUDGET_FIELDS: &str =
    "subject_kind, subject_id, period, limit_usd, enforcement, thresholds, org_id";

fn default_period() -> String {
    "monthly".into()
}

fn default_enforcement() -> String {
    "hard".into()
}

fn body_error(field: impl Into<String>, reason: impl Into<String>) -> ApiError {
    ApiError::InvalidField {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The name between the first pair of backticks of a serde message.
fn backticked(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// Parse the body, naming the field of any problem: `body` for malformed
/// JSON or a body that is not an object, the field itself when it is
/// unknown, missing or of the wrong type.
pub fn parse_budget_body(bytes: &[u8]) -> Result<BudgetBody, ApiError> {
    // serde would also take a struct from an array of its fields in order.
    if bytes.trim_ascii_start().first() == Some(&b'[') {
        return Err(body_error(
            "body",
            format!("expected a JSON object with {BUDGET_FIELDS}, found an array"),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed: Result<BudgetBody, _> = serde_path_to_error::deserialize(&mut de);
    let body = match parsed {
        Ok(body) => body,
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let message = inner.to_string();
            let message = match message.rfind(" at line ") {
                Some(i) => message[..i].to_string(),
                None => message,
            };
            if !inner.is_data() {
                return Err(body_error("body", format!("malformed JSON: {message}")));
            }
            if message.starts_with("unknown field") {
                let name: String = backticked(&message)
                    .unwrap_or("?")
                    .chars()
                    .take(64)
                    .collect();
                return Err(body_error(
                    name,
                    format!("unknown field; expected {BUDGET_FIELDS}"),
                ));
            }
            if message.starts_with("missing field") {
                let name = backticked(&message).unwrap_or("?").to_string();
                return Err(body_error(name, "missing required field"));
            }
            if message.starts_with("duplicate field") {
                let name = backticked(&message).unwrap_or("?").to_string();
                return Err(body_error(name, "given more than once"));
            }
            if path == "." || path.is_empty() {
                return Err(body_error(
                    "body",
                    format!("expected a JSON object with {BUDGET_FIELDS}: {message}"),
                ));
            }
            if path == "limit_usd" {
                return Err(body_error(
                    path,
                    "must be a decimal string such as \"500\" (JSON numbers are not accepted for money)",
                ));
            }
            return Err(body_error(path, message));
        }
    };
    de.end()
        .map_err(|e| body_error("body", format!("malformed JSON: {e}")))?;
    Ok(body)
}

/// `POST /api/v1/admin/budgets`: 201 with the new budget, or 200 when it
/// replaced the budget of the same subject and period; both name the
/// `event_id` of the `admin.budget.set` event.
pub async fn set_budget(
    State(state): State<ApiState>,
    identity: Identity,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(store) = &state.budgets else {
        return Err(ApiError::Unavailable(
            "budget administration needs postgres; this server runs without it".into(),
        ));
    };
    let body = parse_budget_body(&body)?;
    let spec = BudgetSpec::parse(
        &body.subject_kind,
        &body.subject_id,
        &body.period,
        &body.limit_usd,
        &body.enforcement,
        body.thresholds.as_deref(),
    )
    .map_err(|e| body_error(e.field, e.reason))?;
    let org = body
        .org_id
        .clone()
        .or_else(|| spec.org_id.clone())
        .or_else(|| identity.scope().map(str::to_string));
    let spec = match &org {
        Some(org) => {
            identity.require_org(ADMINS, org, "set budgets")?;
            spec.in_org(org)
                .map_err(|e| body_error(e.field, e.reason))?
        }
        None if identity.is_admin() => spec,
        None => {
            return Err(body_error(
                "org_id",
                "is required: name the org the budget belongs to",
            ))
        }
    };
    let spec = spec
        .naming_key(&KeyStore::new(store.pool().clone()))
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot read API keys: {e}")))?
        .map_err(|e| body_error(e.field, e.reason))?;
    let set = store
        .set(&spec, &identity.actor)
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot store the budget: postgres: {e}")))?;
    Ok(set_answer(
        "budget",
        budget_json(&set.budget),
        set.previous.as_ref().map(budget_json),
        &set.event,
    ))
}

/// The answer to a create-or-replace: 201 with `{name: value, "replaced":
/// null, "event_id"}` when it created, 200 with the replaced value when it
/// replaced.
pub fn set_answer(
    name: &str,
    value: serde_json::Value,
    replaced: Option<serde_json::Value>,
    event: &Enqueued,
) -> Response {
    let status = if replaced.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut body = serde_json::Map::new();
    body.insert(name.to_string(), value);
    body.insert("replaced".into(), replaced.into());
    body.insert("event_id".into(), json!(event.event_id));
    (status, Json(body)).into_response()
}

/// `DELETE /api/v1/admin/budgets/{id}`: 200 with the deleted budget and
/// the `event_id` of its `admin.budget.deleted` event; 404 for an unknown id.
pub async fn delete_budget(
    State(state): State<ApiState>,
    identity: Identity,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Some(store) = &state.budgets else {
        return Err(ApiError::Unavailable(
            "budget administration needs postgres; this server runs without it".into(),
        ));
    };
    let Path(id) = id.map_err(|e| ApiError::InvalidParameter {
        parameter: "id".into(),
        reason: e.body_text(),
    })?;
    let id: i64 =
        id.parse()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| ApiError::InvalidParameter {
                parameter: "id".into(),
                reason: "not a budget id (a positive integer)".into(),
            })?;
    check_budget_org(store, &identity, ADMINS, id).await?;
    let deleted = store
        .delete(id, &identity.actor)
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot delete the budget: postgres: {e}")))?
        .ok_or_else(|| ApiError::NoSuch(format!("no budget with id {id}")))?;
    Ok(Json(json!({
        "deleted": budget_json(&deleted.budget),
        "event_id": deleted.event.event_id,
    }))
    .into_response())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> (String, String) {
        match parse_budget_body(body.as_bytes()) {
            Err(ApiError::InvalidField { field, reason }) => (field, reason),
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn body_errors_name_the_field() {
        let ok = r#"{"subject_kind":"team","subject_id":"search","limit_usd":"500"}"#;
        let body = parse_budget_body(ok.as_bytes()).unwrap();
        assert_eq!(
            (body.period.as_str(), body.enforcement.as_str()),
            ("monthly", "hard")
        );
        assert_eq!(field_of("{").0, "body");
        assert_eq!(field_of("[]").0, "body");
        assert_eq!(field_of(&format!("{ok} x")).0, "body");
        let (field, reason) =
            field_of(r#"{"subject_kind":"team","subject_id":"s","limit_usd":"1","limit":"2"}"#);
        assert_eq!(field, "limit");
        assert!(reason.contains("unknown field"), "{reason}");
        assert_eq!(
            field_of(r#"{"subject_kind":"team","subject_id":"s"}"#),
            ("limit_usd".into(), "missing required field".into())
        );
        let (field, reason) =
            field_of(r#"{"subject_kind":"team","subject_id":"s","limit_usd":500}"#);
        assert_eq!(field, "limit_usd");
        assert!(reason.contains("decimal string"), "{reason}");
        assert_eq!(
            field_of(
                r#"{"subject_kind":"team","subject_id":"s","limit_usd":"1","thresholds":[50,"x"]}"#
            )
            .0,
            "thresholds[1]"
        );
        assert_eq!(
            field_of(
                r#"{"subject_kind":"team","subject_kind":"org","subject_id":"s","limit_usd":"1"}"#
            )
            .0,
            "subject_kind"
        );
    }
}
