//! The `[proxy]` configuration section: where the proxy listens, which
//! providers it forwards to (and with which credential, timeouts and retry
//! budget), model aliases and fallback routes, the event spool, the local
//! per-key rate limit. Defaults are compiled in; every key is documented in
//! `docs/proxy.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    pub listen: String,
    /// Largest accepted request body, in bytes (413 above).
    pub max_body_bytes: usize,
    /// The longest wait, in seconds, for the next piece of a request body
    /// (408 and the connection closed after it); 0: the default, 30.
    /// Responses are not bounded: a stream may run for minutes.
    pub body_read_timeout_secs: u64,
    /// Upstream providers by name (the name is what events carry as `provider`).
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Model names clients may use for another model: `fast = "gpt-4o-mini"`.
    pub aliases: BTreeMap<String, String>,
    /// Models to try, in order, when a model's provider fails before the
    /// first byte after all retries, or a reroute decision names no target.
    pub fallbacks: BTreeMap<String, Vec<String>>,
    /// Directory of the durable event spool (used while Kafka is
    /// unreachable) and of the write-ahead log (`wal/` inside it).
    pub spool_dir: String,
    /// What a crash may lose (`docs/proxy.md`, "Durability"): `fsync`
    /// (nothing: an attempt is forwarded, and an event queued, once its
    /// log record is fsynced), `batch` (nothing on a process crash; on a
    /// power loss the last `wal_fsync_interval_ms`), `none` (no log: a
    /// crash loses the in-memory queue).
    pub durability: Durability,
    /// With `durability = "batch"` the write-ahead log is fsynced at most
    /// this often, in milliseconds (one fsync covers every record written
    /// meanwhile). With `"fsync"` an fsync starts as soon as an append waits
    /// for it; the interval then only paces records nobody waits for.
    pub wal_fsync_interval_ms: u64,
    /// What happens to a call when the write-ahead log cannot be written
    /// (disk full): `refuse` (503, the call is not forwarded) or `serve`
    /// (forwarded; its events still go to Kafka from memory, unprotected
    /// against a crash).
    pub wal_unwritable: WalUnwritable,
    /// Events held in memory between the request path and Kafka.
    pub event_queue: usize,
    /// How long Kafka may take to acknowledge an event before the proxy
    /// spools it instead, in milliseconds.
    pub kafka_timeout_ms: u64,
    /// How often the spool's depth is written to ClickHouse's
    /// `pipeline_health`, seconds; 0 writes none.
    pub health_sample_secs: u64,
    /// Seconds a verified key is cached (revocation takes effect after this).
    pub key_cache_secs: u64,
    /// Seconds after its last successful check a key keeps working while
    /// PostgreSQL does not answer; 0 refuses every call (503) as soon as a
    /// key's check fails (`docs/reliability.md`).
    pub key_cache_stale_secs: u64,
    /// Seconds start-up waits for the decisions topic to be read to its end.
    pub decisions_load_secs: u64,
    /// Seconds between reloads of the stored provider credentials, besides
    /// the reload on every change PostgreSQL announces.
    pub credentials_refresh_secs: u64,
    pub rate_limit: RateLimitConfig,
    pub budgets: BudgetConfig,
    /// How this proxy takes its share of budgets among the live proxies
    /// (`docs/cost.md`, "Shares among proxies").
    pub shares: SharesConfig,
    /// The rate-limit tiers stored in PostgreSQL (`tollgate ratelimits`).
    pub tiers: TiersConfig,
    /// The proxy's own breaker per provider/model, for while the fleet
    /// breaker's decisions lag (`docs/proxy.md`, "Breakers").
    pub breaker: LocalBreakerConfig,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8082".into(),
            max_body_bytes: 4 * 1024 * 1024,
            body_read_timeout_secs: 30,
            providers: BTreeMap::new(),
            aliases: BTreeMap::new(),
            fallbacks: BTreeMap::new(),
            spool_dir: ".state/proxy-spool".into(),
            durability: Durability::Fsync,
            wal_fsync_interval_ms: 2,
            wal_unwritable: WalUnwritable::Refuse,
            event_queue: 10_000,
            kafka_timeout_ms: 5_000,
            health_sample_secs: 10,
            key_cache_secs: 30,
            key_cache_stale_secs: 900,
            decisions_load_secs: 10,
            credentials_refresh_secs: 30,
            rate_limit: RateLimitConfig::default(),
            budgets: BudgetConfig::default(),
            shares: SharesConfig::default(),
            tiers: TiersConfig::default(),
            breaker: LocalBreakerConfig::default(),
        }
    }
}

/// `proxy.durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    Fsync,
    Batch,
    None,
}

/// `proxy.wal_unwritable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalUnwritable {
    Refuse,
    Serve,
}

/// The local breaker: `failures` consecutive failures (429, 5xx, timeouts,
/// connect errors) of one provider/model open it for `open_ms`; then one
/// probe call at a time goes through, and a success closes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalBreakerConfig {
    /// Consecutive failures that open it; 0 turns the local breaker off.
    pub failures: u32,
    /// How long it stays open before letting a probe through, in ms.
    pub open_ms: u64,
}

impl Default for LocalBreakerConfig {
    fn default() -> Self {
        Self {
            failures: 5,
            open_ms: 5_000,
        }
    }
}

/// Budget reservations (`docs/cost.md`, "Reserve and settle").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// A fixed share of each budget's remaining amount and of each rate
    /// limit, in (0, 1] (a decimal string): an override for a proxy that
    /// must not take part in the live set (then its share is not
    /// rebalanced; the shares of all proxies must sum to at most 1 by
    /// hand). Unset (the default): one equal part of the live proxies'.
    pub share: Option<rust_decimal::Decimal>,
    /// Output tokens assumed for a call that sets no maximum (then the
    /// reservation is an estimate, not a bound).
    pub default_max_tokens: u64,
    /// Whether a model the price catalog has no price for is refused under
    /// a hard budget (the default: its cost cannot be bounded, nor counted
    /// against the budget, so it would spend past the limit unseen), or
    /// admitted without a reservation (`false`).
    pub refuse_unpriced: bool,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            share: None,
            default_max_tokens: 4096,
            refuse_unpriced: true,
        }
    }
}

/// The live proxies (`proxy_members` in PostgreSQL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SharesConfig {
    /// How long a membership lasts without renewal, in ms: a proxy that
    /// died gives its share back this long after its last renewal, and one
    /// that cannot renew spends nothing of budgets this long
    /// after its last successful renewal began.
    pub lease_ms: u64,
    /// How often the membership is renewed and the live set read, in ms
    /// (at most a third of `lease_ms`).
    pub renew_ms: u64,
}

impl Default for SharesConfig {
    fn default() -> Self {
        Self {
            lease_ms: 15_000,
            renew_ms: 3_000,
        }
    }
}

impl SharesConfig {
    /// The keys' ranges, named as in the configuration.
    pub fn validate(&self) -> Result<(), String> {
        if !(1_000..=3_600_000).contains(&self.lease_ms) {
            return Err(format!(
                "proxy.shares.lease_ms must be from 1000 to 3600000, got {}",
                self.lease_ms
            ));
        }
        if self.renew_ms < 100 || self.renew_ms.saturating_mul(3) > self.lease_ms {
            return Err(format!(
                "proxy.shares.renew_ms must be at least 100 and at most a third of proxy.shares.lease_ms ({}), got {}",
                self.lease_ms / 3,
                self.renew_ms
            ));
        }
        Ok(())
    }
}

/// Rate-limit tiers (`docs/proxy.md`, "Rate-limit tiers").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TiersConfig {
    /// How often the limits are reloaded from PostgreSQL, in ms (a change
    /// takes effect within this).
    pub refresh_ms: u64,
    /// How long a call that finds no allowance left on this proxy waits for
    /// a claim from the shared pool in PostgreSQL, in ms, before it is
    /// refused (429, `retry-after: 1`).
    pub claim_wait_ms: u64,
}

impl Default for TiersConfig {
    fn default() -> Self {
        Self {
            refresh_ms: 5_000,
            claim_wait_ms: 50,
        }
    }
}

impl TiersConfig {
    /// The keys' ranges, named as in the configuration.
    pub fn validate(&self) -> Result<(), String> {
        if self.refresh_ms < 100 {
            return Err(format!(
                "proxy.tiers.refresh_ms must be at least 100, got {}",
                self.refresh_ms
            ));
        }
        if !(1..=10_000).contains(&self.claim_wait_ms) {
            return Err(format!(
                "proxy.tiers.claim_wait_ms must be from 1 to 10000 (a call waits at most this for a claim of rate-limit capacity), got {}",
                self.claim_wait_ms
            ));
        }
        Ok(())
    }
}

/// The local per-key request rate limit (GCRA, in this process only; the
/// cluster-wide limits arrive as decisions).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained requests per second per key; 0 turns the limit off.
    pub requests_per_second: u32,
    /// Requests a key may send at once above the sustained rate.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            requests_per_second: 0,
            burst: 20,
        }
    }
}

/// Which wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Openai,
    Anthropic,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Base URL including the version, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Refused when set: a credential in the configuration would sit in
    /// plain text. Kept only to answer it with how to migrate (store it
    /// with `tollgate providers set`, or use `api_key_env`).
    pub api_key: Option<String>,
    /// Name of the environment variable holding the provider credential
    /// (a single-user setup); without it the credential stored in
    /// PostgreSQL (`tollgate providers set`) is used.
    pub api_key_env: Option<String>,
    /// Models this provider serves: exact names or prefixes ending in `*`.
    pub models: Vec<String>,
    pub connect_timeout_ms: u64,
    /// Time allowed until the response headers arrive.
    pub first_byte_timeout_ms: u64,
    /// Longest pause allowed between two chunks of a response body.
    pub idle_timeout_ms: u64,
    /// Retries after the first attempt (connect errors, timeouts before the
    /// first byte, 429 and 5xx only).
    pub max_retries: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            kind: ProviderKind::Openai,
            base_url: "https://api.openai.com/v1".into(),
            api_key: None,
            api_key_env: None,
            models: Vec::new(),
            connect_timeout_ms: 2_000,
            first_byte_timeout_ms: 60_000,
            idle_timeout_ms: 60_000,
            max_retries: 2,
            backoff_base_ms: 200,
            backoff_max_ms: 5_000,
        }
    }
}
