//! The audit fold (`docs/audit.md`): every valid event on `tollgate.events`
//! is appended to a SHA-256 hash chain per Kafka message key (team), with
//! signed Ed25519 checkpoints carrying RFC 6962 Merkle roots, each published
//! to the anchor topic before it is stored.
//!
//! - [`rows`]: the pure part, chains and checkpoint cutting;
//! - [`sink`]: the `audit_chain` and `audit_checkpoints` writes, the anchor
//!   publish ([`anchor`]) and reading chains back on assignment;
//! - [`fold`]: the two joined for the consumer runtime
//!   (`tollgate process --folds audit`);
//! - [`AuditConfig`]: the fold's settings and its signing key.
//!
//! The chain's records, hashing, Merkle trees and checkpoint signatures are
//! the contract's (`tollgate_contract::audit`); verification, search, export
//! and access rules are the read side's (`tollgate_queries::audit`).

pub mod anchor;
pub mod fold;
pub mod rows;
pub mod sink;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tollgate_control::config::KafkaConfig;
use tracing::warn;

use super::{FoldContext, FoldEntry, Running, Runs};
use crate::clickhouse::error as ch_error;
use crate::config::ProcessorConfig;
use crate::consumer::{run_fold, Counters};
use crate::error::{Error, Result};
use crate::metrics::FoldMetrics;
use fold::AuditFold;
use rows::{AuditChains, CheckpointPolicy};
use sink::ClickHouseAuditSink;
use tollgate_contract::audit::checkpoint::CheckpointSigner;
use tollgate_control::clickhouse::client;
use tollgate_control::config::ClickHouseConfig;

pub const NAME: &str = "audit";

/// The registry's line for this fold.
pub const FOLD: FoldEntry = FoldEntry {
    name: NAME,
    description: "every valid event appended to its team's hash chain, with signed checkpoints",
    runs: Runs::Consumer(start),
    catalog,
};

fn start(context: Arc<FoldContext>) -> Running {
    Box::pin(async move {
        run(
            &context.kafka,
            &context.clickhouse,
            &context.processor,
            &context.audit,
            context.metrics.fold(FOLD.name),
            context.shutdown.clone(),
        )
        .await
    })
}

/// `[audit]`: the audit fold and its checkpoint signing key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Kafka consumer group of the audit fold (its progress is stored with
    /// its rows, like the calls fold's).
    pub group_id: String,
    /// Ed25519 signing key: a 32-byte seed as 64 hex characters...
    pub signing_key: Option<String>,
    /// ...or a file holding it (`tollgate audit keygen` writes one).
    pub signing_key_file: Option<PathBuf>,
    /// Checkpoint a chain after this many entries...
    pub checkpoint_every: u64,
    /// ...or when its oldest unchecked entry is this old (checked at each flush).
    pub checkpoint_interval_secs: u64,
    /// Entries per insert into `audit_chain` (the fold's batch; its bytes
    /// and age limits are `[processor]`'s). An entry holds the whole event,
    /// so it costs about twice a row of `calls` in memory while it waits,
    /// and its insert feeds one view where that of `calls` feeds twelve:
    /// smaller batches than the calls fold's cost little
    /// (docs/performance.md, "Batches held as RowBinary").
    pub batch_max_rows: usize,
    /// How long an erasure (`tollgate erase`, `POST /api/v1/audit/erasures`)
    /// waits for the audit fold to chain its records, then for ClickHouse's
    /// mutations (docs/audit.md, "Erasure").
    pub erasure_wait_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            group_id: "tollgate-audit".into(),
            signing_key: None,
            signing_key_file: None,
            checkpoint_every: 1000,
            checkpoint_interval_secs: 60,
            batch_max_rows: 20_000,
            erasure_wait_secs: 120,
        }
    }
}

impl AuditConfig {
    /// The signer, if a key is configured.
    pub fn signer(&self) -> Result<Option<CheckpointSigner>> {
        match (&self.signing_key, &self.signing_key_file) {
            (Some(_), Some(_)) => Err(Error::Config(
                "set only one of audit.signing_key and audit.signing_key_file".into(),
            )),
            (Some(seed), None) => CheckpointSigner::from_hex_seed(seed)
                .map(Some)
                .map_err(|e| Error::Config(format!("audit.signing_key: {e}"))),
            (None, Some(path)) => {
                let file = |e: String| {
                    Error::Config(format!("audit.signing_key_file {}: {e}", path.display()))
                };
                let text = std::fs::read_to_string(path).map_err(|e| file(e.to_string()))?;
                CheckpointSigner::from_hex_seed(&text)
                    .map(Some)
                    .map_err(file)
            }
            (None, None) => Ok(None),
        }
    }
}

/// Whether the `audit_chain` table exists.
pub const HAS_AUDIT_SQL: &str =
    "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'audit_chain'";

/// Run the audit fold until `shutdown` is cancelled.
pub async fn run(
    kafka: &KafkaConfig,
    ch: &ClickHouseConfig,
    processor: &ProcessorConfig,
    audit: &AuditConfig,
    metrics: FoldMetrics,
    shutdown: CancellationToken,
) -> Result<Counters> {
    let signer = audit.signer()?;
    if signer.is_none() {
        warn!("no audit.signing_key or audit.signing_key_file: chains are written but not checkpointed (create a key with `tollgate audit keygen`)");
    }
    let has: u64 = client(ch)
        .query(HAS_AUDIT_SQL)
        .fetch_one()
        .await
        .map_err(|e| ch_error(ch, "cannot read system.tables", e))?;
    if has == 0 {
        return Err(Error::Config(format!(
            "clickhouse database {} at {} has no audit_chain table; run `tollgate migrate` first",
            ch.database, ch.url
        )));
    }
    let anchor = match &signer {
        Some(_) => Some(anchor::AnchorPublisher::new(kafka)?),
        None => None,
    };
    let chains = AuditChains::new(
        signer,
        CheckpointPolicy {
            every: audit.checkpoint_every.max(1),
            interval: Duration::from_secs(audit.checkpoint_interval_secs),
        },
    );
    let fold = AuditFold::new(
        chains,
        ClickHouseAuditSink::new(client(ch), anchor).timing_out(ch.insert_timeout()),
    );
    let processor = ProcessorConfig {
        batch_max_rows: audit.batch_max_rows,
        ..processor.clone()
    };
    run_fold(
        fold,
        kafka,
        ch,
        &processor,
        &audit.group_id,
        metrics,
        shutdown,
    )
    .await
}

/// The audit fold's run-time queries, for the SQL compatibility check.
pub fn catalog() -> Vec<(String, String)> {
    vec![
        ("audit.has_audit_chain".into(), HAS_AUDIT_SQL.into()),
        (
            "audit.stored_offsets".into(),
            crate::resume::stored_offsets_sql_in("audit_chain", &[0, 1]),
        ),
        ("audit.heads".into(), sink::heads_sql(&[0, 1])),
        (
            "audit.last_checkpoints".into(),
            sink::last_checkpoints_sql(&[0, 1]),
        ),
        (
            "audit.segment".into(),
            fill(sink::SEGMENT_SQL, &["'team-a'", "0"]),
        ),
    ]
}

/// `sql` with each `?` replaced by the next sample value, in order.
fn fill(sql: &str, values: &[&str]) -> String {
    values
        .iter()
        .fold(sql.to_string(), |sql, value| sql.replacen('?', value, 1))
}
