//! [`CallsFold`]: the calls fold as the consumer runtime runs it, the pure
//! part ([`super::rows`]) joined to a sink ([`super::sink`]).

use chrono::{DateTime, Utc};
use tollgate_contract::catalog::SharedCatalog;
use tollgate_contract::{Event, Rejection};

use super::rows::{priced_call_row, CallRow, PartitionClock};
use super::sink::CallsSink;
use crate::fold::{Fold, MessageMeta, PartitionKey, Positioned, SinkError};
use crate::progress::highest;

/// The `calls` facts table, each row priced from `prices` before it is
/// batched; each stored batch is followed by its progress.
#[derive(Clone)]
pub struct CallsFold<S> {
    pub clock: PartitionClock,
    pub prices: SharedCatalog,
    pub sink: S,
}

impl<S: CallsSink> Fold for CallsFold<S> {
    type Row = CallRow;

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
    ) -> Result<Option<CallRow>, Rejection> {
        priced_call_row(
            event,
            message.partition,
            message.offset,
            now,
            &self.prices.current(),
        )
    }

    fn partition_key(&self, row: &CallRow) -> PartitionKey {
        self.clock.key(row.occurred_at)
    }

    async fn store(&mut self, rows: &[CallRow]) -> Result<(), SinkError> {
        self.sink.insert_calls(rows).await?;
        self.record_progress(rows).await;
        Ok(())
    }

    /// `calls` holds `rows` but an insert's views are not atomic with it:
    /// the cost rollups of the rows' cells are checked against `calls`
    /// and brought level, then progress is recorded as after a store.
    async fn stored_after_failure(&mut self, rows: &[CallRow]) -> Result<(), SinkError> {
        self.sink.level_rollups(rows).await?;
        self.record_progress(rows).await;
        Ok(())
    }
}

impl<S: CallsSink> CallsFold<S> {
    /// Record the progress of `rows`, which are stored whatever happens
    /// next. A progress row that cannot be written only makes the recorded
    /// progress lag until the next insert (see crate::progress): logged,
    /// not retried.
    async fn record_progress(&self, rows: &[CallRow]) {
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
        CallsFold {
            clock: PartitionClock::Utc,
            prices: SharedCatalog::new(PriceCatalog::new([])),
            sink: sink.clone(),
        }
    }

    fn rows(fold: &mut CallsFold<MemoryCallsSink>, positions: &[(i32, i64)]) -> Vec<CallRow> {
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

    #[test]
    fn partition_key_follows_the_clock() {
        let sink = MemoryCallsSink::default();
        let mut fold = fold(&sink);
        let row = rows(&mut fold, &[(0, 1)]).remove(0);
        assert_eq!(fold.partition_key(&row), PartitionKey::Month(202603));
    }
}
