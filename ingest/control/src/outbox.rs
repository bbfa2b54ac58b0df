//! The transactional outbox of control-plane events (`admin_outbox`, see
//! `migrations/postgres/*_admin_outbox.sql`). Owns putting an `admin.*`
//! event in the outbox inside the caller's transaction ([`enqueue`]), and the
//! [`OutboxRelay`] that produces unpublished rows to the events topic.
//!
//! A price or budget change and its event commit together or not at all, so
//! the stored change and the audit trail cannot diverge when Kafka refuses:
//! the row waits until a relay gets it onto Kafka. Delivery is at least once:
//! a relay that dies between Kafka's acknowledgement and its `published_at`
//! update publishes the row again, as the same event (same `event_id`).
//!
//! Several relays may run (every `tollgate process`, `tollgate api`, and each
//! CLI change drains once). A relay locks a batch with `FOR UPDATE SKIP
//! LOCKED`, so no row is produced by two relays at once, and it publishes
//! only its rows below the first pending row it does not hold (concurrent
//! scans interleave, so another relay's row can sit below or between its
//! own), so rows reach Kafka in id order: all admin events share one message key
//! (`_tollgate`), hence one partition, and the idempotent producer keeps
//! their order within it.

use std::time::Duration;

use crate::kafka::EventProducer;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tollgate_contract::Event;
use uuid::Uuid;

/// PostgreSQL channel announcing new outbox rows (sent in the inserting
/// transaction, so delivered on commit).
pub const OUTBOX_CHANNEL: &str = "tollgate_admin_outbox";

/// How often a relay looks for rows without being notified (a missed
/// notification, a listener that cannot connect, a failed attempt).
pub const POLL_EVERY: Duration = Duration::from_secs(5);

/// Rows locked and produced per transaction.
const BATCH: i64 = 100;

/// Where an event went in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    pub outbox_id: i64,
    pub event_id: Uuid,
}

/// Why the outbox could not be read or published.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// PostgreSQL failed; nothing was marked published.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// Kafka did not acknowledge some rows; they stay in the outbox and are
    /// retried. `published` rows of the same drain did get through.
    #[error("{pending} admin event(s) not produced ({published} published): {reason}")]
    Kafka {
        published: usize,
        pending: usize,
        reason: String,
    },
}

impl OutboxError {
    /// Whose fault: always a service we depend on; retrying helps.
    pub fn fault(&self) -> tollgate_contract::Fault {
        tollgate_contract::Fault::External
    }
}

/// Put `event` in the outbox as part of the caller's transaction (`conn` is
/// normally `&mut *tx`), and notify the relays on commit.
pub async fn enqueue(conn: &mut PgConnection, event: &Event) -> sqlx::Result<Enqueued> {
    let json = serde_json::to_string(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let outbox_id: i64 =
        sqlx::query_scalar("INSERT INTO admin_outbox (event) VALUES ($1::jsonb) RETURNING id")
            .bind(json)
            .fetch_one(&mut *conn)
            .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(OUTBOX_CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(Enqueued {
        outbox_id,
        event_id: event.event_id,
    })
}

/// Put `event` in the outbox in a transaction of its own: for changes that
/// are not in PostgreSQL (a repricing run writes ClickHouse), so at least the
/// record of the change survives a Kafka outage.
pub async fn enqueue_alone(pool: &PgPool, event: &Event) -> sqlx::Result<Enqueued> {
    let mut tx = pool.begin().await?;
    let enqueued = enqueue(&mut tx, event).await?;
    tx.commit().await?;
    Ok(enqueued)
}

/// Whether every row of `ids` has been published.
pub async fn all_published(pool: &PgPool, ids: &[i64]) -> sqlx::Result<bool> {
    let unpublished: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM admin_outbox WHERE id = ANY($1) AND published_at IS NULL",
    )
    .bind(ids)
    .fetch_one(pool)
    .await?;
    Ok(unpublished == 0)
}

/// One row that is not on Kafka (yet), for `tollgate outbox status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Unpublished {
    pub id: i64,
    pub kind: String,
    pub event_id: String,
    pub created_at: DateTime<Utc>,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// Set aside: the row can never be produced (see the migration).
    pub abandoned_at: Option<DateTime<Utc>>,
}

/// Every unpublished row (pending or abandoned), oldest first.
pub async fn unpublished(pool: &PgPool) -> sqlx::Result<Vec<Unpublished>> {
    sqlx::query_as(
        "SELECT id, coalesce(event->>'kind', '') AS kind, coalesce(event->>'event_id', '') AS event_id, \
         created_at, attempts, last_error, abandoned_at \
         FROM admin_outbox WHERE published_at IS NULL ORDER BY id",
    )
    .fetch_all(pool)
    .await
}

/// What one drain did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub published: usize,
    /// Rows set aside because they are not valid events.
    pub abandoned: usize,
    /// Another relay holds earlier rows; it publishes them and what follows.
    pub busy: bool,
}

/// Produces outbox rows to the events topic.
#[derive(Clone)]
pub struct OutboxRelay {
    pool: PgPool,
    producer: EventProducer,
}

impl OutboxRelay {
    pub fn new(pool: PgPool, producer: EventProducer) -> Self {
        Self { pool, producer }
    }

    /// Publish pending rows in id order until none is left, another relay
    /// is ahead, or Kafka refuses (an error; the refused rows stay pending).
    pub async fn drain(&self) -> Result<Drained, OutboxError> {
        let mut total = Drained::default();
        loop {
            let (batch, taken) = self.publish_batch().await.map_err(|err| match err {
                OutboxError::Kafka {
                    published,
                    pending,
                    reason,
                } => OutboxError::Kafka {
                    published: published + total.published,
                    pending,
                    reason,
                },
                other => other,
            })?;
            total.published += batch.published;
            total.abandoned += batch.abandoned;
            total.busy = batch.busy;
            if batch.busy || taken < BATCH as usize {
                return Ok(total);
            }
        }
    }

    /// Lock, produce and mark one batch; returns what it did and how many
    /// rows it locked.
    async fn publish_batch(&self) -> Result<(Drained, usize), OutboxError> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, event::text FROM admin_outbox \
             WHERE published_at IS NULL AND abandoned_at IS NULL \
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        // Rows another relay holds (locked, so skipped above) may lie below
        // ours or between them: concurrent `SKIP LOCKED` scans interleave,
        // so a batch need not be contiguous. Publish only our rows below
        // the first pending row that is not ours, so nothing overtakes it;
        // with none of ours below it, another relay is ahead.
        let mine: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
        let others: Option<i64> = sqlx::query_scalar(
            "SELECT min(id) FROM admin_outbox \
             WHERE published_at IS NULL AND abandoned_at IS NULL AND NOT (id = ANY($1))",
        )
        .bind(&mine)
        .fetch_one(&mut *tx)
        .await?;
        let mut rows = rows;
        let before_others = |id: i64| others.is_none_or(|other| id < other);
        let cut = rows.iter().any(|(id, _)| !before_others(*id));
        rows.retain(|(id, _)| before_others(*id));
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok((
                Drained {
                    busy: others.is_some(),
                    ..Drained::default()
                },
                0,
            ));
        }
        let taken = rows.len();
        let mut ids = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        let mut abandoned: Vec<(i64, String)> = Vec::new();
        for (id, text) in rows {
            match serde_json::from_str::<Event>(&text) {
                Ok(event) => {
                    ids.push(id);
                    events.push(event);
                }
                Err(err) => {
                    tracing::error!(outbox_id = id, %err, "outbox row is not a valid event; set aside");
                    abandoned.push((id, format!("not a valid event: {err}")));
                }
            }
        }
        let results = self.producer.send_batch(&events).await;
        let mut published = Vec::new();
        let mut failed = Vec::new();
        let mut reason = None;
        for (id, result) in ids.into_iter().zip(results) {
            match result {
                Ok(_) => published.push(id),
                Err(err) => {
                    failed.push(id);
                    reason.get_or_insert(err.reason);
                }
            }
        }
        sqlx::query("UPDATE admin_outbox SET published_at = now() WHERE id = ANY($1)")
            .bind(&published)
            .execute(&mut *tx)
            .await?;
        if let Some(reason) = &reason {
            sqlx::query(
                "UPDATE admin_outbox SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1)",
            )
            .bind(&failed)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        }
        for (id, why) in &abandoned {
            sqlx::query(
                "UPDATE admin_outbox SET abandoned_at = now(), attempts = attempts + 1, last_error = $2 \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(why)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if !published.is_empty() {
            tracing::info!(
                count = published.len(),
                topic = %self.producer.topic(),
                "admin events published from the outbox"
            );
        }
        match reason {
            Some(reason) => Err(OutboxError::Kafka {
                published: published.len(),
                pending: failed.len(),
                reason,
            }),
            None => Ok((
                Drained {
                    published: published.len(),
                    abandoned: abandoned.len(),
                    busy: cut,
                },
                taken,
            )),
        }
    }

    /// Drain at start, whenever a change is notified on [`OUTBOX_CHANNEL`],
    /// and every [`POLL_EVERY`], until `shutdown`. A drain in progress is
    /// finished, not cut short (cutting it could publish rows without
    /// marking them, which would publish them twice).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut feed =
            crate::change_feed::ChangeFeed::new(&self.pool, OUTBOX_CHANNEL, POLL_EVERY).await;
        loop {
            if let Err(err) = self.drain().await {
                tracing::warn!(%err, "outbox relay: admin events not published; retrying");
            }
            if !feed.changed(&shutdown).await {
                return;
            }
        }
    }
}
