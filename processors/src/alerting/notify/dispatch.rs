//! Per-receiver delivery workers: each receiver has its own bounded queue
//! and its own task, so a receiver that is down or slow only ever delays
//! its own notifications. A worker delivers in arrival order (a resolve
//! never overtakes its firing), retries with exponential backoff and jitter
//! up to `max_attempts`, and then writes a dead letter. A delivery counts as
//! delivered only after a 2xx; the evaluator learns each outcome from the
//! channel [`Dispatcher::new`] returns and marks notifications delivered
//! (or re-sends after a restart, with the same ids).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tollgate_contract::notification::ReceiverTarget;
use tollgate_control::alert_deliveries::{record_dead_letter, DeadLetter, PgPool};
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use super::destination::{Clients, PrivateHosts};
use super::send::{attempt, prepare, AttemptError};
use super::Delivery;

/// Delivery settings (`[alerting.delivery]` once the evaluator exposes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Per HTTP request, connect to last byte.
    pub attempt_timeout: Duration,
    /// Attempts per delivery, the first included; at least 1.
    pub max_attempts: usize,
    /// First backoff; it doubles each retry up to `max_backoff`, and
    /// jitter adds up to as much again.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Deliveries waiting per receiver before new ones are dead-lettered.
    pub queue_capacity: usize,
    /// Outcomes waiting for the evaluator before workers wait for it.
    pub outcome_capacity: usize,
    /// Hosts receivers may reach on private addresses
    /// (`alerting.receiver_private_hosts`; `"*"`: every host). Every
    /// other receiver reaches public addresses only ([`super::destination`]).
    pub private_hosts: Vec<String>,
}

impl Default for DeliveryConfig {
    /// 3 to 6 minutes of retrying before a dead letter (backoff 0.5 + 1 +
    /// 2 + ... + 32 + 60 + 60 s, each up to doubled by jitter): long enough
    /// to ride out a receiver's restart, short enough that the Alerts page
    /// shows a broken receiver soon.
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(10),
            max_attempts: 10,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            queue_capacity: 1024,
            outcome_capacity: 4096,
            private_hosts: Vec::new(),
        }
    }
}

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryOutcome {
    pub receiver_id: Uuid,
    pub delivery_id: Uuid,
    pub notification_ids: Vec<Uuid>,
    pub result: DeliveryResult,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryResult {
    /// The receiver answered 2xx.
    Delivered { attempts: u32 },
    /// Given up; a dead letter was recorded (if a pool was given).
    DeadLettered { attempts: u32, error: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnqueueError {
    /// The receiver's queue is full (it has been failing or slow for a
    /// while); the delivery was dead-lettered instead of waiting.
    #[error("receiver {receiver_id}: delivery queue full ({capacity}); dead-lettered")]
    QueueFull { receiver_id: Uuid, capacity: usize },
    #[error("delivery dispatcher is shut down")]
    ShutDown,
}

struct Job {
    target: ReceiverTarget,
    delivery: Delivery,
}

/// The delivery side the evaluator calls: `enqueue` returns at once.
pub struct Dispatcher {
    config: DeliveryConfig,
    clients: Clients,
    dead_letters: Option<PgPool>,
    outcomes: mpsc::Sender<DeliveryOutcome>,
    queues: Mutex<HashMap<Uuid, mpsc::Sender<Job>>>,
    workers: Mutex<JoinSet<()>>,
}

impl Dispatcher {
    /// `dead_letters`: where to record deliveries given up on (`None` only
    /// logs them). Read the returned channel, or drop it if outcomes do not
    /// matter; a full channel makes workers wait.
    pub fn new(
        config: DeliveryConfig,
        dead_letters: Option<PgPool>,
    ) -> Result<(Self, mpsc::Receiver<DeliveryOutcome>), reqwest::Error> {
        let clients = Clients::new(
            config.attempt_timeout,
            PrivateHosts::new(&config.private_hosts),
        )?;
        let (outcomes, receiver) = mpsc::channel(config.outcome_capacity.max(1));
        Ok((
            Self {
                config,
                clients,
                dead_letters,
                outcomes,
                queues: Mutex::new(HashMap::new()),
                workers: Mutex::new(JoinSet::new()),
            },
            receiver,
        ))
    }

    /// Queue a delivery for a receiver without waiting for it to be sent.
    /// A full queue dead-letters the delivery (and says so) rather than
    /// make the evaluator, and with it every other receiver, wait.
    pub async fn enqueue(
        &self,
        target: &ReceiverTarget,
        delivery: Delivery,
    ) -> Result<(), EnqueueError> {
        let sender = self.queue_for(target.id)?;
        let job = Job {
            target: target.clone(),
            delivery,
        };
        match sender.try_send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(job)) => {
                let capacity = self.config.queue_capacity;
                let error = format!("delivery queue full ({capacity} waiting)");
                give_up(
                    self.dead_letters.as_ref(),
                    &self.outcomes,
                    &job.target,
                    &job.delivery,
                    0,
                    error,
                )
                .await;
                Err(EnqueueError::QueueFull {
                    receiver_id: target.id,
                    capacity,
                })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(EnqueueError::ShutDown),
        }
    }

    fn queue_for(&self, receiver_id: Uuid) -> Result<mpsc::Sender<Job>, EnqueueError> {
        let mut queues = self.queues.lock().map_err(|_| EnqueueError::ShutDown)?;
        if let Some(sender) = queues.get(&receiver_id) {
            if !sender.is_closed() {
                return Ok(sender.clone());
            }
        }
        let (sender, receiver) = mpsc::channel(self.config.queue_capacity.max(1));
        let worker = Worker {
            config: self.config.clone(),
            clients: self.clients.clone(),
            dead_letters: self.dead_letters.clone(),
            outcomes: self.outcomes.clone(),
        };
        self.workers
            .lock()
            .map_err(|_| EnqueueError::ShutDown)?
            .spawn(worker.run(receiver_id, receiver));
        queues.insert(receiver_id, sender.clone());
        Ok(sender)
    }

    /// Stop taking deliveries and wait until every queued one is delivered
    /// or dead-lettered.
    pub async fn shutdown(self) {
        if let Ok(mut queues) = self.queues.lock() {
            queues.clear();
        }
        let workers = self.workers.lock().map(|mut w| std::mem::take(&mut *w));
        if let Ok(mut workers) = workers {
            while workers.join_next().await.is_some() {}
        }
    }
}

struct Worker {
    config: DeliveryConfig,
    clients: Clients,
    dead_letters: Option<PgPool>,
    outcomes: mpsc::Sender<DeliveryOutcome>,
}

impl Worker {
    async fn run(self, receiver_id: Uuid, mut jobs: mpsc::Receiver<Job>) {
        debug!(%receiver_id, "delivery worker started");
        while let Some(job) = jobs.recv().await {
            self.deliver(job).await;
        }
        debug!(%receiver_id, "delivery worker stopped");
    }

    async fn deliver(&self, job: Job) {
        let Job { target, delivery } = job;
        match self.try_until_done(&target, &delivery).await {
            Ok(attempts) => {
                info!(receiver_id = %target.id, kind = target.kind.as_str(), delivery_id = %delivery.id,
                      attempts, notifications = delivery.notifications.len(), "notification delivered");
                let _ = self
                    .outcomes
                    .send(DeliveryOutcome {
                        receiver_id: target.id,
                        delivery_id: delivery.id,
                        notification_ids: delivery.notification_ids(),
                        result: DeliveryResult::Delivered { attempts },
                    })
                    .await;
            }
            Err((attempts, error)) => {
                give_up(
                    self.dead_letters.as_ref(),
                    &self.outcomes,
                    &target,
                    &delivery,
                    attempts,
                    error,
                )
                .await;
            }
        }
    }

    /// Attempts until a 2xx (`Ok(attempts)`), a failure not worth retrying,
    /// or the last attempt (`Err((attempts, last error))`).
    async fn try_until_done(
        &self,
        target: &ReceiverTarget,
        delivery: &Delivery,
    ) -> Result<u32, (u32, String)> {
        let request = prepare(target, delivery).map_err(|err| (0, err.message))?;
        let client = self
            .clients
            .for_url(&request.url)
            .map_err(|why| (0, format!("url: {why}")))?;
        let attempts = AtomicU32::new(0);
        let max_backoff = self.config.max_backoff;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.config.min_backoff)
            .with_max_delay(max_backoff)
            .with_max_times(self.config.max_attempts.max(1) - 1)
            .with_jitter();
        let result = (|| async {
            attempts.fetch_add(1, Ordering::Relaxed);
            attempt(
                client,
                target,
                delivery,
                &request,
                self.config.attempt_timeout,
            )
            .await
        })
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|err: &AttemptError| err.retryable)
        // A receiver that says when to come back is believed, within the
        // backoff's ceiling.
        .adjust(|err: &AttemptError, delay| {
            delay.map(|d| err.retry_after.map_or(d, |ra| ra.clamp(d, max_backoff.max(d))))
        })
        .notify(|err: &AttemptError, delay| {
            warn!(receiver_id = %target.id, kind = target.kind.as_str(), delivery_id = %delivery.id,
                  error = %err.message, retry_in_ms = delay.as_millis() as u64, "notification not delivered, retrying");
        })
        .await;
        let attempts = attempts.load(Ordering::Relaxed);
        result
            .map(|()| attempts)
            .map_err(|err| (attempts, err.message))
    }
}

/// Record a dead letter and report the outcome. A dead letter that cannot
/// be written is logged with everything it would have held.
async fn give_up(
    pool: Option<&PgPool>,
    outcomes: &mpsc::Sender<DeliveryOutcome>,
    target: &ReceiverTarget,
    delivery: &Delivery,
    attempts: u32,
    error: String,
) {
    let payload = serde_json::to_string(&delivery.notifications).unwrap_or_default();
    let letter = DeadLetter {
        receiver_id: target.id,
        receiver_kind: target.kind.as_str().to_string(),
        delivery_id: delivery.id,
        notification_ids: delivery.notification_ids(),
        org_id: delivery.org_id().to_string(),
        payload,
        attempts: i32::try_from(attempts).unwrap_or(i32::MAX),
        last_error: error.clone(),
        failed_at: Utc::now(),
    };
    error!(receiver_id = %target.id, kind = target.kind.as_str(), delivery_id = %delivery.id,
           attempts, %error, "notification undeliverable, dead-lettered");
    if let Some(pool) = pool {
        if let Err(err) = record_dead_letter(pool, &letter).await {
            error!(%err, receiver_id = %target.id, delivery_id = %delivery.id,
                   payload = %letter.payload, "could not record the dead letter");
        }
    }
    let _ = outcomes
        .send(DeliveryOutcome {
            receiver_id: target.id,
            delivery_id: delivery.id,
            notification_ids: letter.notification_ids,
            result: DeliveryResult::DeadLettered { attempts, error },
        })
        .await;
}
