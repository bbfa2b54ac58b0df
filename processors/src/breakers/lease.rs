//! Which replica publishes: a lease held through Kafka's group membership.
//!
//! Every replica that runs the breakers judges every event (each is
//! assigned every partition of the events topic), so all of them know the
//! state; only one should publish it, or each transition would be a row and
//! an event once per replica. Each replica joins the consumer group
//! `<processor.group_id>-breakers` on the decisions topic; the member the
//! group gives partition 0 holds the lease. Kafka already does what a lease
//! needs: one owner per partition, a new owner within the session timeout
//! when one dies, at once when one leaves cleanly. The messages this
//! membership reads are not used (the breaker reads the decisions topic with
//! its own consumer).
//!
//! A member that lost the lease without knowing it (paused past its session
//! timeout) can publish alongside the new holder for a moment: decisions
//! are records per subject, so the topic ends up with one of two nearly
//! equal states, and a transition row may be written twice. Nothing worse.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tollgate_control::config::KafkaConfig;
use tracing::{info, warn};

/// Whether this replica holds the lease, shared with the breaker loop.
#[derive(Debug, Clone, Default)]
pub struct Lease(Arc<AtomicBool>);

impl Lease {
    pub fn held(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, held: bool) {
        let was = self.0.swap(held, Ordering::AcqRel);
        if was != held {
            if held {
                info!("breaker lease acquired; this replica publishes");
            } else {
                info!("breaker lease released; another replica publishes");
            }
        }
    }
}

struct LeaseContext {
    topic: String,
    lease: Lease,
}

impl LeaseContext {
    fn holds(&self, tpl: &TopicPartitionList) -> bool {
        tpl.elements()
            .iter()
            .any(|e| e.topic() == self.topic && e.partition() == 0)
    }
}

impl ClientContext for LeaseContext {}

impl ConsumerContext for LeaseContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) if self.holds(tpl) => self.lease.set(false),
            Rebalance::Error(err) => {
                warn!(%err, "breaker lease rebalance error; not publishing");
                self.lease.set(false);
            }
            _ => {}
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.lease.set(self.holds(tpl));
        }
    }
}

/// Join the lease group and keep the membership alive until `shutdown`
/// (then leave it, so another replica takes over at once).
pub fn hold(
    kafka: &KafkaConfig,
    group_id: &str,
    session_timeout_ms: u64,
    shutdown: CancellationToken,
) -> Result<Lease, rdkafka::error::KafkaError> {
    let lease = Lease::default();
    let context = LeaseContext {
        topic: kafka.decisions_topic.clone(),
        lease: lease.clone(),
    };
    let consumer: StreamConsumer<LeaseContext> = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", group_id)
        .set("client.id", "tollgate-breakers-lease")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "latest")
        .set("session.timeout.ms", session_timeout_ms.to_string())
        .create_with_context(context)?;
    consumer.subscribe(&[&kafka.decisions_topic])?;
    let held = lease.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                // Polling serves the group protocol; the records are not used.
                message = consumer.recv() => {
                    if let Err(err) = message {
                        warn!(%err, "breaker lease consumer error");
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                }
            }
        }
        held.set(false);
        // Dropping the consumer leaves the group.
        drop(consumer);
    });
    Ok(lease)
}
