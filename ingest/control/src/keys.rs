//! API keys: creating them, checking a presented secret, revoking and listing.
//! A secret looks like `tg_<prefix>_<random>`; the 8-character prefix is the
//! key's public name (shown in lists and logs, used for lookup), the random
//! part comes from the operating system's RNG. Only the SHA-256 of the whole
//! secret is stored, so the secret is shown once, at creation, and never again.

use chrono::{DateTime, Utc};
use rand::rngs::OsRng;
use rand::TryRngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ControlError;

/// Roles a key can have. `ingest` sends events; `proxy` calls models through
/// the proxy; `admin` may do everything; the others are the report API's
/// readers, with the meaning a person's grant of that role has
/// (`accounts::Role`).
pub const ROLES: [&str; 7] = [
    "ingest",
    "proxy",
    "admin",
    "finance",
    "sre",
    "compliance",
    "viewer",
];
/// Roles that may send events to `POST /v1/events`.
pub const INGEST_ROLES: [&str; 2] = ["ingest", "admin"];

const SECRET_SCHEME: &str = "tg";
const PREFIX_LEN: usize = 8;
const RANDOM_LEN: usize = 40;
const PREFIX_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
pub(crate) const RANDOM_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The columns of [`ApiKey`], in its order.
const KEY_COLUMNS: &str = "id, name, prefix, org_id, role, created_at, revoked_at";

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    /// When set, the key may only send (or read) this org's events.
    pub org_id: Option<String>,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// Who made a change, as admin events and stored records name it.
    pub fn actor(&self) -> String {
        format!("key:{}", self.prefix)
    }

    /// How pages name the key: `search-svc (tg_abcd1234)`, its name and
    /// the start of its secret.
    pub fn label(&self) -> String {
        format!("{} ({SECRET_SCHEME}_{})", self.name, self.prefix)
    }

    pub fn may_ingest(&self) -> bool {
        INGEST_ROLES.contains(&self.role.as_str())
    }
}

/// A key as `tollgate keys list` shows it: with the tenant and the model
/// allow-list the proxy holds it to, so an operator can audit scoping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ListedKey {
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub key: ApiKey,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    /// Models (exact or `prefix*`) the key may use through the proxy;
    /// `None`: any model.
    pub allowed_models: Option<Vec<String>>,
}

/// The team and user a key is scoped to, when it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct KeyTenant {
    pub team_id: Option<String>,
    pub user_id: Option<String>,
}

/// A key just created; `secret` exists only in this value.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub id: Uuid,
    pub prefix: String,
    pub secret: String,
}

/// API keys in PostgreSQL table `api_keys`.
#[derive(Clone)]
pub struct KeyStore {
    pool: PgPool,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    #[sqlx(flatten)]
    key: ApiKey,
    #[sqlx(flatten)]
    tenant: KeyTenant,
    secret_hash: Vec<u8>,
}

/// A verified key with the team and user it is scoped to: what an edge
/// that takes the tenant from the key (the OTLP receiver) caches in one
/// piece, so that a request needs PostgreSQL for neither.
#[derive(Debug, Clone)]
pub struct TenantKey {
    pub key: ApiKey,
    pub tenant: KeyTenant,
}

/// An id a key is scoped to, judged as the events it makes are
/// ([`tollgate_contract::validate::check_scope_id`]), the refusal naming
/// `field`.
pub fn scope_id(field: &'static str, value: &str) -> Result<(), ControlError> {
    tollgate_contract::validate::check_scope_id(field, value).map_err(|refused| {
        ControlError::InvalidInput {
            field,
            reason: refused.reason,
        }
    })
}

/// Whether `id` reads as the control plane's own tenant (`_tollgate`, in
/// any case).
pub fn reserved_tenant(id: &str) -> bool {
    id.eq_ignore_ascii_case(tollgate_contract::admin::CONTROL_PLANE_TENANT)
}

/// The refusal of a reserved tenant id in `field`.
pub fn reserved(field: &'static str, id: &str) -> ControlError {
    ControlError::InvalidInput {
        field,
        reason: format!(
            "{id:?} is reserved for Tollgate's own control-plane trail: calls cannot be made under it"
        ),
    }
}

impl KeyStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Create a key named `name`, optionally scoped to `org_id`, with `role`
    /// (one of [`ROLES`]).
    pub async fn create(
        &self,
        name: &str,
        org_id: Option<&str>,
        role: &str,
    ) -> Result<CreatedKey, ControlError> {
        // A control character (NUL, an escape sequence) would be refused
        // by PostgreSQL as a 503, or printed raw into a terminal by `keys
        // list`.
        if name.trim().is_empty()
            || name.chars().count() > 200
            || name.chars().any(char::is_control)
        {
            return Err(ControlError::InvalidInput {
                field: "name",
                reason: "must be 1 to 200 characters without control characters".into(),
            });
        }
        if let Some(org) = org_id {
            scope_id("org", org)?;
            // A writer's calls under the control plane's tenant would be
            // chained into its trail; readers may be scoped to it.
            if matches!(role, "ingest" | "proxy") && reserved_tenant(org) {
                return Err(reserved("org", org));
            }
        }
        if !ROLES.contains(&role) {
            return Err(ControlError::InvalidInput {
                field: "role",
                reason: format!(
                    "unknown role {role:?}; expected one of {}",
                    ROLES.join(", ")
                ),
            });
        }
        // A prefix collision is astronomically rare but not impossible; try again.
        for _ in 0..3 {
            let prefix = random_string(PREFIX_ALPHABET, PREFIX_LEN)?;
            let secret = format!(
                "{SECRET_SCHEME}_{prefix}_{}",
                random_string(RANDOM_ALPHABET, RANDOM_LEN)?
            );
            let id = Uuid::now_v7();
            let inserted = sqlx::query(
                "INSERT INTO api_keys (id, name, prefix, secret_hash, org_id, role) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(name)
            .bind(&prefix)
            .bind(hash_secret(&secret).to_vec())
            .bind(org_id)
            .bind(role)
            .execute(&self.pool)
            .await;
            match inserted {
                Ok(_) => {
                    tracing::info!(%id, %prefix, name, org_id, role, "api key created");
                    return Ok(CreatedKey { id, prefix, secret });
                }
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => continue,
                Err(err) => return Err(ControlError::postgres("creating an API key", err)),
            }
        }
        Err(ControlError::Internal(
            "could not find a free key prefix in 3 tries".into(),
        ))
    }

    /// The key `secret` belongs to, if it exists and is not revoked.
    pub async fn verify(&self, secret: &str) -> Result<Option<ApiKey>, ControlError> {
        Ok(self.verify_with_tenant(secret).await?.map(|k| k.key))
    }

    /// [`KeyStore::verify`], with the team and user the key is scoped to
    /// (`tollgate keys create --team/--user`), in the same query.
    pub async fn verify_with_tenant(
        &self,
        secret: &str,
    ) -> Result<Option<TenantKey>, ControlError> {
        let Some(prefix) = parse_prefix(secret) else {
            return Ok(None);
        };
        let row: Option<KeyRow> = sqlx::query_as(
            "SELECT id, name, prefix, org_id, role, created_at, revoked_at, team_id, user_id, secret_hash FROM api_keys WHERE prefix = $1",
        )
        .bind(prefix)
        .fetch_optional(&self.pool)
        .await
        .map_err(|err| ControlError::postgres("checking an API key", err))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let matches = constant_time_eq(&hash_secret(secret), &row.secret_hash);
        if !matches || row.key.revoked_at.is_some() {
            return Ok(None);
        }
        Ok(Some(TenantKey {
            key: row.key,
            tenant: row.tenant,
        }))
    }

    /// Revoke the key with `prefix`. `Ok(false)` when no active key has it.
    pub async fn revoke(&self, prefix: &str) -> Result<bool, ControlError> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = now() WHERE prefix = $1 AND revoked_at IS NULL",
        )
        .bind(prefix)
        .execute(&self.pool)
        .await
        .map_err(|err| ControlError::postgres("revoking an API key", err))?;
        let revoked = done.rows_affected() > 0;
        if revoked {
            tracing::info!(prefix, "api key revoked");
        }
        Ok(revoked)
    }

    /// The key named `prefix`, revoked or not.
    pub async fn find(&self, prefix: &str) -> Result<Option<ApiKey>, ControlError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE prefix = $1"
        )))
        .bind(prefix)
        .fetch_optional(&self.pool)
        .await
        .map_err(|err| ControlError::postgres("reading an API key", err))
    }

    /// Revoke key `id`; the key as revoked, or `None` when no active key has
    /// that id (unknown, or revoked before).
    pub async fn revoke_id(&self, id: Uuid) -> Result<Option<ApiKey>, ControlError> {
        let revoked: Option<ApiKey> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL \
             RETURNING {KEY_COLUMNS}"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|err| ControlError::postgres("revoking an API key", err))?;
        if let Some(key) = &revoked {
            tracing::info!(%id, prefix = key.prefix, "api key revoked");
        }
        Ok(revoked)
    }

    /// The key a budget or a rate limit of kind `key` names: `given` is
    /// the key's id (a UUID, as events carry it in `api_key_id` and the
    /// proxy matches it) or its prefix (as `keys list` and the admin pages
    /// show it); the answer is the id, which is what such a budget or limit
    /// must store to ever apply. `Ok(Err(reason))` when no key of `org`
    /// (or without an org) has that id or prefix, or when it is revoked.
    pub async fn subject_id(
        &self,
        given: &str,
        org: Option<&str>,
    ) -> Result<Result<Uuid, String>, ControlError> {
        Ok(self.subject_key(given, org).await?.map(|key| key.id))
    }

    /// [`KeyStore::subject_id`]'s key, whole (its org with its id).
    pub async fn subject_key(
        &self,
        given: &str,
        org: Option<&str>,
    ) -> Result<Result<ApiKey, String>, ControlError> {
        let key: Option<ApiKey> = match Uuid::try_parse(given) {
            Ok(id) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|err| ControlError::postgres("reading an API key", err))?,
            Err(_) => self.find(given).await?,
        };
        // Another org's key is answered as no key at all: naming its org
        // would tell an admin of one org about another's keys.
        let key = key.filter(|k| match (k.org_id.as_deref(), org) {
            (Some(owner), Some(org)) => owner == org,
            _ => true,
        });
        Ok(match key {
            None => Err(match org {
                Some(org) => format!(
                    "org {org} has no API key with the id or prefix {given:?} (`tollgate keys \
                     list` shows the prefixes, `--json` the ids)"
                ),
                None => format!(
                    "no API key has the id or prefix {given:?} (`tollgate keys list` shows the \
                     prefixes, `--json` the ids)"
                ),
            }),
            Some(key) if key.revoked_at.is_some() => Err(format!(
                "key {} is revoked: a budget or limit of it would never apply",
                key.prefix
            )),
            Some(key) => Ok(key),
        })
    }

    /// [`KeyStore::subject_id`], written over `subject` (a budget's,
    /// rate limit's or spend rule's key, as given) when the key is found.
    pub async fn name_by_id(
        &self,
        subject: &mut String,
        org: Option<&str>,
    ) -> Result<Result<(), String>, ControlError> {
        Ok(self
            .subject_id(subject, org)
            .await?
            .map(|id| *subject = id.to_string()))
    }

    /// The keys among `ids` that a page may name (revoked ones
    /// included), in one query: with `orgs`, only keys of those orgs (a
    /// reader limited to some orgs learns no other org's key names, nor
    /// those of keys without an org); with `None`, any key. An id no key
    /// has is left out.
    pub async fn of_ids(
        &self,
        ids: &[Uuid],
        orgs: Option<&[String]>,
    ) -> Result<Vec<ApiKey>, ControlError> {
        if ids.is_empty() || orgs.is_some_and(<[String]>::is_empty) {
            return Ok(Vec::new());
        }
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys \
             WHERE id = ANY($1) AND ($2::text[] IS NULL OR org_id = ANY($2))"
        )))
        .bind(ids)
        .bind(orgs)
        .fetch_all(&self.pool)
        .await
        .map_err(|err| ControlError::postgres("naming API keys", err))
    }

    /// Every key, oldest first, revoked ones included.
    pub async fn list(&self) -> Result<Vec<ApiKey>, ControlError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(|err| ControlError::postgres("listing API keys", err))
    }

    /// Every key with its tenant and model allow-list, oldest first.
    pub async fn list_scoped(&self) -> Result<Vec<ListedKey>, ControlError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS}, team_id, user_id, allowed_models FROM api_keys \
             ORDER BY created_at, id"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(|err| ControlError::postgres("listing API keys", err))
    }
}

/// The prefix of the key `given` names: the prefix itself (`abcd1234`),
/// `tg_abcd1234`, or a whole secret someone pasted; `None` when it is none
/// of these. What to revoke can be named without the secret, and a pasted
/// secret is never echoed back.
pub fn prefix_named(given: &str) -> Option<&str> {
    let given = given.trim();
    let rest = given
        .strip_prefix(SECRET_SCHEME)
        .and_then(|r| r.strip_prefix('_'))
        .unwrap_or(given);
    let prefix = rest.split_once('_').map_or(rest, |(prefix, _)| prefix);
    let well_formed =
        prefix.len() == PREFIX_LEN && prefix.bytes().all(|b| PREFIX_ALPHABET.contains(&b));
    well_formed.then_some(prefix)
}

/// SHA-256 of the whole secret string.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The prefix of a well-formed secret `tg_<prefix>_<random>`.
fn parse_prefix(secret: &str) -> Option<&str> {
    let rest = secret.strip_prefix(SECRET_SCHEME)?.strip_prefix('_')?;
    let (prefix, random) = rest.split_once('_')?;
    let well_formed = prefix.len() == PREFIX_LEN
        && prefix.bytes().all(|b| PREFIX_ALPHABET.contains(&b))
        && random.len() == RANDOM_LEN
        && random.bytes().all(|b| RANDOM_ALPHABET.contains(&b));
    well_formed.then_some(prefix)
}

/// Compare without an early exit, so timing does not reveal how many leading
/// bytes of a guessed hash were right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// `len` characters drawn uniformly from `alphabet` using the OS RNG
/// (rejection sampling, so no character is more likely than another).
pub(crate) fn random_string(alphabet: &[u8], len: usize) -> Result<String, ControlError> {
    let n = alphabet.len();
    let usable = 256 - 256 % n;
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        OsRng
            .try_fill_bytes(&mut buf)
            .map_err(|err| ControlError::Internal(format!("operating system RNG failed: {err}")))?;
        for &b in &buf {
            if usize::from(b) < usable && out.len() < len {
                out.push(char::from(alphabet[usize::from(b) % n]));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_named_by_its_prefix_or_its_secret() {
        let secret = format!("tg_abcd1234_{}", "A".repeat(RANDOM_LEN));
        for given in [
            "abcd1234",
            "tg_abcd1234",
            secret.as_str(),
            "tg_abcd1234_typo",
        ] {
            assert_eq!(prefix_named(given), Some("abcd1234"), "{given}");
        }
        for given in ["abcd123", "ABCD1234", "", "tg_", "sk-abcd1234", "abcd12345"] {
            assert_eq!(prefix_named(given), None, "{given}");
        }
    }

    #[test]
    fn secrets_parse_and_hash() {
        let prefix = random_string(PREFIX_ALPHABET, PREFIX_LEN).unwrap();
        let secret = format!(
            "tg_{prefix}_{}",
            random_string(RANDOM_ALPHABET, RANDOM_LEN).unwrap()
        );
        assert_eq!(parse_prefix(&secret), Some(prefix.as_str()));
        assert_eq!(hash_secret(&secret), hash_secret(&secret));
        assert_ne!(hash_secret(&secret), hash_secret(&format!("{secret}x")));
        assert!(parse_prefix("tg_short_abc").is_none());
        assert!(parse_prefix("Bearer tg_").is_none());
        assert!(parse_prefix(&format!("xx_{prefix}_{}", "a".repeat(RANDOM_LEN))).is_none());
    }

    #[test]
    fn random_strings_use_the_alphabet_and_differ() {
        let a = random_string(RANDOM_ALPHABET, RANDOM_LEN).unwrap();
        let b = random_string(RANDOM_ALPHABET, RANDOM_LEN).unwrap();
        assert_eq!(a.len(), RANDOM_LEN);
        assert!(a.bytes().all(|c| RANDOM_ALPHABET.contains(&c)));
        assert_ne!(a, b);
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
