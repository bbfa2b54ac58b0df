//! Tollgate's control plane: PostgreSQL and what lives in it — the pool
//! ([`postgres`]), people's accounts, grants and sessions ([`accounts`]),
//! API keys ([`keys`]; the edges' cache of verified keys, which outlives a
//! PostgreSQL outage for a while: [`key_cache`]), the versioned price catalog
//! ([`prices`]: reading and keeping a copy fresh, adding versions, the
//! LiteLLM import format), budgets ([`budgets`]: the store, administration,
//! evaluation against spend), alerting's rules, silences and receivers
//! ([`alerts`]), the outbox of `admin.*` events with its relay
//! ([`outbox`]), the dead letters of alert delivery
//! ([`alert_deliveries`]), single sign-on logins in progress
//! ([`sso_logins`]) and provider credentials sealed under a master key
//! ([`provider_credentials`]), the live proxies that split budgets and rate
//! limits ([`proxy_members`]), the rate-limit tiers ([`rate_limits`]) and
//! the capacity pool the proxies claim them from ([`rate_limit_windows`]).
//!
//! It also holds the connection settings every role shares ([`config`]),
//! the idempotent Kafka producer of events ([`kafka`], which the outbox
//! relay, the ingest endpoint and the proxy use), the ClickHouse client
//! constructor ([`clickhouse`]) and the writer of the pipeline's own health
//! samples ([`pipeline_health`]), so the crates above it — ingest, proxy,
//! processors, queries — need nothing but the contract and this crate.

pub mod accounts;
pub mod alert_deliveries;
pub mod alerts;
pub mod budgets;
pub mod change_feed;
pub mod clickhouse;
pub mod config;
pub mod cost_rollup;
pub mod erasure;
pub mod error;
pub mod http_server;
pub mod kafka;
pub mod key_cache;
pub mod keys;
pub mod lease;
pub mod outbox;
pub mod pipeline_health;
pub mod postgres;
pub mod prices;
pub mod provider_credentials;
pub mod proxy_members;
pub mod rate_limit_windows;
pub mod rate_limits;
pub mod sso_logins;

pub use error::ControlError;
