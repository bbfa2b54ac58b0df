//! Rate-limit tiers: requests and tokens per minute for one key, user,
//! team or org, in PostgreSQL's `rate_limits`. The validation of a limit as
//! an administrator states it ([`RateLimitSpec::parse`], used by
//! `tollgate ratelimits set`; field names as an admin API body would spell
//! them) and the store the CLI and the proxies read (`docs/proxy.md`, "Rate-limit
//! tiers"). Changes, each with its admin event, are [`admin`]'s.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;

pub mod admin;

use crate::budgets::admin::check_subject_id;
use crate::budgets::SubjectKind;
use crate::ControlError;

/// Why a limit was refused, naming the field as the API body spells it
/// (`scope_kind`, `scope_id`, `requests_per_minute`, `tokens_per_minute`).
pub use tollgate_contract::Rejection as InvalidRateLimit;

/// Most requests per minute accepted (above is a typo).
pub const MAX_REQUESTS_PER_MINUTE: u64 = 1_000_000_000;
/// Most tokens per minute accepted (above is a typo).
pub const MAX_TOKENS_PER_MINUTE: u64 = 1_000_000_000_000;

/// A valid limit to create or replace (one per scope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSpec {
    pub scope_kind: SubjectKind,
    pub scope_id: String,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub org_id: Option<String>,
}

fn per_minute(field: &'static str, text: &str, max: u64) -> Result<u64, InvalidRateLimit> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(InvalidRateLimit::new(
            field,
            format!("{text:?} is negative; give a whole number from 1 to {max}"),
        ));
    }
    let n: u64 = text.parse().map_err(|_| {
        if text.chars().all(|c| c.is_ascii_digit()) && !text.is_empty() {
            InvalidRateLimit::new(field, format!("{text} is above the most accepted, {max}"))
        } else {
            InvalidRateLimit::new(
                field,
                format!("{text:?} is not a whole number; give one from 1 to {max}"),
            )
        }
    })?;
    if n == 0 {
        return Err(InvalidRateLimit::new(
            field,
            "must be at least 1 (delete the limit to lift it: `tollgate ratelimits delete`)",
        ));
    }
    if n > max {
        return Err(InvalidRateLimit::new(
            field,
            format!("{n} is above the most accepted, {max}"),
        ));
    }
    Ok(n)
}

impl RateLimitSpec {
    /// Validate the fields as given (numbers as text, as on the command
    /// line).
    pub fn parse(
        scope_kind: &str,
        scope_id: &str,
        requests_per_minute: Option<&str>,
        tokens_per_minute: Option<&str>,
    ) -> Result<Self, InvalidRateLimit> {
        let kind = SubjectKind::parse(scope_kind).ok_or_else(|| {
            InvalidRateLimit::new(
                "scope_kind",
                format!("unknown scope {scope_kind:?}; expected key, user, team or org"),
            )
        })?;
        check_subject_id(scope_id).map_err(|e| InvalidRateLimit::new("scope_id", e.reason))?;
        let requests = requests_per_minute
            .map(|t| per_minute("requests_per_minute", t, MAX_REQUESTS_PER_MINUTE))
            .transpose()?;
        let tokens = tokens_per_minute
            .map(|t| per_minute("tokens_per_minute", t, MAX_TOKENS_PER_MINUTE))
            .transpose()?;
        if requests.is_none() && tokens.is_none() {
            return Err(InvalidRateLimit::new(
                "requests_per_minute",
                "give requests_per_minute, tokens_per_minute or both",
            ));
        }
        Ok(Self {
            org_id: (kind == SubjectKind::Org).then(|| scope_id.to_string()),
            scope_kind: kind,
            scope_id: scope_id.to_string(),
            requests_per_minute: requests,
            tokens_per_minute: tokens,
        })
    }

    /// The limit as one of `org`'s; an org scope must be that org.
    pub fn in_org(mut self, org: &str) -> Result<Self, InvalidRateLimit> {
        if self.scope_kind == SubjectKind::Org && self.scope_id != org {
            return Err(InvalidRateLimit::new(
                "org_id",
                format!(
                    "an org limit of {} cannot belong to org {org}",
                    self.scope_id
                ),
            ));
        }
        check_subject_id(org).map_err(|e| InvalidRateLimit::new("org_id", e.reason))?;
        self.org_id = Some(org.to_string());
        Ok(self)
    }

    /// A key limit names its key by the key's id, whichever of id or
    /// prefix was given ([`crate::keys::KeyStore::subject_id`]): the proxy
    /// counts a call against its key's id, so a limit of the prefix would
    /// never apply. Other kinds pass as they are.
    pub async fn naming_key(
        mut self,
        keys: &crate::keys::KeyStore,
    ) -> Result<Result<Self, InvalidRateLimit>, ControlError> {
        if self.scope_kind != SubjectKind::Key {
            return Ok(Ok(self));
        }
        let org = self.org_id.clone();
        Ok(keys
            .name_by_id(&mut self.scope_id, org.as_deref())
            .await?
            .map(|()| self)
            .map_err(|reason| InvalidRateLimit::new("scope_id", reason)))
    }
}

/// A stored limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub id: i64,
    pub scope_kind: SubjectKind,
    pub scope_id: String,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub org_id: Option<String>,
    pub updated_by: String,
    pub updated_at: DateTime<Utc>,
}

/// How the proxies' tiers and the shared pool (`rate_limit_windows.scope_id`)
/// name the scope of a limit: `<org>/<id>` for a limit of one org (an org's
/// own limit is its org's), `*/<id>` for a team, user or key limit set for
/// every org (no `org_id`). The org is percent-encoded (`%`, `/`, `*`), so
/// it ends at the first `/` and no org spells `*`: a limit of org A's team
/// `search` and one of org B's team `search` are two scopes, each counting
/// its own org's calls.
pub fn tier_id(kind: SubjectKind, org: Option<&str>, id: &str) -> String {
    let org = if kind == SubjectKind::Org {
        Some(id)
    } else {
        org
    };
    match org {
        Some(org) => format!(
            "{}/{id}",
            org.replace('%', "%25")
                .replace('/', "%2F")
                .replace('*', "%2A")
        ),
        None => format!("*/{id}"),
    }
}

/// How a person reads a scope of `kind` with [`tier_id`] `tier`: `team
/// search of org acme`, `org acme`, `team search` (every org).
pub fn tier_words(kind: &str, tier: &str) -> String {
    let (org, id) = tier.split_once('/').unwrap_or(("*", tier));
    let org = org
        .replace("%2A", "*")
        .replace("%2F", "/")
        .replace("%25", "%");
    if kind == SubjectKind::Org.name() || org == "*" {
        format!("{kind} {id}")
    } else {
        format!("{kind} {id} of org {org}")
    }
}

impl RateLimit {
    /// This limit's [`tier_id`].
    pub fn tier_id(&self) -> String {
        tier_id(self.scope_kind, self.org_id.as_deref(), &self.scope_id)
    }
}

/// The JSON `ratelimits list --json` shows.
pub fn rate_limit_json(l: &RateLimit) -> Value {
    json!({
        "id": l.id,
        "scope_kind": l.scope_kind.name(),
        "scope_id": l.scope_id,
        "requests_per_minute": l.requests_per_minute,
        "tokens_per_minute": l.tokens_per_minute,
        "org_id": l.org_id,
        "updated_by": l.updated_by,
        "updated_at": l.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}

type Row = (
    i64,
    String,
    String,
    Option<i64>,
    Option<i64>,
    Option<String>,
    String,
    DateTime<Utc>,
);

const COLUMNS: &str = "id, scope_kind, scope_id, requests_per_minute, tokens_per_minute, org_id, updated_by, updated_at";

fn from_row(r: Row) -> Option<RateLimit> {
    Some(RateLimit {
        id: r.0,
        scope_kind: SubjectKind::parse(&r.1)?,
        scope_id: r.2,
        requests_per_minute: r.3.and_then(|n| u64::try_from(n).ok()),
        tokens_per_minute: r.4.and_then(|n| u64::try_from(n).ok()),
        org_id: r.5,
        updated_by: r.6,
        updated_at: r.7,
    })
}

fn as_i64(n: Option<u64>) -> Option<i64> {
    n.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// `rate_limits` in PostgreSQL.
#[derive(Debug, Clone)]
pub struct RateLimitStore {
    pool: PgPool,
}

impl RateLimitStore {
    /// The pool the limits are read from and written to.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Every limit, by scope.
    pub async fn all(&self) -> Result<Vec<RateLimit>, ControlError> {
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM rate_limits ORDER BY scope_kind, scope_id"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| ControlError::postgres("listing rate limits", e))?;
        Ok(rows.into_iter().filter_map(from_row).collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn refused(kind: &str, id: &str, rpm: Option<&str>, tpm: Option<&str>) -> (String, String) {
        let e = RateLimitSpec::parse(kind, id, rpm, tpm).unwrap_err();
        (e.field, e.reason)
    }

    #[test]
    fn tier_ids_keep_orgs_apart_and_read_back() {
        let team = |org: Option<&str>, id: &str| tier_id(SubjectKind::Team, org, id);
        assert_eq!(team(Some("acme"), "search"), "acme/search");
        assert_eq!(team(None, "search"), "*/search");
        assert_eq!(tier_id(SubjectKind::Org, None, "acme"), "acme/acme");
        assert_ne!(team(Some("a/b"), "c"), team(Some("a"), "b/c"));
        assert_ne!(team(Some("*"), "s"), team(None, "s"));
        assert_eq!(
            tier_words("team", &team(Some("a/b*%"), "s/t")),
            "team s/t of org a/b*%"
        );
        assert_eq!(tier_words("team", &team(None, "s")), "team s");
        assert_eq!(tier_words("org", "acme/acme"), "org acme");
    }

    #[test]
    fn a_valid_limit_names_its_scope_and_numbers() {
        let spec = RateLimitSpec::parse("team", "ml", Some("600"), Some("90000")).unwrap();
        assert_eq!(spec.scope_kind, SubjectKind::Team);
        assert_eq!(
            (spec.requests_per_minute, spec.tokens_per_minute),
            (Some(600), Some(90_000))
        );
        assert_eq!(spec.org_id, None);
        let org = RateLimitSpec::parse("org", "acme", None, Some("1")).unwrap();
        assert_eq!(org.org_id.as_deref(), Some("acme"));
        assert_eq!(org.requests_per_minute, None);
    }

    #[test]
    fn hostile_limits_are_refused_naming_the_field() {
        assert_eq!(
            refused("tenant", "x", Some("1"), None),
            (
                "scope_kind".into(),
                "unknown scope \"tenant\"; expected key, user, team or org".into()
            )
        );
        assert_eq!(
            refused("team", "", Some("1"), None),
            ("scope_id".into(), "must not be empty".into())
        );
        assert_eq!(
            refused("team", "t", Some("-5"), None),
            (
                "requests_per_minute".into(),
                "\"-5\" is negative; give a whole number from 1 to 1000000000".into()
            )
        );
        assert_eq!(refused("team", "t", None, Some("0")).0, "tokens_per_minute");
        assert!(refused("team", "t", None, Some("0"))
            .1
            .starts_with("must be at least 1"));
        assert_eq!(
            refused("team", "t", Some("1000000001"), None),
            (
                "requests_per_minute".into(),
                "1000000001 is above the most accepted, 1000000000".into()
            )
        );
        assert_eq!(
            refused("team", "t", None, Some("99999999999999999999999")),
            (
                "tokens_per_minute".into(),
                "99999999999999999999999 is above the most accepted, 1000000000000".into()
            )
        );
        assert_eq!(
            refused("team", "t", Some("1.5"), None),
            (
                "requests_per_minute".into(),
                "\"1.5\" is not a whole number; give one from 1 to 1000000000".into()
            )
        );
        assert_eq!(
            refused("team", "t", None, None),
            (
                "requests_per_minute".into(),
                "give requests_per_minute, tokens_per_minute or both".into()
            )
        );
        let org = RateLimitSpec::parse("org", "acme", Some("1"), None).unwrap();
        assert_eq!(org.in_org("other").unwrap_err().field, "org_id");
    }
}
