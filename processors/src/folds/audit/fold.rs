//! [`AuditFold`]: the audit fold as the consumer runtime runs it, the pure
//! chains ([`super::rows`]) joined to a sink ([`super::sink`]).
//!
//! Checkpoints cut after a flush are first anchored, then inserted. A
//! failed publish keeps them pending for both, a failed insert for the
//! insert alone; either is retried after the next flush. A crash loses
//! nothing: the next owner rebuilds the unchecked segment from stored rows.

use std::collections::HashMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tollgate_contract::audit::checkpoint::CheckpointRow;
use tollgate_contract::{Event, Rejection};
use tracing::{info, warn};

use super::rows::AuditChains;
use super::sink::AuditSink;
use crate::fold::{Fold, MessageMeta, PartitionKey, SinkError};

/// The audit chain fold.
#[derive(Debug)]
pub struct AuditFold<S> {
    chains: AuditChains,
    sink: S,
    /// Cut, not yet published to the anchor.
    unpublished: Vec<CheckpointRow>,
    /// Published, not yet inserted into ClickHouse.
    pending: Vec<CheckpointRow>,
}

impl<S: AuditSink> AuditFold<S> {
    pub fn new(chains: AuditChains, sink: S) -> Self {
        Self {
            chains,
            sink,
            unpublished: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Checkpoints cut but not yet inserted (anchored or not).
    pub fn waiting_checkpoints(&self) -> usize {
        self.unpublished.len() + self.pending.len()
    }

    async fn write_pending(&mut self) {
        if !self.unpublished.is_empty() {
            match self.sink.anchor_checkpoints(&self.unpublished).await {
                Ok(()) => self.pending.append(&mut self.unpublished),
                Err(err) => {
                    warn!(checkpoints = self.unpublished.len(), %err, "cannot publish audit checkpoints to the anchor topic; retrying after the next flush (nothing is inserted into clickhouse before it is anchored)");
                }
            }
        }
        if self.pending.is_empty() {
            return;
        }
        match self.sink.insert_checkpoints(&self.pending).await {
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

impl<S: AuditSink> Fold for AuditFold<S> {
    type Row = S::Entry;

    fn name(&self) -> &'static str {
        super::NAME
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
    ) -> Result<Option<S::Entry>, Rejection> {
        let row = self.chains.row(event, message, Instant::now())?;
        S::entry(row)
            .map(Some)
            .map_err(|e| Rejection::new("event", e.to_string()))
    }

    fn partition_key(&self, _row: &S::Entry) -> PartitionKey {
        // audit_chain has a single table partition.
        PartitionKey::Month(0)
    }

    async fn store(&mut self, rows: &[S::Entry]) -> Result<(), SinkError> {
        self.sink.insert_entries(rows).await
    }

    async fn load_partitions(
        &mut self,
        stored: &HashMap<i32, Option<i64>>,
    ) -> Result<(), SinkError> {
        if stored.is_empty() {
            return Ok(());
        }
        let mut partitions: Vec<i32> = stored.keys().copied().collect();
        partitions.sort_unstable();
        self.chains.forget(&partitions);
        let stored = self
            .sink
            .load_chains(&partitions, self.chains.signs())
            .await?;
        self.chains.restore(stored, Instant::now());
        Ok(())
    }

    fn forget_partitions(&mut self, partitions: &[i32]) {
        self.chains.forget(partitions);
    }

    fn idle_due(&self) -> Option<Instant> {
        self.chains.next_due()
    }

    async fn flushed(&mut self, last: bool) {
        if !self.chains.signs() {
            return;
        }
        let now_ms = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
        let cut = self.chains.cut(Instant::now(), now_ms, last);
        self.unpublished.extend(cut);
        self.write_pending().await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::rows::tests::{
        assert_checkpoint, assert_linked, at, event, hashes, policy, signer,
    };
    use super::*;
    use crate::folds::audit::sink::MemoryAuditSink;
    use tollgate_contract::audit::entry::EntryRow;

    fn fold(sink: &MemoryAuditSink, every: u64) -> AuditFold<MemoryAuditSink> {
        AuditFold::new(
            AuditChains::new(Some(signer()), policy(every, 3600)),
            sink.clone(),
        )
    }

    /// Make and store one batch of `n` events (key `k`, partition 0) from
    /// `offset`, then report the flush.
    async fn batch(fold: &mut AuditFold<MemoryAuditSink>, offset: i64, n: i64) {
        let rows: Vec<EntryRow> = (offset..offset + n)
            .map(|o| {
                let e = event(u32::try_from(o).unwrap());
                fold.row(&e, at(0, o, Some("k")), Utc::now())
                    .unwrap()
                    .unwrap()
            })
            .collect();
        fold.store(&rows).await.unwrap();
        fold.flushed(false).await;
    }

    #[tokio::test]
    async fn chains_continue_across_batches_and_restarts_with_checkpoints_every_n() {
        let sink = MemoryAuditSink::default();
        let mut first = fold(&sink, 3);
        first
            .load_partitions(&HashMap::from([(0, None)]))
            .await
            .unwrap();
        batch(&mut first, 0, 2).await;
        batch(&mut first, 2, 2).await;
        assert_eq!(sink.stored().checkpoints.len(), 1);
        // A new owner reads the chain back and continues it.
        let mut second = fold(&sink, 3);
        second
            .load_partitions(&HashMap::from([(0, None)]))
            .await
            .unwrap();
        batch(&mut second, 4, 3).await;
        second.flushed(true).await;
        let stored = sink.stored();
        assert_linked(&stored.entries);
        let hashes = hashes(&stored.entries);
        let ranges: Vec<(u64, u64)> = stored
            .checkpoints
            .iter()
            .map(|c| (c.from_seq, c.to_seq))
            .collect();
        assert_eq!(ranges, [(1, 3), (4, 6), (7, 7)]);
        for cp in &stored.checkpoints {
            assert_checkpoint(cp, &hashes, cp.from_seq, cp.to_seq);
        }
        assert_eq!(stored.anchored, stored.checkpoints);
    }

    #[tokio::test]
    async fn checkpoints_are_anchored_before_they_are_inserted_and_retried_after_failures() {
        let sink = MemoryAuditSink::default();
        let mut fold = fold(&sink, 2);
        sink.stored().fail_anchor = true;
        batch(&mut fold, 0, 2).await;
        {
            let stored = sink.stored();
            assert!(stored.anchored.is_empty() && stored.checkpoints.is_empty());
        }
        assert_eq!(fold.waiting_checkpoints(), 1);
        // Anchored now, but the insert fails: it is not anchored twice.
        {
            let mut stored = sink.stored();
            stored.fail_anchor = false;
            stored.fail_checkpoints = true;
        }
        batch(&mut fold, 2, 1).await;
        assert_eq!(sink.stored().anchored.len(), 1);
        assert!(sink.stored().checkpoints.is_empty());
        sink.stored().fail_checkpoints = false;
        fold.flushed(true).await;
        let stored = sink.stored();
        assert_eq!(
            stored.writes,
            ["entries", "entries", "anchor", "anchor", "checkpoints"]
        );
        let ranges: Vec<(u64, u64)> = stored
            .checkpoints
            .iter()
            .map(|c| (c.from_seq, c.to_seq))
            .collect();
        assert_eq!(ranges, [(1, 2), (3, 3)]);
        assert_eq!(stored.anchored, stored.checkpoints);
        assert_eq!(fold.waiting_checkpoints(), 0);
    }

    #[tokio::test]
    async fn a_failed_entry_insert_is_reported_and_leaves_nothing_stored() {
        let sink = MemoryAuditSink::default();
        let mut fold = fold(&sink, 1);
        sink.stored().fail_entries = 1;
        let row = fold
            .row(&event(0), at(0, 0, Some("k")), Utc::now())
            .unwrap()
            .unwrap();
        assert!(fold.store(std::slice::from_ref(&row)).await.is_err());
        assert!(sink.stored().entries.is_empty());
        fold.store(&[row]).await.unwrap();
        assert_eq!(sink.stored().entries.len(), 1);
    }

    #[tokio::test]
    async fn without_a_signer_no_checkpoint_reaches_the_sink() {
        let sink = MemoryAuditSink::default();
        let mut fold = AuditFold::new(AuditChains::new(None, policy(1, 0)), sink.clone());
        batch(&mut fold, 0, 3).await;
        fold.flushed(true).await;
        assert_eq!(sink.stored().writes, ["entries"]);
    }
}
