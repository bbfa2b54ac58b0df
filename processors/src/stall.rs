//! Telling a stalled consumer from an idle one. librdkafka's statistics
//! (every progress interval) say, per partition, what its fetcher is doing
//! (`fetch_state`: `active`, `offset-query`, `validate-epoch-wait`, …),
//! which broker leads it and how far behind the high watermark the consumer
//! is. A fold that made no progress (no event consumed, no row stored) for
//! a whole interval while events wait for it (the lag the health sampler
//! measured against the brokers' high watermarks: librdkafka's own lag
//! cannot see what a stuck fetcher never fetched) is stalled, not idle. Its
//! progress line then becomes a warning naming each partition's state,
//! which tells a stuck fetcher (a leader that moved, a broker that came
//! back) from a slow sink.
//!
//! A loop that is not polling at all (awaiting ClickHouse in the fence of a
//! new assignment, say) logs no progress line; [`Busy`] says what it is
//! awaiting, and [`watch_busy`] warns when that lasts.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::statistics::Statistics;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// What librdkafka last said of one assigned partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFetch {
    pub partition: i32,
    /// librdkafka's fetch state (`active` when it is fetching).
    pub fetch_state: String,
    /// The broker leading it, -1 when unknown.
    pub leader: i32,
    /// The next offset to fetch, -1001 when not known yet.
    pub next_offset: i64,
    /// The partition's high watermark as last fetched.
    pub high_watermark: i64,
    /// Messages fetched but not yet handed to the processor.
    pub queued: i64,
}

/// The partitions of `topic` this consumer is assigned (librdkafka's
/// `desired`), in partition order.
pub fn partitions_of(topic: &str, statistics: &Statistics) -> Vec<PartitionFetch> {
    let Some(topic) = statistics.topics.get(topic) else {
        return Vec::new();
    };
    let mut out: Vec<PartitionFetch> = topic
        .partitions
        .values()
        .filter(|p| p.partition >= 0 && p.desired)
        .map(|p| PartitionFetch {
            partition: p.partition,
            fetch_state: p.fetch_state.clone(),
            leader: p.leader,
            next_offset: p.next_offset,
            high_watermark: p.hi_offset,
            queued: p.fetchq_cnt,
        })
        .collect();
    out.sort_by_key(|p| p.partition);
    out
}

/// One line for a log: `partition 0 active (leader 2) at 1200 of 1290, 0
/// queued; partition 1 …`.
pub fn describe(partitions: &[PartitionFetch]) -> String {
    if partitions.is_empty() {
        return "no partition assigned".to_string();
    }
    partitions
        .iter()
        .map(|p| {
            format!(
                "partition {} {} (leader {}) at {} of {}, {} queued",
                p.partition, p.fetch_state, p.leader, p.next_offset, p.high_watermark, p.queued
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Since when a fold has made no progress while events waited for it.
#[derive(Debug, Default)]
pub struct StallWatch {
    stalled_since: Option<Instant>,
}

impl StallWatch {
    /// At a progress tick: whether the fold `moved` (consumed an event or
    /// stored a row) since the last tick at `since`, and the events
    /// `waiting` for it, measured after that tick (`None`: no such
    /// measure). How long the fold has been stalled, when it is: no
    /// progress since the last tick although events wait, counted from
    /// that tick. Progress, or nothing waiting, ends a stall; a tick
    /// without a measure neither starts nor ends one.
    pub fn tick(
        &mut self,
        moved: bool,
        waiting: Option<u64>,
        since: Instant,
        now: Instant,
    ) -> Option<Duration> {
        match waiting {
            _ if moved => self.stalled_since = None,
            Some(0) => self.stalled_since = None,
            Some(_) => {
                self.stalled_since.get_or_insert(since);
            }
            None => {}
        }
        self.stalled_since.map(|since| now.duration_since(since))
    }
}

/// What the consumer loop is awaiting outside its poll of Kafka, and
/// since when (`None`: back at its poll).
#[derive(Debug, Default)]
pub struct Busy {
    state: Mutex<Option<(&'static str, Instant)>>,
}

/// Clears what [`Busy::enter`] set when dropped.
pub struct BusyGuard(Arc<Busy>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        *self.0.state() = None;
    }
}

impl Busy {
    fn state(&self) -> std::sync::MutexGuard<'_, Option<(&'static str, Instant)>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The loop starts awaiting `what` (until the guard is dropped).
    pub fn enter(busy: &Arc<Busy>, what: &'static str) -> BusyGuard {
        *busy.state() = Some((what, Instant::now()));
        BusyGuard(busy.clone())
    }

    /// What the loop awaits, and for how long so far.
    pub fn current(&self, now: Instant) -> Option<(&'static str, Duration)> {
        self.state()
            .map(|(what, since)| (what, now.saturating_duration_since(since)))
    }
}

/// Every `every`, warn when `fold`'s loop has awaited one thing for
/// `limit` or longer (until `shutdown`).
pub fn watch_busy(
    fold: &'static str,
    busy: Arc<Busy>,
    every: Duration,
    limit: Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Some((what, for_)) = busy.current(Instant::now()) {
                if for_ >= limit {
                    warn!(
                        fold,
                        busy_s = for_.as_secs(),
                        "the consumer loop is still {what}; it reads Kafka again when that ends"
                    );
                }
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A statistics document as librdkafka emits it, cut to the fields
    /// read here plus the ones the parser requires.
    fn statistics(partitions: &str) -> Statistics {
        let json = format!(
            r#"{{"name":"c","client_id":"c","type":"consumer","ts":1,"time":1,"age":1,
            "replyq":0,"msg_cnt":0,"msg_size":0,"msg_max":0,"msg_size_max":0,"simple_cnt":0,
            "metadata_cache_cnt":1,"brokers":{{}},"tx":0,"tx_bytes":0,"rx":0,"rx_bytes":0,
            "txmsgs":0,"txmsg_bytes":0,"rxmsgs":0,"rxmsg_bytes":0,
            "topics":{{"t":{{"topic":"t","age":1,"metadata_age":1,
            "batchsize":{{"min":0,"max":0,"avg":0,"sum":0,"stddev":0,"p50":0,"p75":0,"p90":0,"p95":0,"p99":0,"p99_99":0,"outofrange":0,"hdrsize":0,"cnt":0}},
            "batchcnt":{{"min":0,"max":0,"avg":0,"sum":0,"stddev":0,"p50":0,"p75":0,"p90":0,"p95":0,"p99":0,"p99_99":0,"outofrange":0,"hdrsize":0,"cnt":0}},
            "partitions":{{{partitions}}}}}}}}}"#
        );
        serde_json::from_str(&json).unwrap()
    }

    fn partition(id: i32, desired: bool, state: &str, leader: i32, next: i64, hi: i64) -> String {
        format!(
            r#""{id}":{{"partition":{id},"broker":{leader},"leader":{leader},"desired":{desired},
            "unknown":false,"msgq_cnt":0,"msgq_bytes":0,"xmit_msgq_cnt":0,"xmit_msgq_bytes":0,
            "fetchq_cnt":3,"fetchq_size":0,"fetch_state":"{state}","query_offset":0,
            "next_offset":{next},"app_offset":0,"stored_offset":0,"committed_offset":0,
            "eof_offset":0,"lo_offset":0,"hi_offset":{hi},"ls_offset":0,"consumer_lag":{lag},
            "consumer_lag_stored":0,"txmsgs":0,"txbytes":0,"rxmsgs":0,"rxbytes":0,"msgs":0,
            "rx_ver_drops":0,"msgs_inflight":0,"next_ack_seq":0,"next_err_seq":0,"acked_msgid":0}}"#,
            lag = hi - next
        )
    }

    #[test]
    fn the_assigned_partitions_are_read_in_order_with_their_state() {
        let stats = statistics(&[
            partition(2, true, "validate-epoch-wait", 3, 40, 90),
            partition(0, true, "active", 1, 100, 100),
            partition(1, false, "none", 2, -1001, 70),
            r#""-1":{"partition":-1,"broker":-1,"leader":-1,"desired":false,"unknown":false,"msgq_cnt":0,"msgq_bytes":0,"xmit_msgq_cnt":0,"xmit_msgq_bytes":0,"fetchq_cnt":0,"fetchq_size":0,"fetch_state":"none","query_offset":-1001,"next_offset":0,"app_offset":-1001,"stored_offset":-1001,"committed_offset":-1001,"eof_offset":-1001,"lo_offset":-1,"hi_offset":-1,"ls_offset":-1,"consumer_lag":-1,"consumer_lag_stored":-1,"txmsgs":0,"txbytes":0,"rxmsgs":0,"rxbytes":0,"msgs":0,"rx_ver_drops":0,"msgs_inflight":0,"next_ack_seq":0,"next_err_seq":0,"acked_msgid":0}"#.to_string(),
        ]
        .join(","));
        let partitions = partitions_of("t", &stats);
        assert_eq!(
            describe(&partitions),
            "partition 0 active (leader 1) at 100 of 100, 3 queued; \
             partition 2 validate-epoch-wait (leader 3) at 40 of 90, 3 queued"
        );
        assert!(partitions_of("other", &stats).is_empty());
        assert_eq!(describe(&[]), "no partition assigned");
    }

    #[test]
    fn a_stall_is_no_progress_while_events_wait() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut watch = StallWatch::default();
        // A tick every 10 s: (moved since the one before, waiting).
        let mut tick = |s: u64, moved: bool, waiting: Option<u64>| {
            watch.tick(moved, waiting, at(s - 10), at(s))
        };
        // Moving, or nothing waiting, or no measure: not stalled.
        assert_eq!(tick(10, true, Some(5)), None);
        assert_eq!(tick(20, false, Some(0)), None);
        assert_eq!(tick(30, false, None), None);
        // Nothing done since the tick at 30 while 5 wait: stalled since 30.
        assert_eq!(tick(40, false, Some(5)), Some(Duration::from_secs(10)));
        // A tick without a measure does not end it.
        assert_eq!(tick(50, false, None), Some(Duration::from_secs(20)));
        assert_eq!(tick(60, false, Some(7)), Some(Duration::from_secs(30)));
        // One event or one stored row ends it.
        assert_eq!(tick(70, true, Some(7)), None);
        assert_eq!(tick(80, false, Some(7)), Some(Duration::from_secs(10)));
        assert_eq!(tick(90, false, Some(0)), None);
    }

    #[test]
    fn busy_says_what_the_loop_awaits_until_the_guard_goes() {
        let busy = Arc::new(Busy::default());
        let start = Instant::now();
        assert_eq!(busy.current(start), None);
        {
            let _guard = Busy::enter(&busy, "inserting a batch");
            let (what, for_) = busy
                .current(Instant::now() + Duration::from_secs(5))
                .unwrap();
            assert_eq!(what, "inserting a batch");
            assert!(for_ >= Duration::from_secs(5));
        }
        assert_eq!(busy.current(Instant::now()), None);
    }
}
