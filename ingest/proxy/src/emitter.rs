//! Getting call events off the response path and onto Kafka without ever
//! dropping one. Request handlers hand events to a bounded in-memory queue
//! (and wait, off the client's path, when it is full). One task drains it:
//! while Kafka acknowledges, events go straight to the producer in batches;
//! when a batch is not acknowledged in `proxy.kafka_timeout_ms`, the
//! unacknowledged events and everything after them go to the on-disk spool
//! (fsynced), and the task probes Kafka once a second and replays the spool
//! in order before it sends anything new directly. When Kafka acknowledges
//! but more slowly than calls arrive (the queue is three quarters full), the
//! backlog goes to the spool the same way. Order is kept because there is one
//! writer and the spool is strictly FIFO.
//!
//! With the write-ahead log ([`crate::wal`]) every event is in the log
//! before it is queued, and the log learns which ones Kafka (or the spool)
//! took, so a crash loses nothing. Before anything else the task moves what
//! a crashed run left in the log into the spool (leaving out what Kafka
//! already has), so the replay below delivers it first. What Kafka may have
//! stored without acknowledging (a stalled broker, a run killed during a
//! replay) is looked for on the topic before it is replayed
//! ([`crate::replay`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::budget::BudgetLedger;
use super::metrics::ProxyMetrics;
use super::replay::{Replayer, BATCH};
use super::spool::Spool;
use super::wal::recover::Recovered;
use super::wal::{on_kafka, Wal};
use tollgate_contract::Event;
use tollgate_control::config::KafkaConfig;
use tollgate_control::kafka::{Delivered, EventProducer, ProduceError};

const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The request path's handle on the queue.
#[derive(Clone)]
pub struct EventEmitter {
    tx: mpsc::Sender<Event>,
    wal: Option<Wal>,
}

impl EventEmitter {
    /// The write-ahead log, when `proxy.durability` keeps one.
    pub fn wal(&self) -> Option<&Wal> {
        self.wal.as_ref()
    }

    /// Write `event` to the write-ahead log (if any), then queue it; waits
    /// while the queue is full (callers are detached tasks, never the
    /// client's response). An event the log refuses (disk full) is still
    /// queued: it reaches Kafka unless the proxy crashes first.
    pub async fn emit(&self, event: Event) {
        if let Some(wal) = &self.wal {
            if let Err(err) = wal.event(&event).await {
                tracing::debug!(%err, event_id = %event.event_id, "event not in the write-ahead log; queued from memory only");
            }
        }
        if let Err(mpsc::error::SendError(event)) = self.tx.send(event).await {
            // Only after shutdown began; the log keeps the whole event.
            match serde_json::to_string(&event) {
                Ok(json) => {
                    tracing::error!(event = %json, "event queue closed; event written to the log only")
                }
                Err(err) => {
                    tracing::error!(%err, "event queue closed and the event cannot be encoded")
                }
            }
        }
    }
}

/// What the emitter task delivers through.
pub struct Delivery {
    pub producer: EventProducer,
    pub spool: Spool,
    /// The write-ahead log (`None` with `proxy.durability = "none"`).
    pub wal: Option<Wal>,
    /// What earlier runs left in the log.
    pub recovered: Recovered,
    /// For the check of recovered events against the events topic.
    pub kafka: KafkaConfig,
}

/// Start the emitter task. The task ends (after flushing or spooling
/// everything) once every [`EventEmitter`] clone is dropped.
pub fn start(
    delivery: Delivery,
    capacity: usize,
    metrics: Arc<ProxyMetrics>,
    budgets: Arc<BudgetLedger>,
) -> (EventEmitter, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let wal = delivery.wal.clone();
    let task = tokio::spawn(run(delivery, rx, metrics, budgets));
    (EventEmitter { tx, wal }, task)
}

async fn run(
    delivery: Delivery,
    mut rx: mpsc::Receiver<Event>,
    metrics: Arc<ProxyMetrics>,
    budgets: Arc<BudgetLedger>,
) {
    let Delivery {
        producer,
        mut spool,
        wal,
        recovered,
        kafka,
    } = delivery;
    let m = metrics.as_ref();
    recover(recovered, &mut spool, &kafka, &rx, m).await;
    let wal = wal.as_ref();
    let mut replayer = Replayer::new(kafka, &spool);
    ProxyMetrics::set(&m.spool_pending_bytes, spool.pending_bytes());
    let mut batch = Vec::with_capacity(BATCH);
    if spool.has_pending() {
        tracing::warn!(dir = %spool.dir().display(), bytes = spool.pending_bytes(), "event spool has events from an earlier run; replaying them first");
    }
    loop {
        if spool.has_pending() {
            // Spooling: new events join the spool's tail; replay when Kafka answers.
            let closed = drain_into_spool(&mut rx, &mut spool, m, wal).await;
            if replayer.replay(&producer, &mut spool, m, &budgets).await {
                continue;
            }
            if closed {
                tracing::warn!(dir = %spool.dir().display(), bytes = spool.pending_bytes(), "shutting down with events in the spool; they are replayed at the next start");
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(PROBE_EVERY) => {}
                received = rx.recv() => {
                    if let Some(event) = received {
                        append(&mut spool, &[event], m, wal);
                    }
                }
            }
            continue;
        }
        batch.clear();
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            return; // closed and empty
        }
        let sent_at = chrono::Utc::now().timestamp_millis();
        let results = producer.send_batch(&batch).await;
        place(&budgets, &batch, &results);
        let acknowledged = results.iter().filter(|r| r.is_ok()).count() as u64;
        ProxyMetrics::add(&m.events_produced, acknowledged);
        if let Some(wal) = wal {
            wal.done(
                batch
                    .iter()
                    .zip(&results)
                    .filter(|(_, r)| r.is_ok())
                    .map(|(e, _)| e.event_id)
                    .collect(),
            );
        }
        let first_failed = results.iter().position(Result::is_err);
        if let Some(i) = first_failed {
            let failed: Vec<Event> = batch[i..]
                .iter()
                .zip(&results[i..])
                .filter(|(_, r)| r.is_err())
                .map(|(e, _)| e.clone())
                .collect();
            let reason = results[i]
                .as_ref()
                .err()
                .map(|e| e.reason.clone())
                .unwrap_or_default();
            tracing::warn!(%reason, spooled = failed.len(), dir = %spool.dir().display(), "kafka did not acknowledge events; spooling to disk until it does");
            append(&mut spool, &failed, m, wal);
            replayer.possibly_stored(&spool, sent_at);
        } else if rx.len() * 4 >= rx.max_capacity() * 3 {
            // Kafka acknowledges, but slower than calls arrive: let the disk
            // take the backlog rather than make callers wait on the queue.
            tracing::warn!(queued = rx.len(), dir = %spool.dir().display(), "event queue 3/4 full; spooling the backlog to disk while kafka catches up");
            drain_into_spool(&mut rx, &mut spool, m, wal).await;
        }
    }
}

/// Tell the budget reservations where Kafka put each acknowledged event, so
/// its charge can be dropped once the published spend includes it.
pub(crate) fn place(
    budgets: &BudgetLedger,
    events: &[Event],
    results: &[Result<Delivered, ProduceError>],
) {
    if !budgets.awaits_positions() {
        return;
    }
    for (event, result) in events.iter().zip(results) {
        if let Ok(delivered) = result {
            budgets.placed(event.event_id, delivered.partition, delivered.offset);
        }
    }
}

/// Move whatever is queued into the spool. `true` when the queue is closed.
async fn drain_into_spool(
    rx: &mut mpsc::Receiver<Event>,
    spool: &mut Spool,
    m: &ProxyMetrics,
    wal: Option<&Wal>,
) -> bool {
    let mut events = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(event) => events.push(event),
            Err(mpsc::error::TryRecvError::Empty) => {
                append(spool, &events, m, wal);
                return false;
            }
            Err(mpsc::error::TryRecvError::Disconnected) => {
                append(spool, &events, m, wal);
                return true;
            }
        }
    }
}

/// Append to the spool; once it holds them (fsynced), the write-ahead log
/// no longer needs to.
fn append(spool: &mut Spool, events: &[Event], m: &ProxyMetrics, wal: Option<&Wal>) {
    let appended = spool.append(events);
    ProxyMetrics::set(&m.spool_pending_bytes, spool.pending_bytes());
    if appended.is_ok() {
        ProxyMetrics::add(&m.events_spooled, events.len() as u64);
        if let Some(wal) = wal {
            wal.done(events.iter().map(|e| e.event_id).collect());
        }
    }
    if let Err(err) = appended {
        // The disk refused: the log is the last place the events can go.
        tracing::error!(%err, "cannot write the event spool");
        for event in events {
            if let Ok(json) = serde_json::to_string(event) {
                tracing::error!(event = %json, "unspooled event");
            }
        }
    }
}

/// Move what earlier runs left in the write-ahead log into the spool (the
/// replay then delivers it before anything new), leaving out events the
/// spool already holds and events the events topic already has. Until
/// Kafka answers that check, nothing else is delivered (new events wait in
/// the queue, and are in the log). Given up at shutdown: the segments stay
/// for the next start.
async fn recover(
    recovered: Recovered,
    spool: &mut Spool,
    kafka: &KafkaConfig,
    rx: &mpsc::Receiver<Event>,
    m: &ProxyMetrics,
) {
    if recovered.segments.is_empty() {
        return;
    }
    let in_spool = spool.pending_ids().unwrap_or_else(|err| {
        tracing::error!(%err, "cannot read the event spool's ids; recovered events it holds may be sent twice");
        HashSet::new()
    });
    let mut events: Vec<_> = recovered
        .events
        .iter()
        .filter(|r| !in_spool.contains(&r.event.event_id))
        .collect();
    // Every one is checked, interrupted attempts too: a start that failed
    // to delete the segments after an earlier recovery reads them again.
    let wanted: HashSet<uuid::Uuid> = events.iter().map(|r| r.event.event_id).collect();
    let mut on_kafka_already = 0;
    if let Some(oldest) = events.iter().map(|r| r.at_ms).min() {
        let since = oldest - on_kafka::CLOCK_MARGIN_MS;
        loop {
            let (kafka, wanted) = (kafka.clone(), wanted.clone());
            let found = tokio::task::spawn_blocking(move || {
                on_kafka::find(&kafka, &wanted, since, Duration::from_secs(60))
            })
            .await
            .unwrap_or_else(|err| Err(err.to_string()));
            match found {
                Ok(found) => {
                    on_kafka_already = found.len();
                    events.retain(|r| !found.contains_key(&r.event.event_id));
                    break;
                }
                Err(err) if rx.is_closed() => {
                    tracing::warn!(%err, "shutting down before the recovered events could be checked against kafka; they stay in the write-ahead log for the next start");
                    return;
                }
                Err(err) => {
                    tracing::warn!(%err, "cannot check the recovered events against kafka yet; trying again");
                    tokio::time::sleep(PROBE_EVERY).await;
                }
            }
        }
    }
    let interrupted = events.iter().filter(|r| r.interrupted).count() as u64;
    let events: Vec<Event> = events.into_iter().map(|r| r.event.clone()).collect();
    if let Err(err) = spool.append(&events) {
        tracing::error!(%err, "cannot move the recovered events into the spool; they stay in the write-ahead log for the next start");
        return;
    }
    ProxyMetrics::set(&m.spool_pending_bytes, spool.pending_bytes());
    ProxyMetrics::add(&m.wal_recovered_events, events.len() as u64);
    ProxyMetrics::add(&m.wal_interrupted_attempts, interrupted);
    tracing::warn!(
        recovered = events.len(),
        interrupted,
        on_kafka_already,
        in_spool_already = recovered.events.len() - wanted.len(),
        unreadable_lines = recovered.unreadable,
        "events recovered from the write-ahead log of an earlier run; replaying them first"
    );
    if let Err(err) = recovered.remove_segments() {
        tracing::error!(%err, "cannot delete the recovered write-ahead log segments; the next start reads them again (the spool's copies are not sent twice)");
    }
}
