//! The consumer runtime, shared by every consumer fold: consumes
//! `kafka.events_topic` in a consumer group, turns every event into rows
//! through a [`Fold`] (the folds are in [`crate::folds`]), batches them,
//! hands each batch to the fold's sink, sends what it cannot use to the
//! dead-letter topic, and commits Kafka offsets only after the sink stored
//! the rows they cover.
//!
//! # Effectively-once
//!
//! Kafka's committed offset is progress reporting; the position that counts
//! is stored with the data. Each row carries `(kafka_partition, kafka_offset)`;
//! rows of one partition are inserted in offset order, one insert at a time,
//! and an insert never spans two ClickHouse table partitions (ClickHouse
//! writes one part per table partition, so only such an insert is atomic).
//! Hence `max(kafka_offset)` per partition in ClickHouse is exactly the last
//! message whose effect is stored. When a partition is (re)assigned, its
//! position is forgotten; on its first message the processor reads
//! [`crate::resume::stored_offsets`] for every assigned partition it does not
//! know and skips messages at or below the stored offset. A crash between the
//! insert and the Kafka commit therefore neither loses nor duplicates rows.
//!
//! A failed insert may still have been stored (the answer was lost, or the
//! request timed out after the server had the data). Before retrying, the
//! processor reads the stored offsets again and drops rows ClickHouse already
//! holds, so retries cannot duplicate either.
//!
//! # The remaining window
//!
//! Rebalance callbacks run only while this loop polls Kafka, and it does not
//! poll while an insert (with its retries) is running. With the default
//! (eager) protocol the group cannot hand our partitions to another member
//! before we rejoin, so an insert normally finishes before anyone else reads
//! the stored offsets. The exception: an insert (or a retry loop while
//! ClickHouse is down) that outlasts `max.poll.interval.ms` (5 minutes). The
//! client then leaves the group, another member takes the partitions and may
//! read the stored offsets before our insert lands; both would then insert
//! the same rows. Rows of revoked partitions that were not inserted yet are
//! dropped on revoke (the new owner reads them again). Dead letters are
//! at-least-once (see [`crate::dlq`]). A ClickHouse server crash between
//! writing `calls` and its materialized views can leave a rollup short.
//!
//! # Backpressure
//!
//! One batch is in memory at a time. While it is inserted (and retried, with
//! exponential backoff from 100 ms capped at [`MAX_BACKOFF`], never dropped)
//! nothing is consumed: a slow or absent ClickHouse leaves the backlog in
//! Kafka, and the memory held is one batch plus librdkafka's pre-fetch
//! queue (`processor.prefetch_kbytes`). The cap keeps recovery close behind the
//! dependency: the first insert after ClickHouse answers again comes
//! within about a second.
//!
//! # Takeover after a crash
//!
//! A SIGKILLed member keeps its partitions until its session times out
//! (`processor.session_timeout_ms`). With `processor.instance_id` the
//! consumer is a static member (`group.instance.id`): the restarted process
//! takes the dead one's place, and its partitions, at once. Two running
//! processors with the same id fence each other; the fenced one stops with
//! an error naming the setting.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use clickhouse::Client;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::{ClientConfig, ClientContext, Offset};
use tokio_util::sync::CancellationToken;
use tollgate_contract::{parse_event_json, Event, JsonEventError, Limits};
use tollgate_control::config::KafkaConfig;
use tracing::{debug, info, warn, Instrument};

use crate::batch::{Batch, BatchPolicy};
use crate::clickhouse::within;
use crate::config::ProcessorConfig;
use crate::dlq::{DeadLetterReason, DeadLetterWriter, Source};
use crate::error::{Error, Result};
use crate::fold::{Fold, MessageMeta, Positioned};
use crate::health::ConsumerHealth;
use crate::insert_fence::{wait_for_running_inserts, SETTLE};
use crate::metrics::FoldMetrics;
use crate::resume::{stored_offsets_in, ResumePositions};
use crate::stall::{self, Busy, PartitionFetch, StallWatch};
use tollgate_control::clickhouse::client;
use tollgate_control::config::ClickHouseConfig;

/// How often the progress line is logged.
pub(crate) const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How long the loop may await one thing outside its poll before a
/// warning says what (`crate::stall::watch_busy`).
const BUSY_WARN_AFTER: Duration = Duration::from_secs(30);
/// The longest wait between two attempts of an insert or a position read.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The processor's validation: the contract's structural and semantic rules,
/// but no freshness window and not the edges' newer rules (`strict`).
/// Ingest already enforced freshness and those; a replay of old data must
/// not dead-letter what an older edge accepted.
fn processor_limits() -> Limits {
    Limits {
        max_future_skew: chrono::Duration::days(366),
        max_age: chrono::Duration::days(366 * 100),
        max_tags: 1024,
        strict: false,
    }
}

/// Decode one message value into an event: typed, with the `Value` path
/// only for a payload typed decoding refuses ([`parse_event_json`]).
pub fn decode(
    payload: Option<&[u8]>,
    now: chrono::DateTime<Utc>,
) -> std::result::Result<Event, DeadLetterReason> {
    let payload = payload
        .filter(|p| !p.is_empty())
        .ok_or_else(|| DeadLetterReason {
            error: "undecodable",
            field: None,
            reason: "empty message value".into(),
        })?;
    parse_event_json(payload, now, &processor_limits()).map_err(|e| match e {
        JsonEventError::NotJson(e) => DeadLetterReason {
            error: "undecodable",
            field: None,
            reason: format!("not JSON: {e}"),
        },
        JsonEventError::Invalid(r) => DeadLetterReason {
            error: "invalid_event",
            reason: r.to_string(),
            field: Some(r.field),
        },
    })
}

/// What the processor did, for the progress line and the final summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub messages: u64,
    pub rows_inserted: u64,
    /// Messages at or below the offset ClickHouse already holds.
    pub skipped: u64,
    pub dead_lettered: u64,
    /// Valid events without a row (`admin.*` for `calls`).
    pub without_row: u64,
    /// Messages a fold that does not dead-letter could not use.
    pub unusable: u64,
    pub inserts: u64,
}

#[derive(Debug)]
enum RebalanceEvent {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Records rebalances (served inside `recv`) for the loop to apply, and the
/// consumer lag from librdkafka's statistics.
struct ProcessorContext {
    topic: String,
    rebalances: Mutex<Vec<RebalanceEvent>>,
    lag: AtomicI64,
    /// The assigned partitions' fetch states, from the last statistics.
    fetch: Mutex<Vec<PartitionFetch>>,
}

impl ProcessorContext {
    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect()
    }

    fn record(&self, event: RebalanceEvent) {
        self.rebalances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
    }

    fn take_rebalances(&self) -> Vec<RebalanceEvent> {
        std::mem::take(&mut *self.rebalances.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn fetch(&self) -> std::sync::MutexGuard<'_, Vec<PartitionFetch>> {
        self.fetch.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClientContext for ProcessorContext {
    fn stats(&self, statistics: Statistics) {
        let lag: i64 = statistics
            .topics
            .get(&self.topic)
            .map(|t| {
                t.partitions
                    .values()
                    .filter(|p| p.partition >= 0)
                    .map(|p| p.consumer_lag.max(0))
                    .sum()
            })
            .unwrap_or(-1);
        self.lag.store(lag, Ordering::Relaxed);
        *self.fetch() = stall::partitions_of(&self.topic, &statistics);
    }
}

impl ConsumerContext for ProcessorContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => self.record(RebalanceEvent::Revoked(self.partitions(tpl))),
            Rebalance::Error(err) => warn!(%err, "rebalance error"),
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.record(RebalanceEvent::Assigned(self.partitions(tpl)));
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        if let Err(err) = result {
            warn!(%err, partitions = offsets.count(), "offset commit failed; the next commit covers it");
        }
    }
}

type EventsConsumer = StreamConsumer<ProcessorContext>;

/// Everything the loop mutates; the consumer is kept apart so a borrowed
/// message and this state can be used together.
struct Processor<F: Fold> {
    kafka: KafkaConfig,
    ch: ClickHouseConfig,
    client: Client,
    fold: F,
    policy: BatchPolicy,
    batch: Batch<F::Row>,
    positions: ResumePositions,
    dlq: Option<DeadLetterWriter>,
    counters: Counters,
    /// What the health sampler reads (`crate::health`), when it runs.
    health: Option<Arc<ConsumerHealth>>,
    /// This fold's series of `tollgate_process_*` (`crate::metrics`).
    metrics: FoldMetrics,
    /// What the loop awaits outside its poll (`crate::stall::watch_busy`).
    busy: Arc<Busy>,
    shutdown: CancellationToken,
    /// A stall this long ends the consumer (`processor.stall_restart_secs`;
    /// `None`: never).
    stall_restart: Option<Duration>,
}

/// Why [`Processor::consume`] returned.
enum Ended {
    Shutdown,
    /// Nothing consumed or stored while events waited, for this long (at
    /// least `processor.stall_restart_secs`).
    Stalled(Duration),
}

/// The consumer's settings: offsets stored and committed only by us (after
/// ClickHouse answered), statistics for the lag in progress lines, the
/// configured session timeout, static membership when `instance_id` is
/// given, and a bounded pre-fetch queue.
fn consumer_config(
    kafka: &KafkaConfig,
    config: &ProcessorConfig,
    group_id: &str,
    instance_id: Option<&str>,
) -> ClientConfig {
    let mut settings = ClientConfig::new();
    settings
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set(
            "queued.max.messages.kbytes",
            config.prefetch_kbytes.to_string(),
        )
        .set(
            "queued.min.messages",
            config.prefetch_events_per_partition.to_string(),
        )
        .set(
            "fetch.queue.backoff.ms",
            config.prefetch_backoff_ms.to_string(),
        )
        .set(
            "fetch.message.max.bytes",
            (u64::from(config.prefetch_fetch_kbytes) * 1024).to_string(),
        )
        .set(
            "statistics.interval.ms",
            PROGRESS_EVERY.as_millis().to_string(),
        );
    if let Some(id) = instance_id {
        settings.set("group.instance.id", id);
    }
    settings
}

/// The `group.instance.id` of this process (`processor.instance_id` with
/// `{host}` replaced), checked with the rest of the consumer settings.
fn instance_id(config: &ProcessorConfig) -> Result<Option<String>> {
    config.validate().map_err(Error::Config)?;
    let Some(template) = &config.instance_id else {
        return Ok(None);
    };
    let host = if template.contains("{host}") {
        whoami::hostname().map_err(|e| {
            Error::Config(format!(
                "processor.instance_id {template:?} uses {{host}}, but the host name cannot be read: {e}"
            ))
        })?
    } else {
        String::new()
    };
    Ok(config.group_instance_id(&host))
}

/// A consumer with `settings` and a fresh context, subscribed to the
/// events topic.
fn subscribed(kafka: &KafkaConfig, settings: &ClientConfig) -> Result<EventsConsumer> {
    let kafka_error = |context: &str, source| Error::Kafka {
        brokers: kafka.brokers.clone(),
        context: context.to_string(),
        source: Box::new(source),
    };
    let context = ProcessorContext {
        topic: kafka.events_topic.clone(),
        rebalances: Mutex::new(Vec::new()),
        lag: AtomicI64::new(-1),
        fetch: Mutex::new(Vec::new()),
    };
    let consumer: EventsConsumer = settings
        .create_with_context(context)
        .map_err(|e| kafka_error("cannot create the consumer", e))?;
    consumer
        .subscribe(&[&kafka.events_topic])
        .map_err(|e| kafka_error("cannot subscribe", e))?;
    Ok(consumer)
}

/// Run `fold` in consumer group `group_id` until `shutdown` is cancelled;
/// then flush the open batch, commit, and return what was done. The
/// group's lag is sampled for `/metrics` every
/// `processor.health_sample_secs` ([`crate::health::start_lag`]).
pub async fn run_fold<F: Fold>(
    fold: F,
    kafka: &KafkaConfig,
    ch: &ClickHouseConfig,
    config: &ProcessorConfig,
    group_id: &str,
    metrics: FoldMetrics,
    shutdown: CancellationToken,
) -> Result<Counters> {
    let health = Arc::new(ConsumerHealth::default());
    // Stopped with the fold, whether it returns at shutdown or fails.
    let sampling = shutdown.child_token();
    let _stop_sampling = sampling.clone().drop_guard();
    crate::health::start_lag(
        kafka,
        group_id,
        Duration::from_secs(config.health_sample_secs),
        health.clone(),
        metrics.consumer_lag.clone(),
        sampling,
    )?;
    let reporting = Reporting {
        health: Some(health),
        metrics,
    };
    run_fold_reporting(fold, kafka, ch, config, group_id, reporting, shutdown).await
}

/// What a fold's consumer loop reports besides its rows: to the
/// pipeline-health sampler ([`crate::health`]), when one runs, and to
/// `/metrics` ([`crate::metrics`]).
pub struct Reporting {
    pub health: Option<Arc<ConsumerHealth>>,
    pub metrics: FoldMetrics,
}

/// [`run_fold`], telling `health` (the pipeline-health sampler,
/// [`crate::health`]) its assignments, stored positions and dead letters.
pub async fn run_fold_reporting<F: Fold>(
    fold: F,
    kafka: &KafkaConfig,
    ch: &ClickHouseConfig,
    config: &ProcessorConfig,
    group_id: &str,
    reporting: Reporting,
    shutdown: CancellationToken,
) -> Result<Counters> {
    if shutdown.is_cancelled() {
        // Stopped (a signal, or another fold's error) while this fold was
        // still starting: joining the group only to leave it at once is
        // where librdkafka's close has been seen to block.
        info!(fold = fold.name(), "shutdown before the fold started");
        return Ok(Counters::default());
    }
    let Reporting { health, metrics } = reporting;
    let client = client(ch);
    let instance_id = instance_id(config)?;
    let settings = consumer_config(kafka, config, group_id, instance_id.as_deref());
    let mut consumer = subscribed(kafka, &settings)?;
    info!(
        fold = fold.name(),
        topic = %kafka.events_topic,
        group = %group_id,
        instance_id = instance_id.as_deref().unwrap_or("-"),
        session_timeout_ms = config.session_timeout_ms,
        brokers = %kafka.brokers,
        clickhouse = %ch.url,
        database = %ch.database,
        "processor started"
    );
    let dlq = if fold.dead_letters() {
        Some(DeadLetterWriter::new(kafka, group_id)?)
    } else {
        None
    };
    let busy = Arc::new(Busy::default());
    let watching = shutdown.child_token();
    let _stop_watching = watching.clone().drop_guard();
    stall::watch_busy(
        fold.name(),
        busy.clone(),
        PROGRESS_EVERY,
        BUSY_WARN_AFTER,
        watching,
    );
    let mut processor = Processor {
        kafka: kafka.clone(),
        ch: ch.clone(),
        client,
        fold,
        policy: BatchPolicy::from(config),
        batch: Batch::new(),
        positions: ResumePositions::new(),
        dlq,
        counters: Counters::default(),
        health,
        metrics,
        busy,
        shutdown: shutdown.clone(),
        stall_restart: (config.stall_restart_secs > 0)
            .then(|| Duration::from_secs(config.stall_restart_secs)),
    };
    let consumed = loop {
        let stalled = match processor.consume(&consumer).await {
            Err(err) => break Err(err),
            // Shutdown: flush what was consumed and commit it synchronously.
            Ok(Ended::Shutdown) => break processor.flush(&consumer, CommitMode::Sync).await,
            Ok(Ended::Stalled(stalled)) => stalled,
        };
        // What was consumed is stored first; then this consumer's
        // partitions are let go of as at a revocation, and a new consumer
        // joins the group: its assignment resumes from ClickHouse.
        if let Err(err) = processor.flush(&consumer, CommitMode::Async).await {
            break Err(err);
        }
        let released = processor.release_assignment(&consumer);
        close_in_time(consumer, processor.fold.name()).await;
        processor.metrics.consumer_restarts.inc();
        warn!(
            fold = processor.fold.name(),
            stalled_s = stalled.as_secs(),
            partitions = ?released,
            "stalled past processor.stall_restart_secs: closed the kafka consumer and joined the group with a new one"
        );
        consumer = subscribed(kafka, &settings)?;
    };
    close_in_time(consumer, processor.fold.name()).await;
    consumed?;
    let c = processor.counters;
    info!(
        fold = processor.fold.name(),
        messages = c.messages,
        rows_inserted = c.rows_inserted,
        skipped = c.skipped,
        dead_lettered = c.dead_lettered,
        without_row = c.without_row,
        unusable = c.unusable,
        "processor stopped"
    );
    Ok(c)
}

/// How long closing a consumer (librdkafka leaving the group) may take
/// before the processor stops without it.
const CLOSE_WAIT: Duration = Duration::from_secs(30);

/// Close `consumer` on a thread of its own, waiting at most
/// [`CLOSE_WAIT`]: librdkafka's close can block for good (seen when a
/// consumer given a static `group.instance.id` that another member holds
/// is closed while it joins), and a process that cannot exit would keep
/// its fenced or stopped folds' resources and never restart. Everything to
/// commit was committed before this.
pub(crate) async fn close_in_time<C: Send + 'static>(consumer: C, fold: &str) {
    let (closed, on_closed) = tokio::sync::oneshot::channel::<()>();
    let closing = std::thread::Builder::new()
        .name(format!("{fold}-close"))
        .spawn(move || {
            drop(consumer);
            let _ = closed.send(());
        });
    if let Err(err) = closing {
        // The closure, and the consumer with it, was dropped here.
        warn!(fold, %err, "cannot start a thread to close the kafka consumer; closed it in place");
        return;
    }
    if tokio::time::timeout(CLOSE_WAIT, on_closed).await.is_err() {
        warn!(
            fold,
            wait_s = CLOSE_WAIT.as_secs(),
            "the kafka consumer did not close in time (librdkafka); stopping without waiting for it"
        );
    }
}

impl<F: Fold> Processor<F> {
    async fn consume(&mut self, consumer: &EventsConsumer) -> Result<Ended> {
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        progress.tick().await;
        let mut last = (Instant::now(), self.counters);
        let mut stall = StallWatch::default();
        loop {
            // An open batch is inserted after its wait; with none open,
            // the fold may want a flush of its own (a quiet partition's
            // audit checkpoint).
            let deadline = if self.batch.is_empty() {
                self.fold.idle_due()
            } else {
                self.batch.deadline(&self.policy)
            };
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Ok(Ended::Shutdown),
                () = sleep_until(deadline) => self.flush(consumer, CommitMode::Async).await?,
                _ = progress.tick() => {
                    // Rebalances recorded while idle (no message to return
                    // from `recv`) are applied and logged here at the latest.
                    self.apply_rebalances(consumer);
                    let stalled = self.log_progress(consumer, last, &mut stall);
                    last = (Instant::now(), self.counters);
                    if let Some(stalled) = stalled.filter(|s| self.stall_restart.is_some_and(|limit| *s >= limit)) {
                        return Ok(Ended::Stalled(stalled));
                    }
                }
                received = consumer.recv() => match received {
                    Ok(message) => {
                        self.apply_rebalances(consumer);
                        self.handle(consumer, &message).await?;
                    }
                    Err(err) => {
                        self.apply_rebalances(consumer);
                        if let Some((code, reason)) = consumer.client().fatal_error() {
                            return Err(self.fatal(code, reason));
                        }
                        warn!(%err, brokers = %self.kafka.brokers, "kafka consume error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
    }

    /// The consumer can no longer be used (librdkafka's fatal error): say
    /// why, and what to change when another member fenced this one.
    fn fatal(&self, code: RDKafkaErrorCode, reason: String) -> Error {
        let context = if code == RDKafkaErrorCode::FencedInstanceId {
            "this processor was fenced: another running processor uses the same \
             processor.instance_id (give every running processor its own)"
        } else {
            "fatal consumer error"
        };
        warn!(?code, %reason, "{context}");
        Error::Kafka {
            brokers: self.kafka.brokers.clone(),
            context: context.to_string(),
            source: Box::new(rdkafka::error::KafkaError::MessageConsumptionFatal(code)),
        }
    }

    /// The progress line; a warning naming each partition's fetch state
    /// when the fold is stalled (`crate::stall`), and for how long it has
    /// been.
    fn log_progress(
        &self,
        consumer: &EventsConsumer,
        (since, before): (Instant, Counters),
        stall: &mut StallWatch,
    ) -> Option<Duration> {
        let secs = since.elapsed().as_secs_f64().max(0.001);
        let c = self.counters;
        #[allow(clippy::cast_precision_loss)]
        let events_per_s = ((c.messages - before.messages) as f64 / secs).round();
        let lag = consumer.context().lag.load(Ordering::Relaxed);
        // The sampler's lag (against the brokers' high watermarks), not
        // librdkafka's: that one cannot see what a stuck fetcher never
        // fetched.
        let waiting = self.health.as_ref().and_then(|h| h.waiting_since(since));
        let moved = c.messages != before.messages || c.rows_inserted != before.rows_inserted;
        if let Some(stalled) = stall.tick(moved, waiting, since, Instant::now()) {
            warn!(
                fold = self.fold.name(),
                stalled_s = stalled.as_secs(),
                waiting = waiting.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
                messages = c.messages,
                rows_inserted = c.rows_inserted,
                partitions = %stall::describe(&consumer.context().fetch()),
                "stalled: nothing consumed or stored while events wait"
            );
            return Some(stalled);
        }
        info!(
            fold = self.fold.name(),
            events_per_s,
            messages = c.messages,
            rows_inserted = c.rows_inserted,
            skipped = c.skipped,
            dead_lettered = c.dead_lettered,
            lag,
            "progress"
        );
        None
    }

    /// Let go of `partitions`: their rows not stored yet (returns how
    /// many), positions and the fold's state of them. Whoever gets them
    /// next resumes from what ClickHouse holds.
    fn revoke(&mut self, partitions: &[i32]) -> usize {
        let dropped_rows = self.batch.drop_partitions(partitions);
        self.positions.forget(partitions);
        self.fold.forget_partitions(partitions);
        if let Some(h) = &self.health {
            h.revoked(partitions);
        }
        dropped_rows
    }

    /// Before `consumer` is closed without a rebalance (a stall): let go
    /// of every partition it was assigned, as at a revocation. Returns
    /// them.
    fn release_assignment(&mut self, consumer: &EventsConsumer) -> Vec<i32> {
        self.apply_rebalances(consumer);
        let partitions = match consumer.assignment() {
            Ok(tpl) => consumer.context().partitions(&tpl),
            Err(err) => {
                // The new consumer's assignment forgets them as well.
                warn!(%err, "cannot read the consumer's assignment before closing it");
                Vec::new()
            }
        };
        self.revoke(&partitions);
        partitions
    }

    /// Apply rebalances recorded during the last poll.
    fn apply_rebalances(&mut self, consumer: &EventsConsumer) {
        for event in consumer.context().take_rebalances() {
            match event {
                RebalanceEvent::Revoked(partitions) => {
                    let dropped_rows = self.revoke(&partitions);
                    info!(?partitions, dropped_rows, "partitions revoked");
                }
                RebalanceEvent::Assigned(partitions) => {
                    self.positions.forget(&partitions);
                    self.fold.forget_partitions(&partitions);
                    if let Some(h) = &self.health {
                        h.assigned(&partitions);
                    }
                    info!(?partitions, "partitions assigned");
                }
            }
        }
    }

    async fn handle(
        &mut self,
        consumer: &EventsConsumer,
        message: &BorrowedMessage<'_>,
    ) -> Result<()> {
        let (partition, offset) = (message.partition(), message.offset());
        self.counters.messages += 1;
        self.metrics.messages.inc();
        if self.positions.get(partition).is_none() {
            let _busy = Busy::enter(&self.busy, "reading where its new partitions resume");
            self.look_up_positions(consumer, partition).await?;
        }
        if self.positions.is_stored(partition, offset) {
            self.counters.skipped += 1;
            self.batch.mark_consumed(partition, offset, Instant::now());
            return Ok(());
        }
        let now = Utc::now();
        let meta = MessageMeta {
            partition,
            offset,
            key: message.key(),
        };
        let why = match decode(message.payload(), now) {
            Ok(event) => match self.fold.row(&event, meta, now) {
                Ok(Some(row)) => {
                    let key = self.fold.partition_key(&row);
                    if !self.batch.admits(key) {
                        self.flush(consumer, CommitMode::Async).await?;
                    }
                    let bytes = message.payload_len();
                    self.batch.push_row(row, key, bytes, Instant::now());
                    if self.batch.is_full(&self.policy) {
                        self.flush(consumer, CommitMode::Async).await?;
                    }
                    return Ok(());
                }
                Ok(None) => {
                    self.counters.without_row += 1;
                    self.batch.mark_consumed(partition, offset, Instant::now());
                    return Ok(());
                }
                Err(rejection) => DeadLetterReason {
                    error: "unstorable",
                    reason: rejection.to_string(),
                    field: Some(rejection.field),
                },
            },
            Err(why) => why,
        };
        let Some(dlq) = &self.dlq else {
            // Another fold of the same topic dead-letters it.
            debug!(partition, offset, reason = %why.reason, "skipping unusable message");
            self.counters.unusable += 1;
            self.batch.mark_consumed(partition, offset, Instant::now());
            return Ok(());
        };
        let source = Source {
            topic: message.topic(),
            partition,
            offset,
            key: message.key(),
            timestamp_ms: message.timestamp().to_millis(),
        };
        warn!(partition, offset, reason = %why.reason, "dead-lettering message");
        let _busy = Busy::enter(&self.busy, "writing a dead letter");
        dlq.write(
            &source,
            message.payload().unwrap_or_default(),
            &why,
            &self.shutdown,
        )
        .await?;
        self.counters.dead_lettered += 1;
        self.metrics.dead_letters.inc();
        if let Some(h) = &self.health {
            h.dead_letters.add(1);
        }
        self.batch.mark_consumed(partition, offset, Instant::now());
        Ok(())
    }

    /// Wait for every insert into the fold's database running now to end
    /// (`crate::insert_fence`), within `clickhouse.query_timeout_secs`.
    async fn fence(&self) -> clickhouse::error::Result<crate::insert_fence::Passed> {
        within(
            self.ch.query_timeout(),
            wait_for_running_inserts(&self.client, &self.ch, self.fold.name(), self.fold.table()),
        )
        .await
    }

    /// Read stored offsets for `partition` and every other assigned
    /// partition whose position is unknown. Retries until ClickHouse answers:
    /// without the position no message of the partition can be processed.
    async fn look_up_positions(&mut self, consumer: &EventsConsumer, partition: i32) -> Result<()> {
        let mut wanted = vec![partition];
        if let Ok(assignment) = consumer.assignment() {
            for p in consumer.context().partitions(&assignment) {
                if p != partition && self.positions.get(p).is_none() {
                    wanted.push(p);
                }
            }
        }
        wanted.sort_unstable();
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 1u32;
        loop {
            // An insert the partitions' previous owner sent before it died
            // may still be running: its rows must land before the position
            // is read (`crate::insert_fence`).
            let limit = self.ch.query_timeout();
            if let Err(err) = self.fence().await {
                warn!(partitions = ?wanted, attempt, clickhouse = %self.ch.url, %err, "cannot see the inserts running in clickhouse, retrying");
                self.backoff(&mut backoff, "resume positions not read")
                    .await?;
                attempt += 1;
                continue;
            }
            let stored = match within(
                limit,
                stored_offsets_in(&self.client, self.fold.table(), &wanted),
            )
            .await
            {
                Ok(stored) => match within(limit, self.fold.load_partitions(&stored)).await {
                    Ok(()) => Ok(stored),
                    Err(err) => Err(err.to_string()),
                },
                Err(err) => Err(err.to_string()),
            };
            match stored {
                Ok(stored) => {
                    for (p, max) in stored {
                        self.positions.set(p, max);
                        info!(
                            partition = p,
                            stored_offset = max.unwrap_or(-1),
                            "resume position from clickhouse"
                        );
                    }
                    return Ok(());
                }
                Err(err) => {
                    warn!(partitions = ?wanted, attempt, clickhouse = %self.ch.url, %err, "cannot read stored offsets, retrying");
                }
            }
            self.backoff(&mut backoff, "resume positions not read")
                .await?;
            attempt += 1;
        }
    }

    /// Insert the open batch, then commit every position it covers.
    async fn flush(&mut self, consumer: &EventsConsumer, mode: CommitMode) -> Result<()> {
        self.apply_rebalances(consumer);
        let last = matches!(mode, CommitMode::Sync);
        if self.batch.is_empty() {
            // Every row made is stored: the fold may act on its own
            // interval (and always does at shutdown).
            self.fold.flushed(last).await;
            return Ok(());
        }
        let flushed = self.batch.take();
        // The batch's span (exported with `telemetry.otlp_endpoint`): from
        // the insert to the commit, with its size and Kafka partitions.
        let span = tracing::info_span!(
            "batch",
            "tollgate.fold" = self.fold.name(),
            "messaging.system" = "kafka",
            "messaging.destination.name" = %self.kafka.events_topic,
            "messaging.destination.partition.id" = %partition_list(flushed.commit.keys().copied()),
            "messaging.batch.message_count" = span_count(flushed.rows.len()),
        );
        async {
            if !flushed.rows.is_empty() {
                let _busy = Busy::enter(&self.busy, "inserting a batch");
                self.insert(flushed.rows).await?;
            }
            self.fold.flushed(last).await;
            if let Some(h) = &self.health {
                h.stored(&flushed.commit);
            }
            self.commit(consumer, &flushed.commit, mode);
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Insert `rows` (retrying until stored or shut down), in a span of
    /// its own that says how many rows of which partitions, into which
    /// table, in how many attempts.
    async fn insert(&mut self, rows: Vec<F::Row>) -> Result<()> {
        let span = tracing::info_span!(
            "insert",
            "tollgate.fold" = self.fold.name(),
            "db.system.name" = "clickhouse",
            "db.collection.name" = self.fold.table(),
            "messaging.destination.partition.id" = %partition_list(rows.iter().map(|r| r.position().0)),
            "messaging.batch.message_count" = span_count(rows.len()),
            "tollgate.attempts" = tracing::field::Empty,
        );
        self.insert_until_stored(rows).instrument(span).await
    }

    async fn insert_until_stored(&mut self, mut rows: Vec<F::Row>) -> Result<()> {
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 1u32;
        let mut check_stored = false;
        // Whether a fence after the failure found nothing running and
        // [`SETTLE`] has passed since (`crate::insert_fence`, "settled").
        let mut settled = false;
        loop {
            if check_stored {
                // The failed attempt may have been stored after all.
                let mut partitions: Vec<i32> = rows.iter().map(|r| r.position().0).collect();
                partitions.sort_unstable();
                partitions.dedup();
                // The failed attempt may still be running (a timeout): what
                // is read next must hold it whole or not at all.
                let limit = self.ch.query_timeout();
                let stored = match self.fence().await {
                    Ok(passed) if passed.all_ended() && !settled => {
                        // What the failed attempt sent may still wait
                        // unread in ClickHouse's socket: fence again once
                        // ClickHouse has had the time to list it.
                        self.pause(SETTLE, "insert not retried").await?;
                        settled = true;
                        continue;
                    }
                    Ok(passed) if passed.all_ended() => {
                        within(
                            limit,
                            stored_offsets_in(&self.client, self.fold.table(), &partitions),
                        )
                        .await
                    }
                    Ok(passed) => {
                        warn!(rows = rows.len(), attempt, still_running = passed.still_running, "inserts still running in clickhouse; not reading what the failed insert stored yet");
                        self.backoff(&mut backoff, "insert not retried").await?;
                        continue;
                    }
                    Err(err) => {
                        settled = false;
                        Err(err)
                    }
                };
                match stored {
                    Ok(stored) => {
                        let (kept, left): (Vec<F::Row>, Vec<F::Row>) =
                            rows.into_iter().partition(|r| {
                                let (p, o) = r.position();
                                matches!(stored.get(&p), Some(Some(max)) if o <= *max)
                            });
                        if !kept.is_empty() {
                            info!(
                                already_stored = kept.len(),
                                rows_left = left.len(),
                                "failed insert was stored after all; not inserting those rows again"
                            );
                            // Its views may have missed them.
                            if let Err(err) =
                                within(limit, self.fold.stored_after_failure(&kept)).await
                            {
                                warn!(rows = kept.len(), attempt, %err, "cannot settle the rows a failed insert stored after all");
                                rows = kept.into_iter().chain(left).collect();
                                self.backoff(&mut backoff, "insert not retried").await?;
                                continue;
                            }
                        }
                        rows = left;
                        if rows.is_empty() {
                            return Ok(());
                        }
                    }
                    Err(err) => {
                        warn!(rows = rows.len(), attempt, %err, "cannot read stored offsets before retrying the insert");
                        self.backoff(&mut backoff, "insert not retried").await?;
                        continue;
                    }
                }
            }
            let started = Instant::now();
            tracing::Span::current().record("tollgate.attempts", i64::from(attempt));
            match self.fold.store(&rows).await {
                Ok(()) => {
                    // Guards against Kafka re-delivering stored messages
                    // without a rebalance (e.g. an offset reset).
                    for row in &rows {
                        let (p, o) = row.position();
                        self.positions.advance(p, o);
                    }
                    self.counters.rows_inserted += rows.len() as u64;
                    self.counters.inserts += 1;
                    self.metrics.rows_inserted.inc_by(rows.len() as u64);
                    self.metrics.batch_rows.observe(rows.len() as f64);
                    self.metrics
                        .insert_duration
                        .observe(started.elapsed().as_secs_f64());
                    debug!(
                        rows = rows.len(),
                        ms = started.elapsed().as_millis() as u64,
                        "inserted"
                    );
                    return Ok(());
                }
                Err(err) => {
                    self.metrics.insert_errors.inc();
                    warn!(rows = rows.len(), attempt, clickhouse = %self.ch.url, %err, "insert failed, retrying");
                    check_stored = true;
                    settled = false;
                }
            }
            self.backoff(
                &mut backoff,
                "batch not inserted; it will be read again from kafka",
            )
            .await?;
            attempt += 1;
        }
    }

    /// Sleep `backoff` (then double it), unless shutdown is requested first.
    async fn backoff(&self, backoff: &mut Duration, what: &str) -> Result<()> {
        self.pause(*backoff, what).await?;
        *backoff = next_backoff(*backoff);
        Ok(())
    }

    /// Sleep `wait`, unless shutdown is requested first (then `what` was
    /// not done).
    async fn pause(&self, wait: Duration, what: &str) -> Result<()> {
        tokio::select! {
            () = self.shutdown.cancelled() => Err(Error::Interrupted(what.to_string())),
            () = tokio::time::sleep(wait) => Ok(()),
        }
    }

    /// Commit `next offset` per partition, for partitions still assigned.
    fn commit(&self, consumer: &EventsConsumer, offsets: &BTreeMap<i32, i64>, mode: CommitMode) {
        let assigned = consumer
            .assignment()
            .map(|a| consumer.context().partitions(&a))
            .unwrap_or_default();
        let mut tpl = TopicPartitionList::new();
        for (partition, next) in offsets {
            if !assigned.contains(partition) {
                continue;
            }
            if let Err(err) = tpl.add_partition_offset(
                &self.kafka.events_topic,
                *partition,
                Offset::Offset(*next),
            ) {
                warn!(partition, %err, "cannot build offset commit");
            }
        }
        if tpl.count() == 0 {
            return;
        }
        if let Err(err) = consumer.commit(&tpl, mode) {
            warn!(%err, "offset commit failed; the next commit covers it");
        }
    }
}

/// The wait after `backoff`: doubled, at most [`MAX_BACKOFF`].
fn next_backoff(backoff: Duration) -> Duration {
    (backoff * 2).min(MAX_BACKOFF)
}

/// A count as a span attribute: `i64`, which the OpenTelemetry layer
/// exports as an integer (it exports `u64` as text).
fn span_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Kafka partitions as a span attribute: ascending, comma-separated.
fn partition_list(partitions: impl Iterator<Item = i32>) -> String {
    let mut partitions: Vec<i32> = partitions.collect();
    partitions.sort_unstable();
    partitions.dedup();
    partitions
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The JSON of a minimal valid call event at `occurred_at`.
    pub(crate) fn call_json(occurred_at: &str) -> serde_json::Value {
        serde_json::json!({
            "schema_version": 1,
            "event_id": "0190b3c4-0000-7000-8000-000000000000",
            "kind": "ai.call.completed",
            "occurred_at": occurred_at,
            "org_id": "o", "team_id": "t",
            "call": {"call_id": "c", "provider": "openai", "model": "m", "operation": "chat",
                     "duration_ms": 10, "outcome": "success"}
        })
    }

    #[test]
    fn the_configured_settings_reach_the_consumer() {
        let config = ProcessorConfig {
            session_timeout_ms: 12_345,
            ..ProcessorConfig::default()
        };
        let settings = consumer_config(&KafkaConfig::default(), &config, "g", None);
        assert_eq!(settings.get("session.timeout.ms"), Some("12345"));
        assert_eq!(settings.get("enable.auto.commit"), Some("false"));
        assert_eq!(settings.get("group.id"), Some("g"));
        assert_eq!(settings.get("group.instance.id"), None);
        assert_eq!(settings.get("queued.max.messages.kbytes"), Some("32768"));
        assert_eq!(settings.get("queued.min.messages"), Some("2000"));
        assert_eq!(settings.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(settings.get("fetch.message.max.bytes"), Some("262144"));
    }

    #[test]
    fn an_instance_id_makes_the_consumer_a_static_member() {
        let config = ProcessorConfig {
            instance_id: Some("{host}-p1".into()),
            ..ProcessorConfig::default()
        };
        let id = instance_id(&config).unwrap().unwrap();
        assert!(id.ends_with("-p1") && !id.contains("{host}"), "{id}");
        let settings = consumer_config(&KafkaConfig::default(), &config, "g", Some(&id));
        assert_eq!(settings.get("group.instance.id"), Some(id.as_str()));
        let fixed = ProcessorConfig {
            instance_id: Some("processor-0".into()),
            ..ProcessorConfig::default()
        };
        assert_eq!(instance_id(&fixed).unwrap().as_deref(), Some("processor-0"));
        let bad = ProcessorConfig {
            session_timeout_ms: 100,
            ..ProcessorConfig::default()
        };
        assert!(
            matches!(instance_id(&bad), Err(Error::Config(m)) if m.starts_with("processor.session_timeout_ms is 100"))
        );
    }

    #[test]
    fn the_backoff_is_capped_so_recovery_follows_the_dependency() {
        let mut backoff = Duration::from_millis(100);
        let mut waits = Vec::new();
        for _ in 0..8 {
            waits.push(backoff);
            backoff = next_backoff(backoff);
        }
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
    }

    #[test]
    fn decode_reasons() {
        let now = Utc::now();
        assert_eq!(decode(None, now).unwrap_err().error, "undecodable");
        assert_eq!(
            decode(Some(b"\xff garbage"), now).unwrap_err().error,
            "undecodable"
        );
        let why = decode(Some(br#"{"schema_version":1,"hello":"world"}"#), now).unwrap_err();
        assert_eq!(why.error, "invalid_event");
        assert!(why.field.is_some());
    }

    /// The edges' newer rules (`Limits::strict`) are not the processor's:
    /// an event an older edge accepted (a team with edge whitespace, a tag
    /// with a zero-width space, a leap second, HTTP status 999) is read on
    /// a replay, not dead-lettered; the edges refuse it.
    #[test]
    fn a_replay_reads_what_an_older_edge_accepted() {
        let now = Utc::now();
        let old = serde_json::json!({
            "schema_version": 1,
            "event_id": "0190b3c4-0000-7000-8000-000000000001",
            "kind": "ai.call.completed",
            "occurred_at": "2026-06-30T23:59:60.500Z",
            "org_id": "acme", "team_id": "payments ", "user_id": "alice\u{200b}",
            "call": {"call_id": "c1", "provider": "openai", "model": "gpt-4o",
                     "operation": "chat", "duration_ms": 10, "outcome": "success",
                     "http_status": 999},
            "tags": {"feature": "chat\u{200b}"}
        });
        let payload = serde_json::to_vec(&old).unwrap();
        let event = decode(Some(&payload), now).unwrap();
        assert_eq!(event.team_id, "payments ");
        let edge = tollgate_contract::parse_event(
            old,
            now,
            &tollgate_contract::Limits {
                max_age: chrono::Duration::days(3650),
                ..Default::default()
            },
        );
        assert!(edge.is_err(), "{edge:?}");
    }

    /// What `decode` answered before it decoded typed first: the whole
    /// payload through a `serde_json::Value`.
    fn decode_through_value(payload: &[u8], now: chrono::DateTime<Utc>) -> DeadLetterReason {
        match serde_json::from_slice::<serde_json::Value>(payload) {
            Err(e) => DeadLetterReason {
                error: "undecodable",
                field: None,
                reason: format!("not JSON: {e}"),
            },
            Ok(value) => {
                let r =
                    tollgate_contract::parse_event(value, now, &processor_limits()).unwrap_err();
                DeadLetterReason {
                    error: "invalid_event",
                    reason: r.to_string(),
                    field: Some(r.field),
                }
            }
        }
    }

    #[test]
    fn dead_letters_name_the_same_field_and_reason_as_the_value_path() {
        let now = Utc::now();
        let good = call_json("2026-03-10T10:00:00.000Z");
        let edited = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut v = good.clone();
            edit(&mut v);
            serde_json::to_vec(&v).unwrap()
        };
        let cases: Vec<(Vec<u8>, &str, &str)> = vec![
            // Refused by typed decoding: the Value path names the field.
            (
                edited(&|v| v["call"]["duration_ms"] = serde_json::json!("ten")),
                "call.duration_ms",
                "call.duration_ms: invalid type: string \"ten\", expected u32",
            ),
            (
                edited(&|v| {
                    v["call"].as_object_mut().unwrap().remove("outcome");
                }),
                "call.outcome",
                "call.outcome: missing required field",
            ),
            (
                edited(&|v| v["schema_version"] = serde_json::json!(2)),
                "schema_version",
                "schema_version: unsupported schema version 2; this server accepts 1",
            ),
            (
                b"[1, 2]".to_vec(),
                "event",
                "event: expected a JSON object, found an array",
            ),
            // Read by typed decoding, refused by validation.
            (
                edited(&|v| v["call"]["attempt"] = serde_json::json!(0)),
                "call.attempt",
                "call.attempt: must be at least 1",
            ),
            (
                edited(&|v| v["org_id"] = serde_json::json!("")),
                "org_id",
                "org_id: must not be empty",
            ),
        ];
        for (payload, field, reason) in cases {
            let why = decode(Some(&payload), now).unwrap_err();
            assert_eq!(why, decode_through_value(&payload, now));
            assert_eq!(why.error, "invalid_event");
            assert_eq!(why.field.as_deref(), Some(field));
            assert_eq!(why.reason, reason);
        }
        let garbage = b"\x00\xffnot json";
        let why = decode(Some(garbage), now).unwrap_err();
        assert_eq!(why, decode_through_value(garbage, now));
        assert_eq!(why.reason, "not JSON: expected value at line 1 column 1");
    }

    #[test]
    fn old_events_are_not_dead_lettered() {
        let old = call_json("2019-03-10T10:00:00.000Z");
        let event = decode(Some(old.to_string().as_bytes()), Utc::now()).unwrap();
        assert_eq!(event.org_id, "o");
    }
}
