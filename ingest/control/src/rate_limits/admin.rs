//! Rate-limit administration, the one path of `POST`/`DELETE
//! /api/v1/admin/rate_limits` and `tollgate ratelimits set|delete`: the
//! API body ([`parse_body`]), and creating, replacing and deleting a limit
//! with its `admin.rate_limit.set` / `admin.rate_limit.deleted` event in
//! the outbox in the same transaction. Which org's limits a caller may
//! change is the caller's rule, handed in as `may_change` (the API: the
//! orgs it administers; the CLI: all).

use super::tier_id;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tollgate_contract::admin::{admin_event, KIND_RATE_LIMIT_DELETED, KIND_RATE_LIMIT_SET};

use super::{
    as_i64, from_row, rate_limit_json, InvalidRateLimit, RateLimit, RateLimitSpec, RateLimitStore,
    Row, COLUMNS,
};
use crate::outbox::{enqueue, Enqueued};
use crate::ControlError;

/// Body of `POST /api/v1/admin/rate_limits`. The limits are JSON whole
/// numbers; they are kept as their text so that a value no integer type
/// holds (`1e30`, `99999999999999999999`) is refused with what was sent,
/// not with a float's rounding of it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitBody {
    scope_kind: String,
    scope_id: String,
    #[serde(default)]
    requests_per_minute: Option<Box<RawValue>>,
    #[serde(default)]
    tokens_per_minute: Option<Box<RawValue>>,
    /// The org the limit belongs to (an org scope's own id when not given).
    #[serde(default)]
    org_id: Option<String>,
}

/// A limit as the API body states it: the validated limit, and the org
/// the body names (`org_id`), if any.
pub fn parse_body(bytes: &[u8]) -> Result<(RateLimitSpec, Option<String>), InvalidRateLimit> {
    let body: RateLimitBody = tollgate_contract::alerts::parse_json(bytes)?;
    let requests = body
        .requests_per_minute
        .as_deref()
        .map(|raw| number_text("requests_per_minute", raw))
        .transpose()?;
    let tokens = body
        .tokens_per_minute
        .as_deref()
        .map(|raw| number_text("tokens_per_minute", raw))
        .transpose()?;
    let spec = RateLimitSpec::parse(&body.scope_kind, &body.scope_id, requests, tokens)?;
    Ok((spec, body.org_id))
}

/// The text of a JSON number; anything else (a string, `true`, an object)
/// is refused naming `field`. `null` never gets here (it is an absent limit).
fn number_text<'a>(field: &'static str, raw: &'a RawValue) -> Result<&'a str, InvalidRateLimit> {
    let text = raw.get().trim();
    if text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
        return Ok(text);
    }
    let found = match text.chars().next() {
        Some('"') => "a string",
        Some('t' | 'f') => "a boolean",
        Some('[') => "an array",
        _ => "an object",
    };
    Err(InvalidRateLimit::new(
        field,
        format!("must be a whole number (a JSON number such as 600), found {found}"),
    ))
}

/// A limit created or replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSet {
    pub limit: RateLimit,
    /// The limit of the same scope it replaced, if any.
    pub previous: Option<RateLimit>,
    /// Its `admin.rate_limit.set` event.
    pub event: Enqueued,
}

/// A limit deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitDeleted {
    pub limit: RateLimit,
    /// Its `admin.rate_limit.deleted` event.
    pub event: Enqueued,
}

/// What a set did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetOutcome {
    Stored(RateLimitSet),
    /// The scope already has a limit of an org the caller may not change
    /// (`None`: a limit without an org); nothing was changed.
    HeldByOtherOrg(RateLimit),
}

/// The event payload of a limit: [`rate_limit_json`], the shape the API
/// and `ratelimits list --json` show.
fn payload(limit: &RateLimit, previous: Option<Option<&RateLimit>>) -> Value {
    let mut payload = rate_limit_json(limit);
    if let Some(previous) = previous {
        payload["previous"] = previous.map(rate_limit_json).into();
    }
    payload
}

fn invalid_row() -> ControlError {
    ControlError::Internal("a stored rate limit has no valid scope".into())
}

/// A row read back that is not a valid limit is our bug, not "none".
fn limit_of(row: Option<Row>) -> Result<Option<RateLimit>, ControlError> {
    row.map(|r| from_row(r).ok_or_else(invalid_row)).transpose()
}

fn pg(doing: &'static str) -> impl FnOnce(sqlx::Error) -> ControlError {
    move |e| ControlError::postgres(doing, e)
}

impl RateLimitStore {
    /// Create or replace the limit of `spec`'s scope, with its
    /// `admin.rate_limit.set` event (naming `actor` and the replaced limit)
    /// in the outbox, in one transaction. A replaced limit keeps its org
    /// when `spec` names none. When the scope's current limit belongs to an
    /// org for which `may_change` is false, nothing changes.
    pub async fn set(
        &self,
        spec: &RateLimitSpec,
        actor: &str,
        may_change: impl Fn(Option<&str>) -> bool,
    ) -> Result<SetOutcome, ControlError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(pg("starting a rate-limit change"))?;
        // Two concurrent sets of one scope: the second must see the first
        // as the limit it replaces (a row lock cannot cover a row that does
        // not exist yet).
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!(
                "ratelimit/{}/{}",
                spec.scope_kind.name(),
                tier_id(spec.scope_kind, spec.org_id.as_deref(), &spec.scope_id)
            ))
            .execute(&mut *tx)
            .await
            .map_err(pg("locking a rate-limit scope"))?;
        let previous: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM rate_limits WHERE scope_kind = $1 AND scope_id = $2 \
             AND org_id IS NOT DISTINCT FROM $3"
        )))
        .bind(spec.scope_kind.name())
        .bind(&spec.scope_id)
        .bind(&spec.org_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg("reading a rate limit"))?;
        let previous = limit_of(previous)?;
        if let Some(held) = previous
            .as_ref()
            .filter(|p| !may_change(p.org_id.as_deref()))
        {
            let held = held.clone();
            tx.rollback()
                .await
                .map_err(pg("ending a refused rate-limit change"))?;
            return Ok(SetOutcome::HeldByOtherOrg(held));
        }
        let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO rate_limits (scope_kind, scope_id, requests_per_minute, tokens_per_minute, org_id, updated_by)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT ((COALESCE(org_id, '')), scope_kind, scope_id) DO UPDATE SET
                requests_per_minute = EXCLUDED.requests_per_minute,
                tokens_per_minute = EXCLUDED.tokens_per_minute,
                updated_by = EXCLUDED.updated_by,
                updated_at = now()
             RETURNING {COLUMNS}"
        )))
        .bind(spec.scope_kind.name())
        .bind(&spec.scope_id)
        .bind(as_i64(spec.requests_per_minute))
        .bind(as_i64(spec.tokens_per_minute))
        .bind(&spec.org_id)
        .bind(actor)
        .fetch_one(&mut *tx)
        .await
        .map_err(pg("storing a rate limit"))?;
        let limit = from_row(row).ok_or_else(invalid_row)?;
        let event = admin_event(
            KIND_RATE_LIMIT_SET,
            actor,
            payload(&limit, Some(previous.as_ref())),
        );
        let event = enqueue(&mut tx, &event)
            .await
            .map_err(pg("putting a rate-limit event in the outbox"))?;
        tx.commit().await.map_err(pg("committing a rate limit"))?;
        Ok(SetOutcome::Stored(RateLimitSet {
            limit,
            previous,
            event,
        }))
    }

    /// Delete limit `id` with its `admin.rate_limit.deleted` event in the
    /// outbox, in one transaction; `None` when there is no such limit, or
    /// it belongs to an org for which `may_change` is false (then nothing
    /// changes: to such a caller it does not exist).
    pub async fn delete(
        &self,
        id: i64,
        actor: &str,
        may_change: impl Fn(Option<&str>) -> bool,
    ) -> Result<Option<RateLimitDeleted>, ControlError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(pg("starting a rate-limit change"))?;
        let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "DELETE FROM rate_limits WHERE id = $1 RETURNING {COLUMNS}"
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg("deleting a rate limit"))?;
        let limit = limit_of(row)?;
        let Some(limit) = limit.filter(|l| may_change(l.org_id.as_deref())) else {
            tx.rollback()
                .await
                .map_err(pg("ending a refused rate-limit change"))?;
            return Ok(None);
        };
        let event = admin_event(KIND_RATE_LIMIT_DELETED, actor, payload(&limit, None));
        let event = enqueue(&mut tx, &event)
            .await
            .map_err(pg("putting a rate-limit event in the outbox"))?;
        tx.commit()
            .await
            .map_err(pg("committing a rate-limit deletion"))?;
        Ok(Some(RateLimitDeleted { limit, event }))
    }

    /// The limits of `org` (every limit for `None`), by scope.
    pub async fn in_org(&self, org: Option<&str>) -> Result<Vec<RateLimit>, ControlError> {
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM rate_limits WHERE $1::text IS NULL OR org_id = $1 \
             ORDER BY scope_kind, scope_id"
        )))
        .bind(org)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| ControlError::postgres("listing rate limits", e))?;
        rows.into_iter()
            .map(|r| from_row(r).ok_or_else(invalid_row))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::budgets::SubjectKind;

    fn refused(body: &str) -> (String, String) {
        let e = parse_body(body.as_bytes()).unwrap_err();
        (e.field, e.reason)
    }

    #[test]
    fn a_body_is_the_limit_and_its_org() {
        let (spec, org) = parse_body(
            br#"{"scope_kind": "team", "scope_id": "ml", "requests_per_minute": 600,
                 "tokens_per_minute": null, "org_id": "acme"}"#,
        )
        .unwrap();
        assert_eq!(spec.scope_kind, SubjectKind::Team);
        assert_eq!(spec.scope_id, "ml");
        assert_eq!(
            (spec.requests_per_minute, spec.tokens_per_minute),
            (Some(600), None)
        );
        assert_eq!(org.as_deref(), Some("acme"));
        let (spec, org) = parse_body(
            br#"{"scope_kind":"org","scope_id":"acme","tokens_per_minute":1000000000000}"#,
        )
        .unwrap();
        assert_eq!(spec.tokens_per_minute, Some(1_000_000_000_000));
        assert_eq!(spec.org_id.as_deref(), Some("acme"));
        assert_eq!(org, None);
    }

    #[test]
    fn bad_bodies_name_the_field_and_the_reason() {
        let ok = r#""scope_kind":"team","scope_id":"ml""#;
        assert_eq!(refused("").0, "body");
        assert_eq!(refused("[]").0, "body");
        assert_eq!(
            refused(&format!("{{{ok},\"requests_per_minute\":5}} x")).0,
            "body"
        );
        let (field, reason) = refused(&format!("{{{ok},\"rpm\":5}}"));
        assert_eq!(field, "rpm");
        assert!(
            reason.starts_with("unknown field `rpm`, expected one of"),
            "{reason}"
        );
        assert_eq!(
            refused(r#"{"scope_kind":"team","requests_per_minute":5}"#),
            ("scope_id".into(), "missing required field".into())
        );
        for (value, reason) in [
            (
                "-5",
                "\"-5\" is negative; give a whole number from 1 to 1000000000",
            ),
            (
                "0",
                "must be at least 1 (delete the limit to lift it: `tollgate ratelimits delete`)",
            ),
            (
                "1.5",
                "\"1.5\" is not a whole number; give one from 1 to 1000000000",
            ),
            (
                "1e3",
                "\"1e3\" is not a whole number; give one from 1 to 1000000000",
            ),
            (
                "1000000001",
                "1000000001 is above the most accepted, 1000000000",
            ),
            (
                "99999999999999999999999",
                "99999999999999999999999 is above the most accepted, 1000000000",
            ),
            (
                "\"600\"",
                "must be a whole number (a JSON number such as 600), found a string",
            ),
            (
                "true",
                "must be a whole number (a JSON number such as 600), found a boolean",
            ),
            (
                "{}",
                "must be a whole number (a JSON number such as 600), found an object",
            ),
            (
                "[1]",
                "must be a whole number (a JSON number such as 600), found an array",
            ),
        ] {
            assert_eq!(
                refused(&format!("{{{ok},\"requests_per_minute\":{value}}}")),
                ("requests_per_minute".into(), reason.into()),
                "{value}"
            );
        }
        assert_eq!(
            refused(r#"{"scope_kind":"tenant","scope_id":"x","requests_per_minute":1}"#),
            (
                "scope_kind".into(),
                "unknown scope \"tenant\"; expected key, user, team or org".into()
            )
        );
        assert_eq!(
            refused(r#"{"scope_kind":"team","scope_id":"a\u0000b","requests_per_minute":1}"#),
            (
                "scope_id".into(),
                "must not contain control characters".into()
            )
        );
        assert_eq!(
            refused(&format!("{{{ok},\"requests_per_minute\":null}}")),
            (
                "requests_per_minute".into(),
                "give requests_per_minute, tokens_per_minute or both".into()
            )
        );
        assert_eq!(
            refused(r#"{"scope_kind":5,"scope_id":"x"}"#).0,
            "scope_kind"
        );
    }
}
