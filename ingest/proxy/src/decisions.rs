//! The decision cache: the proxy's copy of the compacted decisions topic.
//! On start it reads every partition from the beginning (so it knows every
//! decision still in force), then keeps tailing it; the request path only
//! reads the in-memory map and never waits on Kafka or the processors.
//! The record types are `tollgate_contract::decisions` (shared with the
//! budget watcher that publishes them); their format is documented in
//! `docs/decisions.md`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::task::JoinHandle;

use tollgate_contract::decisions::{Action, Decision, Subjects};
use tollgate_control::config::KafkaConfig;

use crate::budget::BudgetLedger;
use crate::metrics::ProxyMetrics;

pub struct DecisionCache {
    decisions: RwLock<HashMap<String, Decision>>,
    /// Budget states of `budget/...` records go to the reservations.
    pub budgets: Arc<BudgetLedger>,
}

impl Default for DecisionCache {
    fn default() -> Self {
        Self::new(Arc::new(BudgetLedger::new(rust_decimal::Decimal::ONE)))
    }
}

impl DecisionCache {
    pub fn new(budgets: Arc<BudgetLedger>) -> Self {
        Self {
            decisions: RwLock::default(),
            budgets,
        }
    }

    pub fn apply(&self, subject: &str, decision: Option<Decision>) {
        if subject.starts_with("budget/") {
            self.budgets
                .update(subject, decision.as_ref().and_then(|d| d.budget.clone()));
        }
        if let Ok(mut map) = self.decisions.write() {
            match decision {
                Some(d) if d.action != Action::Allow => {
                    map.insert(subject.to_string(), d);
                }
                _ => {
                    map.remove(subject);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.decisions.read().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The strongest decision in force for the request: deny over throttle
    /// over reroute.
    pub fn lookup(&self, subjects: &Subjects<'_>) -> Option<Decision> {
        let map = self.decisions.read().ok()?;
        if map.is_empty() {
            return None;
        }
        let now = Utc::now();
        let rank = |a: Action| match a {
            Action::Deny => 3,
            Action::Throttle => 2,
            Action::Reroute => 1,
            Action::Allow => 0,
        };
        subjects
            .candidates()
            .iter()
            .filter_map(|s| map.get(s))
            .filter(|d| d.in_force(now))
            .max_by_key(|d| rank(d.action))
            .cloned()
    }
}

/// Parse one record; `None` for a tombstone. A record that does not parse
/// is logged and treated as a tombstone (fail open: a broken record must not
/// stop all traffic, and the processors re-publish state).
pub fn parse_record(key: &str, payload: Option<&[u8]>) -> Option<Decision> {
    let payload = payload?;
    match serde_json::from_slice::<Decision>(payload) {
        Ok(d) => {
            if d.subject != key {
                tracing::warn!(key, subject = %d.subject, "decision key and subject differ; using the key");
            }
            Some(Decision {
                subject: key.to_string(),
                ..d
            })
        }
        Err(err) => {
            tracing::error!(key, %err, payload = %String::from_utf8_lossy(payload), "unreadable decision record ignored");
            None
        }
    }
}

/// Start reading `kafka.decisions_topic`. Returns once the topic has been
/// read to its end (or `load_timeout` passed; then loading goes on in the
/// background and a warning says so).
pub async fn start(
    kafka: &KafkaConfig,
    load_timeout: Duration,
    metrics: Arc<ProxyMetrics>,
    budgets: Arc<BudgetLedger>,
) -> Result<(Arc<DecisionCache>, JoinHandle<()>), String> {
    let cache = Arc::new(DecisionCache::new(budgets));
    let topic = kafka.decisions_topic.clone();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set(
            "group.id",
            format!("tollgate-proxy-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "50")
        .set("client.id", "tollgate-proxy-decisions")
        .create()
        .map_err(|err| {
            format!(
                "cannot create the decisions consumer for {}: {err}",
                kafka.brokers
            )
        })?;
    let consumer = Arc::new(consumer);
    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel::<usize>();
    let task = tokio::spawn(tail(
        consumer,
        topic.clone(),
        cache.clone(),
        loaded_tx,
        metrics,
    ));
    match tokio::time::timeout(load_timeout, loaded_rx).await {
        Ok(Ok(records)) => {
            tracing::info!(%topic, records, in_force = cache.len(), "decisions loaded")
        }
        _ => {
            tracing::warn!(%topic, secs = load_timeout.as_secs(), "decisions topic not fully read at start; serving and loading in the background")
        }
    }
    Ok((cache, task))
}

async fn tail(
    consumer: Arc<StreamConsumer>,
    topic: String,
    cache: Arc<DecisionCache>,
    loaded: tokio::sync::oneshot::Sender<usize>,
    metrics: Arc<ProxyMetrics>,
) {
    // Wait for the topic, then assign every partition from the beginning.
    let ends = loop {
        let c = consumer.clone();
        let t = topic.clone();
        let probe = tokio::task::spawn_blocking(move || -> Result<Vec<(i32, i64)>, String> {
            let md = c
                .fetch_metadata(Some(&t), Duration::from_secs(5))
                .map_err(|e| e.to_string())?;
            let Some(found) = md
                .topics()
                .iter()
                .find(|x| x.name() == t && x.error().is_none())
            else {
                return Err("topic does not exist".into());
            };
            let mut ends = Vec::new();
            for p in found.partitions() {
                let (_, high) = c
                    .fetch_watermarks(&t, p.id(), Duration::from_secs(5))
                    .map_err(|e| e.to_string())?;
                ends.push((p.id(), high));
            }
            Ok(ends)
        })
        .await;
        match probe {
            Ok(Ok(ends)) if !ends.is_empty() => break ends,
            Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {
                let reason = match probe {
                    Ok(Err(e)) => e,
                    _ => "no partitions".into(),
                };
                tracing::warn!(%topic, %reason, "decisions topic not readable yet (run `tollgate migrate`); retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    let mut assignment = TopicPartitionList::new();
    for (partition, _) in &ends {
        if let Err(err) = assignment.add_partition_offset(&topic, *partition, Offset::Beginning) {
            tracing::error!(%err, partition, "cannot assign decisions partition");
        }
    }
    if let Err(err) = consumer.assign(&assignment) {
        tracing::error!(%err, %topic, "cannot assign the decisions topic; decisions are not enforced");
        return;
    }
    let mut behind: HashMap<i32, i64> = ends.into_iter().filter(|(_, high)| *high > 0).collect();
    let mut loaded = Some(loaded);
    let mut records = 0usize;
    if behind.is_empty() {
        if let Some(tx) = loaded.take() {
            let _ = tx.send(0);
        }
    }
    let started = Instant::now();
    loop {
        match consumer.recv().await {
            Ok(message) => {
                records += 1;
                let key = message
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default();
                if key.is_empty() {
                    tracing::warn!(offset = message.offset(), "decision without a key ignored");
                } else {
                    let decision = parse_record(&key, message.payload());
                    tracing::debug!(subject = %key, ?decision, "decision applied");
                    cache.apply(&key, decision);
                    ProxyMetrics::inc(&metrics.decision_records);
                    ProxyMetrics::set(&metrics.decisions_in_force, cache.len() as u64);
                    if let Some(written) = message.timestamp().to_millis() {
                        let lag = Utc::now().timestamp_millis().saturating_sub(written);
                        ProxyMetrics::set(&metrics.decision_lag_ms, lag.max(0) as u64);
                    }
                }
                if loaded.is_some() {
                    if let Some(high) = behind.get(&message.partition()) {
                        if message.offset() + 1 >= *high {
                            behind.remove(&message.partition());
                        }
                    }
                    if behind.is_empty() {
                        if let Some(tx) = loaded.take() {
                            tracing::debug!(
                                ms = started.elapsed().as_millis() as u64,
                                "decisions caught up"
                            );
                            let _ = tx.send(records);
                        }
                    }
                }
            }
            Err(err) => {
                tracing::warn!(%err, %topic, "decisions consumer error; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subjects() -> Subjects<'static> {
        Subjects {
            key_id: "k1",
            user_id: "",
            team_id: "t1",
            org_id: "o1",
            model: "gpt-4o",
            provider: "openai",
        }
    }

    #[test]
    fn strongest_decision_in_force_wins_and_tombstones_clear() {
        let cache = DecisionCache::default();
        assert!(cache.lookup(&subjects()).is_none());
        let reroute = parse_record(
            "model/gpt-4o",
            Some(br#"{"subject":"model/gpt-4o","action":"reroute","reroute_to":"gpt-4o-mini"}"#),
        );
        cache.apply("model/gpt-4o", reroute);
        assert_eq!(cache.lookup(&subjects()).unwrap().action, Action::Reroute);
        let deny = parse_record(
            "budget/team/t1",
            Some(br#"{"subject":"budget/team/t1","action":"deny","reason":"over budget"}"#),
        );
        cache.apply("budget/team/t1", deny);
        assert_eq!(cache.lookup(&subjects()).unwrap().reason, "over budget");
        cache.apply("budget/team/t1", parse_record("budget/team/t1", None));
        assert_eq!(cache.lookup(&subjects()).unwrap().action, Action::Reroute);
        let expired = parse_record(
            "team/t1",
            Some(br#"{"subject":"team/t1","action":"deny","valid_until":"2000-01-01T00:00:00Z"}"#),
        );
        cache.apply("team/t1", expired);
        assert_eq!(cache.lookup(&subjects()).unwrap().action, Action::Reroute);
        assert!(parse_record("x", Some(b"not json")).is_none());
    }
}
