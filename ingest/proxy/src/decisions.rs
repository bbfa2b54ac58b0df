//! The decision cache: the proxy's copy of the compacted decisions topic.
//! On start it reads every partition from the beginning (so it knows every
//! decision still in force), then keeps tailing it; the request path only
//! reads the in-memory map and never waits on Kafka or the processors.
//! The record types are `tollgate_contract::decisions` (shared with the
//! processors that publish them); their format is documented in
//! `docs/decisions.md`.
//!
//! Three kinds of records are kept apart: gates (deny, throttle, reroute
//! of a request's subjects, [`DecisionCache::lookup`]), learned recovery
//! plans (`recovery/…`, action `allow`, [`DecisionCache::recovery_plan`])
//! and breaker states (`circuit/…` records with a `breaker` field,
//! [`DecisionCache::breaker_skip`]). A `circuit/…` record without a
//! `breaker` field is a hand-published gate, as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::task::JoinHandle;

use tollgate_contract::decisions::{
    circuit_subject, recovery_subject, Action, CircuitState, Decision, RecoveryPlan, Subjects,
};
use tollgate_contract::signature::SignatureId;
use tollgate_control::config::KafkaConfig;

use crate::breaker::{ProbeCounter, Skipped};
use crate::budget::BudgetLedger;
use crate::metrics::ProxyMetrics;

pub struct DecisionCache {
    decisions: RwLock<HashMap<String, Decision>>,
    /// `recovery/<provider>/<model>/<signature>` -> the learned plan.
    recovery: RwLock<HashMap<String, Decision>>,
    /// `circuit/…` records with a breaker state (open and half-open only).
    breakers: RwLock<HashMap<String, Decision>>,
    probes: Mutex<ProbeCounter>,
    /// Budget states of `budget/...` records go to the reservations.
    pub budgets: Arc<BudgetLedger>,
}

impl Default for DecisionCache {
    fn default() -> Self {
        Self::new(Arc::new(BudgetLedger::new(Arc::new(
            crate::shares::Shares::fixed(rust_decimal::Decimal::ONE),
        ))))
    }
}

impl DecisionCache {
    pub fn new(budgets: Arc<BudgetLedger>) -> Self {
        Self {
            decisions: RwLock::default(),
            recovery: RwLock::default(),
            breakers: RwLock::default(),
            probes: Mutex::default(),
            budgets,
        }
    }

    pub fn apply(&self, subject: &str, decision: Option<Decision>) {
        if subject.starts_with("budget/") {
            self.budgets
                .update(subject, decision.as_ref().and_then(|d| d.budget.clone()));
        }
        // A subject is in one map at a time: a record replacing a breaker
        // state with a hand-published gate (or the reverse) leaves no stale copy.
        let plan = decision.as_ref().is_some_and(|d| d.recovery.is_some());
        let breaker = decision.as_ref().is_some_and(|d| d.breaker.is_some());
        if let Ok(mut map) = self.recovery.write() {
            match &decision {
                Some(d) if plan => {
                    map.insert(subject.to_string(), d.clone());
                }
                _ => {
                    map.remove(subject);
                }
            }
        }
        if let Ok(mut map) = self.breakers.write() {
            match &decision {
                Some(d)
                    if breaker
                        && d.breaker
                            .as_ref()
                            .is_some_and(|b| b.state != CircuitState::Closed) =>
                {
                    map.insert(subject.to_string(), d.clone());
                }
                _ => {
                    map.remove(subject);
                }
            }
        }
        if breaker
            && decision
                .as_ref()
                .and_then(|d| d.breaker.as_ref())
                .is_none_or(|b| b.state != CircuitState::HalfOpen)
        {
            if let Ok(mut probes) = self.probes.lock() {
                probes.forget(subject);
            }
        }
        let decision = decision.filter(|_| !plan && !breaker);
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

    /// Records in force of every kind (gates, plans, breakers).
    pub fn len(&self) -> usize {
        [&self.decisions, &self.recovery, &self.breakers]
            .iter()
            .map(|m| m.read().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    /// The learned recovery for calls on `provider`/`model` that failed
    /// with `signature`, if the learner published one (and it has not expired).
    pub fn recovery_plan(
        &self,
        provider: &str,
        model: &str,
        signature: SignatureId,
    ) -> Option<RecoveryPlan> {
        let map = self.recovery.read().ok()?;
        if map.is_empty() {
            return None;
        }
        let now = Utc::now();
        map.get(&recovery_subject(provider, model, signature))
            .filter(|d| d.valid_until.is_none_or(|until| now < until))
            .and_then(|d| d.recovery.clone())
    }

    /// What the fleet breaker says of a call trying `provider`/`model`:
    /// skip it when its model's or its provider's circuit is open, or
    /// half-open with this proxy's probes of the episode used up; a probe
    /// when half-open with a slot left (the slot is taken).
    pub fn breaker_verdict(&self, provider: &str, model: &str) -> FleetVerdict {
        let Ok(map) = self.breakers.read() else {
            return FleetVerdict::NoOpinion;
        };
        if map.is_empty() {
            return FleetVerdict::NoOpinion;
        }
        let now = Utc::now();
        let in_force: Vec<(String, &Decision)> = [
            circuit_subject(provider, model),
            circuit_subject(provider, ""),
        ]
        .into_iter()
        .filter_map(|s| {
            let d = map.get(&s)?;
            d.valid_until
                .is_none_or(|until| now < until)
                .then_some((s, d))
        })
        .collect();
        let skip = |subject: &str, d: &Decision| Skipped {
            subject: subject.to_string(),
            fleet: true,
            retry_after_secs: d.retry_after_secs.unwrap_or(1),
            reroute_to: d.reroute_to.clone(),
            signature: d.breaker.as_ref().and_then(|b| b.signature),
        };
        // Open first, so no probe slot is spent on a call that skips anyway.
        for (subject, d) in &in_force {
            if d.breaker.as_ref().map(|b| b.state) == Some(CircuitState::Open) {
                return FleetVerdict::Skip(skip(subject, d));
            }
        }
        let mut verdict = FleetVerdict::NoOpinion;
        for (subject, d) in &in_force {
            let Some(b) = &d.breaker else { continue };
            if b.state == CircuitState::HalfOpen {
                let took = self
                    .probes
                    .lock()
                    .map(|mut p| p.take(subject, b.generation, b.probes_per_proxy))
                    .unwrap_or(false);
                if !took {
                    return FleetVerdict::Skip(skip(subject, d));
                }
                verdict = FleetVerdict::Probe;
            }
        }
        verdict
    }
}

/// The fleet breaker's word on one candidate of a call.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetVerdict {
    /// No open or half-open circuit covers it (the local breaker decides).
    NoOpinion,
    /// Half-open, and this call is one of this proxy's probes.
    Probe,
    /// Take it out of the call.
    Skip(Skipped),
}

impl FleetVerdict {
    pub fn skipped(self) -> Option<Skipped> {
        match self {
            FleetVerdict::Skip(s) => Some(s),
            _ => None,
        }
    }
}

impl DecisionCache {
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
                    let now = Utc::now().timestamp_millis();
                    if let Some(written) = message.timestamp().to_millis() {
                        let lag = now.saturating_sub(written).max(0);
                        metrics.decision_freshness.set(lag as f64 / 1000.0);
                    }
                    metrics.decision_applied_at.set(now as f64 / 1000.0);
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

    #[test]
    fn plans_and_breakers_are_kept_apart_from_gates() {
        let cache = DecisionCache::default();
        let subject = recovery_subject("openai", "gpt-4o", SignatureId(0xab));
        let plan = format!(
            r#"{{"subject":"{subject}","action":"allow","recovery":{{"signature":"00000000000000ab","provider":"openai","model":"gpt-4o","as_of":"2026-12-01T00:00:00Z","order":[{{"strategy":"fallback_model","provider":"openai","model":"gpt-4o-mini","attempts":30,"successes":29,"lower_bound":0.83}}]}}}}"#
        );
        cache.apply(&subject, parse_record(&subject, Some(plan.as_bytes())));
        let found = cache.recovery_plan("openai", "gpt-4o", SignatureId(0xab));
        assert_eq!(found.unwrap().order[0].model, "gpt-4o-mini");
        assert!(cache
            .recovery_plan("openai", "gpt-4o", SignatureId(1))
            .is_none());
        // A breaker's open record does not deny the whole request: it only
        // takes its candidate out.
        let open = r#"{"subject":"circuit/openai/gpt-4o","action":"reroute","reroute_to":"gpt-4o-mini","retry_after_secs":9,"breaker":{"state":"open","since":"2026-12-01T00:00:00Z","generation":3,"signature":"00000000000000ab"}}"#;
        cache.apply(
            "circuit/openai/gpt-4o",
            parse_record("circuit/openai/gpt-4o", Some(open.as_bytes())),
        );
        assert!(cache.lookup(&subjects()).is_none());
        let skipped = cache.breaker_verdict("openai", "gpt-4o").skipped().unwrap();
        assert_eq!(
            (skipped.retry_after_secs, skipped.reroute_to.as_deref()),
            (9, Some("gpt-4o-mini"))
        );
        assert_eq!(skipped.signature, Some(SignatureId(0xab)));
        assert_eq!(
            cache.breaker_verdict("openai", "gpt-4o-mini"),
            FleetVerdict::NoOpinion
        );
        // Half-open: this proxy's probes of the generation, then skips.
        let half = r#"{"subject":"circuit/openai","action":"reroute","breaker":{"state":"half_open","since":"2026-12-01T00:00:00Z","generation":4,"probes_per_proxy":2}}"#;
        cache.apply(
            "circuit/openai",
            parse_record("circuit/openai", Some(half.as_bytes())),
        );
        let through: Vec<bool> = (0..4)
            .map(|_| cache.breaker_verdict("openai", "gpt-4o-mini") == FleetVerdict::Probe)
            .collect();
        assert_eq!(through, [true, true, false, false]);
        // Closed: gone from every map.
        let closed = half
            .replace("half_open", "closed")
            .replace("reroute", "allow");
        cache.apply(
            "circuit/openai",
            parse_record("circuit/openai", Some(closed.as_bytes())),
        );
        assert_eq!(
            cache.breaker_verdict("openai", "gpt-4o-mini"),
            FleetVerdict::NoOpinion
        );
        // Without a breaker field a circuit record is a gate, as before.
        let gate = r#"{"subject":"circuit/openai","action":"deny","reason":"maintenance"}"#;
        cache.apply(
            "circuit/openai",
            parse_record("circuit/openai", Some(gate.as_bytes())),
        );
        assert_eq!(cache.lookup(&subjects()).unwrap().reason, "maintenance");
        assert_eq!(
            cache.breaker_verdict("openai", "gpt-4o-mini"),
            FleetVerdict::NoOpinion
        );
    }
}
