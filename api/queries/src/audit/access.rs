//! Who may read audit trails: an API key (`tollgate keys create`) with role
//! `compliance` or `admin`; a key scoped to an org sees only that org, as if
//! no other existed (404, never 403, so org names do not leak). Shared by
//! the JSON endpoints (`tollgate-api`) and the compliance pages
//! (`tollgate-dashboards`), so both apply the same rules.

pub use tollgate_control::keys::{ApiKey, KeyStore};

/// Roles that may read audit trails.
pub const AUDIT_ROLES: [&str; 2] = ["compliance", "admin"];

/// What the audit endpoints and pages need.
#[derive(Clone)]
pub struct AuditAccess {
    /// The one ClickHouse client every audit request reads through: a
    /// client owns a connection pool and clones share it, so it is built
    /// once at start ([`crate::client`]), never per request.
    pub clickhouse: clickhouse::Client,
    /// Hex Ed25519 public key of the configured checkpoint signing key.
    pub public_key: Option<String>,
    /// The signing key, for signing export manifests.
    pub signer: Option<tollgate_contract::audit::checkpoint::CheckpointSigner>,
    /// API keys; `None` when PostgreSQL was unreachable at start (503).
    pub keys: Option<KeyStore>,
}

pub use crate::access::Denied;

/// The key behind `secret` if it may read audit trails (of its own org, or
/// of every org when it has no org scope).
pub async fn authenticate(keys: Option<&KeyStore>, secret: Option<&str>) -> Result<ApiKey, Denied> {
    crate::access::authenticate(keys, secret, &AUDIT_ROLES, "read audit trails").await
}

/// Whether `key` may see `org`'s entries.
pub fn may_see_org(key: &ApiKey, org: &str) -> bool {
    key.org_id.as_deref().is_none_or(|scope| scope == org)
}

/// The org filter to apply for `key` given the requested `org` (empty: any):
/// a scoped key is pinned to its org; asking for another is `NotFound`.
pub fn scoped_org(key: &ApiKey, requested: &str) -> Result<String, Denied> {
    match key.org_id.as_deref() {
        None => Ok(requested.to_string()),
        Some(scope) if requested.is_empty() || requested == scope => Ok(scope.to_string()),
        Some(_) => Err(Denied::NotFound(format!(
            "no audit trail for org {requested}"
        ))),
    }
}
