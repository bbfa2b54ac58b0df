//! Replaying the spool to Kafka without sending an event twice.
//!
//! The spool ([`crate::spool`]) holds events Kafka has not acknowledged.
//! Not acknowledged is not the same as not stored: a batch handed to a
//! broker that then stalls past `proxy.kafka_timeout_ms` fails here but may
//! be appended when the broker resumes (a replay batch as much as a live
//! one), and a proxy killed while Kafka stores a replay batch never learns
//! that it did. In both cases the
//! spool's first batch carries a marker ([`Spool::sending`]); before that
//! batch is sent, the events topic is read from a minute before the
//! marker's time to each partition's end, and the events found there are
//! left out. Within a run, events acknowledged behind one that was not are
//! remembered and left out too.
//!
//! The check is given up after [`HEAD_CHECKS`] failures in a row (a topic
//! too long to read in a minute, say): the batch is then sent as it is,
//! and the log says that some of it may be stored twice. A spool that
//! cannot drain would cost more than a duplicate with its event id.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tollgate_contract::Event;
use tollgate_control::config::KafkaConfig;
use tollgate_control::kafka::EventProducer;
use uuid::Uuid;

use super::budget::BudgetLedger;
use super::emitter::place;
use super::metrics::ProxyMetrics;
use super::spool::Spool;
use super::wal::on_kafka;

/// Events per replay batch.
pub const BATCH: usize = 512;

/// Failed checks of the spool's first batch before it is sent unchecked.
pub const HEAD_CHECKS: u32 = 5;

/// How long one check may read the events topic.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// What the emitter knows about which spooled events Kafka has.
pub struct Replayer {
    kafka: KafkaConfig,
    /// Spooled events Kafka is known to have: left out of the replay.
    on_kafka: HashSet<Uuid>,
    /// The spool's first batch may be on Kafka, and is checked first.
    head_unchecked: bool,
    /// Checks of it that failed in a row.
    failed_checks: u32,
}

impl Replayer {
    /// For `spool` as an earlier run left it: a batch that run was handing
    /// to Kafka when it stopped is checked before it is sent.
    pub fn new(kafka: KafkaConfig, spool: &Spool) -> Self {
        Self {
            kafka,
            on_kafka: HashSet::new(),
            head_unchecked: spool.sent_since().is_some(),
            failed_checks: 0,
        }
    }

    /// The events just appended to an empty `spool` were handed to Kafka
    /// at `sent_at_ms` (Unix milliseconds) and not acknowledged in time:
    /// some may be stored all the same.
    pub fn possibly_stored(&mut self, spool: &Spool, sent_at_ms: i64) {
        match spool.sending(sent_at_ms) {
            Ok(()) => self.head_unchecked = true,
            Err(err) => {
                tracing::error!(%err, "cannot mark the spooled events as possibly on kafka; any kafka stored late are sent twice")
            }
        }
    }

    /// Replay one batch from the spool if Kafka answers. `true` if the
    /// spool advanced over the whole batch.
    pub async fn replay(
        &mut self,
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
        if self.head_unchecked && !self.check_head(spool, &read, m, budgets).await {
            return false;
        }
        let events: Vec<Event> = read
            .iter()
            .filter(|(e, _)| !self.on_kafka.contains(&e.event_id))
            .map(|(e, _)| e.clone())
            .collect();
        if let Err(err) = spool.sending(chrono::Utc::now().timestamp_millis()) {
            tracing::error!(%err, "cannot mark the spool's batch as sent; if this run is killed before kafka acknowledges, the next one may send it twice");
        }
        let results = producer.send_batch(&events).await;
        place(budgets, &events, &results);
        let acknowledged = results.iter().filter(|r| r.is_ok()).count() as u64;
        ProxyMetrics::add(&m.events_replayed, acknowledged);
        let mut sent = results.iter();
        let stored: Vec<bool> = read
            .iter()
            .map(|(e, _)| {
                self.on_kafka.contains(&e.event_id) || sent.next().is_some_and(Result::is_ok)
            })
            .collect();
        // Advance over the prefix Kafka has; what follows is sent again,
        // but for the events acknowledged among it.
        if stored.iter().any(|s| !s) {
            // A stalled broker may store what it did not acknowledge.
            self.head_unchecked = true;
        }
        let advance_to = match stored.iter().position(|s| !s) {
            None => Some(next),
            Some(0) => None,
            Some(failed) => Some(read[failed - 1].1),
        };
        for ((event, end), stored) in read.iter().zip(&stored) {
            if advance_to.is_some_and(|to| *end <= to) {
                self.on_kafka.remove(&event.event_id);
            } else if *stored {
                self.on_kafka.insert(event.event_id);
            }
        }
        let Some(advance_to) = advance_to else {
            return false;
        };
        let advanced = spool.advance(advance_to);
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

    /// Spooled events `found` on the events topic (with where): left out of
    /// the replay, and placed for the budget reservations, as an
    /// acknowledgement would have.
    fn already_on_kafka(
        &mut self,
        found: &HashMap<Uuid, (i32, i64)>,
        m: &ProxyMetrics,
        budgets: &BudgetLedger,
    ) {
        ProxyMetrics::add(&m.events_already_on_kafka, found.len() as u64);
        for (event_id, (partition, offset)) in found {
            budgets.placed(*event_id, *partition, *offset);
            self.on_kafka.insert(*event_id);
        }
    }

    /// Look for `head`, the spool's first batch, on the events topic. `true` when it
    /// may be sent (checked, or the check given up).
    async fn check_head(
        &mut self,
        spool: &Spool,
        head: &[(Event, u64)],
        m: &ProxyMetrics,
        budgets: &BudgetLedger,
    ) -> bool {
        let Some(sent_at) = spool.sent_since() else {
            self.head_unchecked = false;
            return true;
        };
        let wanted: HashSet<Uuid> = head.iter().map(|(e, _)| e.event_id).collect();
        let kafka = self.kafka.clone();
        let since = sent_at - on_kafka::CLOCK_MARGIN_MS;
        let lookup = wanted.clone();
        let found = tokio::task::spawn_blocking(move || {
            on_kafka::find(&kafka, &lookup, since, CHECK_TIMEOUT)
        })
        .await
        .unwrap_or_else(|err| Err(err.to_string()));
        match found {
            Ok(found) => {
                tracing::warn!(
                    checked = wanted.len(),
                    on_kafka_already = found.len(),
                    "checked spooled events kafka may have stored without acknowledging; leaving out what it stored"
                );
                self.already_on_kafka(&found, m, budgets);
                self.head_unchecked = false;
                self.failed_checks = 0;
                true
            }
            Err(err) if self.failed_checks + 1 >= HEAD_CHECKS => {
                tracing::error!(%err, checks = HEAD_CHECKS, "cannot tell which spooled events kafka stored; sending them all (an event stored twice keeps its event_id)");
                self.head_unchecked = false;
                self.failed_checks = 0;
                true
            }
            Err(err) => {
                self.failed_checks += 1;
                tracing::warn!(%err, "cannot check spooled events against kafka yet; trying again");
                false
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;
    use crate::budget::tests::{d, ledger, now, state, team};

    #[test]
    fn events_found_on_kafka_are_left_out_and_placed_for_their_budgets() {
        let budgets = ledger(Decimal::ONE);
        budgets.update("budget/team/t", Some(state("1", "0", &[(0, 10)])));
        let r = budgets.reserve(&team(), d("0.5"), now()).unwrap().unwrap();
        let event = Uuid::now_v7();
        r.charge(event, d("0.4"), now());
        drop(r);
        assert!(budgets.awaits_positions());
        let mut replayer = Replayer {
            kafka: KafkaConfig::default(),
            on_kafka: HashSet::new(),
            head_unchecked: true,
            failed_checks: 0,
        };
        let m = ProxyMetrics::default();
        replayer.already_on_kafka(&HashMap::from([(event, (0, 11))]), &m, &budgets);
        assert!(replayer.on_kafka.contains(&event));
        assert!(!budgets.awaits_positions(), "the event has its position");
        assert_eq!(m.events_already_on_kafka.get(), 1);
        // Once the published spend includes offset 11, the charge goes (an
        // unplaced one would count until its period ends).
        budgets.update("budget/team/t", Some(state("1", "0.4", &[(0, 11)])));
        assert_eq!(budgets.outstanding("budget/team/t"), (d("0"), d("0")));
    }
}
