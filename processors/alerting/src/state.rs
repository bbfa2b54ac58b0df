//! The evaluator's PostgreSQL side (migration `20261202000400_alert_state`):
//! each rule's phase in `alert_state`, each transition in `alert_outbox`,
//! both written in one transaction that first passes the lease's fence
//! check, so a replica that lost the lease cannot overwrite its
//! successor's state or record a transition twice.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use sqlx::PgPool;
use tollgate_contract::admin::{admin_event, KIND_ALERT_TRANSITION};
use tollgate_contract::alert_lifecycle::{Observation, Phase, Transition};
use tollgate_contract::alerts::SilenceSpec;
use tollgate_contract::notification::{fingerprint, Notification};
use tollgate_control::alerts::AlertRule;
use tollgate_control::lease::Fence;
use tollgate_control::outbox;
use tollgate_queries::alert_signals::Measurement;
use tracing::info;
use uuid::Uuid;

use crate::alert::{alert_labels, notification, phase_name, since_of};
use crate::config::EvaluatorError;

/// What one step of one rule did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stepped {
    pub phase: Phase,
    pub transition: Option<Transition>,
    /// A silence muted the transition when it happened (direct receivers
    /// get it once the silence ends, if it is still the alert's latest).
    pub silenced: bool,
}

/// One open row of `alert_outbox`: a transition not yet on the ClickHouse
/// timeline, or whose notification some receiver is still owed.
#[derive(Debug, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub event_id: Uuid,
    pub rule_id: i64,
    pub org_id: String,
    pub at: DateTime<Utc>,
    pub from_state: String,
    pub to_state: String,
    pub transition: serde_json::Value,
    pub notification: Option<serde_json::Value>,
    pub pending_receivers: Vec<i64>,
    pub silenced: bool,
    pub row_written_at: Option<DateTime<Utc>>,
}

/// Step every measured rule's stored phase at `now` and persist, in one
/// fenced transaction (one commit per evaluation, however many rules):
/// the new phases, and each transition with its admin event and the
/// receivers owed its notification.
pub async fn step_rules(
    pool: &PgPool,
    fence: &Fence,
    measured: &[(&AlertRule, Measurement)],
    silences: &[SilenceSpec],
    public_url: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Stepped>, EvaluatorError> {
    let ids: Vec<i64> = measured.iter().map(|(r, _)| r.id).collect();
    let mut tx = pool.begin().await?;
    fence.check(&mut tx).await?;
    type Stored = (i64, serde_json::Value, Option<serde_json::Value>);
    let stored: Vec<Stored> = sqlx::query_as(
        "SELECT rule_id, phase, rule_spec FROM alert_state \
         WHERE rule_id = ANY($1) ORDER BY rule_id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let stored: HashMap<i64, (serde_json::Value, Option<serde_json::Value>)> = stored
        .into_iter()
        .map(|(id, phase, spec)| (id, (phase, spec)))
        .collect();
    let mut out = Vec::with_capacity(measured.len());
    let mut fingerprints = Vec::with_capacity(measured.len());
    let mut phases = Vec::with_capacity(measured.len());
    let mut values = Vec::with_capacity(measured.len());
    for (rule, m) in measured {
        let labels = alert_labels(rule);
        let fingerprint = fingerprint(&labels);
        let mut phase: Phase = match stored.get(&rule.id) {
            Some((v, _)) => serde_json::from_value(v.clone())?,
            None => Phase::Inactive,
        };
        // The rule's labels changed while its alert was pending or firing
        // (a rename, a label edited): the alert of the old labels ends
        // (resolved, or cleared), and one of the new labels starts from
        // inactive, as Prometheus ends a series an edited rule no longer
        // gives. Receivers that key alerts by their labels (Alertmanager)
        // would otherwise hold the old one until it timed out.
        let old_spec = match stored.get(&rule.id) {
            Some((_, Some(spec))) if phase != Phase::Inactive => Some(spec),
            _ => None,
        };
        // A stored spec this build cannot read (written by another
        // version) is passed over: ending an alert of labels it cannot
        // know is not worth stopping every rule's evaluation.
        let old_rule = old_spec.and_then(|spec| {
            match serde_json::from_value::<tollgate_contract::alerts::RuleSpec>(spec.clone()) {
                Ok(spec) => Some(AlertRule {
                    spec,
                    ..(*rule).clone()
                }),
                Err(err) => {
                    tracing::warn!(rule_id = rule.id, %err, "stored rule unreadable; its labels are not compared");
                    None
                }
            }
        });
        if let Some(old_rule) = old_rule {
            if alert_labels(&old_rule) != labels {
                end_alert(
                    &mut tx,
                    &old_rule,
                    phase,
                    "the rule's labels changed",
                    public_url,
                    now,
                )
                .await?;
                phase = Phase::Inactive;
            }
        }
        let (next, transition) = phase.step(
            now,
            m.observation,
            Duration::seconds(i64::from(rule.spec.for_secs)),
        );
        let mut silenced = false;
        if let Some(t) = &transition {
            silenced = record_transition(
                &mut tx,
                rule,
                &labels,
                &fingerprint,
                &phase,
                t,
                m,
                silences,
                public_url,
                now,
            )
            .await?;
        }
        fingerprints.push(fingerprint);
        phases.push(serde_json::to_value(next)?);
        values.push(m.value.map(|v| v.to_string()));
        out.push(Stepped {
            phase: next,
            transition,
            silenced,
        });
    }
    let specs = measured
        .iter()
        .map(|(r, _)| serde_json::to_value(&r.spec))
        .collect::<Result<Vec<_>, _>>()?;
    sqlx::query(
        "INSERT INTO alert_state (rule_id, fingerprint, phase, evaluated_at, value, fence_token, rule_spec)
         SELECT s.rule_id, s.fingerprint, s.phase, $4, s.value, $5, s.rule_spec
         FROM UNNEST($1::bigint[], $2::text[], $3::jsonb[], $6::text[], $7::jsonb[])
           AS s(rule_id, fingerprint, phase, value, rule_spec)
         ON CONFLICT (rule_id) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
           phase = EXCLUDED.phase, evaluated_at = EXCLUDED.evaluated_at,
           value = EXCLUDED.value, fence_token = EXCLUDED.fence_token,
           rule_spec = EXCLUDED.rule_spec",
    )
    .bind(&ids)
    .bind(&fingerprints)
    .bind(&phases)
    .bind(now)
    .bind(fence.token)
    .bind(&values)
    .bind(&specs)
    .execute(&mut *tx)
    .await?;
    end_orphans(&mut tx, &ids, public_url, now).await?;
    tx.commit().await?;
    Ok(out)
}

/// End the alerts whose rule is no longer evaluated (deleted or disabled)
/// while pending or firing: a firing one resolves, a pending one clears,
/// with the rule as last evaluated, so receivers are not left with an alert
/// that fires forever.
async fn end_orphans(
    tx: &mut sqlx::PgConnection,
    evaluated: &[i64],
    public_url: &str,
    now: DateTime<Utc>,
) -> Result<(), EvaluatorError> {
    let orphans: Vec<(i64, serde_json::Value, serde_json::Value)> = sqlx::query_as(
        "SELECT rule_id, phase, rule_spec FROM alert_state
         WHERE NOT (rule_id = ANY($1)) AND phase->>'phase' <> 'inactive'
         ORDER BY rule_id FOR UPDATE",
    )
    .bind(evaluated)
    .fetch_all(&mut *tx)
    .await?;
    for (rule_id, phase, spec) in orphans {
        let phase: Phase = serde_json::from_value(phase)?;
        let rule = AlertRule {
            id: rule_id,
            version: 0,
            created_at: now,
            updated_at: now,
            spec: serde_json::from_value(spec)?,
        };
        let next = end_alert(
            &mut *tx,
            &rule,
            phase,
            "the rule was deleted or disabled",
            public_url,
            now,
        )
        .await?;
        sqlx::query("UPDATE alert_state SET phase = $2, evaluated_at = $3 WHERE rule_id = $1")
            .bind(rule_id)
            .bind(serde_json::to_value(next)?)
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// End `rule`'s alert in `phase` at `now`, under the rule's labels: a
/// firing one resolves, a pending one clears (recorded, and notified as a
/// transition is, silences aside: the end of an alert is owed to every
/// receiver that heard of it). Returns the phase after it (inactive).
async fn end_alert(
    tx: &mut sqlx::PgConnection,
    rule: &AlertRule,
    phase: Phase,
    why: &str,
    public_url: &str,
    now: DateTime<Utc>,
) -> Result<Phase, EvaluatorError> {
    let gone = Measurement {
        value: None,
        observation: Observation::Clear,
        detail: why.into(),
    };
    let (next, transition) = phase.step(now, Observation::Clear, Duration::zero());
    if let Some(t) = &transition {
        let labels = alert_labels(rule);
        let fingerprint = fingerprint(&labels);
        record_transition(
            tx,
            rule,
            &labels,
            &fingerprint,
            &phase,
            t,
            &gone,
            &[],
            public_url,
            now,
        )
        .await?;
    }
    Ok(next)
}

/// Record one transition in the outbox with its admin event; returns
/// whether a silence muted it when it happened.
#[allow(clippy::too_many_arguments)]
async fn record_transition(
    tx: &mut sqlx::PgConnection,
    rule: &AlertRule,
    labels: &std::collections::BTreeMap<String, String>,
    fingerprint: &str,
    phase: &Phase,
    t: &Transition,
    m: &Measurement,
    silences: &[SilenceSpec],
    public_url: &str,
    now: DateTime<Utc>,
) -> Result<bool, EvaluatorError> {
    let value = m.value.map(|v| v.to_string()).unwrap_or_default();
    let note = notification(rule, t, &value, public_url, now);
    let silenced = note.is_some()
        && silences
            .iter()
            .any(|s| s.mutes(&rule.spec.org_id, labels, now));
    // Owed to every receiver even when silenced now: silences apply
    // when a direct receiver's group is sent (so an expiry resumes),
    // and Alertmanager receivers get everything (teams silence there).
    let receivers: Vec<i64> = match &note {
        Some(_) => rule.spec.receivers.clone(),
        None => Vec::new(),
    };
    let event = admin_event(
        KIND_ALERT_TRANSITION,
        "alert-evaluator",
        json!({
            "alert": {
                "rule_id": rule.id,
                "rule_name": rule.spec.name,
                "org_id": rule.spec.org_id,
                "fingerprint": fingerprint,
                "from": phase_name(phase),
                "to": t.to_state(),
                "at": now,
                "value": value,
                "since": since_of(t),
                "notification_id": note.as_ref().map(|n| n.id),
                "silenced": silenced,
            }
        }),
    );
    outbox::enqueue(&mut *tx, &event).await?;
    sqlx::query(
        "INSERT INTO alert_outbox (event_id, rule_id, org_id, at, from_state, to_state,
           transition, notification, pending_receivers, silenced)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(event.event_id)
    .bind(rule.id)
    .bind(&rule.spec.org_id)
    .bind(now)
    .bind(phase_name(phase))
    .bind(t.to_state())
    .bind(json!({ "transition": t, "value": value, "rule_name": rule.spec.name }))
    .bind(note.as_ref().map(serde_json::to_value).transpose()?)
    .bind(&receivers)
    .bind(silenced)
    .execute(&mut *tx)
    .await?;
    info!(
        rule = rule.id,
        from = phase_name(phase),
        to = t.to_state(),
        silenced,
        "alert transition"
    );
    Ok(silenced)
}

/// The open outbox rows, oldest first.
pub async fn open_rows(pool: &PgPool, limit: i64) -> Result<Vec<OutboxRow>, EvaluatorError> {
    Ok(sqlx::query_as(
        "SELECT id, event_id, rule_id, org_id, at, from_state, to_state, transition,
                notification, pending_receivers, silenced, row_written_at
         FROM alert_outbox
         WHERE row_written_at IS NULL OR cardinality(pending_receivers) > 0
         ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Mark rows as on the ClickHouse timeline.
pub async fn mark_written(pool: &PgPool, fence: &Fence, ids: &[i64]) -> Result<(), EvaluatorError> {
    let mut tx = pool.begin().await?;
    fence.check(&mut tx).await?;
    sqlx::query("UPDATE alert_outbox SET row_written_at = now() WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// `receiver` is owed none of these notifications any more (delivered,
/// dead-lettered, muted at flush, or the receiver is gone).
pub async fn settle(
    pool: &PgPool,
    fence: &Fence,
    notifications: &[Uuid],
    receiver: i64,
) -> Result<(), EvaluatorError> {
    let ids: Vec<String> = notifications.iter().map(Uuid::to_string).collect();
    let mut tx = pool.begin().await?;
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

impl OutboxRow {
    pub fn notification(&self) -> Result<Option<Notification>, serde_json::Error> {
        self.notification
            .clone()
            .map(serde_json::from_value)
            .transpose()
    }

    pub fn transition(&self) -> Result<Transition, serde_json::Error> {
        serde_json::from_value(self.transition["transition"].clone())
    }

    pub fn rule_name(&self) -> &str {
        self.transition["rule_name"].as_str().unwrap_or_default()
    }

    pub fn value(&self) -> &str {
        self.transition["value"].as_str().unwrap_or_default()
    }
}
