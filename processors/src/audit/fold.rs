//! [`AuditFold`]: appends every valid event to the hash chain of its Kafka
//! message key, and writes signed checkpoints.
//!
//! One chain per message key means one writer per chain: the consumer that
//! owns the key's partition. The chain heads (last seq and hash) and the
//! entry hashes since the last stored checkpoint are loaded from ClickHouse
//! when a partition's resume position is read, so a restart or rebalance
//! continues every chain exactly where the stored rows end. Rows of revoked
//! partitions are dropped by the consumer and their chains forgotten here.
//!
//! Checkpoints are made after a flush (every row made so far is stored):
//! for every chain with `checkpoint_every` entries since its last
//! checkpoint, or whose oldest unchecked entry is `checkpoint_interval_secs`
//! old, and for every chain with unchecked entries at shutdown. A failed
//! checkpoint insert is kept and retried after the next flush; a crash loses
//! nothing, because the next owner rebuilds the segment from stored rows.
//!
//! Every checkpoint is first published to the anchor topic and only then
//! inserted into `audit_checkpoints` (why that order: `anchor.rs`); a failed
//! publish keeps it pending for both, a failed insert for the insert alone.
//! Version 2 checkpoints also sign the root of the whole chain prefix and
//! carry a consistency proof from the previous checkpoint, for which the
//! fold keeps the chain's [`Compact`] tree of the checkpointed prefix
//! (rebuilt on assignment from the stored entry hashes of the chain).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clickhouse::{Client, Row};
use serde::Deserialize;
use tollgate_contract::{Event, Rejection};
use tracing::{info, warn};

use super::anchor::AnchorPublisher;
use crate::calls_sink::PartitionKey;
use crate::fold::{Fold, MessageMeta, Positioned};
use tollgate_contract::audit::checkpoint::{ChainRef, CheckpointRow, CheckpointSigner};
use tollgate_contract::audit::entry::{chain_entry, entry_fields, parse_hash, EntryRow, GENESIS};
use tollgate_contract::audit::merkle::Compact;

impl Positioned for EntryRow {
    fn position(&self) -> (i32, i64) {
        (self.kafka_partition, self.kafka_offset)
    }
}

/// When checkpoints are cut.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointPolicy {
    pub every: u64,
    pub interval: Duration,
}

#[derive(Debug)]
struct ChainState {
    partition: i32,
    seq: u64,
    head: [u8; 32],
    /// First seq not covered by a checkpoint.
    segment_from: u64,
    /// Entry hashes of `segment_from..=seq` (only kept with a signer).
    segment: Vec<[u8; 32]>,
    segment_started: Option<Instant>,
    /// The whole-chain tree of entries `1..segment_from` (with a signer).
    prefix: Compact,
    /// Org and team of the newest entry.
    org_id: String,
    team_id: String,
}

/// The audit chain fold.
#[derive(Debug)]
pub struct AuditFold {
    chains: HashMap<String, ChainState>,
    signer: Option<CheckpointSigner>,
    anchor: Option<AnchorPublisher>,
    policy: CheckpointPolicy,
    /// Cut, not yet published to the anchor.
    unpublished: Vec<CheckpointRow>,
    /// Published, not yet inserted into ClickHouse.
    pending: Vec<CheckpointRow>,
}

/// The chain id of a message: its key (UTF-8), or `~partition-<p>` for a
/// message without a key (the partitioner spreads those, so the partition is
/// their only single writer).
pub fn chain_id(key: Option<&[u8]>, partition: i32) -> String {
    match key {
        Some(k) if !k.is_empty() => String::from_utf8_lossy(k).into_owned(),
        _ => format!("~partition-{partition}"),
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

impl AuditFold {
    pub fn new(
        signer: Option<CheckpointSigner>,
        anchor: Option<AnchorPublisher>,
        policy: CheckpointPolicy,
    ) -> Self {
        Self {
            chains: HashMap::new(),
            signer,
            anchor,
            policy,
            unpublished: Vec::new(),
            pending: Vec::new(),
        }
    }

    async fn write_pending(&mut self, client: &Client) {
        if !self.unpublished.is_empty() {
            let published = match &self.anchor {
                Some(anchor) => anchor.publish(&self.unpublished).await,
                None => Ok(()),
            };
            match published {
                Ok(()) => self.pending.append(&mut self.unpublished),
                Err(err) => {
                    warn!(checkpoints = self.unpublished.len(), %err, "cannot publish audit checkpoints to the anchor topic; retrying after the next flush (nothing is inserted into clickhouse before it is anchored)");
                }
            }
        }
        if self.pending.is_empty() {
            return;
        }
        let result = async {
            let mut insert = client.insert::<CheckpointRow>("audit_checkpoints").await?;
            for cp in &self.pending {
                insert.write(cp).await?;
            }
            insert.end().await
        }
        .await;
        match result {
            Ok(()) => {
                for cp in &self.pending {
                    info!(chain = %cp.chain_id, from_seq = cp.from_seq, to_seq = cp.to_seq, "audit checkpoint written");
                }
                self.pending.clear();
            }
            Err(err) => {
                warn!(checkpoints = self.pending.len(), %err, "cannot write audit checkpoints; retrying after the next flush");
            }
        }
    }
}

impl Fold for AuditFold {
    type Row = EntryRow;

    fn name(&self) -> &'static str {
        "audit"
    }

    fn table(&self) -> &'static str {
        "audit_chain"
    }

    fn dead_letters(&self) -> bool {
        false
    }

    fn row(
        &mut self,
        event: &Event,
        message: MessageMeta<'_>,
        _now: DateTime<Utc>,
    ) -> Result<Option<EntryRow>, Rejection> {
        let fields = entry_fields(event)?;
        let id = chain_id(message.key, message.partition);
        let state = self.chains.entry(id.clone()).or_insert(ChainState {
            partition: message.partition,
            seq: 0,
            head: GENESIS,
            segment_from: 1,
            segment: Vec::new(),
            segment_started: None,
            prefix: Compact::new(),
            org_id: String::new(),
            team_id: String::new(),
        });
        state.org_id.clone_from(&fields.org_id);
        state.team_id.clone_from(&fields.team_id);
        let seq = state.seq + 1;
        let (row, hash) = chain_entry(
            fields,
            &id,
            seq,
            &state.head,
            message.partition,
            message.offset,
        );
        state.partition = message.partition;
        state.seq = seq;
        state.head = hash;
        if self.signer.is_some() {
            state.segment.push(hash);
            state.segment_started.get_or_insert_with(Instant::now);
        }
        Ok(Some(row))
    }

    fn partition_key(&self, _row: &EntryRow) -> PartitionKey {
        // audit_chain has a single table partition.
        PartitionKey::Month(0)
    }

    async fn insert(&self, client: &Client, rows: &[EntryRow]) -> clickhouse::error::Result<()> {
        let mut insert = client.insert::<EntryRow>("audit_chain").await?;
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await
    }

    async fn load_partitions(
        &mut self,
        client: &Client,
        partitions: &[i32],
    ) -> clickhouse::error::Result<()> {
        if partitions.is_empty() {
            return Ok(());
        }
        self.forget_partitions(partitions);
        let heads: Vec<HeadRow> = client.query(&heads_sql(partitions)).fetch_all().await?;
        let checkpoints: HashMap<String, u64> = if self.signer.is_some() && !heads.is_empty() {
            client
                .query(&last_checkpoints_sql(partitions))
                .fetch_all::<LastCheckpoint>()
                .await?
                .into_iter()
                .map(|c| (c.chain_id, c.to_seq))
                .collect()
        } else {
            HashMap::new()
        };
        let mut loaded = HashMap::new();
        for head in heads {
            let Some(hash) = parse_hash(&head.entry_hash) else {
                warn!(chain = %head.chain_id, seq = head.seq, "stored head hash is not hex; `tollgate verify-audit` will report the chain");
                continue;
            };
            let checkpointed = checkpoints.get(&head.chain_id).copied().unwrap_or(0);
            let mut segment = Vec::new();
            let mut prefix = Compact::new();
            if self.signer.is_some() {
                // The whole chain: the prefix tree needs every checkpointed
                // entry hash (32 bytes each, read once per assignment).
                let rows: Vec<SegmentHash> = client
                    .query(SEGMENT_SQL)
                    .bind(&head.chain_id)
                    .bind(0u64)
                    .fetch_all()
                    .await?;
                let mut expected = 1;
                for row in rows {
                    match parse_hash(&row.entry_hash) {
                        Some(h) if row.seq == expected => {
                            if row.seq <= checkpointed {
                                prefix.push(&h);
                            } else {
                                segment.push(h);
                            }
                        }
                        _ => {
                            warn!(chain = %head.chain_id, seq = row.seq, "stored chain is not contiguous; it is not checkpointed until `tollgate verify-audit` is looked at");
                            segment.clear();
                            prefix = Compact::new();
                            break;
                        }
                    }
                    expected = row.seq + 1;
                }
            }
            info!(chain = %head.chain_id, seq = head.seq, checkpointed, "audit chain head from clickhouse");
            loaded.insert(
                head.chain_id,
                ChainState {
                    partition: head.kafka_partition,
                    seq: head.seq,
                    head: hash,
                    segment_from: head.seq + 1 - segment.len() as u64,
                    segment_started: (!segment.is_empty()).then(Instant::now),
                    segment,
                    prefix,
                    org_id: head.org_id,
                    team_id: head.team_id,
                },
            );
        }
        self.chains.extend(loaded);
        Ok(())
    }

    fn forget_partitions(&mut self, partitions: &[i32]) {
        let set: HashSet<i32> = partitions.iter().copied().collect();
        self.chains.retain(|_, c| !set.contains(&c.partition));
    }

    async fn flushed(&mut self, client: &Client, last: bool) {
        let Some(signer) = &self.signer else {
            return;
        };
        let now_ms = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
        let every = usize::try_from(self.policy.every.max(1)).unwrap_or(usize::MAX);
        for (id, state) in &mut self.chains {
            // Full segments of `every` entries first, then the rest when it is
            // old enough or the processor stops.
            let mut cut = Vec::new();
            let mut start = 0;
            while state.segment.len() - start >= every {
                cut.push(start..start + every);
                start += every;
            }
            let rest_due = state
                .segment_started
                .is_some_and(|t| t.elapsed() >= self.policy.interval)
                || last;
            if rest_due && start < state.segment.len() {
                cut.push(start..state.segment.len());
            }
            let Some(end) = cut.last().map(|r| r.end) else {
                continue;
            };
            let chain = ChainRef {
                chain_id: id,
                org_id: &state.org_id,
                team_id: &state.team_id,
            };
            for range in cut {
                let from = state.segment_from + range.start as u64;
                match signer.checkpoint(
                    chain,
                    from,
                    &state.segment[range],
                    &mut state.prefix,
                    now_ms,
                ) {
                    Some(cp) => self.unpublished.push(cp),
                    None => {
                        warn!(chain = %id, from_seq = from, "the chain's stored prefix is not contiguous; not checkpointed");
                    }
                }
            }
            state.segment_from += end as u64;
            state.segment.drain(..end);
            state.segment_started = (!state.segment.is_empty()).then(Instant::now);
        }
        self.write_pending(client).await;
    }
}
