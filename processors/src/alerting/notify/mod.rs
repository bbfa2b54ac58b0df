//! Alert delivery (docs/alerting-delivery.md): getting a notification to
//! the receivers a team already runs, at least once, with an id they can
//! deduplicate on.
//!
//! - [`wire`]: the bodies (signed webhook JSON, Slack, Alertmanager v2);
//! - [`signature`]: the webhook's HMAC-SHA256 signature and its verifier;
//! - [`dispatch`]: per-receiver queues and workers, retries with backoff,
//!   dead letters in PostgreSQL, outcomes back to the evaluator;
//! - [`grouping`]: the pure decision of what to send to a direct receiver
//!   when, with the stored silences (`tollgate_contract::alerts::SilenceSpec`)
//!   applied at flush time (Alertmanager does its own for its receivers).
//!
//! The evaluator builds [`Notification`]s, groups and silences them for
//! webhook and Slack receivers, wraps what is due in a [`Delivery`] and
//! hands it to [`Dispatcher::enqueue`].

pub mod destination;
pub mod dispatch;
pub mod grouping;
pub mod send;
pub mod signature;
pub mod wire;

pub use dispatch::{DeliveryConfig, DeliveryOutcome, DeliveryResult, Dispatcher, EnqueueError};
pub use grouping::{GroupFlush, Grouper, GroupingPolicy};

use tollgate_contract::notification::{batch_id, Notification};
use uuid::Uuid;

/// One request's worth of notifications for one receiver: a group's flush,
/// or a single transition. Its id is the `X-Tollgate-Notification-Id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: Uuid,
    pub notifications: Vec<Notification>,
}

impl Delivery {
    pub fn new(notifications: Vec<Notification>) -> Self {
        let ids: Vec<Uuid> = notifications.iter().map(|n| n.id).collect();
        Self {
            id: batch_id(&ids),
            notifications,
        }
    }

    pub fn single(notification: Notification) -> Self {
        Self::new(vec![notification])
    }

    pub fn notification_ids(&self) -> Vec<Uuid> {
        self.notifications.iter().map(|n| n.id).collect()
    }

    /// The org of its notifications (a group never mixes orgs).
    pub fn org_id(&self) -> &str {
        self.notifications.first().map_or("", |n| n.org_id.as_str())
    }
}

impl From<GroupFlush> for Delivery {
    fn from(flush: GroupFlush) -> Self {
        Self::new(flush.notifications)
    }
}
