//! Virtual keys: the proxy authenticates clients with Tollgate API keys (the
//! `api_keys` table) presented as `Authorization: Bearer <key>` (OpenAI
//! SDKs) or `x-api-key` (Anthropic SDKs), and takes the tenant of every call
//! (org, team, user) from the key, never from the request. Verified keys are
//! cached for `proxy.key_cache_secs`, unknown ones for a few seconds, so the
//! request path rarely touches PostgreSQL; while PostgreSQL does not
//! answer, a key verified within `proxy.key_cache_stale_secs` keeps working
//! (`tollgate_control::key_cache`).

use axum::http::HeaderMap;
use sqlx::PgPool;
use uuid::Uuid;

use tollgate_control::key_cache::{KeyCache as VerifiedKeys, KeyCachePolicy};
use tollgate_control::keys::KeyStore;
use tollgate_control::ControlError;

/// Roles whose keys may call the proxy.
pub const PROXY_ROLES: [&str; 2] = ["proxy", "admin"];
/// Tenant fields of a key that has none.
pub const UNASSIGNED: &str = "unassigned";

/// A key as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualKey {
    pub id: Uuid,
    pub prefix: String,
    pub role: String,
    pub org_id: String,
    pub team_id: String,
    pub user_id: String,
    /// Models (exact or `prefix*`) the key may use; empty = any.
    pub allowed_models: Vec<String>,
}

impl VirtualKey {
    pub fn may_use_proxy(&self) -> bool {
        PROXY_ROLES.contains(&self.role.as_str())
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.allowed_models.is_empty()
            || self
                .allowed_models
                .iter()
                .any(|m| match m.strip_suffix('*') {
                    Some(prefix) => model.starts_with(prefix),
                    None => m == model,
                })
    }
}

/// The secret a client presented, if any: `Authorization: Bearer` first,
/// then `x-api-key`.
pub fn presented_secret(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    bearer
        .or_else(|| {
            headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        })
        .filter(|s| !s.is_empty())
}

pub struct KeyCache {
    store: KeyStore,
    pool: PgPool,
    verified: VerifiedKeys<VirtualKey>,
}

#[derive(sqlx::FromRow)]
struct Scope {
    org_id: Option<String>,
    team_id: Option<String>,
    user_id: Option<String>,
    allowed_models: Option<Vec<String>>,
}

impl KeyCache {
    pub fn new(pool: PgPool, policy: KeyCachePolicy) -> Self {
        let options = pool.connect_options();
        let address = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        );
        Self {
            store: KeyStore::new(pool.clone()),
            pool,
            verified: VerifiedKeys::new(policy, address),
        }
    }

    /// How many requests were let through on a key verified before a
    /// failing check (PostgreSQL unreachable).
    pub fn served_stale(&self) -> u64 {
        self.verified.served_stale()
    }

    /// The key `secret` belongs to, if it exists and is not revoked (the
    /// caller checks its role: [`VirtualKey::may_use_proxy`]).
    pub async fn verify(&self, secret: &str) -> Result<Option<VirtualKey>, ControlError> {
        self.verified.get(secret, || self.lookup(secret)).await
    }

    /// The key and its tenant, from PostgreSQL.
    async fn lookup(&self, secret: &str) -> Result<Option<VirtualKey>, ControlError> {
        let key = match self.store.verify(secret).await? {
            None => None,
            Some(key) => {
                let scope: Scope = sqlx::query_as(
                    "SELECT org_id, team_id, user_id, allowed_models FROM api_keys WHERE id = $1",
                )
                .bind(key.id)
                .fetch_one(&self.pool)
                .await
                .map_err(|err| ControlError::postgres("reading a key's tenant", err))?;
                Some(VirtualKey {
                    id: key.id,
                    prefix: key.prefix,
                    role: key.role,
                    org_id: scope.org_id.unwrap_or_else(|| UNASSIGNED.into()),
                    team_id: scope.team_id.unwrap_or_else(|| UNASSIGNED.into()),
                    user_id: scope.user_id.unwrap_or_default(),
                    allowed_models: scope.allowed_models.unwrap_or_default(),
                })
            }
        };
        Ok(key)
    }
}

/// Check a key's tenant and model allow-list before it is created with
/// them ([`set_scope`]): a team or user of 1 to 128 characters without
/// control characters, and models none of which is empty (an empty name
/// matches no model, so a key allowed only `""` could call none, where no
/// list at all means any model).
pub fn check_scope(
    team_id: Option<&str>,
    user_id: Option<&str>,
    allowed_models: &[String],
) -> Result<(), ControlError> {
    let well_formed =
        |v: &str| !v.is_empty() && v.chars().count() <= 128 && !v.chars().any(char::is_control);
    // The key's calls carry its team and user: judged as the processors
    // judge events, so none is dead-lettered (and so unbilled) for them.
    for (field, value) in [("team", team_id), ("user", user_id)] {
        if let Some(v) = value {
            tollgate_control::keys::scope_id(field, v)?;
        }
    }
    if let Some(team) = team_id.filter(|t| tollgate_control::keys::reserved_tenant(t)) {
        return Err(tollgate_control::keys::reserved("team", team));
    }
    if let Some(position) = allowed_models.iter().position(|m| m.trim().is_empty()) {
        return Err(ControlError::InvalidInput {
            field: "models",
            reason: format!(
                "model {} of {} is empty: list model names or `prefix*` separated by commas, or \
                 leave the list out to allow any model",
                position + 1,
                allowed_models.len()
            ),
        });
    }
    if let Some(model) = allowed_models.iter().find(|m| !well_formed(m)) {
        return Err(ControlError::InvalidInput {
            field: "models",
            reason: format!(
                "{model:?}: a model must be 1 to 128 characters without control characters"
            ),
        });
    }
    Ok(())
}

/// Give key `id` a tenant and a model allow-list (used by `tollgate keys
/// create --team/--user/--models`), checked by [`check_scope`].
pub async fn set_scope(
    pool: &PgPool,
    id: Uuid,
    team_id: Option<&str>,
    user_id: Option<&str>,
    allowed_models: &[String],
) -> Result<(), ControlError> {
    check_scope(team_id, user_id, allowed_models)?;
    let models = (!allowed_models.is_empty()).then(|| allowed_models.to_vec());
    sqlx::query(
        "UPDATE api_keys SET team_id = $2, user_id = $3, allowed_models = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(team_id)
    .bind(user_id)
    .bind(models)
    .execute(pool)
    .await
    .map_err(|err| ControlError::postgres("setting a key's tenant", err))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trial made a key with `--models ''` that could call no model.
    #[test]
    fn an_empty_model_in_the_allow_list_is_refused() {
        let models = |list: &[&str]| list.iter().map(|m| m.to_string()).collect::<Vec<_>>();
        assert!(check_scope(Some("t"), None, &models(&["gpt-4o", "claude-*"])).is_ok());
        assert!(check_scope(None, None, &[]).is_ok());
        for list in [&[""][..], &["a", "", "b"], &["a", " "]] {
            let Err(ControlError::InvalidInput { field, reason }) =
                check_scope(None, None, &models(list))
            else {
                panic!("{list:?} accepted");
            };
            assert_eq!(field, "models");
            assert!(reason.contains("is empty"), "{reason}");
        }
        assert!(matches!(
            check_scope(Some(""), None, &[]),
            Err(ControlError::InvalidInput { field: "team", .. })
        ));
    }

    /// A key's team and user are what its calls' events carry: an id the
    /// processors would dead-letter (and so leave unbilled) is refused when
    /// the key is made, as the hostile trial's ids were at the ingest API.
    #[test]
    fn a_scope_the_events_could_not_carry_is_refused() {
        let refused = |team: Option<&str>, user: Option<&str>| match check_scope(team, user, &[]) {
            Err(ControlError::InvalidInput { field, reason }) => (field, reason),
            other => panic!("{team:?} {user:?}: {other:?}"),
        };
        let (field, reason) = refused(Some(" payments"), None);
        assert_eq!(field, "team");
        assert!(reason.contains("whitespace"), "{reason}");
        let (field, reason) = refused(None, Some("alice\u{202e}"));
        assert_eq!(field, "user");
        assert!(reason.contains("U+202E"), "{reason}");
        let (field, reason) = refused(Some("_TOLLGATE"), None);
        assert_eq!(field, "team");
        assert!(reason.contains("reserved"), "{reason}");
        assert!(check_scope(Some("payments"), Some("alice"), &[]).is_ok());
    }

    #[test]
    fn secrets_come_from_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_secret(&h), None);
        h.insert("x-api-key", "tg_a".parse().unwrap());
        assert_eq!(presented_secret(&h), Some("tg_a"));
        h.insert("authorization", "Bearer tg_b".parse().unwrap());
        assert_eq!(presented_secret(&h), Some("tg_b"));
    }

    #[test]
    fn allow_list_matches_exact_and_prefix() {
        let mut key = VirtualKey {
            id: Uuid::nil(),
            prefix: "p".into(),
            role: "proxy".into(),
            org_id: "o".into(),
            team_id: "t".into(),
            user_id: String::new(),
            allowed_models: vec![],
        };
        assert!(key.allows_model("anything"));
        key.allowed_models = vec!["gpt-4o-mini".into(), "claude-*".into()];
        assert!(key.allows_model("gpt-4o-mini"));
        assert!(key.allows_model("claude-3-haiku"));
        assert!(!key.allows_model("gpt-4o"));
    }
}
