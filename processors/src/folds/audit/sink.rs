//! The audit fold's sink: every write the fold makes and the reads it needs
//! to continue a chain. Entries go into `audit_chain`; checkpoints are first
//! published to the anchor topic and then inserted into `audit_checkpoints`
//! (why that order: [`super::anchor`]).
//!
//! [`AuditSink`] is tied to rows, not to a client: [`ClickHouseAuditSink`]
//! is production, [`MemoryAuditSink`] keeps everything in memory for tests
//! (and reads chains back from what it holds, as ClickHouse would).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use clickhouse::{Client, Row};
use serde::Deserialize;
use tollgate_contract::audit::checkpoint::CheckpointRow;
use tollgate_contract::audit::entry::EntryRow;

use super::anchor::AnchorPublisher;
use super::rows::StoredChain;
use crate::clickhouse::{insert_encoded, insert_rows};
use crate::fold::{Positioned, SinkError};
use crate::rowbinary::{insert_sql, EncodedRow, RowBinaryError};

/// Where the audit fold writes, and reads its chains back from.
pub trait AuditSink: Send + Sync {
    /// An entry as this sink holds it until its batch is inserted.
    type Entry: Positioned + Send + Sync;

    /// Make `row` the entry this sink inserts. The error is reachable only
    /// by a row type that holds a shape RowBinary cannot
    /// (`tests/it/rowbinary.rs` encodes an entry with every field set).
    fn entry(row: EntryRow) -> Result<Self::Entry, RowBinaryError>;

    /// Insert entries into `audit_chain` in one request, in the order given.
    fn insert_entries(
        &self,
        rows: &[Self::Entry],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// The chains written from `partitions`: head and last checkpoint, and
    /// with `hashes` every entry hash of each chain.
    fn load_chains(
        &self,
        partitions: &[i32],
        hashes: bool,
    ) -> impl Future<Output = Result<Vec<StoredChain>, SinkError>> + Send;

    /// Publish checkpoints to the anchor topic, acknowledged (a sink
    /// without an anchor accepts them as they are).
    fn anchor_checkpoints(
        &self,
        checkpoints: &[CheckpointRow],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Insert checkpoints into `audit_checkpoints` in one request.
    fn insert_checkpoints(
        &self,
        checkpoints: &[CheckpointRow],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Production: ClickHouse for the rows, Kafka for the anchor.
#[derive(Debug)]
pub struct ClickHouseAuditSink {
    client: Client,
    /// `INSERT INTO audit_chain(<EntryRow's fields>) FORMAT RowBinary`.
    insert_sql: String,
    anchor: Option<AnchorPublisher>,
    /// `clickhouse.insert_timeout_secs` of its inserts.
    insert_timeout: Option<std::time::Duration>,
}

impl ClickHouseAuditSink {
    pub fn new(client: Client, anchor: Option<AnchorPublisher>) -> Self {
        Self {
            client,
            insert_sql: insert_sql::<EntryRow>("audit_chain"),
            anchor,
            insert_timeout: None,
        }
    }

    /// Inserts wait at most `timeout` (`clickhouse.insert_timeout_secs`).
    pub fn timing_out(mut self, timeout: Option<std::time::Duration>) -> Self {
        self.insert_timeout = timeout;
        self
    }
}

#[derive(Debug, Row, Deserialize)]
struct HeadRow {
    chain_id: String,
    seq: u64,
    entry_hash: String,
    kafka_partition: i32,
    org_id: String,
    team_id: String,
}

#[derive(Debug, Row, Deserialize)]
struct LastCheckpoint {
    chain_id: String,
    to_seq: u64,
}

#[derive(Debug, Row, Deserialize)]
struct SegmentHash {
    seq: u64,
    entry_hash: String,
}

/// Heads of the chains written from `partitions`.
pub fn heads_sql(partitions: &[i32]) -> String {
    format!(
        "SELECT chain_id, max(seq) AS head_seq, argMax(entry_hash, seq) AS head_hash, argMax(kafka_partition, seq) AS head_partition, argMax(org_id, seq) AS head_org, argMax(team_id, seq) AS head_team FROM audit_chain WHERE kafka_partition IN ({}) GROUP BY chain_id",
        list(partitions)
    )
}

/// Last checkpoint of the chains written from `partitions`.
pub fn last_checkpoints_sql(partitions: &[i32]) -> String {
    format!(
        "SELECT chain_id, max(to_seq) AS last_to_seq FROM audit_checkpoints WHERE chain_id IN (SELECT DISTINCT chain_id FROM audit_chain WHERE kafka_partition IN ({})) GROUP BY chain_id",
        list(partitions)
    )
}

/// Entry hashes of one chain after a seq (0: the whole chain, which the
/// whole-chain tree of its checkpointed prefix is rebuilt from).
pub const SEGMENT_SQL: &str =
    "SELECT seq, entry_hash FROM audit_chain WHERE chain_id = ? AND seq > ? ORDER BY seq";

fn list(partitions: &[i32]) -> String {
    partitions
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl AuditSink for ClickHouseAuditSink {
    /// RowBinary and the entry's Kafka position: a batch waits as the bytes
    /// it is inserted as (see [`crate::rowbinary`]).
    type Entry = EncodedRow<(i32, i64)>;

    fn entry(row: EntryRow) -> Result<Self::Entry, RowBinaryError> {
        EncodedRow::new(&row, row.position())
    }

    async fn insert_entries(&self, rows: &[Self::Entry]) -> Result<(), SinkError> {
        insert_encoded(&self.client, &self.insert_sql, rows, self.insert_timeout).await?;
        Ok(())
    }

    async fn load_chains(
        &self,
        partitions: &[i32],
        hashes: bool,
    ) -> Result<Vec<StoredChain>, SinkError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let heads: Vec<HeadRow> = self
            .client
            .query(&heads_sql(partitions))
            .fetch_all()
            .await?;
        let checkpoints: HashMap<String, u64> = if hashes && !heads.is_empty() {
            self.client
                .query(&last_checkpoints_sql(partitions))
                .fetch_all::<LastCheckpoint>()
                .await?
                .into_iter()
                .map(|c| (c.chain_id, c.to_seq))
                .collect()
        } else {
            HashMap::new()
        };
        let mut chains = Vec::with_capacity(heads.len());
        for head in heads {
            let mut entry_hashes = Vec::new();
            if hashes {
                // The whole chain: the prefix tree needs every checkpointed
                // entry hash (32 bytes each, read once per assignment).
                let rows: Vec<SegmentHash> = self
                    .client
                    .query(SEGMENT_SQL)
                    .bind(&head.chain_id)
                    .bind(0u64)
                    .fetch_all()
                    .await?;
                entry_hashes = rows.into_iter().map(|r| (r.seq, r.entry_hash)).collect();
            }
            chains.push(StoredChain {
                checkpointed: checkpoints.get(&head.chain_id).copied().unwrap_or(0),
                chain_id: head.chain_id,
                seq: head.seq,
                entry_hash: head.entry_hash,
                kafka_partition: head.kafka_partition,
                org_id: head.org_id,
                team_id: head.team_id,
                hashes: entry_hashes,
            });
        }
        Ok(chains)
    }

    async fn anchor_checkpoints(&self, checkpoints: &[CheckpointRow]) -> Result<(), SinkError> {
        match &self.anchor {
            Some(anchor) => anchor.publish(checkpoints).await.map_err(SinkError::Anchor),
            None => Ok(()),
        }
    }

    async fn insert_checkpoints(&self, checkpoints: &[CheckpointRow]) -> Result<(), SinkError> {
        insert_rows(
            &self.client,
            "audit_checkpoints",
            checkpoints,
            self.insert_timeout,
        )
        .await?;
        Ok(())
    }
}

/// What a [`MemoryAuditSink`] holds.
#[derive(Debug, Default)]
pub struct StoredAudit {
    pub entries: Vec<EntryRow>,
    /// Published to the anchor, in order.
    pub anchored: Vec<CheckpointRow>,
    /// Inserted into `audit_checkpoints`, in order.
    pub checkpoints: Vec<CheckpointRow>,
    /// Every write in order: `entries`, `anchor` or `checkpoints`.
    pub writes: Vec<&'static str>,
    /// Fail the next this many entry inserts.
    pub fail_entries: usize,
    /// Fail every anchor publish while set.
    pub fail_anchor: bool,
    /// Fail every checkpoint insert while set.
    pub fail_checkpoints: bool,
}

/// Test double: everything in memory, failures on request.
#[derive(Debug, Clone, Default)]
pub struct MemoryAuditSink(pub Arc<Mutex<StoredAudit>>);

impl MemoryAuditSink {
    pub fn stored(&self) -> MutexGuard<'_, StoredAudit> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl AuditSink for MemoryAuditSink {
    /// The rows themselves, for tests to read.
    type Entry = EntryRow;

    fn entry(row: EntryRow) -> Result<EntryRow, RowBinaryError> {
        Ok(row)
    }

    async fn insert_entries(&self, rows: &[EntryRow]) -> Result<(), SinkError> {
        let mut stored = self.stored();
        if stored.fail_entries > 0 {
            stored.fail_entries -= 1;
            return Err(SinkError::Unavailable("audit_chain insert".into()));
        }
        stored.entries.extend_from_slice(rows);
        stored.writes.push("entries");
        Ok(())
    }

    async fn load_chains(
        &self,
        partitions: &[i32],
        hashes: bool,
    ) -> Result<Vec<StoredChain>, SinkError> {
        let stored = self.stored();
        // Like heads_sql: the newest entry per chain among the rows
        // written from these partitions.
        let mut heads: HashMap<&str, &EntryRow> = HashMap::new();
        for e in stored
            .entries
            .iter()
            .filter(|e| partitions.contains(&e.kafka_partition))
        {
            let head = heads.entry(e.chain_id.as_str()).or_insert(e);
            if e.seq > head.seq {
                *head = e;
            }
        }
        let mut chains: Vec<StoredChain> = heads
            .into_values()
            .map(|head| {
                let mut all: Vec<(u64, String)> = stored
                    .entries
                    .iter()
                    .filter(|e| hashes && e.chain_id == head.chain_id)
                    .map(|e| (e.seq, e.entry_hash.clone()))
                    .collect();
                all.sort();
                StoredChain {
                    chain_id: head.chain_id.clone(),
                    seq: head.seq,
                    entry_hash: head.entry_hash.clone(),
                    kafka_partition: head.kafka_partition,
                    org_id: head.org_id.clone(),
                    team_id: head.team_id.clone(),
                    checkpointed: stored
                        .checkpoints
                        .iter()
                        .filter(|c| hashes && c.chain_id == head.chain_id)
                        .map(|c| c.to_seq)
                        .max()
                        .unwrap_or(0),
                    hashes: all,
                }
            })
            .collect();
        chains.sort_by(|a, b| a.chain_id.cmp(&b.chain_id));
        Ok(chains)
    }

    async fn anchor_checkpoints(&self, checkpoints: &[CheckpointRow]) -> Result<(), SinkError> {
        let mut stored = self.stored();
        if stored.fail_anchor {
            return Err(SinkError::Anchor("anchor topic unavailable".into()));
        }
        stored.anchored.extend_from_slice(checkpoints);
        stored.writes.push("anchor");
        Ok(())
    }

    async fn insert_checkpoints(&self, checkpoints: &[CheckpointRow]) -> Result<(), SinkError> {
        let mut stored = self.stored();
        if stored.fail_checkpoints {
            return Err(SinkError::Unavailable("audit_checkpoints insert".into()));
        }
        stored.checkpoints.extend_from_slice(checkpoints);
        stored.writes.push("checkpoints");
        Ok(())
    }
}
