//! The fleet-wide circuit breakers (`tollgate process --folds …,breakers`):
//! one breaker per provider and per provider/model over the call outcomes
//! of every proxy, publishing `circuit/…` decisions the proxies enforce
//! (`docs/breakers.md`).
//!
//! - [`config`]: `[breakers]`, every threshold and its default;
//! - [`observe`]: which events count, as what (pure);
//! - [`machine`]: the state machine, window and probes (pure, clock passed in);
//! - [`decision`]: the decision, event and row of a state or transition (pure);
//! - this module: the I/O. A consumer assigned every partition of the
//!   events topic from its end (a breaker judges the recent past; it keeps
//!   no offsets and needs no exactly-once), the decisions topic read for
//!   the breakers' published states (taken on at start, and mirrored while
//!   another replica holds the [`lease`]) and the learned recovery plans
//!   (for `reroute_to`), and the writers: the decision on the compacted
//!   decisions topic first, then the `admin.breaker.transition` event and
//!   the `breaker_transitions` row. Only the lease holder writes. The
//!   events reader is watched for stalls as a group's consumer is
//!   ([`watch`]).

pub mod catch_up;
pub mod config;
pub mod decision;
pub mod lease;
pub mod machine;
pub mod observe;
pub mod watch;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use clickhouse::Client;
use prometheus_client::metrics::counter::Counter;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tollgate_contract::decisions::{recovery_subject, CircuitState, Decision, RecoveryPlan};
use tollgate_control::clickhouse::client;
use tollgate_control::config::KafkaConfig;
use tollgate_control::kafka::{idempotent_producer_config, EventProducer};
use tracing::{debug, info, warn};

use crate::clickhouse::{error as ch_error, insert_rows};
use crate::consumer::Counters;
use crate::consumer::{close_in_time, PROGRESS_EVERY};
use crate::error::{Error, Result};
use crate::folds::{FoldContext, FoldEntry, Running, Runs};
use crate::recent_events::RecentEvents;
use catch_up::CatchUp;
use config::BreakersConfig;
use decision::{learned_fallback, published_state, transition_event, TransitionRow};
use lease::Lease;
use machine::{Breaker, Breakers, Transition};
use observe::CallReport;
use tollgate_contract::decisions::circuit_subject;
use watch::ReaderWatch;

pub const NAME: &str = "breakers";

/// The registry's line for the breakers.
pub const FOLD: FoldEntry = FoldEntry {
    name: NAME,
    description: "fleet-wide circuit breakers per provider and provider/model, published as circuit/… decisions",
    runs: Runs::Consumer(start),
    catalog,
};

/// Whether the `breaker_transitions` table exists.
const HAS_TRANSITIONS_SQL: &str = "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'breaker_transitions'";

/// The statements the breakers send (the transitions insert is
/// `INSERT INTO breaker_transitions(<TransitionRow fields>) FORMAT RowBinary`).
pub fn catalog() -> Vec<(String, String)> {
    vec![(
        "breakers.has_transitions".into(),
        HAS_TRANSITIONS_SQL.into(),
    )]
}

fn start(context: Arc<FoldContext>) -> Running {
    Box::pin(async move { run(&context).await })
}

/// One `circuit/…` record the breaker last published, for re-publishing.
struct Published {
    reason: String,
    at: Instant,
}

/// Everything the loop owns.
struct BreakerRuntime {
    config: BreakersConfig,
    breakers: Breakers,
    /// `recovery/…` plans from the decisions topic, by subject.
    plans: HashMap<String, RecoveryPlan>,
    published: HashMap<String, Published>,
    /// The last `circuit/…` state on the topic per subject, whoever
    /// published it: (state, generation).
    on_topic: HashMap<String, (CircuitState, u64)>,
    lease: Lease,
    /// Whether the lease was held at the last tick (to notice a takeover).
    leading: bool,
    decisions: FutureProducer,
    decisions_topic: String,
    writes: mpsc::Sender<Transition>,
    counters: Counters,
    /// The ids of the last calls counted, over every partition.
    recent: RecentEvents,
    /// Copies not counted (`tollgate_process_events_repeated_total`).
    repeated: Counter,
}

/// The one window of [`BreakerRuntime::recent`]: copies of an event share
/// its partition, but one window over all of them bounds the memory
/// whatever the partition count.
const ALL_PARTITIONS: i32 = 0;

/// Run the breakers until `context.shutdown`.
pub async fn run(context: &FoldContext) -> Result<Counters> {
    let config = context.breakers.clone();
    config.validate()?;
    let kafka = &context.kafka;
    let ch = &context.clickhouse;
    let ch_client = client(ch);
    let has: u64 = ch_client
        .query(HAS_TRANSITIONS_SQL)
        .fetch_one()
        .await
        .map_err(|e| ch_error(ch, "cannot read system.tables", e))?;
    if has == 0 {
        return Err(Error::Config(format!(
            "clickhouse database {} at {} has no breaker_transitions table; run `tollgate migrate` first",
            ch.database, ch.url
        )));
    }
    let kafka_error = |what: &str, source| Error::Kafka {
        brokers: kafka.brokers.clone(),
        context: what.to_string(),
        source: Box::new(source),
    };
    // A decision waiting in a batch is a breaker late.
    let decisions: FutureProducer = idempotent_producer_config(kafka, "tollgate-breakers")
        .set("linger.ms", "0")
        .create()
        .map_err(|e| kafka_error("cannot create the decisions producer", e))?;
    let events = EventProducer::new(kafka)
        .map_err(|e| Error::setup("cannot create the breaker event producer", e))?;

    // The decisions topic: the breakers' own last records and the recovery
    // plans, read to its end before the first event is judged.
    let decision_reader = reader(kafka, &config, &context.processor.group_id, "decisions")
        .map_err(|e| kafka_error("cannot create the decisions reader", e))?;
    let ends = partition_ends(&decision_reader, &kafka.decisions_topic)
        .await
        .map_err(|e| kafka_error("cannot read the decisions topic's partitions", e))?;
    require_partitions(kafka, &kafka.decisions_topic, &ends)?;
    assign(&decision_reader, &kafka.decisions_topic, &ends, |_| {
        Offset::Beginning
    })
    .map_err(|e| kafka_error("cannot assign the decisions topic", e))?;
    let (writes, writer) = spawn_writer(
        ch_client,
        ch.insert_timeout(),
        events,
        context.shutdown.clone(),
    );
    let mut runtime = BreakerRuntime {
        config: config.clone(),
        breakers: Breakers::new(),
        plans: HashMap::new(),
        published: HashMap::new(),
        on_topic: HashMap::new(),
        lease: Lease::default(),
        leading: false,
        decisions,
        decisions_topic: kafka.decisions_topic.clone(),
        writes,
        counters: Counters::default(),
        recent: RecentEvents::new(config.recent_event_ids),
        repeated: context.metrics.events_repeated(NAME),
    };
    let loaded = runtime
        .load_decisions(&decision_reader, &ends, &context.shutdown)
        .await;
    info!(
        records = loaded,
        breakers = runtime.on_topic.len(),
        plans = runtime.plans.len(),
        "breakers read the decisions topic"
    );

    // The events topic: every partition, from its end as of now (the
    // offsets are fixed here, so every event produced after this line is
    // judged).
    let mut event_reader = reader(kafka, &config, &context.processor.group_id, "events")
        .map_err(|e| kafka_error("cannot create the events consumer", e))?;
    let event_ends = partition_ends(&event_reader, &kafka.events_topic)
        .await
        .map_err(|e| kafka_error("cannot read the events topic's partitions", e))?;
    require_partitions(kafka, &kafka.events_topic, &event_ends)?;
    assign(
        &event_reader,
        &kafka.events_topic,
        &event_ends,
        Offset::Offset,
    )
    .map_err(|e| kafka_error("cannot assign the events topic", e))?;
    let mut watch = ReaderWatch::start(
        context,
        &reader_group(&context.processor.group_id, "events"),
        &event_ends,
    )?;
    info!(
        topic = %kafka.events_topic,
        partitions = event_ends.len(),
        window_secs = config.window_secs,
        minimum_calls = config.minimum_calls,
        failure_rate_percent = config.failure_rate_percent,
        open_secs = config.open_secs,
        "breakers judging every partition from its end"
    );
    // Only now compete for the lease: a holder must know the published
    // states first.
    runtime.lease = lease::hold(
        kafka,
        &format!("{}-breakers", context.processor.group_id),
        context.processor.session_timeout_ms,
        context.shutdown.clone(),
    )
    .map_err(|e| kafka_error("cannot join the breaker lease group", e))?;

    let mut catch_up = CatchUp::new(config.window_secs);
    let mut tick = tokio::time::interval(config.tick_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut check = tokio::time::interval(PROGRESS_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check.tick().await;
    loop {
        let mut stalled = None;
        // Not biased: under a steady stream of events the tick must still
        // get its turn (open -> half-open is due on time, not when traffic
        // pauses).
        tokio::select! {
            () = context.shutdown.cancelled() => break,
            message = event_reader.recv() => match message {
                Ok(message) => {
                    runtime.counters.messages += 1;
                    watch.read(message.partition(), message.offset());
                    let now = Utc::now();
                    let now_ms = now.timestamp_millis();
                    let stamped = message.timestamp().to_millis();
                    if let Some(target) = catch_up.skip_to(stamped, now_ms) {
                        let behind_secs = now_ms.saturating_sub(stamped.unwrap_or(now_ms)) / 1000;
                        match skip_to(&event_reader, &kafka.events_topic, target) {
                            Ok(passed) => {
                                runtime.counters.skipped += passed;
                                watch.moved_to(&event_reader, &kafka.events_topic);
                                info!(behind_secs, passed, window_secs = config.window_secs, "breakers were behind the events by more than they judge; skipped to the last window");
                                continue;
                            }
                            Err(err) => warn!(%err, behind_secs, "breakers cannot skip to the last window; reading on"),
                        }
                    }
                    let Some(payload) = message.payload() else { continue };
                    if observe::reported(message.headers()) {
                        runtime.counters.without_row += 1;
                        continue;
                    }
                    match CallReport::parse(payload) {
                        Ok(event) => runtime.on_event(&event, now).await,
                        Err(err) => {
                            runtime.counters.unusable += 1;
                            debug!(%err, partition = message.partition(), offset = message.offset(), "event the breakers cannot read skipped");
                        }
                    }
                }
                Err(err) => {
                    warn!(%err, "breaker events consumer error; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            message = decision_reader.recv() => {
                if let Ok(message) = message {
                    runtime.on_decision_record(message.key(), message.payload(), false);
                }
            }
            _ = tick.tick() => {
                runtime.on_tick().await;
                watch.report();
            }
            _ = check.tick() => stalled = watch.check(Instant::now()),
        }
        if let Some(stalled) = stalled {
            let positions: Vec<(i32, i64)> =
                watch.positions().iter().map(|(p, o)| (*p, *o)).collect();
            let replacement = reader(kafka, &config, &context.processor.group_id, "events")
                .and_then(|r| {
                    assign(&r, &kafka.events_topic, &positions, Offset::Offset).map(|()| r)
                });
            match replacement {
                Ok(new) => {
                    close_in_time(std::mem::replace(&mut event_reader, new), NAME).await;
                    watch.replaced(stalled);
                }
                Err(err) => {
                    warn!(%err, "breakers cannot create a new events reader; reading on with the stalled one")
                }
            }
        }
    }
    let counters = runtime.counters;
    // Let the writer record what is queued (it stops retrying on shutdown).
    drop(runtime);
    if tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .is_err()
    {
        warn!("breaker transition writer did not finish in time");
    }
    info!(messages = counters.messages, "breakers stopped");
    Ok(counters)
}

impl BreakerRuntime {
    /// Count `event`, read at `now`.
    async fn on_event(&mut self, event: &CallReport<'_>, now: chrono::DateTime<Utc>) {
        let Some((provider, model, outcome)) = observe::call_outcome(event, &self.config) else {
            self.counters.without_row += 1;
            return;
        };
        // An event older than the window (a late reporter, a replay) says
        // nothing about now.
        if event.occurred_at < now - self.config.window() {
            self.counters.skipped += 1;
            return;
        }
        // A copy of a call already counted (a retried report, a proxy's
        // resend) is the same call: counting it again would skew the rates.
        if !self.recent.first_arrival(ALL_PARTITIONS, event.event_id) {
            self.repeated.inc();
            return;
        }
        let transitions = self
            .breakers
            .observe(provider, model, &outcome, now, &self.config);
        self.apply(transitions).await;
    }

    async fn on_tick(&mut self) {
        let now = Utc::now();
        let transitions = self.breakers.tick(now, &self.config);
        self.apply(transitions).await;
        let leading = self.lease.held();
        if leading && !self.leading {
            self.take_over(now).await;
        }
        self.leading = leading;
        if !leading {
            return;
        }
        // Renew open and half-open decisions before they lapse.
        let due: Vec<(String, String)> = self
            .breakers
            .iter()
            .filter(|b| b.state() != CircuitState::Closed)
            .filter(|b| {
                let subject = circuit_subject(&b.provider, &b.model);
                self.published
                    .get(&subject)
                    .is_none_or(|p| p.at.elapsed() >= self.config.republish_every())
            })
            .map(|b| (b.provider.clone(), b.model.clone()))
            .collect();
        for (provider, model) in due {
            self.republish(&provider, &model, now).await;
        }
    }

    /// This replica just got the lease: publish every breaker whose state
    /// differs from the topic's (judged here while another replica
    /// published, or never published by a replica that died) as a
    /// transition from the topic's state, and renew the open and half-open
    /// ones.
    async fn take_over(&mut self, now: chrono::DateTime<Utc>) {
        let mut changed = Vec::new();
        let mut renew = Vec::new();
        for b in self.breakers.iter() {
            let subject = circuit_subject(&b.provider, &b.model);
            let (state, generation) = self
                .on_topic
                .get(&subject)
                .copied()
                .unwrap_or((CircuitState::Closed, 0));
            if (state, generation) != (b.state(), b.generation()) {
                changed.push(b.as_transition(
                    state,
                    format!(
                        "taken over from another replica, which published {} (generation {generation}); judged here: {}",
                        state.as_str(),
                        b.state().as_str()
                    ),
                ));
            } else if b.state() != CircuitState::Closed {
                renew.push((b.provider.clone(), b.model.clone()));
            }
        }
        info!(
            changed = changed.len(),
            renewed = renew.len(),
            "breakers taken over"
        );
        self.leading = true;
        self.apply(changed).await;
        for (provider, model) in renew {
            self.republish(&provider, &model, now).await;
        }
    }

    /// Publish each transition's decision, then hand it to the writer for
    /// its event and row. A replica without the lease only logs it (with
    /// `publishes = false`).
    async fn apply(&mut self, transitions: Vec<Transition>) {
        for t in transitions {
            info!(
                provider = %t.provider,
                model = %t.model,
                from = t.from.as_str(),
                to = t.to.as_str(),
                generation = t.generation,
                calls = t.calls,
                failures = t.failures,
                slow = t.slow,
                reason = %t.reason,
                publishes = self.leading,
                "breaker transition"
            );
            if !self.leading {
                continue;
            }
            let now = t.at;
            self.publish(&t.provider, &t.model, &t.reason, now).await;
            if self.writes.send(t).await.is_err() {
                warn!("breaker transition writer stopped; transition not recorded");
            }
            self.counters.rows_inserted += 1;
        }
    }

    async fn republish(&mut self, provider: &str, model: &str, now: chrono::DateTime<Utc>) {
        let subject = circuit_subject(provider, model);
        let reason = self
            .published
            .get(&subject)
            .map(|p| p.reason.clone())
            .unwrap_or_default();
        self.publish(provider, model, &reason, now).await;
    }

    async fn publish(
        &mut self,
        provider: &str,
        model: &str,
        reason: &str,
        now: chrono::DateTime<Utc>,
    ) {
        let Some(breaker) = self.breakers.get(provider, model) else {
            return;
        };
        let reroute_to = self.reroute_to(breaker);
        let record = decision::decision(breaker, &self.config, now, reason, reroute_to);
        let payload = match serde_json::to_string(&record) {
            Ok(payload) => payload,
            Err(err) => {
                warn!(%err, subject = %record.subject, "breaker decision not encodable");
                return;
            }
        };
        let sent = self
            .decisions
            .send(
                FutureRecord::to(&self.decisions_topic)
                    .key(&record.subject)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await;
        match sent {
            Ok(_) => {
                debug!(subject = %record.subject, action = ?record.action, "breaker decision published");
                if let Some(state) = &record.breaker {
                    self.on_topic
                        .insert(record.subject.clone(), (state.state, state.generation));
                }
                self.published.insert(
                    record.subject.clone(),
                    Published {
                        reason: reason.to_string(),
                        at: Instant::now(),
                    },
                );
                self.counters.inserts += 1;
            }
            // Not retried here: the next tick re-publishes an open or
            // half-open breaker whose record is missing.
            Err((err, _)) => {
                warn!(%err, subject = %record.subject, "breaker decision not published")
            }
        }
    }

    /// The learned fallback for an open model breaker: from the recovery
    /// plan of the failure signature seen most in the window that opened it.
    fn reroute_to(&self, breaker: &Breaker) -> Option<String> {
        if breaker.state() != CircuitState::Open || breaker.model.is_empty() {
            return None;
        }
        let signature = breaker.evidence().top_signature()?;
        let plan = self.plans.get(&recovery_subject(
            &breaker.provider,
            &breaker.model,
            signature,
        ))?;
        learned_fallback(plan, &breaker.provider, &breaker.model, |p, m| {
            self.breakers.keeps_out(p, m)
        })
    }

    /// Read the decisions topic up to `ends` (or until shutdown); returns
    /// how many records were read.
    async fn load_decisions(
        &mut self,
        reader: &StreamConsumer,
        ends: &[(i32, i64)],
        shutdown: &CancellationToken,
    ) -> usize {
        let mut behind: HashMap<i32, i64> =
            ends.iter().copied().filter(|(_, high)| *high > 0).collect();
        let mut records = 0;
        while !behind.is_empty() {
            let message = tokio::select! {
                () = shutdown.cancelled() => return records,
                message = reader.recv() => message,
            };
            match message {
                Ok(message) => {
                    records += 1;
                    self.on_decision_record(message.key(), message.payload(), true);
                    if behind
                        .get(&message.partition())
                        .is_some_and(|high| message.offset() + 1 >= *high)
                    {
                        behind.remove(&message.partition());
                    }
                }
                Err(err) => {
                    warn!(%err, "decisions topic read failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        records
    }

    /// Keep a recovery plan; take on a published breaker state at start
    /// and whenever another replica holds the lease.
    fn on_decision_record(&mut self, key: Option<&[u8]>, payload: Option<&[u8]>, starting: bool) {
        let Some(subject) = key.map(|k| String::from_utf8_lossy(k).into_owned()) else {
            return;
        };
        let decision = payload.and_then(|p| serde_json::from_slice::<Decision>(p).ok());
        if subject.starts_with("recovery/") {
            match decision.and_then(|d| d.recovery) {
                Some(plan) => {
                    self.plans.insert(subject, plan);
                }
                None => {
                    self.plans.remove(&subject);
                }
            }
            return;
        }
        if !subject.starts_with("circuit/") {
            return;
        }
        let now = Utc::now();
        let Some(state) = decision.as_ref().and_then(|d| published_state(d, now)) else {
            return;
        };
        self.on_topic
            .insert(subject.clone(), (state.state, state.generation));
        // The holder's own records come back to it; it already is in that
        // state (or past it).
        if starting || !self.leading {
            if let Some(d) = &decision {
                self.published.insert(
                    subject,
                    Published {
                        reason: d.reason.clone(),
                        at: Instant::now(),
                    },
                );
            }
            self.breakers.adopt(state, now);
        }
    }
}

/// A consumer that is assigned partitions (never subscribes, never
/// commits): it reads with a short fetch wait so an event reaches the
/// breaker within tens of milliseconds of being produced.
fn reader(
    kafka: &KafkaConfig,
    config: &BreakersConfig,
    group_id: &str,
    what: &str,
) -> std::result::Result<StreamConsumer, rdkafka::error::KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        // Required by the client; no offsets are committed under it.
        .set("group.id", reader_group(group_id, what))
        .set("client.id", format!("tollgate-breakers-{what}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", config.fetch_wait_max_ms.to_string())
        .set("fetch.min.bytes", "1")
        // It reads live traffic from the end and keeps up or is already
        // late: a small prefetch buffer (librdkafka's default is 64 MiB
        // per consumer) is what keeps it from adding tens of MiB to the
        // processor's memory (`docs/performance.md`).
        .set("queued.max.messages.kbytes", "4096")
        .set("enable.partition.eof", "false")
        .create()
}

/// The group id a reader of `what` names (no offsets are committed under
/// it).
fn reader_group(group_id: &str, what: &str) -> String {
    format!("{group_id}-breakers-{what}")
}

/// Every partition of `topic` with its high watermark.
async fn partition_ends(
    consumer: &StreamConsumer,
    topic: &str,
) -> std::result::Result<Vec<(i32, i64)>, rdkafka::error::KafkaError> {
    // A broker that has just restarted answers for a topic created
    // meanwhile with `NotLeaderForPartition` or `LeaderNotAvailable` for a
    // moment (`migrate` waits for the same, docs/deployment.md): the
    // processor asks again for a while rather than stop (a trial's
    // processors all exited within 1 s of starting after a broker
    // restart).
    let started = Instant::now();
    loop {
        match read_partition_ends(consumer, topic) {
            Ok(ends) => return Ok(ends),
            Err(err) if started.elapsed() < PARTITIONS_SETTLE => {
                warn!(topic, %err, "the topic's partitions are not readable yet; asking again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// How long [`partition_ends`] asks again while a topic's leaders settle.
const PARTITIONS_SETTLE: Duration = Duration::from_secs(30);

/// Every partition of `topic` and its end, once.
fn read_partition_ends(
    consumer: &StreamConsumer,
    topic: &str,
) -> std::result::Result<Vec<(i32, i64)>, rdkafka::error::KafkaError> {
    // librdkafka's metadata and watermark calls block their thread.
    tokio::task::block_in_place(|| {
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let mut ends = Vec::new();
        for t in metadata.topics().iter().filter(|t| t.name() == topic) {
            if let Some(err) = t.error() {
                return Err(rdkafka::error::KafkaError::MetadataFetch(err.into()));
            }
            for p in t.partitions() {
                let (_, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
                ends.push((p.id(), high));
            }
        }
        Ok(ends)
    })
}

/// Move every assigned partition of `topic` forward to its first message
/// stamped at or after `target_ms` (its end when there is none; never
/// back); returns how many messages were passed over.
fn skip_to(
    consumer: &StreamConsumer,
    topic: &str,
    target_ms: i64,
) -> std::result::Result<u64, rdkafka::error::KafkaError> {
    // librdkafka's offset and watermark calls block their thread.
    tokio::task::block_in_place(|| {
        let timeout = Duration::from_secs(10);
        let positions = consumer.position()?;
        let mut times = TopicPartitionList::new();
        for p in positions.elements_for_topic(topic) {
            times.add_partition_offset(topic, p.partition(), Offset::Offset(target_ms))?;
        }
        let found = consumer.offsets_for_times(times, timeout)?;
        let mut list = TopicPartitionList::new();
        let mut passed = 0u64;
        for p in found.elements_for_topic(topic) {
            let to = match p.offset() {
                Offset::Offset(offset) => offset,
                // Nothing stamped that late: the partition's end.
                _ => consumer.fetch_watermarks(topic, p.partition(), timeout)?.1,
            };
            let from = positions
                .find_partition(topic, p.partition())
                .and_then(|p| p.offset().to_raw())
                .filter(|offset| *offset >= 0);
            let next = match from {
                Some(from) if from >= to => from,
                Some(from) => {
                    passed += u64::try_from(to - from).unwrap_or(0);
                    to
                }
                None => to,
            };
            list.add_partition_offset(topic, p.partition(), Offset::Offset(next))?;
        }
        consumer.assign(&list)?;
        Ok(passed)
    })
}

/// A topic without partitions was never created: say what to do.
fn require_partitions(kafka: &KafkaConfig, topic: &str, ends: &[(i32, i64)]) -> Result<()> {
    if ends.is_empty() {
        return Err(Error::Config(format!(
            "kafka topic {topic} at {} has no partitions; run `tollgate migrate` first",
            kafka.brokers
        )));
    }
    Ok(())
}

fn assign(
    consumer: &StreamConsumer,
    topic: &str,
    ends: &[(i32, i64)],
    offset: impl Fn(i64) -> Offset,
) -> std::result::Result<(), rdkafka::error::KafkaError> {
    let mut list = TopicPartitionList::new();
    for (partition, high) in ends {
        list.add_partition_offset(topic, *partition, offset(*high))?;
    }
    consumer.assign(&list)
}

/// The writer of transitions' events and rows, off the decision path: the
/// event first (its id goes into the row), then the row, each retried until
/// it is written or the processor stops.
fn spawn_writer(
    client: Client,
    insert_timeout: Option<Duration>,
    events: EventProducer,
    shutdown: CancellationToken,
) -> (mpsc::Sender<Transition>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Transition>(1024);
    let task = tokio::spawn(async move {
        while let Some(t) = rx.recv().await {
            let event = transition_event(&t);
            let mut backoff = Duration::from_millis(100);
            loop {
                match events.send_batch(std::slice::from_ref(&event)).await.pop() {
                    Some(Ok(_)) | None => break,
                    Some(Err(err)) if err.retryable && !shutdown.is_cancelled() => {
                        warn!(%err, "breaker transition event not produced; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                    Some(Err(err)) => {
                        warn!(%err, "breaker transition event lost");
                        break;
                    }
                }
            }
            let row = TransitionRow::new(&t, &event.event_id.to_string());
            let mut backoff = Duration::from_millis(100);
            loop {
                match insert_rows(
                    &client,
                    "breaker_transitions",
                    std::slice::from_ref(&row),
                    insert_timeout,
                )
                .await
                {
                    Ok(()) => break,
                    Err(err) if !shutdown.is_cancelled() => {
                        warn!(%err, "breaker transition row not inserted; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                    Err(err) => {
                        warn!(%err, "breaker transition row lost at shutdown");
                        break;
                    }
                }
            }
        }
    });
    (tx, task)
}
