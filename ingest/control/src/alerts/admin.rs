//! Changing alerting state: rules and receivers created, replaced (naming
//! the version read: optimistic concurrency) and deleted; silences created
//! and expired. Each change commits with its `admin.*` event in the outbox
//! (`admin.alert_rule.set|deleted`, `admin.silence.set|expired`,
//! `admin.receiver.set|deleted`), in the org's audit chain. Events never
//! carry a receiver's signing secret or the path of its URL (a Slack
//! webhook's path is itself a credential): only `url_host`.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgConnection;
use tollgate_contract::admin::{
    admin_event, KIND_ALERT_RULE_DELETED, KIND_ALERT_RULE_SET, KIND_RECEIVER_DELETED,
    KIND_RECEIVER_SET, KIND_SILENCE_EXPIRED, KIND_SILENCE_SET,
};
use tollgate_contract::alerts::receiver::url_host;
use tollgate_contract::alerts::rule::{Signal, SpendSignal, SpendSubject};
use tollgate_contract::alerts::{ReceiverSpec, RuleSpec, SilenceSpec};
use tollgate_contract::{Event, Rejection};

use super::{
    AlertRule, AlertStore, AlertStoreError, Receiver, ReceiverRow, RuleRow, Silence, SilenceRow,
    RECEIVER_COLUMNS, RULE_COLUMNS, SILENCE_COLUMNS,
};
use crate::budgets::budget_by_id;
use crate::outbox::{enqueue, Enqueued};

/// A change and the outbox row of its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed<T> {
    pub value: T,
    pub event: Enqueued,
}

/// A rule as its events show it.
pub fn rule_json(rule: &AlertRule) -> Value {
    serde_json::to_value(rule).unwrap_or(Value::Null)
}

/// A receiver as its events show it: no secret, no URL path.
pub fn receiver_event_json(r: &Receiver) -> Value {
    json!({
        "receiver_id": r.id,
        "org_id": r.org_id,
        "name": r.name,
        "kind": r.kind,
        "url_host": url_host(&r.url),
        "has_signing_secret": r.has_signing_secret,
        "group_by": r.group_by,
        "group_wait_secs": r.group_wait_secs,
        "group_interval_secs": r.group_interval_secs,
        "repeat_interval_secs": r.repeat_interval_secs,
        "version": r.version,
    })
}

/// A silence as its events show it.
pub fn silence_json(s: &Silence) -> Value {
    serde_json::to_value(s).unwrap_or(Value::Null)
}

/// The event of a change to `org`'s alerting: in that org's audit chain.
fn org_event(kind: &'static str, org: &str, actor: &str, payload: Value) -> Event {
    let mut event = admin_event(kind, actor, payload);
    event.org_id = org.to_string();
    event
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

/// The current version of `table` row `id` of `org`, if it exists.
async fn current_version(
    conn: &mut PgConnection,
    table: &'static str,
    org: Option<&str>,
    id: i64,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT version FROM {table} WHERE id = $1 AND ($2::text IS NULL OR org_id = $2)"
    )))
    .bind(id)
    .bind(org)
    .fetch_optional(conn)
    .await
}

/// Why a versioned write of row `id` matched nothing: gone, or changed.
async fn missed(
    conn: &mut PgConnection,
    table: &'static str,
    what: &'static str,
    org: Option<&str>,
    id: i64,
    expected: i64,
) -> AlertStoreError {
    match current_version(conn, table, org, id).await {
        Ok(Some(current)) => AlertStoreError::Conflict {
            what,
            id,
            expected,
            current,
        },
        Ok(None) => AlertStoreError::NotFound { what, id },
        Err(e) => e.into(),
    }
}

/// Whether a rule of `org` may read budget `id` (`budget`: the stored one,
/// if any): only a budget of its org ([`crate::budgets::Budget::belongs_to`]);
/// another org's, or none, is refused naming `signal.budget_id`. The rule
/// store's check and the backtest's.
pub fn rule_may_read(
    budget: Option<&crate::budgets::Budget>,
    id: i64,
    org: &str,
) -> Result<(), Rejection> {
    match budget {
        Some(budget) if budget.belongs_to(org) => Ok(()),
        _ => Err(Rejection::new(
            "signal.budget_id",
            format!("no budget {id} in org {org}"),
        )),
    }
}

impl AlertStore {
    /// Every receiver of `spec` must be one of its org's.
    async fn check_receivers(
        conn: &mut PgConnection,
        spec: &RuleSpec,
    ) -> Result<(), AlertStoreError> {
        if spec.receivers.is_empty() {
            return Ok(());
        }
        let known: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM alert_receivers WHERE org_id = $1 AND id = ANY($2)")
                .bind(&spec.org_id)
                .bind(&spec.receivers)
                .fetch_all(conn)
                .await?;
        for (i, id) in spec.receivers.iter().enumerate() {
            if !known.contains(id) {
                return Err(Rejection::new(
                    format!("receivers[{i}]"),
                    format!("no receiver {id} in org {}", spec.org_id),
                )
                .into());
            }
        }
        Ok(())
    }

    /// The budget `spec`'s signal reads, if any, must be its org's
    /// ([`crate::budgets::Budget::belongs_to`]): a rule must not read
    /// another org's spend.
    /// `spec` with a spend signal on a key naming the key by its id, as
    /// events do, whichever of id or prefix was given
    /// ([`crate::keys::KeyStore::subject_id`]): a rule on the prefix would
    /// never fire. Refused naming `signal.subject_id` when the org has no
    /// such key.
    pub async fn naming_key(&self, spec: &RuleSpec) -> Result<RuleSpec, AlertStoreError> {
        let mut spec = spec.clone();
        let org = spec.org_id.clone();
        if let Signal::Spend(SpendSignal {
            subject_kind: SpendSubject::Key,
            subject_id,
            ..
        }) = &mut spec.signal
        {
            crate::keys::KeyStore::new(self.pool().clone())
                .name_by_id(subject_id, Some(&org))
                .await?
                .map_err(|reason| Rejection::new("signal.subject_id", reason))?;
        }
        Ok(spec)
    }

    async fn check_budget(conn: &mut PgConnection, spec: &RuleSpec) -> Result<(), AlertStoreError> {
        let Some(id) = spec.signal.budget_id() else {
            return Ok(());
        };
        let budget = budget_by_id(conn, id).await?;
        Ok(rule_may_read(budget.as_ref(), id, &spec.org_id)?)
    }

    /// Create a rule (validated by the caller: [`RuleSpec::validate`]).
    pub async fn create_rule(
        &self,
        spec: &RuleSpec,
        actor: &str,
    ) -> Result<Changed<AlertRule>, AlertStoreError> {
        let spec = &self.naming_key(spec).await?;
        let mut tx = self.pool().begin().await?;
        Self::check_receivers(&mut tx, spec).await?;
        Self::check_budget(&mut tx, spec).await?;
        let row: RuleRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO alert_rules (org_id, name, enabled, spec) VALUES ($1, $2, $3, $4) \
             RETURNING {RULE_COLUMNS}"
        )))
        .bind(&spec.org_id)
        .bind(&spec.name)
        .bind(spec.enabled)
        .bind(sqlx::types::Json(spec))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| name_taken(e, "rule", spec.org_id.as_str(), spec.name.as_str()))?;
        let rule = row.into_rule()?;
        let payload = json!({ "rule": rule_json(&rule), "previous": Value::Null });
        commit(
            tx,
            &org_event(KIND_ALERT_RULE_SET, &rule.spec.org_id, actor, payload),
            rule,
        )
        .await
    }

    /// Replace rule `id` of `org` with `spec`, if it is still at
    /// `expected_version` ([`AlertStoreError::Conflict`] otherwise).
    pub async fn update_rule(
        &self,
        org: &str,
        id: i64,
        expected_version: i64,
        spec: &RuleSpec,
        actor: &str,
    ) -> Result<Changed<AlertRule>, AlertStoreError> {
        if spec.org_id != org {
            return Err(Rejection::new("org_id", "a rule cannot move to another org").into());
        }
        let spec = &self.naming_key(spec).await?;
        let mut tx = self.pool().begin().await?;
        let previous: Option<RuleRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RULE_COLUMNS} FROM alert_rules WHERE id = $1 AND org_id = $2 AND version = $3 FOR UPDATE"
        )))
        .bind(id)
        .bind(org)
        .bind(expected_version)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(previous) = previous else {
            return Err(missed(
                &mut tx,
                "alert_rules",
                "rule",
                Some(org),
                id,
                expected_version,
            )
            .await);
        };
        Self::check_receivers(&mut tx, spec).await?;
        Self::check_budget(&mut tx, spec).await?;
        let row: RuleRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE alert_rules SET name = $3, enabled = $4, spec = $5, version = version + 1, \
             updated_at = now() WHERE id = $1 AND org_id = $2 RETURNING {RULE_COLUMNS}"
        )))
        .bind(id)
        .bind(org)
        .bind(&spec.name)
        .bind(spec.enabled)
        .bind(sqlx::types::Json(spec))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| name_taken(e, "rule", org, spec.name.as_str()))?;
        let rule = row.into_rule()?;
        let previous = previous.into_rule()?;
        let payload = json!({ "rule": rule_json(&rule), "previous": rule_json(&previous) });
        commit(
            tx,
            &org_event(KIND_ALERT_RULE_SET, org, actor, payload),
            rule,
        )
        .await
    }

    /// Delete rule `id` of `org` (only if at `expected_version`, when given).
    pub async fn delete_rule(
        &self,
        org: Option<&str>,
        id: i64,
        expected_version: Option<i64>,
        actor: &str,
    ) -> Result<Changed<AlertRule>, AlertStoreError> {
        let mut tx = self.pool().begin().await?;
        let row: Option<RuleRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "DELETE FROM alert_rules WHERE id = $1 AND ($2::text IS NULL OR org_id = $2) \
             AND ($3::bigint IS NULL OR version = $3) RETURNING {RULE_COLUMNS}"
        )))
        .bind(id)
        .bind(org)
        .bind(expected_version)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(match expected_version {
                Some(v) => missed(&mut tx, "alert_rules", "rule", org, id, v).await,
                None => AlertStoreError::NotFound { what: "rule", id },
            });
        };
        let rule = row.into_rule()?;
        let payload = json!({ "rule": rule_json(&rule) });
        commit(
            tx,
            &org_event(KIND_ALERT_RULE_DELETED, &rule.spec.org_id, actor, payload),
            rule,
        )
        .await
    }

    /// Create a silence (validated by the caller: [`SilenceSpec::validate`]).
    pub async fn create_silence(
        &self,
        spec: &SilenceSpec,
        actor: &str,
    ) -> Result<Changed<Silence>, AlertStoreError> {
        let mut tx = self.pool().begin().await?;
        let row: SilenceRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO alert_silences (org_id, matchers, starts_at, ends_at, created_by, comment) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {SILENCE_COLUMNS}"
        )))
        .bind(&spec.org_id)
        .bind(sqlx::types::Json(&spec.matchers))
        .bind(spec.starts_at)
        .bind(spec.ends_at)
        .bind(actor)
        .bind(&spec.comment)
        .fetch_one(&mut *tx)
        .await?;
        let silence = row.into_silence()?;
        let payload = json!({ "silence": silence_json(&silence) });
        commit(
            tx,
            &org_event(KIND_SILENCE_SET, &spec.org_id, actor, payload),
            silence,
        )
        .await
    }

    /// End silence `id` of `org` at `now` (its `ends_at` becomes `now`).
    pub async fn expire_silence(
        &self,
        org: Option<&str>,
        id: i64,
        now: DateTime<Utc>,
        actor: &str,
    ) -> Result<Changed<Silence>, AlertStoreError> {
        let mut tx = self.pool().begin().await?;
        let current: Option<SilenceRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SILENCE_COLUMNS} FROM alert_silences WHERE id = $1 AND ($2::text IS NULL OR org_id = $2) FOR UPDATE"
        )))
        .bind(id)
        .bind(org)
        .fetch_optional(&mut *tx)
        .await?;
        let current = current
            .ok_or(AlertStoreError::NotFound {
                what: "silence",
                id,
            })?
            .into_silence()?;
        if current.spec.ends_at <= now {
            return Err(AlertStoreError::AlreadyExpired {
                id,
                ends_at: current.spec.ends_at,
            });
        }
        // A silence that has not started yet ends where it would start
        // (ends_at > starts_at holds by moving both).
        let row: SilenceRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE alert_silences SET starts_at = LEAST(starts_at, $3 - interval '1 millisecond'), \
             ends_at = $3, expired_by = $4, version = version + 1, updated_at = now() \
             WHERE id = $1 AND ($2::text IS NULL OR org_id = $2) RETURNING {SILENCE_COLUMNS}"
        )))
        .bind(id)
        .bind(org)
        .bind(now)
        .bind(actor)
        .fetch_one(&mut *tx)
        .await?;
        let silence = row.into_silence()?;
        let payload = json!({ "silence": silence_json(&silence) });
        commit(
            tx,
            &org_event(KIND_SILENCE_EXPIRED, &silence.spec.org_id, actor, payload),
            silence,
        )
        .await
    }

    /// Create a receiver (validated by the caller: [`ReceiverSpec::validate`];
    /// where it sends is judged here, [`super::reach::check_receiver_url`]).
    pub async fn create_receiver(
        &self,
        spec: &ReceiverSpec,
        actor: &str,
    ) -> Result<Changed<Receiver>, AlertStoreError> {
        super::reach::check_receiver_url(&spec.url, self.private_hosts()).await?;
        let mut tx = self.pool().begin().await?;
        let row: ReceiverRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO alert_receivers (org_id, name, kind, url, signing_secret, group_by, \
             group_wait_secs, group_interval_secs, repeat_interval_secs) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {RECEIVER_COLUMNS}"
        )))
        .bind(&spec.org_id)
        .bind(&spec.name)
        .bind(spec.kind.name())
        .bind(&spec.url)
        .bind(&spec.signing_secret)
        .bind(&spec.group_by)
        .bind(secs(spec.group_wait_secs))
        .bind(secs(spec.group_interval_secs))
        .bind(secs(spec.repeat_interval_secs))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| name_taken(e, "receiver", spec.org_id.as_str(), spec.name.as_str()))?;
        let receiver = row.into_receiver()?;
        let payload =
            json!({ "receiver": receiver_event_json(&receiver), "previous": Value::Null });
        commit(
            tx,
            &org_event(KIND_RECEIVER_SET, &spec.org_id, actor, payload),
            receiver,
        )
        .await
    }

    /// Replace receiver `id` of `org` with `spec` if still at
    /// `expected_version`. The secret is write-only, so a webhook's update
    /// carries it again.
    pub async fn update_receiver(
        &self,
        org: &str,
        id: i64,
        expected_version: i64,
        spec: &ReceiverSpec,
        actor: &str,
    ) -> Result<Changed<Receiver>, AlertStoreError> {
        if spec.org_id != org {
            return Err(Rejection::new("org_id", "a receiver cannot move to another org").into());
        }
        let mut tx = self.pool().begin().await?;
        let previous: Option<ReceiverRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RECEIVER_COLUMNS} FROM alert_receivers \
             WHERE id = $1 AND org_id = $2 AND version = $3 FOR UPDATE"
        )))
        .bind(id)
        .bind(org)
        .bind(expected_version)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(previous) = previous else {
            return Err(missed(
                &mut tx,
                "alert_receivers",
                "receiver",
                Some(org),
                id,
                expected_version,
            )
            .await);
        };
        // Judged again only when it moves: a receiver saved before (or a
        // name's addresses since) does not stop a rename.
        if previous.url != spec.url {
            super::reach::check_receiver_url(&spec.url, self.private_hosts()).await?;
        }
        let row: ReceiverRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE alert_receivers SET name = $3, kind = $4, url = $5, signing_secret = $6, \
             group_by = $7, group_wait_secs = $8, group_interval_secs = $9, \
             repeat_interval_secs = $10, version = version + 1, updated_at = now() \
             WHERE id = $1 AND org_id = $2 RETURNING {RECEIVER_COLUMNS}"
        )))
        .bind(id)
        .bind(org)
        .bind(&spec.name)
        .bind(spec.kind.name())
        .bind(&spec.url)
        .bind(&spec.signing_secret)
        .bind(&spec.group_by)
        .bind(secs(spec.group_wait_secs))
        .bind(secs(spec.group_interval_secs))
        .bind(secs(spec.repeat_interval_secs))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| name_taken(e, "receiver", org, spec.name.as_str()))?;
        let receiver = row.into_receiver()?;
        let previous = previous.into_receiver()?;
        let payload = json!({
            "receiver": receiver_event_json(&receiver),
            "previous": receiver_event_json(&previous),
        });
        commit(
            tx,
            &org_event(KIND_RECEIVER_SET, org, actor, payload),
            receiver,
        )
        .await
    }

    /// Delete receiver `id` of `org` (only if at `expected_version`, when
    /// given); refused while a rule still sends to it.
    pub async fn delete_receiver(
        &self,
        org: Option<&str>,
        id: i64,
        expected_version: Option<i64>,
        actor: &str,
    ) -> Result<Changed<Receiver>, AlertStoreError> {
        let mut tx = self.pool().begin().await?;
        let owner: Option<String> = sqlx::query_scalar(
            "SELECT org_id FROM alert_receivers WHERE id = $1 AND ($2::text IS NULL OR org_id = $2) FOR UPDATE",
        )
        .bind(id)
        .bind(org)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(owner) = owner else {
            return Err(AlertStoreError::NotFound {
                what: "receiver",
                id,
            });
        };
        // Lock the rules that use it, so none is saved with it meanwhile.
        let rules: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM alert_rules WHERE org_id = $1 AND spec->'receivers' @> to_jsonb($2::bigint) \
             ORDER BY id FOR UPDATE",
        )
        .bind(&owner)
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        if !rules.is_empty() {
            return Err(AlertStoreError::InUse { id, rules });
        }
        let row: Option<ReceiverRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "DELETE FROM alert_receivers WHERE id = $1 AND ($2::text IS NULL OR org_id = $2) \
             AND ($3::bigint IS NULL OR version = $3) RETURNING {RECEIVER_COLUMNS}"
        )))
        .bind(id)
        .bind(org)
        .bind(expected_version)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(match expected_version {
                Some(v) => missed(&mut tx, "alert_receivers", "receiver", org, id, v).await,
                None => AlertStoreError::NotFound {
                    what: "receiver",
                    id,
                },
            });
        };
        let receiver = row.into_receiver()?;
        let payload = json!({ "receiver": receiver_event_json(&receiver) });
        commit(
            tx,
            &org_event(KIND_RECEIVER_DELETED, &receiver.org_id, actor, payload),
            receiver,
        )
        .await
    }
}

/// Put `event` in the outbox and commit `tx` with it: the change and its
/// event are one transaction.
async fn commit<T>(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    event: &Event,
    value: T,
) -> Result<Changed<T>, AlertStoreError> {
    let event = enqueue(&mut tx, event).await?;
    tx.commit().await?;
    Ok(Changed { value, event })
}

/// Intervals are validated to fit; PostgreSQL stores them as INTEGER.
fn secs(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn name_taken(err: sqlx::Error, what: &'static str, org: &str, name: &str) -> AlertStoreError {
    if is_unique_violation(&err) {
        AlertStoreError::NameTaken {
            what,
            org: org.to_string(),
            name: name.to_string(),
        }
    } else {
        err.into()
    }
}
