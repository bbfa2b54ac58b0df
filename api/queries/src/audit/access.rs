//! What the audit endpoints (`tollgate-api`) and the compliance pages
//! (`tollgate-dashboards`) share to read audit trails. Who may read them is
//! the access gate's rule (`tollgate-access`, roles `compliance` and
//! `admin`; another org's is a 404).

pub use tollgate_control::keys::KeyStore;

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
    /// Where verification reads the checkpoint anchor (Kafka's
    /// `audit_checkpoints_topic`, a read kept a few seconds).
    pub anchor: super::anchor::AnchorSource,
}
