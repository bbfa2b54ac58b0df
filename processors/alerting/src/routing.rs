//! Getting each owed notification to its receiver: Alertmanager receivers
//! get every transition at once (Alertmanager groups and deduplicates
//! itself); webhook and Slack receivers get Alertmanager-style groups
//! (`group_by`, `group_wait`, `group_interval`, `repeat_interval` of the
//! receiver) through one [`Grouper`] per receiver, with the silences in
//! force at flush time applied.
//!
//! The groupers live in memory: after a restart (or a lease takeover) the
//! notifications still owed are taken in again from the outbox and wait
//! `group_wait` once more; the reminders of alerts delivered before the
//! restart resume with their next transition.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tollgate_contract::alerts::receiver::ReceiverKind as StoredKind;
use tollgate_contract::alerts::SilenceSpec;
use tollgate_contract::notification::{Notification, ReceiverKind, ReceiverTarget};
use tollgate_control::alerts::Receiver;
use tollgate_processors::alerting::notify::{
    Delivery, DeliveryOutcome, Dispatcher, Grouper, GroupingPolicy,
};
use tracing::warn;
use uuid::Uuid;

use crate::alert::{stored_id, stored_uuid};

/// The delivery target of a stored receiver (with its signing secret).
pub fn target(receiver: &Receiver, secret: Option<String>) -> ReceiverTarget {
    ReceiverTarget {
        id: stored_uuid(receiver.id),
        kind: match receiver.kind {
            StoredKind::Webhook => ReceiverKind::Webhook,
            StoredKind::Slack => ReceiverKind::Slack,
            StoredKind::Alertmanager => ReceiverKind::Alertmanager,
        },
        url: receiver.url.clone(),
        secret,
    }
}

/// A stored receiver's grouping settings.
pub fn policy(receiver: &Receiver) -> GroupingPolicy {
    GroupingPolicy {
        group_by: receiver.group_by.clone(),
        group_wait: Duration::from_secs(u64::from(receiver.group_wait_secs)),
        group_interval: Duration::from_secs(u64::from(receiver.group_interval_secs)),
        repeat_interval: Duration::from_secs(u64::from(receiver.repeat_interval_secs)),
    }
}

/// What this process has taken in and handed on.
pub struct Routing {
    dispatcher: Dispatcher,
    /// Per direct receiver: where it is and its groups.
    groupers: HashMap<i64, (ReceiverTarget, Grouper)>,
    /// (outbox row, receiver) -> notification id, taken in by this process:
    /// not taken again while owed.
    taken: HashMap<(i64, i64), Uuid>,
    /// (notification, receiver) handed to the dispatcher, outcome awaited.
    awaiting: HashSet<(Uuid, i64)>,
}

impl Routing {
    pub fn new(dispatcher: Dispatcher) -> Self {
        Self {
            dispatcher,
            groupers: HashMap::new(),
            taken: HashMap::new(),
            awaiting: HashSet::new(),
        }
    }

    /// Forget everything (the lease changed hands: the outbox is the truth).
    pub fn reset(&mut self) {
        self.groupers.clear();
        self.taken.clear();
        self.awaiting.clear();
    }

    pub fn is_taken(&self, row: i64, receiver: i64) -> bool {
        self.taken.contains_key(&(row, receiver))
    }

    /// Take in a notification owed to `receiver` from outbox row `row`.
    pub async fn take(
        &mut self,
        row: i64,
        note: &Notification,
        receiver: &Receiver,
        target: ReceiverTarget,
        now: DateTime<Utc>,
    ) {
        self.taken.insert((row, receiver.id), note.id);
        if target.kind == ReceiverKind::Alertmanager {
            self.send(&target, vec![note.clone()]).await;
            return;
        }
        let policy = policy(receiver);
        let entry = self
            .groupers
            .entry(receiver.id)
            .or_insert_with(|| (target.clone(), Grouper::new(policy.clone())));
        if entry.1.policy() != &policy {
            // The receiver was edited: its groups start over.
            *entry = (target.clone(), Grouper::new(policy));
        }
        entry.0 = target;
        entry.1.observe(note.clone(), now);
    }

    /// Re-send a firing alert to an Alertmanager receiver, which resolves
    /// alerts it has not heard of for its `resolve_timeout`.
    pub async fn remind(&mut self, target: &ReceiverTarget, note: Notification) {
        self.send(target, vec![note]).await;
    }

    async fn send(&mut self, target: &ReceiverTarget, notes: Vec<Notification>) {
        let receiver = stored_id(target.id);
        let ids: Vec<Uuid> = notes.iter().map(|n| n.id).collect();
        match self.dispatcher.enqueue(target, Delivery::new(notes)).await {
            Ok(()) => self
                .awaiting
                .extend(ids.into_iter().map(|id| (id, receiver))),
            // A full queue dead-letters the delivery and reports its
            // outcome like any other; a shut-down dispatcher ends the run.
            Err(err) => warn!(%err, receiver, "notification not queued"),
        }
    }

    /// When the next group of a direct receiver may be due.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.groupers
            .values()
            .filter_map(|(_, g)| g.next_due())
            .min()
    }

    /// Send every group due at `now`. Returns the (notification, receiver)
    /// pairs that left their group unsent (muted by a silence at flush
    /// time, or replaced by a later transition of the same alert): no
    /// receiver is owed them any more.
    pub async fn flush(
        &mut self,
        now: DateTime<Utc>,
        silences: &[SilenceSpec],
    ) -> Vec<(Uuid, i64)> {
        let mut due = Vec::new();
        for (target, grouper) in self.groupers.values_mut() {
            for flush in grouper.flush_due(now, silences) {
                due.push((target.clone(), flush.notifications));
            }
        }
        for (target, notes) in due {
            self.send(&target, notes).await;
        }
        let mut dropped = Vec::new();
        self.taken.retain(|&(_, receiver), id| {
            let Some((_, grouper)) = self.groupers.get(&receiver) else {
                return true;
            };
            let gone = !grouper.holds(*id) && !self.awaiting.contains(&(*id, receiver));
            if gone {
                dropped.push((*id, receiver));
            }
            !gone
        });
        dropped
    }

    /// An outcome came back: the receiver is owed none of its
    /// notifications any more. Returns the receiver's stored id.
    pub fn settled(&mut self, outcome: &DeliveryOutcome) -> i64 {
        let receiver = stored_id(outcome.receiver_id);
        for id in &outcome.notification_ids {
            self.awaiting.remove(&(*id, receiver));
        }
        let ids: HashSet<&Uuid> = outcome.notification_ids.iter().collect();
        self.taken
            .retain(|&(_, r), id| !(r == receiver && ids.contains(id)));
        receiver
    }
}
