//! Where each alert stands now, as the evaluator keeps it in `alert_state`
//! (`migrations/postgres/20261202000400_alert_state.sql`): read for the
//! Alerts page and `GET /api/v1/alerts`, joined with the rule it belongs
//! to so that another org's state is never read. The evaluator alone
//! writes the table (fenced by its lease); this side only reads.

use chrono::{DateTime, Utc};
use tollgate_contract::alert_lifecycle::Phase;

use super::{AlertRule, AlertStore, AlertStoreError, RuleRow, RULE_COLUMNS};

/// One rule's stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertState {
    pub rule: AlertRule,
    pub phase: Phase,
    /// The evaluation that left it in this phase.
    pub evaluated_at: DateTime<Utc>,
    /// The measured value then, as text (exact decimals stay exact).
    pub value: Option<String>,
}

#[derive(sqlx::FromRow)]
struct StateRow {
    #[sqlx(flatten)]
    rule: RuleRow,
    phase: serde_json::Value,
    evaluated_at: DateTime<Utc>,
    value: Option<String>,
}

impl AlertStore {
    /// The stored state of every rule of `org` (every org's with `None`)
    /// that the evaluator has evaluated, by rule id. A rule deleted since
    /// has no state here (the join drops it).
    pub async fn states(&self, org: Option<&str>) -> Result<Vec<AlertState>, AlertStoreError> {
        let columns = RULE_COLUMNS
            .split(", ")
            .map(|c| format!("r.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let rows: Vec<StateRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {columns}, s.phase, s.evaluated_at, s.value \
             FROM alert_state s JOIN alert_rules r ON r.id = s.rule_id \
             WHERE ($1::text IS NULL OR r.org_id = $1) ORDER BY r.id"
        )))
        .bind(org)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|row| {
                let id = row.rule.id;
                let phase: Phase =
                    serde_json::from_value(row.phase).map_err(|e| AlertStoreError::Corrupt {
                        what: "alert state",
                        id,
                        reason: e.to_string(),
                    })?;
                Ok(AlertState {
                    rule: row.rule.into_rule()?,
                    phase,
                    evaluated_at: row.evaluated_at,
                    value: row.value,
                })
            })
            .collect()
    }
}
