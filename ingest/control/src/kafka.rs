//! The Kafka producer that puts validated events on the events topic. It owns
//! the delivery settings (idempotent, `acks=all`) and reports, per event, only
//! what the broker acknowledged: callers never tell a client "accepted" before
//! Kafka has the event.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientContext;

use crate::config::KafkaConfig;
use crate::error::ControlError;
use tollgate_contract::Event;

/// Where Kafka stored one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// Why one event was not acknowledged by Kafka.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ProduceError {
    pub reason: String,
    /// Whether producing the same event again may succeed (broker down,
    /// timeout) or cannot (message too large, serialization).
    pub retryable: bool,
}

impl ProduceError {
    fn from_kafka(err: &KafkaError) -> Self {
        let code = err.rdkafka_error_code();
        let retryable = !matches!(
            code,
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::InvalidMessageSize
                    | RDKafkaErrorCode::InvalidMessage
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
            )
        );
        let reason = match code {
            Some(RDKafkaErrorCode::MessageTimedOut) => {
                "kafka did not acknowledge the event in time (kafka.message_timeout_ms)".to_string()
            }
            Some(RDKafkaErrorCode::UnknownTopicOrPartition)
            | Some(RDKafkaErrorCode::UnknownTopic) => {
                "the events topic does not exist on the broker (run `tollgate migrate`)".to_string()
            }
            _ => format!("kafka did not accept the event: {err}"),
        };
        Self { reason, retryable }
    }
}

/// How often, at most, a producer that lost every broker asks the cluster
/// for metadata to learn that it is back.
pub const REACHABILITY_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// What the producer knows about the cluster: librdkafka reports "all
/// brokers down" through its error callback the moment the last connection
/// fails (a broker killed closes its sockets, so that is at once); the
/// first metadata answer or acknowledged event afterwards clears it.
#[derive(Default)]
pub struct BrokerWatch {
    state: Mutex<WatchState>,
}

#[derive(Default)]
struct WatchState {
    /// When every broker was found down, and librdkafka's words for it.
    down: Option<(Instant, String)>,
    last_probe: Option<Instant>,
}

impl BrokerWatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Since when, and why, no broker has been reachable; `None` while one is.
    pub fn down_since(&self) -> Option<(Instant, String)> {
        self.lock().down.clone()
    }

    fn mark_down(&self, reason: &str) {
        let mut state = self.lock();
        if state.down.is_none() {
            tracing::warn!(reason, "kafka: every broker is down");
            state.down = Some((Instant::now(), reason.to_string()));
        }
    }

    fn mark_up(&self) {
        let mut state = self.lock();
        if let Some((since, _)) = state.down.take() {
            tracing::info!(
                down_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                "kafka: a broker answers again"
            );
        }
    }

    /// Whether a probe is due (and, if so, records that one starts now).
    fn probe_due(&self) -> bool {
        let mut state = self.lock();
        let due = state
            .last_probe
            .is_none_or(|at| at.elapsed() >= REACHABILITY_PROBE_INTERVAL);
        if due {
            state.last_probe = Some(Instant::now());
        }
        due
    }
}

/// The producer's librdkafka context: logs as the default one does, and
/// keeps the [`BrokerWatch`] current.
#[derive(Clone, Default)]
pub struct WatchedContext {
    watch: Arc<BrokerWatch>,
}

impl ClientContext for WatchedContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        rdkafka::client::DefaultClientContext.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.watch.mark_down(reason);
        }
        // librdkafka's target, as its own log lines have: a one-shot
        // command's log filter leaves them out (`tollgate` main).
        tracing::error!(target: "librdkafka", %error, reason, "librdkafka error");
    }
}

/// A consumer (the audit anchor's reader) may keep the watch too.
impl rdkafka::consumer::ConsumerContext for WatchedContext {}

impl WatchedContext {
    /// The watch this context keeps current: a client made with it can
    /// tell "every broker is down" from a slow answer, and give up on an
    /// unreachable cluster at once rather than at its timeout.
    pub fn watch(&self) -> Arc<BrokerWatch> {
        self.watch.clone()
    }
}

/// The Kafka header that says where an event came from, when it was not
/// the proxy's own record of a call (`docs/architecture.md`).
pub const ORIGIN_HEADER: &str = "tollgate-origin";
/// [`ORIGIN_HEADER`] of the events the ingest API accepted from its
/// clients (`POST /v1/events`, OTLP): calls reported after the fact,
/// which the fleet breakers do not judge a provider by.
pub const ORIGIN_REPORTED: &str = "reported";

/// Idempotent producer of [`Event`]s onto `kafka.events_topic`.
#[derive(Clone)]
pub struct EventProducer {
    producer: FutureProducer<WatchedContext>,
    watch: Arc<BrokerWatch>,
    topic: String,
    brokers: String,
    message_timeout: Duration,
    /// [`ORIGIN_HEADER`]'s value on every message, if any.
    origin: Option<&'static str>,
}

/// The settings every producer of ours shares, written once: idempotent,
/// acknowledged by all in-sync replicas, and giving up after
/// `kafka.message_timeout_ms`. Callers add only their own tuning (batching,
/// compression), so the delivery guarantees cannot drift between them.
pub fn idempotent_producer_config(config: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut settings = ClientConfig::new();
    settings
        .set("bootstrap.servers", &config.brokers)
        .set("client.id", client_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", config.message_timeout_ms.to_string());
    settings
}

impl EventProducer {
    /// Create the producer. This does not contact the broker; call
    /// [`EventProducer::check_connected`] for that.
    pub fn new(config: &KafkaConfig) -> Result<Self, ControlError> {
        let context = WatchedContext::default();
        let watch = context.watch.clone();
        let producer: FutureProducer<WatchedContext> =
            idempotent_producer_config(config, "tollgate-ingest")
                .set("compression.type", "lz4")
                .set("linger.ms", "5")
                // Reconnect to a broker that went away at least every second
                // (librdkafka backs off to 10 s by default), so that events
                // follow Kafka back within about a second.
                .set("reconnect.backoff.max.ms", "1000")
                .create_with_context(context)
                .map_err(|err| ControlError::KafkaConfig {
                    brokers: config.brokers.clone(),
                    reason: err.to_string(),
                })?;
        Ok(Self {
            producer,
            watch,
            topic: config.events_topic.clone(),
            brokers: config.brokers.clone(),
            message_timeout: Duration::from_millis(config.message_timeout_ms),
            origin: None,
        })
    }

    /// Mark every message with [`ORIGIN_HEADER`] `origin`
    /// ([`ORIGIN_REPORTED`] for the ingest API's).
    pub fn with_origin(mut self, origin: &'static str) -> Self {
        self.origin = Some(origin);
        self
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// Fetch cluster metadata within `timeout`. `Ok(true)` when the broker
    /// answered and the events topic exists, `Ok(false)` when the broker
    /// answered but the topic is missing; an error names the broker address.
    pub async fn check_connected(&self, timeout: Duration) -> Result<bool, ControlError> {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        // librdkafka's metadata call blocks its thread.
        let metadata = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(None, timeout).map(|md| {
                md.topics()
                    .iter()
                    .any(|t| t.name() == topic && t.error().is_none())
            })
        })
        .await
        .map_err(|err| ControlError::Internal(format!("kafka metadata task failed: {err}")))?;
        if metadata.is_ok() {
            self.watch.mark_up();
        }
        metadata.map_err(|err| ControlError::KafkaUnreachable {
            brokers: self.brokers.clone(),
            reason: format!("no metadata within {} ms ({err})", timeout.as_millis()),
        })
    }

    /// `Err` at once while the producer knows that no broker is reachable
    /// (so that an edge can answer 503 instead of queueing events that
    /// would wait for `kafka.message_timeout_ms`); each call then starts,
    /// at most every [`REACHABILITY_PROBE_INTERVAL`], a metadata request in
    /// the background that ends the outage when a broker answers.
    pub fn ensure_reachable(&self) -> Result<(), ControlError> {
        let Some((since, reason)) = self.watch.down_since() else {
            return Ok(());
        };
        if self.watch.probe_due() {
            let producer = self.producer.clone();
            let watch = self.watch.clone();
            // librdkafka's metadata call blocks its thread.
            tokio::task::spawn_blocking(move || {
                if producer
                    .client()
                    .fetch_metadata(None, REACHABILITY_PROBE_INTERVAL)
                    .is_ok()
                {
                    watch.mark_up();
                }
            });
        }
        Err(ControlError::KafkaUnreachable {
            brokers: self.brokers.clone(),
            reason: format!(
                "no broker has answered for {} ms ({reason})",
                since.elapsed().as_millis()
            ),
        })
    }

    /// Produce every event concurrently (all are enqueued before any is
    /// awaited) and return, in input order, where each landed or why not.
    /// The message key is the event's partition key (its team), the value its
    /// JSON encoding.
    pub async fn send_batch(&self, events: &[Event]) -> Vec<Result<Delivered, ProduceError>> {
        join_all(events.iter().map(|event| self.send_one(event))).await
    }

    async fn send_one(&self, event: &Event) -> Result<Delivered, ProduceError> {
        let payload = serde_json::to_vec(event).map_err(|err| ProduceError {
            reason: format!("could not encode the event as JSON: {err}"),
            retryable: false,
        })?;
        let mut record = FutureRecord::to(&self.topic)
            .key(event.partition_key())
            .payload(&payload);
        if let Some(origin) = self.origin {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: ORIGIN_HEADER,
                value: Some(origin),
            }));
        }
        match self.producer.send(record, self.message_timeout).await {
            Ok(delivery) => {
                self.watch.mark_up();
                Ok(Delivered {
                    partition: delivery.partition,
                    offset: delivery.offset,
                })
            }
            Err((err, _message)) => {
                let err = ProduceError::from_kafka(&err);
                tracing::warn!(event_id = %event.event_id, topic = %self.topic, reason = %err, "produce failed");
                Err(err)
            }
        }
    }

    /// Wait up to `timeout` for messages still in flight (used at shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), ControlError> {
        self.producer
            .flush(timeout)
            .map_err(|err| ControlError::KafkaUnreachable {
                brokers: self.brokers.clone(),
                reason: format!("could not flush pending events: {err}"),
            })
    }
}
