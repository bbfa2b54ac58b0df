//! The alert evaluator (`tollgate alerts evaluate`, docs/alerting.md "The
//! evaluator"): every interval, while it holds the `alert-evaluator` lease,
//! it measures each enabled rule (`tollgate_queries::alert_signals::measure`),
//! steps the rule's persisted phase with `alert_lifecycle::Phase::step` (the
//! same function the backtest replays), and writes the new phase and any
//! transition in one fenced PostgreSQL transaction ([`state`]). From the
//! outbox it then writes the ClickHouse timeline ([`timeline`]) and hands
//! notifications to delivery ([`routing`]); what is published is marked, so
//! a kill -9 anywhere loses nothing and repeats only with the same ids.
//!
//! It lives in its own crate because it needs both the read side (queries)
//! and delivery (processors), and the crate map forbids processors ->
//! queries.

pub mod alert;
pub mod config;
pub mod metrics;
pub mod routing;
pub mod state;
pub mod timeline;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tollgate_contract::alert_lifecycle::{Observation, Phase, Transition};
use tollgate_contract::alerts::SilenceSpec;
use tollgate_control::alerts::{AlertRule, AlertStore};
use tollgate_control::budgets::BudgetStore;
use tollgate_control::config::{ClickHouseConfig, KafkaConfig};
use tollgate_control::kafka::EventProducer;
use tollgate_control::lease::{Fence, Lease, LeaseError};
use tollgate_control::outbox::OutboxRelay;
use tollgate_processors::alerting::notify::{DeliveryConfig, DeliveryOutcome, Dispatcher};
use tollgate_queries::alert_signals::{self, Measurement, SignalSources};
use tollgate_queries::ReadModels;
use tracing::{info, warn};

pub use alert::{alert_labels, generator_url, notification};
pub use config::{AlertingConfig, EvaluatorError};
pub use metrics::AlertsMetrics;
use routing::Routing;
pub use state::Stepped;
use timeline::TransitionRow;

/// The lease only one evaluator holds at a time.
pub const LEASE_NAME: &str = "alert-evaluator";
/// Outbox rows published per round.
const PUBLISH_BATCH: i64 = 1_000;

pub struct Evaluator {
    config: AlertingConfig,
    pool: PgPool,
    store: AlertStore,
    budgets: BudgetStore,
    read: ReadModels,
    ch: clickhouse::Client,
    lease: Lease,
    routing: Routing,
    outcomes: tokio::sync::mpsc::Receiver<DeliveryOutcome>,
    metrics: Arc<AlertsMetrics>,
}

impl Evaluator {
    pub fn new(
        config: AlertingConfig,
        pool: PgPool,
        clickhouse: &ClickHouseConfig,
        holder: String,
    ) -> Result<Self, EvaluatorError> {
        let delivery = DeliveryConfig {
            private_hosts: config.receiver_private_hosts.clone(),
            ..DeliveryConfig::default()
        };
        Self::with_delivery(config, pool, clickhouse, holder, delivery)
    }

    pub fn with_delivery(
        config: AlertingConfig,
        pool: PgPool,
        clickhouse: &ClickHouseConfig,
        holder: String,
        delivery: DeliveryConfig,
    ) -> Result<Self, EvaluatorError> {
        if config.interval_secs == 0 {
            return Err(EvaluatorError::Interval);
        }
        if config.concurrency == 0 {
            return Err(EvaluatorError::Concurrency);
        }
        let (dispatcher, outcomes) = Dispatcher::new(delivery, Some(pool.clone()))
            .map_err(|e| EvaluatorError::Delivery(e.to_string()))?;
        Ok(Self {
            store: AlertStore::new(pool.clone()),
            budgets: BudgetStore::new(pool.clone()),
            read: ReadModels::new(clickhouse),
            ch: tollgate_control::clickhouse::client(clickhouse),
            lease: Lease::new(LEASE_NAME, holder, config.lease_ttl()),
            pool,
            config,
            routing: Routing::new(dispatcher),
            outcomes,
            metrics: Arc::new(AlertsMetrics::default()),
        })
    }

    /// Update `metrics` (registered by the binary) rather than metrics
    /// of its own that nothing serves.
    pub fn with_metrics(mut self, metrics: Arc<AlertsMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Evaluate every interval until `shutdown`; the admin outbox relay
    /// runs beside it so transition events reach Kafka even when no
    /// `tollgate process` runs.
    pub async fn run(
        mut self,
        kafka: &KafkaConfig,
        shutdown: CancellationToken,
    ) -> Result<(), EvaluatorError> {
        let producer =
            EventProducer::new(kafka).map_err(|e| EvaluatorError::Kafka(e.to_string()))?;
        let relay =
            tokio::spawn(OutboxRelay::new(self.pool.clone(), producer).run(shutdown.clone()));
        let mut ticker = tokio::time::interval(Duration::from_secs(self.config.interval_secs));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut holding: Option<Fence> = None;
        let mut clock = Schedule::new();
        loop {
            let until_flush = self
                .routing
                .next_due()
                .and_then(|due| (due - Utc::now()).to_std().ok())
                .unwrap_or(Duration::from_secs(self.config.interval_secs));
            let scheduled = tokio::select! {
                _ = shutdown.cancelled() => break,
                at = ticker.tick() => at,
                Some(outcome) = self.outcomes.recv() => {
                    self.metrics.delivery(&outcome);
                    if let Some(fence) = &holding {
                        if let Err(err) = self.record_outcome(fence, &outcome).await {
                            warn!(%err, "recording a delivery outcome failed");
                        }
                    }
                    continue;
                }
                _ = tokio::time::sleep(until_flush), if holding.is_some() => {
                    if let Some(fence) = &holding {
                        if let Err(err) = self.flush(fence, Utc::now()).await {
                            warn!(%err, "sending due alert groups failed");
                        }
                    }
                    continue;
                }
            };
            // The round's time is its scheduled one, as Prometheus
            // evaluates: read at `Utc::now()` after the lease, rounds were
            // a few ms more or less than an interval apart, and a rule
            // pending for exactly `for_secs` waited a round more (120 s
            // for a `for` of 60, where the backtest fired at 60).
            let round_at = clock.wall_time(scheduled);
            match self.lease.acquire(&self.pool).await {
                Ok(fence) => {
                    if holding.as_ref().map(|f| f.token) != Some(fence.token) {
                        info!(holder = %fence.holder, token = fence.token, "alert evaluator lease acquired: this evaluator is active");
                        self.routing.reset();
                    }
                    self.metrics.lease_held(true);
                    let result = self.round(&fence, round_at).await;
                    self.metrics.round(result.is_ok(), Utc::now());
                    if let Err(err) = result {
                        warn!(%err, "alert evaluation round failed");
                    }
                    holding = Some(fence);
                }
                Err(LeaseError::Held { holder, .. }) => {
                    self.metrics.lease_held(false);
                    if holding.take().is_some() {
                        warn!(%holder, "alert evaluator lease lost: standing by");
                        self.routing.reset();
                    } else {
                        info!(%holder, "alert evaluator lease held by another replica: standing by");
                    }
                }
                // Whether the lease is still ours is unknown: `holding`
                // (and `lease_held`) stay as they were, and no round runs,
                // so `last_evaluation_timestamp_seconds` ages.
                Err(err) => warn!(%err, "alert evaluator lease unavailable"),
            }
        }
        if let Some(fence) = holding {
            if let Err(err) = self.lease.release(&self.pool, &fence).await {
                warn!(%err, "releasing the alert evaluator lease failed");
            }
            self.metrics.lease_held(false);
        }
        if let Err(err) = relay.await {
            warn!(%err, "admin outbox relay ended abnormally");
        }
        Ok(())
    }

    /// One round at `now`: evaluate every rule, publish the outbox, send
    /// the groups that are due.
    pub async fn round(&mut self, fence: &Fence, now: DateTime<Utc>) -> Result<(), EvaluatorError> {
        self.evaluate(fence, now).await?;
        self.publish(fence, now).await?;
        self.flush(fence, now).await
    }

    /// Measure every enabled rule at `now` (`concurrency` at a time) and
    /// step each; returns what each step did, in rule order.
    pub async fn evaluate(
        &mut self,
        fence: &Fence,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, Stepped)>, EvaluatorError> {
        let rules = self.store.enabled_rules().await?;
        let silences = self.silences(now).await?;
        let sources = SignalSources {
            read: &self.read,
            budgets: Some(&self.budgets),
        };
        let measured: Vec<(&AlertRule, Measurement)> = futures::stream::iter(&rules)
            .map(|rule| async move {
                let m = alert_signals::measure(sources, &rule.spec.org_id, &rule.spec.signal, now)
                    .await;
                Ok::<_, EvaluatorError>((rule, alert_signals::or_unknown(m)))
            })
            .buffered(self.config.concurrency)
            .try_collect()
            .await?;
        let stepped = state::step_rules(
            &self.pool,
            fence,
            &measured,
            &silences,
            &self.config.public_url,
            now,
        )
        .await?;
        let unknown = measured
            .iter()
            .filter(|(_, m)| m.observation == Observation::Unknown)
            .count();
        let firing = stepped
            .iter()
            .filter(|s| matches!(s.phase, Phase::Firing { .. }))
            .count();
        self.metrics.measured(measured.len(), unknown, firing);
        let mut out = Vec::with_capacity(stepped.len());
        for ((rule, m), stepped) in measured.iter().zip(stepped) {
            if let Phase::Firing { since, fired_at } = stepped.phase {
                if stepped.transition.is_none() {
                    self.remind_alertmanagers(rule, since, fired_at, m).await;
                }
            }
            out.push((rule.id, stepped));
        }
        Ok(out)
    }

    async fn silences(&self, now: DateTime<Utc>) -> Result<Vec<SilenceSpec>, EvaluatorError> {
        Ok(self
            .store
            .active_silences(now)
            .await?
            .into_iter()
            .map(|s| s.spec)
            .collect())
    }

    /// Alertmanager resolves a firing alert it has not heard of for its
    /// `resolve_timeout`: re-send firing alerts to Alertmanager receivers at
    /// every evaluation (same notification id; Alertmanager deduplicates by
    /// labels anyway). Tollgate's silences are for the direct receivers;
    /// Alertmanager has its own.
    async fn remind_alertmanagers(
        &mut self,
        rule: &AlertRule,
        since: DateTime<Utc>,
        fired_at: DateTime<Utc>,
        m: &Measurement,
    ) {
        let value = m.value.map(|v| v.to_string()).unwrap_or_default();
        let Some(note) = notification(
            rule,
            &Transition::Firing { since, fired_at },
            &value,
            &self.config.public_url,
            // The link explains why it fired, not the latest minute.
            fired_at,
        ) else {
            return;
        };
        for &id in &rule.spec.receivers {
            match self.store.receiver(Some(&rule.spec.org_id), id).await {
                Ok(r)
                    if r.kind
                        == tollgate_contract::alerts::receiver::ReceiverKind::Alertmanager =>
                {
                    self.routing
                        .remind(&routing::target(&r, None), note.clone())
                        .await;
                }
                Ok(_) => {}
                Err(err) => warn!(%err, receiver = id, "receiver unreadable"),
            }
        }
    }

    /// Publish every open outbox row: its ClickHouse timeline row (once
    /// marked, not again) and its notification to each receiver still owed
    /// it and not yet taken in by this process.
    pub async fn publish(
        &mut self,
        fence: &Fence,
        now: DateTime<Utc>,
    ) -> Result<(), EvaluatorError> {
        let rows = state::open_rows(&self.pool, PUBLISH_BATCH).await?;
        let unwritten: Vec<&state::OutboxRow> =
            rows.iter().filter(|r| r.row_written_at.is_none()).collect();
        let timeline_rows = unwritten
            .iter()
            .map(|r| TransitionRow::try_from(*r))
            .collect::<Result<Vec<_>, _>>()?;
        timeline::write(&self.ch, &timeline_rows).await?;
        if !unwritten.is_empty() {
            let ids: Vec<i64> = unwritten.iter().map(|r| r.id).collect();
            state::mark_written(&self.pool, fence, &ids).await?;
        }
        for row in &rows {
            let Some(note) = row.notification()? else {
                continue;
            };
            for &id in &row.pending_receivers {
                if self.routing.is_taken(row.id, id) {
                    continue;
                }
                let receiver = match self.store.receiver(Some(&row.org_id), id).await {
                    Ok(r) => r,
                    Err(err) => {
                        // A deleted receiver cannot be owed anything.
                        warn!(%err, receiver = id, "receiver unreadable; no longer owed this notification");
                        state::settle(&self.pool, fence, &[note.id], id).await?;
                        continue;
                    }
                };
                let secret = self.store.signing_secret(Some(&row.org_id), id).await?;
                let target = routing::target(&receiver, secret);
                self.routing
                    .take(row.id, &note, &receiver, target, now)
                    .await;
            }
        }
        Ok(())
    }

    /// Send the groups due at `now`; what left its group unsent is settled.
    pub async fn flush(&mut self, fence: &Fence, now: DateTime<Utc>) -> Result<(), EvaluatorError> {
        let silences = self.silences(now).await?;
        for (id, receiver) in self.routing.flush(now, &silences).await {
            state::settle(&self.pool, fence, &[id], receiver).await?;
        }
        Ok(())
    }

    /// A delivered (or dead-lettered: it is on the dead-letter list then)
    /// notification is no longer owed to that receiver.
    pub async fn record_outcome(
        &mut self,
        fence: &Fence,
        outcome: &DeliveryOutcome,
    ) -> Result<(), EvaluatorError> {
        let receiver = self.routing.settled(outcome);
        match &outcome.result {
            tollgate_processors::alerting::notify::DeliveryResult::Delivered { attempts } => {
                info!(receiver, delivery = %outcome.delivery_id, attempts, "notification delivered")
            }
            tollgate_processors::alerting::notify::DeliveryResult::DeadLettered {
                attempts,
                error,
            } => {
                warn!(receiver, delivery = %outcome.delivery_id, attempts, %error, "notification dead-lettered")
            }
        }
        state::settle(&self.pool, fence, &outcome.notification_ids, receiver).await
    }

    /// Wait for the next delivery outcome (tests drive the evaluator
    /// without [`Evaluator::run`]).
    pub async fn next_outcome(&mut self) -> Option<DeliveryOutcome> {
        self.outcomes.recv().await
    }

    /// Take or renew the lease (tests drive the evaluator without
    /// [`Evaluator::run`]).
    pub async fn acquire(&self) -> Result<Fence, EvaluatorError> {
        Ok(self.lease.acquire(&self.pool).await?)
    }
}

/// The wall-clock time of the ticker's scheduled instants: a fixed base
/// (an instant and its wall time) plus the monotonic time since, so
/// rounds are exactly an interval apart. Re-based when the wall clock
/// moved away from it by more than a second (an NTP step).
struct Schedule {
    base: (tokio::time::Instant, DateTime<Utc>),
}

impl Schedule {
    fn new() -> Self {
        Self {
            base: (tokio::time::Instant::now(), Utc::now()),
        }
    }

    fn wall_time(&mut self, scheduled: tokio::time::Instant) -> DateTime<Utc> {
        let now = (tokio::time::Instant::now(), Utc::now());
        let (at, rebase) = scheduled_wall_time(self.base, scheduled, now);
        if rebase {
            self.base = now;
        }
        at
    }
}

/// The wall time of `scheduled` from `base`, and whether the wall clock
/// (`now`, read with its instant) moved more than a second away from the
/// base since; then the answer is the wall time now.
fn scheduled_wall_time(
    base: (tokio::time::Instant, DateTime<Utc>),
    scheduled: tokio::time::Instant,
    now: (tokio::time::Instant, DateTime<Utc>),
) -> (DateTime<Utc>, bool) {
    let since = |from: tokio::time::Instant, to: tokio::time::Instant| {
        chrono::Duration::from_std(to.saturating_duration_since(from)).unwrap_or_default()
    };
    let at = base.1 + since(base.0, scheduled);
    let expected_now = base.1 + since(base.0, now.0);
    if (now.1 - expected_now).num_milliseconds().abs() > 1000 {
        return (now.1, true);
    }
    (at, false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod schedule_tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn rounds_are_exactly_an_interval_apart_whatever_their_lateness() {
        let t0 = tokio::time::Instant::now();
        let wall0 = Utc.with_ymd_and_hms(2026, 12, 7, 13, 34, 3).unwrap();
        let base = (t0, wall0);
        let minute = Duration::from_secs(60);
        // Served 3 ms late, then 0.1 ms late: still 60 s apart.
        let (first, _) = scheduled_wall_time(
            base,
            t0 + minute,
            (
                t0 + minute + Duration::from_millis(3),
                wall0 + chrono::Duration::milliseconds(60_003),
            ),
        );
        let (second, rebased) = scheduled_wall_time(
            base,
            t0 + 2 * minute,
            (
                t0 + 2 * minute,
                wall0 + chrono::Duration::milliseconds(120_000),
            ),
        );
        assert!(!rebased);
        assert_eq!(second - first, chrono::Duration::seconds(60));
        assert_eq!(first, wall0 + chrono::Duration::seconds(60));
        // The wall clock stepped 5 s: the base moves to now.
        let stepped = wall0 + chrono::Duration::seconds(185);
        let (at, rebased) = scheduled_wall_time(base, t0 + 3 * minute, (t0 + 3 * minute, stepped));
        assert!(rebased);
        assert_eq!(at, stepped);
    }
}
