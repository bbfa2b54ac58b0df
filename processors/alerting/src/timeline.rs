//! The alert timeline in ClickHouse (`alert_transitions`, migration 0032):
//! one row per transition, written from the outbox at least once. A
//! re-publish after a crash repeats a row with the same `event_id`, which
//! the ReplacingMergeTree folds away and readers deduplicate by.

use clickhouse::Row;
use serde::Serialize;

use crate::alert::since_of;
use crate::state::OutboxRow;

/// One row of `alert_transitions`.
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

impl TryFrom<&OutboxRow> for TransitionRow {
    type Error = serde_json::Error;

    fn try_from(row: &OutboxRow) -> Result<Self, Self::Error> {
        let transition = row.transition()?;
        let note = row.notification()?;
        let secs = |t: chrono::DateTime<chrono::Utc>| u32::try_from(t.timestamp()).unwrap_or(0);
        Ok(Self {
            at: secs(row.at),
            at_ms: u64::try_from(row.at.timestamp_millis()).unwrap_or(0),
            org_id: row.org_id.clone(),
            rule_id: row.rule_id,
            rule_name: row.rule_name().to_string(),
            from_state: row.from_state.clone(),
            to_state: row.to_state.clone(),
            value: row.value().to_string(),
            since: secs(since_of(&transition)),
            notification_id: note.map(|n| n.id.to_string()).unwrap_or_default(),
            silenced: u8::from(row.silenced),
            event_id: row.event_id.to_string(),
        })
    }
}

/// Write rows in one insert.
pub async fn write(
    ch: &clickhouse::Client,
    rows: &[TransitionRow],
) -> Result<(), clickhouse::error::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = ch.insert::<TransitionRow>("alert_transitions").await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}
