//! [`CallsFold`]: the calls fold as the consumer runtime runs it, the pure
//! part ([`super::rows`]) joined to a sink ([`super::sink`]), with the
//! window of recent event ids ([`super::seen`]) that keeps a copy of an
//! event out of `calls`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use tollgate_contract::catalog::SharedCatalog;
use tollgate_contract::{Event, Rejection};
use tracing::{debug, info};

use super::rows::{call_record, priced_call_row, CallRecord, PartitionClock};
use super::sink::CallsSink;
use crate::fold::{Fold, MessageMeta, PartitionKey, Positioned, SinkError};
use crate::progress::highest;
use crate::recent_events::RecentEvents;

/// The `calls` facts table, each row priced from `prices` before it is
/// batched; each stored batch is followed by its progress. A copy of an
/// event still in its partition's window of recent ids gets no row.
pub struct CallsFold<S> {
    clock: PartitionClock,
    prices: SharedCatalog,
    sink: S,
    recent: RecentEvents,
    /// Copies left out (`tollgate_process_events_repeated_total`).
    repeated: Counter,
}

impl<S: CallsSink> CallsFold<S> {
    /// A fold that remembers no ids (every copy of an event is stored);
    /// see [`CallsFold::remembering`].
    pub fn new(clock: PartitionClock, prices: SharedCatalog, sink: S) -> Self {
        Self {
            clock,
            prices,
            sink,
            recent: RecentEvents::new(0),
            repeated: Counter::default(),
        }
    }

    /// Remember the last `window` event ids of each partition and leave
    /// their copies out, counted in `repeated`.
    pub fn remembering(mut self, window: usize, repeated: Counter) -> Self {
        self.recent = RecentEvents::new(window);
        self.repeated = repeated;
        self
    }
}

impl<S: CallsSink> Fold for CallsFold<S> {
    type Row = CallRecord;

    fn name(&self) -> &'static str {
        super::NAME
    }

    fn table(&self) -> &'static str {
        "calls"
    }

    fn dead_letters(&self) -> bool {
        true
    }

    fn row(
        &mut self,
        event: &Event,
        message: MessageMeta<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<CallRecord>, Rejection> {
        let row = priced_call_row(
            event,
            message.partition,
            message.offset,
            now,
            &self.prices.current(),
        )?;
        if row.is_some() && !self.recent.first_arrival(message.partition, event.event_id) {
            self.repeated.inc();
            debug!(
                event_id = %event.event_id,
                partition = message.partition,
                offset = message.offset,
                "a copy of an event already folded: no second row"
            );
            return Ok(None);
        }
        row.as_ref().map(call_record).transpose()
    }

    fn partition_key(&self, row: &CallRecord) -> PartitionKey {
        self.clock.key(row.meta.occurred_at)
    }

    async fn store(&mut self, rows: &[CallRecord]) -> Result<(), SinkError> {
        self.sink.insert_calls(rows).await?;
        self.record_progress(rows).await;
        Ok(())
    }

    /// `calls` holds `rows` but an insert's views are not atomic with it:
    /// the cost rollups of the rows' cells are checked against `calls`
    /// and brought level, then progress is recorded as after a store.
    async fn stored_after_failure(&mut self, rows: &[CallRecord]) -> Result<(), SinkError> {
        self.sink.level_rollups(rows).await?;
        self.record_progress(rows).await;
        Ok(())
    }

    /// Read each partition's window of recent ids back from `calls`: the
    /// last `window` offsets up to the stored position.
    async fn load_partitions(
        &mut self,
        stored: &HashMap<i32, Option<i64>>,
    ) -> Result<(), SinkError> {
        let partitions: Vec<i32> = stored.keys().copied().collect();
        self.recent.forget(&partitions);
        let window = i64::try_from(self.recent.window()).unwrap_or(i64::MAX);
        if window == 0 {
            return Ok(());
        }
        let mut after: Vec<(i32, i64)> = stored
            .iter()
            .filter_map(|(p, max)| max.map(|max| (*p, max.saturating_sub(window))))
            .collect();
        after.sort_unstable();
        let read = self.sink.recent_event_ids(&after, &mut self.recent).await?;
        if read > 0 {
            info!(
                partitions = ?after.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
                ids = read,
                "recent event ids read back from calls"
            );
        }
        Ok(())
    }

    fn forget_partitions(&mut self, partitions: &[i32]) {
        self.recent.forget(partitions);
    }
}

impl<S: CallsSink> CallsFold<S> {
    /// Record the progress of `rows`, which are stored whatever happens
    /// next. A progress row that cannot be written only makes the recorded
    /// progress lag until the next insert (see crate::progress): logged,
    /// not retried.
    async fn record_progress(&self, rows: &[CallRecord]) {
        let positions = highest(rows.iter().map(Positioned::position));
        if let Err(err) = self.sink.record_progress(&positions).await {
            tracing::warn!(%err, "cannot record fold progress; budget settlement lags until the next insert");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use tollgate_contract::catalog::PriceCatalog;

    use super::*;
    use crate::folds::calls::sink::MemoryCallsSink;

    fn event(occurred_at: &str) -> Event {
        serde_json::from_value(crate::consumer::tests::call_json(occurred_at)).unwrap()
    }

    fn fold(sink: &MemoryCallsSink) -> CallsFold<MemoryCallsSink> {
        CallsFold::new(
            PartitionClock::Utc,
            SharedCatalog::new(PriceCatalog::new([])),
            sink.clone(),
        )
    }

    fn rows(fold: &mut CallsFold<MemoryCallsSink>, positions: &[(i32, i64)]) -> Vec<CallRecord> {
        let e = event("2026-03-10T10:00:00.000Z");
        positions
            .iter()
            .map(|&(partition, offset)| {
                let meta = MessageMeta {
                    partition,
                    offset,
                    key: None,
                };
                fold.row(&e, meta, Utc::now()).unwrap().unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn progress_is_written_after_the_rows_with_the_highest_offset_per_partition() {
        let sink = MemoryCallsSink::default();
        let mut fold = fold(&sink);
        let batch = rows(&mut fold, &[(0, 5), (1, 2), (0, 6), (1, 3)]);
        fold.store(&batch).await.unwrap();
        let stored = sink.stored();
        assert_eq!(stored.calls, batch);
        assert_eq!(stored.writes, vec!["calls", "progress"]);
        assert_eq!(stored.progress, BTreeMap::from([(0, 6), (1, 3)]));
    }

    #[tokio::test]
    async fn rows_stored_by_a_failed_insert_level_the_rollups_then_record_progress() {
        let sink = MemoryCallsSink::default();
        let mut fold = fold(&sink);
        let batch = rows(&mut fold, &[(2, 7), (2, 9), (4, 1)]);
        fold.stored_after_failure(&batch).await.unwrap();
        let stored = sink.stored();
        assert!(stored.calls.is_empty(), "nothing inserted again");
        assert_eq!(stored.leveled, batch);
        assert_eq!(stored.writes, vec!["level", "progress"]);
        assert_eq!(stored.progress, BTreeMap::from([(2, 9), (4, 1)]));
    }

    #[tokio::test]
    async fn a_failed_insert_records_no_progress_and_a_failed_progress_write_keeps_the_rows() {
        let sink = MemoryCallsSink::default();
        let mut fold = fold(&sink);
        let batch = rows(&mut fold, &[(0, 1)]);
        sink.stored().fail_inserts = 1;
        assert!(fold.store(&batch).await.is_err());
        assert!(sink.stored().writes.is_empty());

        sink.stored().fail_progress = true;
        fold.store(&batch).await.unwrap();
        let stored = sink.stored();
        assert_eq!(stored.calls.len(), 1);
        assert!(stored.progress.is_empty());
    }

    fn event_with_id(id: &str) -> Event {
        let mut v = crate::consumer::tests::call_json("2026-03-10T10:00:00.000Z");
        v["event_id"] = serde_json::json!(id);
        serde_json::from_value(v).unwrap()
    }

    fn at(partition: i32, offset: i64) -> MessageMeta<'static> {
        MessageMeta {
            partition,
            offset,
            key: None,
        }
    }

    const A: &str = "0190b3c4-0000-7000-8000-00000000000a";
    const B: &str = "0190b3c4-0000-7000-8000-00000000000b";

    #[tokio::test]
    async fn a_copy_of_a_folded_event_gets_no_row_and_is_counted() {
        let sink = MemoryCallsSink::default();
        let repeated = Counter::default();
        let mut fold = fold(&sink).remembering(100, repeated.clone());
        let now = Utc::now();
        let first = fold.row(&event_with_id(A), at(0, 1), now).unwrap();
        assert_eq!(&*first.unwrap().meta.event_id, A);
        assert!(fold
            .row(&event_with_id(A), at(0, 2), now)
            .unwrap()
            .is_none());
        assert!(fold
            .row(&event_with_id(B), at(0, 3), now)
            .unwrap()
            .is_some());
        assert_eq!(repeated.get(), 1);
    }

    #[tokio::test]
    async fn the_window_is_read_back_from_stored_rows_after_a_rebalance() {
        let sink = MemoryCallsSink::default();
        let mut first = fold(&sink).remembering(2, Counter::default());
        let now = Utc::now();
        let mut batch = Vec::new();
        for (offset, id) in [
            (10, A),
            (11, B),
            (12, "0190b3c4-0000-7000-8000-00000000000c"),
        ] {
            batch.push(
                first
                    .row(&event_with_id(id), at(5, offset), now)
                    .unwrap()
                    .unwrap(),
            );
        }
        first.store(&batch).await.unwrap();

        // A new owner of partition 5: the last two offsets are read back.
        let repeated = Counter::default();
        let mut next = fold(&sink).remembering(2, repeated.clone());
        next.load_partitions(&HashMap::from([(5, Some(12)), (6, None)]))
            .await
            .unwrap();
        assert!(next
            .row(&event_with_id(B), at(5, 13), now)
            .unwrap()
            .is_none());
        assert!(
            next.row(&event_with_id(A), at(5, 14), now)
                .unwrap()
                .is_some(),
            "offset 10 is outside a window of 2"
        );
        assert!(
            next.row(&event_with_id(B), at(6, 1), now)
                .unwrap()
                .is_some(),
            "another partition's window"
        );
        assert_eq!(repeated.get(), 1);

        next.forget_partitions(&[5]);
        assert!(next
            .row(&event_with_id(B), at(5, 15), now)
            .unwrap()
            .is_some());
    }

    #[test]
    fn partition_key_follows_the_clock() {
        let sink = MemoryCallsSink::default();
        let mut fold = fold(&sink);
        let row = rows(&mut fold, &[(0, 1)]).remove(0);
        assert_eq!(fold.partition_key(&row), PartitionKey::Month(202603));
    }
}
