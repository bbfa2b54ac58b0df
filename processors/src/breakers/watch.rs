//! The breakers' events reader watched as a consumer fold's loop is
//! (`crate::stall`): it is no group's member and keeps no offsets, so the
//! group's lag sampler and stall replacement did not cover it, and a
//! fetcher its broker stopped serving left every circuit closed, silently.
//!
//! The watch hands the reader's positions to a lag sampler of its own
//! ([`crate::health::start_lag`]: `tollgate_process_consumer_lag{fold=
//! "breakers"}` on `/metrics`); at each check it asks whether the reader
//! read anything while events waited. Stalled past
//! `processor.stall_restart_secs`, the loop replaces the reader by a new
//! one at the same positions and counts it
//! (`tollgate_process_consumer_restarts_total{fold="breakers"}`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Offset;
use tokio_util::sync::CancellationToken;
use tokio_util::sync::DropGuard;
use tracing::warn;

use crate::error::Result;
use crate::folds::FoldContext;
use crate::health::ConsumerHealth;
use crate::stall::StallWatch;

use super::NAME;

/// The reader's positions, progress and stall.
pub struct ReaderWatch {
    health: Arc<ConsumerHealth>,
    /// Per partition, the next offset to read.
    next: BTreeMap<i32, i64>,
    /// Whether a message was read since the last check.
    moved: bool,
    /// When the last check ran.
    since: Instant,
    stall: StallWatch,
    /// A stall this long replaces the reader (`None`: never).
    restart_after: Option<Duration>,
    restarts: Counter,
    /// Stops the lag sampler with the watch.
    _sampling: DropGuard,
}

impl ReaderWatch {
    /// Watch a reader of the events topic assigned `ends` (partition,
    /// offset it starts at); the sampler runs every
    /// `processor.health_sample_secs` (0: no sampler, no stall watch).
    pub fn start(context: &FoldContext, group: &str, ends: &[(i32, i64)]) -> Result<Self> {
        let health = Arc::new(ConsumerHealth::default());
        let partitions: Vec<i32> = ends.iter().map(|(p, _)| *p).collect();
        health.assigned(&partitions);
        let next: BTreeMap<i32, i64> = ends.iter().copied().collect();
        health.stored(&next);
        let (lag, restarts) = context.metrics.reader_watch(NAME);
        let sampling: CancellationToken = context.shutdown.child_token();
        let every = Duration::from_secs(context.processor.health_sample_secs);
        crate::health::start_lag(
            &context.kafka,
            group,
            every,
            health.clone(),
            lag,
            sampling.clone(),
        )?;
        let stall_restart = context.processor.stall_restart_secs;
        Ok(Self {
            health,
            next,
            moved: false,
            since: Instant::now(),
            stall: StallWatch::default(),
            restart_after: (stall_restart > 0 && !every.is_zero())
                .then(|| Duration::from_secs(stall_restart)),
            restarts,
            _sampling: sampling.drop_guard(),
        })
    }

    /// The reader read the message at `offset` of `partition`.
    pub fn read(&mut self, partition: i32, offset: i64) {
        self.moved = true;
        let next = self.next.entry(partition).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
    }

    /// The reader was moved (skipped ahead): its positions now.
    pub fn moved_to(&mut self, reader: &StreamConsumer, topic: &str) {
        self.moved = true;
        if let Ok(positions) = reader.position() {
            for p in positions.elements_for_topic(topic) {
                if let Offset::Offset(offset) = p.offset() {
                    self.next.insert(p.partition(), offset);
                }
            }
        }
    }

    /// Where the reader is: per partition, the next offset to read.
    pub fn positions(&self) -> &BTreeMap<i32, i64> {
        &self.next
    }

    /// Hand the positions to the sampler (at the breakers' tick).
    pub fn report(&self) {
        self.health.stored(&self.next);
    }

    /// At a check (every [`crate::consumer::PROGRESS_EVERY`]): how long
    /// the reader has been stalled, when it has been for at least
    /// `processor.stall_restart_secs` (time to replace it). A stall is
    /// warned of at each check while it lasts.
    pub fn check(&mut self, now: Instant) -> Option<Duration> {
        self.report();
        let waiting = self.health.waiting_since(self.since);
        let stalled = self.stall.tick(self.moved, waiting, self.since, now);
        self.moved = false;
        self.since = now;
        let stalled = stalled?;
        warn!(
            fold = NAME,
            stalled_s = stalled.as_secs(),
            waiting = waiting.unwrap_or_default(),
            "breakers stalled: nothing read while events wait"
        );
        self.restart_after
            .filter(|limit| stalled >= *limit)
            .map(|_| stalled)
    }

    /// The reader was replaced after a stall of `stalled`.
    pub fn replaced(&mut self, stalled: Duration) {
        self.restarts.inc();
        self.stall = StallWatch::default();
        warn!(
            fold = NAME,
            stalled_s = stalled.as_secs(),
            "stalled past processor.stall_restart_secs: closed the breakers' kafka reader and assigned a new one at the same positions"
        );
    }
}
