//! The `provider_credentials` table: one sealed credential per provider.
//! Every change commits with its `admin.provider_credential.*` event in
//! the outbox and a notification on [`CREDENTIALS_CHANNEL`], which proxies
//! listen to. Nothing here returns or logs a credential except
//! [`CredentialStore::load`], which the proxy calls to use them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use tollgate_contract::admin::{
    admin_event, KIND_PROVIDER_CREDENTIAL_REMOVED, KIND_PROVIDER_CREDENTIAL_ROTATED,
    KIND_PROVIDER_CREDENTIAL_SET,
};

use super::master_key::{Keyring, MasterKey};
use super::sealing::{self, Sealed};
use super::{check_credential, check_provider, SecretsError};
use crate::outbox::{enqueue, Enqueued};

/// PostgreSQL notification channel announcing a credential change.
pub const CREDENTIALS_CHANNEL: &str = "tollgate_provider_credentials";

/// What may be shown of a stored credential: never the credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct CredentialInfo {
    pub provider: String,
    /// The master key it is sealed under.
    pub key_id: String,
    /// [`sealing::fingerprint`] of the credential.
    pub fingerprint: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When it was last re-encrypted under a new master key.
    pub rotated_at: Option<DateTime<Utc>>,
    /// Who stored it (`cli:<user>`, `key:<prefix>`, `user:<email>`).
    pub updated_by: String,
}

const INFO_COLUMNS: &str =
    "provider, key_id, fingerprint, created_at, updated_at, rotated_at, updated_by";

/// The outcome of re-encrypting every credential under a new master key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rotation {
    /// The providers whose credentials were re-encrypted.
    pub providers: Vec<String>,
    /// The key ids they were under before.
    pub from_key_ids: Vec<String>,
    pub to_key_id: String,
    /// The admin event's outbox row, when there were credentials.
    #[serde(skip)]
    pub event: Option<Enqueued>,
}

#[derive(sqlx::FromRow)]
struct SealedRow {
    provider: String,
    key_id: String,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
}

impl SealedRow {
    fn sealed(self) -> (String, Sealed) {
        (
            self.provider,
            Sealed {
                key_id: self.key_id,
                nonce: self.nonce,
                ciphertext: self.ciphertext,
            },
        )
    }
}

#[derive(Debug, Clone)]
pub struct CredentialStore {
    pool: PgPool,
}

impl CredentialStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Store (or replace) `provider`'s credential, sealed under the
    /// keyring's current key; returns what lists show and the admin event.
    pub async fn set(
        &self,
        keyring: &Keyring,
        provider: &str,
        credential: &SecretString,
        actor: &str,
    ) -> Result<(CredentialInfo, Enqueued), SecretsError> {
        check_provider(provider)?;
        check_credential(credential)?;
        let sealed = sealing::seal(keyring.current(), provider, credential)?;
        let fingerprint = sealing::fingerprint(credential);
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(SecretsError::postgres("storing a provider credential"))?;
        let info: CredentialInfo = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO provider_credentials (provider, key_id, nonce, ciphertext, fingerprint, updated_by)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (provider) DO UPDATE SET key_id = EXCLUDED.key_id, nonce = EXCLUDED.nonce,
                 ciphertext = EXCLUDED.ciphertext, fingerprint = EXCLUDED.fingerprint,
                 updated_by = EXCLUDED.updated_by, updated_at = now(), rotated_at = NULL
             RETURNING {INFO_COLUMNS}"
        )))
        .bind(provider)
        .bind(&sealed.key_id)
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .bind(&fingerprint)
        .bind(actor)
        .fetch_one(&mut *tx)
        .await
        .map_err(SecretsError::postgres("storing a provider credential"))?;
        let event = admin_event(
            KIND_PROVIDER_CREDENTIAL_SET,
            actor,
            json!({ "provider": provider, "key_id": info.key_id, "fingerprint": info.fingerprint }),
        );
        let enqueued = self.commit_with(tx, &event).await?;
        Ok((info, enqueued))
    }

    /// Remove `provider`'s credential; `None` when there was none.
    pub async fn remove(
        &self,
        provider: &str,
        actor: &str,
    ) -> Result<Option<(CredentialInfo, Enqueued)>, SecretsError> {
        check_provider(provider)?;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(SecretsError::postgres("removing a provider credential"))?;
        let removed: Option<CredentialInfo> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "DELETE FROM provider_credentials WHERE provider = $1 RETURNING {INFO_COLUMNS}"
        )))
        .bind(provider)
        .fetch_optional(&mut *tx)
        .await
        .map_err(SecretsError::postgres("removing a provider credential"))?;
        let Some(info) = removed else {
            return Ok(None);
        };
        let event = admin_event(
            KIND_PROVIDER_CREDENTIAL_REMOVED,
            actor,
            json!({ "provider": provider, "key_id": info.key_id, "fingerprint": info.fingerprint }),
        );
        let enqueued = self.commit_with(tx, &event).await?;
        Ok(Some((info, enqueued)))
    }

    /// Every stored credential's public description, by provider.
    pub async fn list(&self) -> Result<Vec<CredentialInfo>, SecretsError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {INFO_COLUMNS} FROM provider_credentials ORDER BY provider"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(SecretsError::postgres("listing provider credentials"))
    }

    /// One provider's description.
    pub async fn get(&self, provider: &str) -> Result<Option<CredentialInfo>, SecretsError> {
        check_provider(provider)?;
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {INFO_COLUMNS} FROM provider_credentials WHERE provider = $1"
        )))
        .bind(provider)
        .fetch_optional(&self.pool)
        .await
        .map_err(SecretsError::postgres("reading a provider credential"))
    }

    /// Every sealed row, by provider.
    pub async fn sealed(&self) -> Result<BTreeMap<String, Sealed>, SecretsError> {
        let rows: Vec<SealedRow> =
            sqlx::query_as("SELECT provider, key_id, nonce, ciphertext FROM provider_credentials")
                .fetch_all(&self.pool)
                .await
                .map_err(SecretsError::postgres("reading provider credentials"))?;
        Ok(rows.into_iter().map(SealedRow::sealed).collect())
    }

    /// The stored credentials of `providers`, opened with `keyring`: for
    /// each provider with a row, its credential or why it cannot be opened.
    pub async fn load(
        &self,
        keyring: Option<&Keyring>,
        providers: &[&str],
    ) -> Result<BTreeMap<String, Result<SecretString, SecretsError>>, SecretsError> {
        let sealed = self.sealed().await?;
        Ok(sealed
            .into_iter()
            .filter(|(p, _)| providers.contains(&p.as_str()))
            .map(|(provider, sealed)| {
                let opened = match keyring {
                    Some(ring) => sealing::open(ring, &provider, &sealed),
                    None => Err(SecretsError::MasterKeyMissing {
                        needed_for: format!(
                            "decrypt provider {provider}'s stored credential (key id {})",
                            sealed.key_id
                        ),
                    }),
                };
                (provider, opened)
            })
            .collect())
    }

    /// Re-encrypt every credential under `new` in one transaction (writers
    /// wait, readers do not): opened with `keyring`, sealed under `new` with
    /// fresh nonces. Any row that does not open aborts the whole rotation,
    /// leaving every row as it was.
    pub async fn rotate(
        &self,
        keyring: &Keyring,
        new: &MasterKey,
        actor: &str,
    ) -> Result<Rotation, SecretsError> {
        let doing = "re-encrypting provider credentials";
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(SecretsError::postgres(doing))?;
        // Writers (set, remove, another rotation) wait; proxies keep reading.
        sqlx::query("LOCK TABLE provider_credentials IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(SecretsError::postgres(doing))?;
        let rows: Vec<SealedRow> = sqlx::query_as(
            "SELECT provider, key_id, nonce, ciphertext FROM provider_credentials ORDER BY provider",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(SecretsError::postgres(doing))?;
        let mut providers = Vec::new();
        let mut from_key_ids = Vec::new();
        for row in rows {
            let (provider, sealed) = row.sealed();
            let credential = sealing::open(keyring, &provider, &sealed)?;
            let resealed = sealing::seal(new, &provider, &credential)?;
            sqlx::query(
                "UPDATE provider_credentials SET key_id = $2, nonce = $3, ciphertext = $4, rotated_at = now()
                 WHERE provider = $1",
            )
            .bind(&provider)
            .bind(&resealed.key_id)
            .bind(&resealed.nonce)
            .bind(&resealed.ciphertext)
            .execute(&mut *tx)
            .await
            .map_err(SecretsError::postgres(doing))?;
            if !from_key_ids.contains(&sealed.key_id) {
                from_key_ids.push(sealed.key_id);
            }
            providers.push(provider);
        }
        from_key_ids.sort();
        let event = if providers.is_empty() {
            tx.commit().await.map_err(SecretsError::postgres(doing))?;
            None
        } else {
            let event = admin_event(
                KIND_PROVIDER_CREDENTIAL_ROTATED,
                actor,
                json!({ "providers": providers, "from_key_ids": from_key_ids, "to_key_id": new.id() }),
            );
            Some(self.commit_with(tx, &event).await?)
        };
        Ok(Rotation {
            providers,
            from_key_ids,
            to_key_id: new.id().to_string(),
            event,
        })
    }

    /// Put `event` in the outbox, notify the proxies and commit.
    async fn commit_with(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        event: &tollgate_contract::Event,
    ) -> Result<Enqueued, SecretsError> {
        let doing = "recording a provider credential change";
        let enqueued = enqueue(&mut tx, event)
            .await
            .map_err(SecretsError::postgres(doing))?;
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CREDENTIALS_CHANNEL)
            .execute(&mut *tx)
            .await
            .map_err(SecretsError::postgres(doing))?;
        tx.commit().await.map_err(SecretsError::postgres(doing))?;
        Ok(enqueued)
    }
}
