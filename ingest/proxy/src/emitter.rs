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

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::budget::BudgetLedger;
use super::metrics::ProxyMetrics;
use super::spool::Spool;
use tollgate_contract::Event;
use tollgate_control::kafka::{Delivered, EventProducer, ProduceError};

const BATCH: usize = 512;
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The request path's handle on the queue.
#[derive(Clone)]
pub struct EventEmitter {
    tx: mpsc::Sender<Event>,
}

impl EventEmitter {
    /// Queue `event`; waits while the queue is full (callers are detached
    /// tasks, never the client's response).
    pub async fn emit(&self, event: Event) {
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

/// Start the emitter task. The task ends (after flushing or spooling
/// everything) once every [`EventEmitter`] clone is dropped.
pub fn start(
    producer: EventProducer,
    spool: Spool,
    capacity: usize,
    metrics: Arc<ProxyMetrics>,
    budgets: Arc<BudgetLedger>,
) -> (EventEmitter, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let task = tokio::spawn(run(producer, spool, rx, metrics, budgets));
    (EventEmitter { tx }, task)
}

async fn run(
    producer: EventProducer,
    mut spool: Spool,
    mut rx: mpsc::Receiver<Event>,
    metrics: Arc<ProxyMetrics>,
    budgets: Arc<BudgetLedger>,
) {
    let m = metrics.as_ref();
    ProxyMetrics::set(&m.spool_pending_bytes, spool.pending_bytes());
    let mut batch = Vec::with_capacity(BATCH);
    if spool.has_pending() {
        tracing::warn!(dir = %spool.dir().display(), bytes = spool.pending_bytes(), "event spool has events from an earlier run; replaying them first");
    }
    loop {
        if spool.has_pending() {
            // Spooling: new events join the spool's tail; replay when Kafka answers.
            let closed = drain_into_spool(&mut rx, &mut spool, m).await;
            if replay(&producer, &mut spool, m, &budgets).await {
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
                        append(&mut spool, &[event], m);
                    }
                }
            }
            continue;
        }
        batch.clear();
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            return; // closed and empty
        }
        let results = producer.send_batch(&batch).await;
        place(&budgets, &batch, &results);
        let acknowledged = results.iter().filter(|r| r.is_ok()).count() as u64;
        ProxyMetrics::add(&m.events_produced, acknowledged);
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
            append(&mut spool, &failed, m);
        } else if rx.len() * 4 >= rx.max_capacity() * 3 {
            // Kafka acknowledges, but slower than calls arrive: let the disk
            // take the backlog rather than make callers wait on the queue.
            tracing::warn!(queued = rx.len(), dir = %spool.dir().display(), "event queue 3/4 full; spooling the backlog to disk while kafka catches up");
            drain_into_spool(&mut rx, &mut spool, m).await;
        }
    }
}

/// Tell the budget reservations where Kafka put each acknowledged event, so
/// its charge can be dropped once the published spend includes it.
fn place(budgets: &BudgetLedger, events: &[Event], results: &[Result<Delivered, ProduceError>]) {
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
) -> bool {
    let mut events = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(event) => events.push(event),
            Err(mpsc::error::TryRecvError::Empty) => {
                append(spool, &events, m);
                return false;
            }
            Err(mpsc::error::TryRecvError::Disconnected) => {
                append(spool, &events, m);
                return true;
            }
        }
    }
}

fn append(spool: &mut Spool, events: &[Event], m: &ProxyMetrics) {
    let appended = spool.append(events);
    ProxyMetrics::set(&m.spool_pending_bytes, spool.pending_bytes());
    if appended.is_ok() {
        ProxyMetrics::add(&m.events_spooled, events.len() as u64);
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

/// Replay one batch from the spool if Kafka answers. `true` if it advanced.
async fn replay(
    producer: &EventProducer,
    spool: &mut Spool,
    m: &ProxyMetrics,
    budgets: &BudgetLedger,
) -> bool {
    if !matches!(
        producer.check_connected(Duration::from_secs(1)).await,
        Ok(true)
    ) {
        return false;
    }
    let (read, next) = match spool.read_batch(BATCH) {
        Ok(read) => read,
        Err(err) => {
            tracing::error!(%err, "cannot read the event spool");
            return false;
        }
    };
    let events: Vec<Event> = read.iter().map(|(e, _)| e.clone()).collect();
    let results = producer.send_batch(&events).await;
    place(budgets, &events, &results);
    // Advance only over the acknowledged prefix; the rest is sent again
    // (a duplicate at worst, never a gap or a reordering).
    let advance_to = match results.iter().position(Result::is_err) {
        None => next,
        Some(0) => return false,
        Some(failed) => read[failed - 1].1,
    };
    let acknowledged = results.iter().take_while(|r| r.is_ok()).count() as u64;
    let advanced = spool.advance(advance_to);
    ProxyMetrics::add(&m.events_replayed, acknowledged);
    ProxyMetrics::set(&m.spool_pending_bytes, spool.pending_bytes());
    if let Err(err) = advanced {
        tracing::error!(%err, "cannot record the spool position");
        return false;
    }
    if advance_to != next {
        return false;
    }
    tracing::info!(
        replayed = events.len(),
        left_bytes = spool.pending_bytes(),
        "replayed spooled events to kafka"
    );
    true
}
