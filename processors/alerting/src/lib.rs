//! The alert evaluator (`tollgate alerts evaluate`, docs/alerting.md "The
//! evaluator"): every interval, while it holds the `alert-evaluator` lease,
//! it measures each enabled rule (`tollgate_queries::alert_signals::measure`),
//! steps the rule's persisted phase with `alert_lifecycle::Phase::step` (the
//! same function the backtest replays), and writes the new phase and any
//! transition in one fenced PostgreSQL transaction: the state in
//! `alert_state`, the transition in `alert_outbox`, its `admin.alert.transition`
//! event in the admin outbox. From the outbox it then writes the ClickHouse
//! timeline row and hands notifications to the delivery dispatcher; what is
//! published is marked, so a kill -9 anywhere loses nothing and repeats only
//! with the same ids.
//!
//! It lives in its own crate because it needs both the read side (queries)
//! and delivery (processors), and the crate map forbids processors ->
//! queries.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tollgate_contract::admin::{admin_event, KIND_ALERT_TRANSITION};
use tollgate_contract::alert_lifecycle::{Phase, Transition};
use tollgate_contract::alerts::receiver::ReceiverKind as StoredKind;
use tollgate_contract::alerts::rule::Signal;
use tollgate_contract::notification::{
    Notification, NotificationStatus, ReceiverKind, ReceiverTarget,
};
use tollgate_control::alerts::{AlertRule, AlertStore, AlertStoreError, Silence};
use tollgate_control::budgets::BudgetStore;
use tollgate_control::config::{ClickHouseConfig, KafkaConfig};
use tollgate_control::kafka::EventProducer;
use tollgate_control::lease::{Fence, Lease, LeaseError};
use tollgate_control::outbox::{self, OutboxRelay};
use tollgate_processors::alerting::notify::{
    Delivery, DeliveryConfig, DeliveryOutcome, DeliveryResult, Dispatcher,
};
use tollgate_queries::alert_signals::{self, Measurement, SignalSources};
use tollgate_queries::ReadModels;
use tracing::{info, warn};
use uuid::Uuid;

/// The lease only one evaluator holds at a time.
pub const LEASE_NAME: &str = "alert-evaluator";

/// `[alerting]` in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// Seconds between evaluations (and lease renewals).
    pub interval_secs: u64,
    /// Lease time to live in intervals: a holder that stops renewing is
    /// replaced within `lease_intervals + 1` intervals.
    pub lease_intervals: u32,
    /// Prefix of the links in notifications (`https://tollgate.example`);
    /// empty gives paths relative to the Tollgate UI.
    pub public_url: String,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            interval_secs: 60,
            lease_intervals: 3,
            public_url: String::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EvaluatorError {
    #[error("alerting.interval_secs: must be at least 1")]
    Interval,
    #[error("postgresql: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("alert store: {0}")]
    Store(#[from] AlertStoreError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("phase json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("delivery: {0}")]
    Delivery(String),
    #[error("kafka: {0}")]
    Kafka(String),
}

/// The notification side's receiver id for a stored receiver id (the
/// delivery records use UUIDs, the control plane bigint ids).
pub fn receiver_uuid(id: i64) -> Uuid {
    Uuid::from_u64_pair(0, id as u64)
}

/// The notification's rule id for a stored rule id.
pub fn rule_uuid(id: i64) -> Uuid {
    Uuid::from_u64_pair(0, id as u64)
}

/// One row of `alert_transitions` (ClickHouse migration 0032).
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize)]
pub struct TransitionRow {
    pub at: u32,
    pub at_ms: u64,
    pub org_id: String,
    pub rule_id: i64,
    pub rule_name: String,
    pub from_state: String,
    pub to_state: String,
    pub value: String,
    pub since: u32,
    pub notification_id: String,
    pub silenced: u8,
    pub event_id: String,
}

/// The state name a phase is in, as the transitions name them.
fn phase_name(p: &Phase) -> &'static str {
    match p {
        Phase::Inactive => "inactive",
        Phase::Pending { .. } => "pending",
        Phase::Firing { .. } => "firing",
    }
}

fn since_of(t: &Transition) -> DateTime<Utc> {
    match t {
        Transition::Pending { since }
        | Transition::Cleared { since }
        | Transition::Firing { since, .. }
        | Transition::Resolved { since, .. } => *since,
    }
}

/// The alert's labels: the rule's, then `alertname`, `severity` and `org`,
/// which win so that routes and silences can rely on them.
pub fn alert_labels(rule: &AlertRule) -> BTreeMap<String, String> {
    let mut labels = rule.spec.labels.clone();
    labels.insert("alertname".into(), rule.spec.name.clone());
    labels.insert("severity".into(), rule.spec.severity.name().into());
    labels.insert("org".into(), rule.spec.org_id.clone());
    labels
}

/// The Tollgate page and time range that explain the alert.
pub fn generator_url(base: &str, signal: &Signal, at: DateTime<Utc>) -> String {
    let page = match signal {
        Signal::ErrorRate { .. } | Signal::NewErrorPattern(_) => "/sre/errors",
        Signal::Latency { .. } => "/sre/latency",
        Signal::BreakerOpened(_) => "/sre/breakers",
        Signal::Spend { .. } | Signal::BudgetUsed { .. } | Signal::BudgetForecast { .. } => {
            "/finance/cost"
        }
        Signal::PipelineHealth { .. } => "/sre",
    };
    let (from, to) = alert_signals::window(at, signal.window_secs().unwrap_or(300));
    format!(
        "{}{page}?from={}&to={}",
        base.trim_end_matches('/'),
        from.format("%Y-%m-%dT%H:%M:%SZ"),
        to.format("%Y-%m-%dT%H:%M:%SZ")
    )
}

/// The notification for a firing or resolved transition.
pub fn notification(
    rule: &AlertRule,
    transition: &Transition,
    value: &str,
    base_url: &str,
    at: DateTime<Utc>,
) -> Option<Notification> {
    let (status, starts_at, ends_at) = match transition {
        Transition::Firing { fired_at, .. } => (NotificationStatus::Firing, *fired_at, None),
        Transition::Resolved {
            fired_at,
            resolved_at,
            ..
        } => (
            NotificationStatus::Resolved,
            *fired_at,
            Some(*resolved_at),
        ),
        _ => return None,
    };
    let mut annotations = BTreeMap::new();
    if !rule.spec.annotations.summary.is_empty() {
        annotations.insert("summary".into(), rule.spec.annotations.summary.clone());
    }
    if !rule.spec.annotations.description.is_empty() {
        annotations.insert(
            "description".into(),
            rule.spec.annotations.description.clone(),
        );
    }
    Some(Notification::new(
        rule_uuid(rule.id),
        rule.spec.name.clone(),
        rule.spec.org_id.clone(),
        status,
        alert_labels(rule),
        annotations,
        rule.spec.severity.name(),
        starts_at,
        ends_at,
        generator_url(base_url, &rule.spec.signal, at),
        value,
    ))
}

fn silenced(silences: &[Silence], rule: &AlertRule, labels: &BTreeMap<String, String>) -> bool {
    silences
        .iter()
        .any(|s| s.spec.org_id == rule.spec.org_id && s.spec.silences(labels))
}

/// An open outbox row.
#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    event_id: Uuid,
    rule_id: i64,
    org_id: String,
    at: DateTime<Utc>,
    from_state: String,
    to_state: String,
    transition: serde_json::Value,
    notification: Option<serde_json::Value>,
    pending_receivers: Vec<i64>,
    silenced: bool,
    row_written_at: Option<DateTime<Utc>>,
    rule_name: String,
}

pub struct Evaluator {
    config: AlertingConfig,
    pool: PgPool,
    store: AlertStore,
    budgets: BudgetStore,
    read: ReadModels,
    ch: clickhouse::Client,
    lease: Lease,
    dispatcher: Dispatcher,
    outcomes: tokio::sync::mpsc::Receiver<DeliveryOutcome>,
    /// (outbox id, receiver id) handed to the dispatcher by this process:
    /// not handed again while its outcome is awaited.
    in_flight: HashSet<(i64, i64)>,
}

impl Evaluator {
    pub fn new(
        config: AlertingConfig,
        pool: PgPool,
        clickhouse: &ClickHouseConfig,
        holder: String,
    ) -> Result<Self, EvaluatorError> {
        if config.interval_secs == 0 {
            return Err(EvaluatorError::Interval);
        }
        let ttl = Duration::from_secs(config.interval_secs * u64::from(config.lease_intervals.max(2)));
        let (dispatcher, outcomes) = Dispatcher::new(DeliveryConfig::default(), Some(pool.clone()))
            .map_err(|e| EvaluatorError::Delivery(e.to_string()))?;
        Ok(Self {
            store: AlertStore::new(pool.clone()),
            budgets: BudgetStore::new(pool.clone()),
            read: ReadModels::new(clickhouse),
            ch: tollgate_control::clickhouse::client(clickhouse),
            lease: Lease::new(LEASE_NAME, holder, ttl),
            pool,
            config,
            dispatcher,
            outcomes,
            in_flight: HashSet::new(),
        })
    }

    /// Evaluate every interval until `shutdown`; the admin outbox relay
    /// runs beside it so transition events reach Kafka even when no
    /// `tollgate process` runs.
    pub async fn run(
        mut self,
        kafka: &KafkaConfig,
        shutdown: CancellationToken,
    ) -> Result<(), EvaluatorError> {
        let producer = EventProducer::new(kafka).map_err(|e| EvaluatorError::Kafka(e.to_string()))?;
        let relay = tokio::spawn(OutboxRelay::new(self.pool.clone(), producer).run(shutdown.clone()));
        let mut ticker = tokio::time::interval(Duration::from_secs(self.config.interval_secs));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut holding: Option<Fence> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
                Some(outcome) = self.outcomes.recv() => {
                    if let Some(fence) = &holding {
                        if let Err(err) = self.record_outcome(fence, outcome).await {
                            warn!(%err, "recording a delivery outcome failed");
                        }
                    }
                    continue;
                }
            }
            match self.lease.acquire(&self.pool).await {
                Ok(fence) => {
                    if holding.as_ref().map(|f| f.token) != Some(fence.token) {
                        info!(holder = %fence.holder, token = fence.token, "alert evaluator lease acquired: this evaluator is active");
                        self.in_flight.clear();
                    }
                    let now = Utc::now();
                    if let Err(err) = self.evaluate(&fence, now).await {
                        warn!(%err, "evaluation failed");
                    }
                    if let Err(err) = self.publish(&fence).await {
                        warn!(%err, "publishing alert transitions failed");
                    }
                    holding = Some(fence);
                }
                Err(LeaseError::Held { holder, .. }) => {
                    if holding.take().is_some() {
                        warn!(%holder, "alert evaluator lease lost: standing by");
                    } else {
                        info!(%holder, "alert evaluator lease held by another replica: standing by");
                    }
                }
                Err(err) => warn!(%err, "alert evaluator lease unavailable"),
            }
        }
        if let Some(fence) = holding {
            if let Err(err) = self.lease.release(&self.pool, &fence).await {
                warn!(%err, "releasing the alert evaluator lease failed");
            }
        }
        if let Err(err) = relay.await {
            warn!(%err, "admin outbox relay ended abnormally");
        }
        Ok(())
    }

    /// One evaluation of every enabled rule at `now`.
    pub async fn evaluate(&mut self, fence: &Fence, now: DateTime<Utc>) -> Result<(), EvaluatorError> {
        let rules = self.store.enabled_rules().await?;
        let silences = self.store.active_silences(now).await?;
        for rule in &rules {
            let sources = SignalSources {
                read: &self.read,
                budgets: Some(&self.budgets),
            };
            let m = alert_signals::or_unknown(
                alert_signals::measure(sources, &rule.spec.org_id, &rule.spec.signal, now).await,
            );
            let phase = self.step_rule(fence, rule, &m, &silences, now).await?;
            if let Phase::Firing { since, fired_at } = phase {
                self.remind_alertmanagers(rule, since, fired_at, &m, now).await;
            }
        }
        Ok(())
    }

    /// Step one rule and persist the phase and the transition, fenced.
    async fn step_rule(
        &self,
        fence: &Fence,
        rule: &AlertRule,
        m: &Measurement,
        silences: &[Silence],
        now: DateTime<Utc>,
    ) -> Result<Phase, EvaluatorError> {
        let labels = alert_labels(rule);
        let fingerprint = tollgate_contract::notification::fingerprint(&labels);
        let value = m.value.map(|v| v.to_string()).unwrap_or_default();
        let mut tx = self.pool.begin().await?;
        fence.check(&mut tx).await?;
        let stored: Option<serde_json::Value> =
            sqlx::query_scalar("SELECT phase FROM alert_state WHERE rule_id = $1 FOR UPDATE")
                .bind(rule.id)
                .fetch_optional(&mut *tx)
                .await?;
        let phase: Phase = match stored {
            Some(v) => serde_json::from_value(v)?,
            None => Phase::Inactive,
        };
        let (next, transition) = phase.step(
            now,
            m.observation,
            chrono::Duration::seconds(i64::from(rule.spec.for_secs)),
        );
        sqlx::query(
            "INSERT INTO alert_state (rule_id, fingerprint, phase, evaluated_at, value, fence_token)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (rule_id) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
               phase = EXCLUDED.phase, evaluated_at = EXCLUDED.evaluated_at,
               value = EXCLUDED.value, fence_token = EXCLUDED.fence_token",
        )
        .bind(rule.id)
        .bind(&fingerprint)
        .bind(serde_json::to_value(next)?)
        .bind(now)
        .bind(m.value.map(|v| v.to_string()))
        .bind(fence.token)
        .execute(&mut *tx)
        .await?;
        if let Some(t) = transition {
            let note = notification(rule, &t, &value, &self.config.public_url, now);
            let muted = note.is_some() && silenced(silences, rule, &labels);
            let receivers: Vec<i64> = if note.is_some() && !muted {
                rule.spec.receivers.clone()
            } else {
                Vec::new()
            };
            let payload = json!({
                "alert": {
                    "rule_id": rule.id,
                    "rule_name": rule.spec.name,
                    "org_id": rule.spec.org_id,
                    "fingerprint": fingerprint,
                    "from": phase_name(&phase),
                    "to": t.to_state(),
                    "at": now,
                    "value": value,
                    "since": since_of(&t),
                    "notification_id": note.as_ref().map(|n| n.id),
                    "silenced": muted,
                }
            });
            let event = admin_event(KIND_ALERT_TRANSITION, "alert-evaluator", payload);
            outbox::enqueue(&mut tx, &event).await?;
            sqlx::query(
                "INSERT INTO alert_outbox (event_id, rule_id, org_id, at, from_state, to_state,
                   transition, notification, pending_receivers, silenced)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(event.event_id)
            .bind(rule.id)
            .bind(&rule.spec.org_id)
            .bind(now)
            .bind(phase_name(&phase))
            .bind(t.to_state())
            .bind(json!({ "transition": t, "value": value, "rule_name": rule.spec.name }))
            .bind(note.as_ref().map(serde_json::to_value).transpose()?)
            .bind(&receivers)
            .bind(muted)
            .execute(&mut *tx)
            .await?;
            info!(rule = rule.id, from = phase_name(&phase), to = t.to_state(), silenced = muted, "alert transition");
        }
        tx.commit().await?;
        Ok(next)
    }

    /// Alertmanager resolves a firing alert it has not heard of for its
    /// `resolve_timeout`: re-send firing alerts to Alertmanager receivers
    /// at every evaluation (same notification id; Alertmanager
    /// deduplicates by labels anyway).
    async fn remind_alertmanagers(
        &self,
        rule: &AlertRule,
        since: DateTime<Utc>,
        fired_at: DateTime<Utc>,
        m: &Measurement,
        now: DateTime<Utc>,
    ) {
        let value = m.value.map(|v| v.to_string()).unwrap_or_default();
        let Some(note) = notification(
            rule,
            &Transition::Firing { since, fired_at },
            &value,
            &self.config.public_url,
            now,
        ) else {
            return;
        };
        for &rid in &rule.spec.receivers {
            match self.target(&rule.spec.org_id, rid).await {
                Ok(target) if target.kind == ReceiverKind::Alertmanager => {
                    if let Err(err) = self.dispatcher.enqueue(&target, Delivery::single(note.clone())).await {
                        warn!(%err, receiver = rid, "alertmanager re-send not queued");
                    }
                }
                Ok(_) => {}
                Err(err) => warn!(%err, receiver = rid, "receiver unreadable"),
            }
        }
    }

    async fn target(&self, org: &str, id: i64) -> Result<ReceiverTarget, EvaluatorError> {
        let r = self.store.receiver(Some(org), id).await?;
        let kind = match r.kind {
            StoredKind::Webhook => ReceiverKind::Webhook,
            StoredKind::Slack => ReceiverKind::Slack,
            StoredKind::Alertmanager => ReceiverKind::Alertmanager,
        };
        let secret = if kind == ReceiverKind::Webhook {
            self.store.signing_secret(Some(org), id).await?
        } else {
            None
        };
        Ok(ReceiverTarget {
            id: receiver_uuid(id),
            kind,
            url: r.url,
            secret,
        })
    }

    /// Publish every open outbox row: the ClickHouse row (once marked, not
    /// again) and the notifications still owed to receivers.
    pub async fn publish(&mut self, fence: &Fence) -> Result<(), EvaluatorError> {
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT id, event_id, rule_id, org_id, at, from_state, to_state, transition,
                    notification, pending_receivers, silenced, row_written_at,
                    coalesce(transition->>'rule_name', '') AS rule_name
             FROM alert_outbox
             WHERE row_written_at IS NULL OR cardinality(pending_receivers) > 0
             ORDER BY id LIMIT 1000",
        )
        .fetch_all(&self.pool)
        .await?;
        let open: HashSet<(i64, i64)> = rows
            .iter()
            .flat_map(|r| r.pending_receivers.iter().map(move |&rid| (r.id, rid)))
            .collect();
        self.in_flight.retain(|k| open.contains(k));
        for row in rows {
            let note: Option<Notification> =
                row.notification.clone().map(serde_json::from_value).transpose()?;
            if row.row_written_at.is_none() {
                let t: Transition = serde_json::from_value(row.transition["transition"].clone())?;
                let ch_row = TransitionRow {
                    at: u32::try_from(row.at.timestamp()).unwrap_or(0),
                    at_ms: u64::try_from(row.at.timestamp_millis()).unwrap_or(0),
                    org_id: row.org_id.clone(),
                    rule_id: row.rule_id,
                    rule_name: row.rule_name.clone(),
                    from_state: row.from_state.clone(),
                    to_state: row.to_state.clone(),
                    value: row.transition["value"].as_str().unwrap_or_default().to_string(),
                    since: u32::try_from(since_of(&t).timestamp()).unwrap_or(0),
                    notification_id: note.as_ref().map(|n| n.id.to_string()).unwrap_or_default(),
                    silenced: u8::from(row.silenced),
                    event_id: row.event_id.to_string(),
                };
                let mut insert = self.ch.insert::<TransitionRow>("alert_transitions").await?;
                insert.write(&ch_row).await?;
                insert.end().await?;
                let mut tx = self.pool.begin().await?;
                fence.check(&mut tx).await?;
                sqlx::query("UPDATE alert_outbox SET row_written_at = now() WHERE id = $1")
                    .bind(row.id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            let Some(note) = note else { continue };
            for &rid in &row.pending_receivers {
                if !self.in_flight.insert((row.id, rid)) {
                    continue;
                }
                match self.target(&row.org_id, rid).await {
                    Ok(target) => {
                        if let Err(err) = self.dispatcher.enqueue(&target, Delivery::single(note.clone())).await {
                            warn!(%err, receiver = rid, "notification not queued");
                        }
                    }
                    Err(err) => {
                        // A deleted receiver cannot be owed anything.
                        warn!(%err, receiver = rid, "receiver unreadable; dropping it from the outbox row");
                        self.remove_pending(fence, &[note.id], rid).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn remove_pending(&self, fence: &Fence, ids: &[Uuid], receiver: i64) -> Result<(), EvaluatorError> {
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let mut tx = self.pool.begin().await?;
        fence.check(&mut tx).await?;
        sqlx::query(
            "UPDATE alert_outbox SET pending_receivers = array_remove(pending_receivers, $1)
             WHERE notification->>'id' = ANY($2) AND $1 = ANY(pending_receivers)",
        )
        .bind(receiver)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A delivered (or dead-lettered: it is on the dead-letter list then)
    /// notification is no longer owed to that receiver.
    async fn record_outcome(&mut self, fence: &Fence, outcome: DeliveryOutcome) -> Result<(), EvaluatorError> {
        let (_, low) = outcome.receiver_id.as_u64_pair();
        let receiver = low as i64;
        match &outcome.result {
            DeliveryResult::Delivered { attempts } => {
                info!(receiver, delivery = %outcome.delivery_id, attempts, "notification delivered")
            }
            DeliveryResult::DeadLettered { attempts, error } => {
                warn!(receiver, delivery = %outcome.delivery_id, attempts, %error, "notification dead-lettered")
            }
        }
        self.remove_pending(fence, &outcome.notification_ids, receiver).await?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_uuids() {
        let (_, low) = receiver_uuid(42).as_u64_pair();
        assert_eq!(low as i64, 42);
    }

    #[test]
    fn generator_url_points_at_the_window() {
        let at = DateTime::parse_from_rfc3339("2026-12-02T10:07:42Z")
            .unwrap()
            .with_timezone(&Utc);
        let signal: Signal = serde_json::from_value(json!({
            "kind": "error_rate", "above_percent": "5", "window_secs": 300
        }))
        .unwrap();
        assert_eq!(
            generator_url("https://t.example/", &signal, at),
            "https://t.example/sre/errors?from=2026-12-02T10:02:00Z&to=2026-12-02T10:07:00Z"
        );
    }
}
