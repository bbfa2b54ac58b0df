//! The credential the proxy presents to each provider, and where it comes
//! from: PostgreSQL (`tollgate providers set`, sealed under the master key;
//! `tollgate_control::provider_credentials`), or, for a single-user setup,
//! the environment variable `api_key_env` names. A literal `api_key` in
//! the configuration is refused.
//!
//! Stored credentials are read at start (a row the proxy cannot decrypt
//! stops it, with the reason) and again whenever one changes (a `NOTIFY`
//! on `tollgate_provider_credentials`) and every
//! `proxy.credentials_refresh_secs`. A reload that cannot decrypt a row
//! keeps the credential the proxy already holds (and says so), so a
//! master-key rotation never interrupts calls, whichever order the
//! operator rolls it out in.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tollgate_control::change_feed::ChangeFeed;
use tollgate_control::provider_credentials::{CredentialStore, Keyring, CREDENTIALS_CHANNEL};

use crate::config::ProxyConfig;
use crate::metrics::ProxyMetrics;
use crate::ProxyStartError;

/// The credentials in use, by provider name.
pub struct ProviderCredentials {
    /// Providers whose credential is stored in PostgreSQL (the others read
    /// theirs from the environment once, at start).
    stored: Vec<String>,
    current: RwLock<HashMap<String, Arc<SecretString>>>,
    store: CredentialStore,
    keyring: Option<Keyring>,
    metrics: Arc<ProxyMetrics>,
}

impl std::fmt::Debug for ProviderCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held: Vec<String> = self
            .current
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("ProviderCredentials")
            .field("stored", &self.stored)
            .field("held", &held)
            .finish_non_exhaustive()
    }
}

impl ProviderCredentials {
    /// Resolve every configured provider's credential. Fails on a literal
    /// `api_key`, an unset `api_key_env` variable, or a stored credential
    /// that cannot be decrypted (no master key, the wrong one, an altered
    /// row).
    pub async fn load(
        config: &ProxyConfig,
        pool: PgPool,
        keyring: Option<Keyring>,
        metrics: Arc<ProxyMetrics>,
    ) -> Result<Arc<Self>, ProxyStartError> {
        let mut current = HashMap::new();
        let mut stored = Vec::new();
        for (name, provider) in &config.providers {
            if provider.api_key.is_some() {
                return Err(ProxyStartError::Config(format!(
                    "proxy.providers.{name}.api_key: a credential written in the configuration is refused (it would sit in plain text); \
                     store it encrypted with `tollgate providers set {name} --stdin` (docs/proxy.md, \"Provider credentials\") \
                     and delete the api_key line, or name an environment variable with api_key_env"
                )));
            }
            match &provider.api_key_env {
                Some(var) => {
                    let value = std::env::var(var).map_err(|_| {
                        ProxyStartError::Config(format!(
                            "proxy.providers.{name}: environment variable {var} (api_key_env) is not set"
                        ))
                    })?;
                    current.insert(name.clone(), Arc::new(SecretString::from(value)));
                }
                None => stored.push(name.clone()),
            }
        }
        let this = Self {
            stored,
            current: RwLock::new(current),
            store: CredentialStore::new(pool),
            keyring,
            metrics,
        };
        let loaded = this.read_stored().await.map_err(|err| {
            ProxyStartError::Credentials(format!("cannot read stored provider credentials: {err}"))
        })?;
        for (provider, opened) in loaded {
            let credential = opened.map_err(|err| ProxyStartError::Credentials(err.to_string()))?;
            this.put(&provider, credential);
        }
        for (name, provider) in &config.providers {
            if provider.api_key_env.is_some() {
                tracing::info!(provider = %name, "provider credential from the environment (api_key_env)");
            } else if this.get(name).is_some() {
                tracing::info!(provider = %name, "provider credential from postgresql (decrypted)");
            } else {
                tracing::warn!(provider = %name, "provider has no credential (none stored, no api_key_env): calls go upstream without one until `tollgate providers set {name}` stores one");
            }
        }
        Ok(Arc::new(this))
    }

    /// The credential to present to `provider`.
    pub fn get(&self, provider: &str) -> Option<Arc<SecretString>> {
        self.current
            .read()
            .ok()
            .and_then(|m| m.get(provider).cloned())
    }

    fn put(&self, provider: &str, credential: SecretString) {
        if let Ok(mut m) = self.current.write() {
            m.insert(provider.to_string(), Arc::new(credential));
        }
    }

    async fn read_stored(
        &self,
    ) -> Result<
        BTreeMap<
            String,
            Result<SecretString, tollgate_control::provider_credentials::SecretsError>,
        >,
        tollgate_control::provider_credentials::SecretsError,
    > {
        let names: Vec<&str> = self.stored.iter().map(String::as_str).collect();
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        self.store.load(self.keyring.as_ref(), &names).await
    }

    /// Read the stored credentials again: changed ones replace what is
    /// held, removed ones are dropped, ones that do not decrypt are kept as
    /// they were (a warning and `tollgate_proxy_credential_reload_failures_total`).
    pub async fn reload(&self) {
        let loaded = match self.read_stored().await {
            Ok(loaded) => loaded,
            Err(err) => {
                tracing::warn!(%err, "cannot reload provider credentials; keeping the ones held");
                ProxyMetrics::inc(&self.metrics.credential_reload_failures);
                return;
            }
        };
        for provider in &self.stored {
            match loaded.get(provider) {
                Some(Ok(credential)) => {
                    let changed = self
                        .get(provider)
                        .is_none_or(|held| held.expose_secret() != credential.expose_secret());
                    if changed {
                        self.put(provider, credential.clone());
                        tracing::info!(%provider, "provider credential changed in postgresql; using the new one");
                    }
                }
                Some(Err(err)) => {
                    ProxyMetrics::inc(&self.metrics.credential_reload_failures);
                    if self.get(provider).is_some() {
                        tracing::warn!(%provider, %err, "keeping the credential this proxy holds; give it the master key the row is under (TOLLGATE_MASTER_KEY, or TOLLGATE_MASTER_KEY_PREVIOUS during a rotation) and restart it");
                    } else {
                        tracing::error!(%provider, %err, "provider has no usable credential");
                    }
                }
                None => {
                    let removed = self
                        .current
                        .write()
                        .ok()
                        .and_then(|mut m| m.remove(provider));
                    if removed.is_some() {
                        tracing::warn!(%provider, "provider credential removed from postgresql; calls go upstream without one");
                    }
                }
            }
        }
    }

    /// Reload on every change announced on `tollgate_provider_credentials`
    /// and every `every` in any case (a missed notification, a listener
    /// that cannot connect), until `shutdown`.
    pub async fn keep_fresh(
        self: Arc<Self>,
        pool: PgPool,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        if self.stored.is_empty() {
            return;
        }
        let mut feed = ChangeFeed::new(&pool, CREDENTIALS_CHANNEL, every).await;
        while feed.changed(&shutdown).await {
            self.reload().await;
        }
    }
}
