//! The dead letters of alert delivery (table `alert_dead_letters`,
//! `migrations/postgres/*_alert_deliveries.sql`): a notification request a
//! receiver never acknowledged with a 2xx after every retry. The delivery
//! workers in the processors crate record them; the Alerts page lists them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

pub use sqlx::PgPool;

use crate::error::ControlError;

/// One undeliverable request, as recorded and as the Alerts page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub receiver_id: Uuid,
    /// `webhook`, `slack` or `alertmanager`.
    pub receiver_kind: String,
    /// The request's stable id (`X-Tollgate-Notification-Id`).
    pub delivery_id: Uuid,
    pub notification_ids: Vec<Uuid>,
    pub org_id: String,
    /// The notifications as JSON text, so an operator can re-send them.
    pub payload: String,
    pub attempts: i32,
    pub last_error: String,
    pub failed_at: DateTime<Utc>,
}

/// Record a dead letter; the same (receiver, delivery) again replaces the
/// earlier row (a re-send after a crash that failed again is one failure).
pub async fn record_dead_letter(pool: &PgPool, letter: &DeadLetter) -> Result<(), ControlError> {
    sqlx::query(
        "INSERT INTO alert_dead_letters \
         (receiver_id, receiver_kind, delivery_id, notification_ids, org_id, payload, \
          attempts, last_error, failed_at) \
         VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9) \
         ON CONFLICT (receiver_id, delivery_id) DO UPDATE SET \
           notification_ids = EXCLUDED.notification_ids, payload = EXCLUDED.payload, \
           attempts = alert_dead_letters.attempts + EXCLUDED.attempts, \
           last_error = EXCLUDED.last_error, failed_at = EXCLUDED.failed_at",
    )
    .bind(letter.receiver_id)
    .bind(&letter.receiver_kind)
    .bind(letter.delivery_id)
    .bind(&letter.notification_ids)
    .bind(&letter.org_id)
    .bind(&letter.payload)
    .bind(letter.attempts)
    .bind(&letter.last_error)
    .bind(letter.failed_at)
    .execute(pool)
    .await
    .map_err(|err| ControlError::postgres("recording an alert dead letter", err))?;
    Ok(())
}

/// The newest dead letters, of one org or (`None`, for an admin) of all,
/// at most `limit`.
pub async fn list_dead_letters(
    pool: &PgPool,
    org_id: Option<&str>,
    limit: i64,
) -> Result<Vec<DeadLetter>, ControlError> {
    if limit <= 0 {
        return Err(ControlError::InvalidInput {
            field: "limit",
            reason: format!("must be at least 1, got {limit}"),
        });
    }
    let rows = sqlx::query(
        "SELECT receiver_id, receiver_kind, delivery_id, notification_ids, org_id, \
                payload::text AS payload, attempts, last_error, failed_at \
         FROM alert_dead_letters \
         WHERE ($1::text IS NULL OR org_id = $1) \
         ORDER BY failed_at DESC, delivery_id \
         LIMIT $2",
    )
    .bind(org_id)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(|err| ControlError::postgres("listing alert dead letters", err))?;
    rows.iter()
        .map(|row| {
            let get = |err| ControlError::postgres("reading an alert dead letter", err);
            Ok(DeadLetter {
                receiver_id: row.try_get("receiver_id").map_err(get)?,
                receiver_kind: row.try_get("receiver_kind").map_err(get)?,
                delivery_id: row.try_get("delivery_id").map_err(get)?,
                notification_ids: row.try_get("notification_ids").map_err(get)?,
                org_id: row.try_get("org_id").map_err(get)?,
                payload: row.try_get("payload").map_err(get)?,
                attempts: row.try_get("attempts").map_err(get)?,
                last_error: row.try_get("last_error").map_err(get)?,
                failed_at: row.try_get("failed_at").map_err(get)?,
            })
        })
        .collect()
}
