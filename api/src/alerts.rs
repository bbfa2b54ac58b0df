//! Alerting administration under `/api/v1/alerts/`: rules, silences and
//! receivers (`docs/alerting.md`). Roles `admin` and `sre` change them;
//! `admin`, `sre` and `finance` read them. A key scoped to an org sees only
//! that org: another org's id or name is a 404, as if it did not exist.
//! Lists answer JSON or, with `format=csv`, the same rows as CSV (one typed
//! table each). Rules and receivers are replaced with `PUT` naming the
//! `version` read (409 when it is stale); deleting a silence expires it.
//! Every change commits with its `admin.*` event in the outbox.

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use tollgate_access::{Identity, ALERT_WRITERS};
use tollgate_contract::alerts::{parse_json, ReceiverSpec, RuleSpec, SilenceSpec};
use tollgate_contract::Rejection;
use tollgate_control::alerts::admin::Changed;
use tollgate_control::alerts::{AlertStore, AlertStoreError, SilenceFilter};
use tollgate_queries::alert_lists::{receivers_table, rules_table, silences_table, SilenceView};
use tollgate_queries::params::{Expected, QueryParams};

use crate::error::ApiError;
use crate::finance::Format;
use crate::{query_pairs, ApiState};

type Pairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

pub(crate) fn store(state: &ApiState) -> Result<&AlertStore, ApiError> {
    state.alerts.as_ref().ok_or_else(|| {
        ApiError::Unavailable("alerting needs postgres; this server runs without it".into())
    })
}

/// A change as the API answers it: the value under `name` and the id of
/// its admin event.
fn answer<T: serde::Serialize>(status: StatusCode, name: &str, change: Changed<T>) -> Response {
    let mut body = serde_json::Map::new();
    body.insert(
        name.to_string(),
        serde_json::to_value(&change.value).unwrap_or_default(),
    );
    body.insert("event_id".into(), json!(change.event.event_id));
    (status, Json(body)).into_response()
}

fn invalid(r: Rejection) -> ApiError {
    ApiError::InvalidField {
        field: r.field,
        reason: r.reason,
    }
}

fn prefixed(prefix: &str) -> impl Fn(Rejection) -> ApiError + '_ {
    move |r| {
        invalid(Rejection::new(
            if r.field == "body" {
                r.field
            } else {
                format!("{prefix}.{}", r.field)
            },
            r.reason,
        ))
    }
}

pub(crate) fn store_error(err: AlertStoreError) -> ApiError {
    match err {
        AlertStoreError::NotFound { .. } => ApiError::NoSuch(err.to_string()),
        AlertStoreError::Conflict { .. }
        | AlertStoreError::NameTaken { .. }
        | AlertStoreError::InUse { .. }
        | AlertStoreError::AlreadyExpired { .. } => ApiError::Conflict(err.to_string()),
        AlertStoreError::Invalid(r) => invalid(r),
        AlertStoreError::Postgres(_)
        | AlertStoreError::Control(_)
        | AlertStoreError::Corrupt { .. } => {
            ApiError::Unavailable(format!("alerting store: {err}"))
        }
    }
}

/// A change to `org`'s alerting needs a writer's role there
/// ([`Identity::require_org`]).
fn check_org(identity: &Identity, org: &str) -> Result<(), ApiError> {
    Ok(identity.require_org(ALERT_WRITERS, org, "change alerting")?)
}

pub(crate) fn path_id(
    id: Result<Path<String>, PathRejection>,
    what: &str,
) -> Result<i64, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::InvalidParameter {
        parameter: "id".into(),
        reason: e.body_text(),
    })?;
    id.parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::InvalidParameter {
            parameter: "id".into(),
            reason: format!("not a {what} id (a positive integer)"),
        })
}

/// The optional `version` of a delete.
fn version_param(query: Pairs) -> Result<Option<i64>, ApiError> {
    let params = QueryParams::parse(&query_pairs(query)?, &Expected::names(&["version"]))?;
    params
        .text("version")
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| ApiError::InvalidParameter {
                    parameter: "version".into(),
                    reason: format!("`{v}` is not a version (a positive integer)"),
                })
        })
        .transpose()
}

fn no_params(query: Pairs) -> Result<(), ApiError> {
    QueryParams::parse(&query_pairs(query)?, &Expected::names(&[]))?;
    Ok(())
}

// ---- rules ----

/// `GET /api/v1/alerts/rules?org=&format=json|csv`
pub async fn list_rules(
    State(state): State<ApiState>,
    identity: Identity,
    query: Pairs,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(&query_pairs(query)?, &Expected::names(&["org", "format"]))?;
    let format = Format::of(&params)?;
    let org = identity.scope();
    let rules = store(&state)?.rules(org).await.map_err(store_error)?;
    Ok(format.respond(&rules, "alert-rules.csv", rules_table))
}

/// `POST /api/v1/alerts/rules`: 201 with the rule and its event id.
pub async fn create_rule(
    State(state): State<ApiState>,
    identity: Identity,
    body: Bytes,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let spec = RuleSpec::from_json(&body).map_err(invalid)?;
    check_org(&identity, &spec.org_id)?;
    let set = store
        .create_rule(&spec, &identity.actor)
        .await
        .map_err(store_error)?;
    Ok(answer(StatusCode::CREATED, "rule", set))
}

/// `GET /api/v1/alerts/rules/{id}`
pub async fn get_rule(
    State(state): State<ApiState>,
    identity: Identity,
    id: Result<Path<String>, PathRejection>,
    query: Pairs,
) -> Result<Response, ApiError> {
    let id = path_id(id, "rule")?;
    no_params(query)?;
    let rule = store(&state)?
        .rule(identity.scope(), id)
        .await
        .map_err(store_error)?;
    Ok(Json(rule).into_response())
}

/// Body of `PUT /api/v1/alerts/rules/{id}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleUpdate {
    version: i64,
    rule: RuleSpec,
}

/// `PUT /api/v1/alerts/rules/{id}` with `{"version": <read>, "rule": {...}}`:
/// 200 with the new version, 409 when `version` is stale.
pub async fn update_rule(
    State(state): State<ApiState>,
    identity: Identity,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let id = path_id(id, "rule")?;
    let update: RuleUpdate = parse_json(&body).map_err(invalid)?;
    update.rule.validate().map_err(prefixed("rule"))?;
    check_org(&identity, &update.rule.org_id)?;
    let set = store
        .update_rule(
            &update.rule.org_id,
            id,
            update.version,
            &update.rule,
            &identity.actor,
        )
        .await
        .map_err(|e| match e {
            AlertStoreError::Invalid(r) => prefixed("rule")(r),
            other => store_error(other),
        })?;
    Ok(answer(StatusCode::OK, "rule", set))
}

/// `DELETE /api/v1/alerts/rules/{id}?version=` (version optional).
pub async fn delete_rule(
    State(state): State<ApiState>,
    identity: Identity,
    id: Result<Path<String>, PathRejection>,
    query: Pairs,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let id = path_id(id, "rule")?;
    let version = version_param(query)?;
    let deleted = store
        .delete_rule(identity.scope(), id, version, &identity.actor)
        .await
        .map_err(store_error)?;
    Ok(
        Json(json!({ "deleted": deleted.value, "event_id": deleted.event.event_id }))
            .into_response(),
    )
}

// ---- silences ----

/// `GET /api/v1/alerts/silences?org=&state=active|expired|all&format=json|csv`
/// (`active`, the default: not yet ended, including those starting later).
pub async fn list_silences(
    State(state): State<ApiState>,
    identity: Identity,
    query: Pairs,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(
        &query_pairs(query)?,
        &Expected::names(&["org", "state", "format"]),
    )?;
    let format = Format::of(&params)?;
    let filter = params
        .choice(
            "state",
            &[
                ("active", SilenceFilter::Current),
                ("expired", SilenceFilter::Expired),
                ("all", SilenceFilter::All),
            ],
        )?
        .unwrap_or(SilenceFilter::Current);
    let org = identity.scope();
    let now = Utc::now();
    let silences: Vec<SilenceView> = store(&state)?
        .silences(org, filter, now)
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|s| SilenceView::at(s, now))
        .collect();
    Ok(format.respond(&silences, "silences.csv", silences_table))
}

/// `POST /api/v1/alerts/silences`: 201 with the silence; `created_by` is
/// the caller's key.
pub async fn create_silence(
    State(state): State<ApiState>,
    identity: Identity,
    body: Bytes,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let spec = SilenceSpec::from_json(&body, Utc::now()).map_err(invalid)?;
    check_org(&identity, &spec.org_id)?;
    let set = store
        .create_silence(&spec, &identity.actor)
        .await
        .map_err(store_error)?;
    Ok(answer(StatusCode::CREATED, "silence", set))
}

/// `GET /api/v1/alerts/silences/{id}`
pub async fn get_silence(
    State(state): State<ApiState>,
    identity: Identity,
    id: Result<Path<String>, PathRejection>,
    query: Pairs,
) -> Result<Response, ApiError> {
    let id = path_id(id, "silence")?;
    no_params(query)?;
    let silence = store(&state)?
        .silence(identity.scope(), id)
        .await
        .map_err(store_error)?;
    Ok(Json(SilenceView::at(silence, Utc::now())).into_response())
}

/// `DELETE /api/v1/alerts/silences/{id}`: expire it now (409 when it had
/// already ended).
pub async fn expire_silence(
    State(state): State<ApiState>,
    identity: Identity,
    id: Result<Path<String>, PathRejection>,
    query: Pairs,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let id = path_id(id, "silence")?;
    no_params(query)?;
    let expired = store
        .expire_silence(identity.scope(), id, Utc::now(), &identity.actor)
        .await
        .map_err(store_error)?;
    Ok(
        Json(json!({ "expired": expired.value, "event_id": expired.event.event_id }))
            .into_response(),
    )
}

// ---- receivers ----

/// `GET /api/v1/alerts/receivers?org=&format=json|csv`
pub async fn list_receivers(
    State(state): State<ApiState>,
    identity: Identity,
    query: Pairs,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(&query_pairs(query)?, &Expected::names(&["org", "format"]))?;
    let format = Format::of(&params)?;
    let org = identity.scope();
    let receivers = store(&state)?.receivers(org).await.map_err(store_error)?;
    Ok(format.respond(&receivers, "alert-receivers.csv", receivers_table))
}

/// `POST /api/v1/alerts/receivers`: 201 with the receiver (without its
/// secret).
pub async fn create_receiver(
    State(state): State<ApiState>,
    identity: Identity,
    body: Bytes,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let spec = ReceiverSpec::from_json(&body).map_err(invalid)?;
    check_org(&identity, &spec.org_id)?;
    let set = store
        .create_receiver(&spec, &identity.actor)
        .await
        .map_err(store_error)?;
    Ok(answer(StatusCode::CREATED, "receiver", set))
}

/// `GET /api/v1/alerts/receivers/{id}`
pub async fn get_receiver(
    State(state): State<ApiState>,
    identity: Identity,
    id: Result<Path<String>, PathRejection>,
    query: Pairs,
) -> Result<Response, ApiError> {
    let id = path_id(id, "receiver")?;
    no_params(query)?;
    let receiver = store(&state)?
        .receiver(identity.scope(), id)
        .await
        .map_err(store_error)?;
    Ok(Json(receiver).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiverUpdate {
    version: i64,
    receiver: ReceiverSpec,
}

/// `PUT /api/v1/alerts/receivers/{id}` with `{"version": <read>, "receiver": {...}}`
/// (a webhook's secret again: it is write-only).
pub async fn update_receiver(
    State(state): State<ApiState>,
    identity: Identity,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let id = path_id(id, "receiver")?;
    let update: ReceiverUpdate = parse_json(&body).map_err(invalid)?;
    update.receiver.validate().map_err(prefixed("receiver"))?;
    check_org(&identity, &update.receiver.org_id)?;
    let set = store
        .update_receiver(
            &update.receiver.org_id,
            id,
            update.version,
            &update.receiver,
            &identity.actor,
        )
        .await
        .map_err(|e| match e {
            AlertStoreError::Invalid(r) => prefixed("receiver")(r),
            other => store_error(other),
        })?;
    Ok(answer(StatusCode::OK, "receiver", set))
}

/// `DELETE /api/v1/alerts/receivers/{id}?version=` (409 while a rule uses it).
pub async fn delete_receiver(
    State(state): State<ApiState>,
    identity: Identity,
    id: Result<Path<String>, PathRejection>,
    query: Pairs,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let id = path_id(id, "receiver")?;
    let version = version_param(query)?;
    let deleted = store
        .delete_receiver(identity.scope(), id, version, &identity.actor)
        .await
        .map_err(store_error)?;
    Ok(
        Json(json!({ "deleted": deleted.value, "event_id": deleted.event.event_id }))
            .into_response(),
    )
}
