//! Retention: how long each partitioned ClickHouse table keeps its rows
//! (`[retention]`, `docs/processor.md`, "Retention"), enforced by dropping
//! whole partitions. ClickHouse 18.16 has no table TTL (it came in 19.6),
//! so this lists a table's partitions from `system.parts` and drops, with
//! `ALTER TABLE t DROP PARTITION ID '<id>'`, each whose newest row is older
//! than the cutoff (now minus the table's days): a partition is dropped
//! only when every row in it is past retention, never a part of one.
//! Dropping a partition that is gone already is a no-op, so a run is
//! idempotent and several runners are safe; `tollgate process` runs it
//! every `interval_secs` under the `retention` lease (one runner at a
//! time), `tollgate retention run [--dry-run]` by hand or from cron.
//!
//! The audit chain (`audit_chain`, its index `audit_search`,
//! `audit_checkpoints`) is not partitioned and not retained here: each
//! entry holds its own copy of its event, so
//! dropping `calls` partitions never makes the chain unverifiable; a
//! person's data in it is removed by erasure (`docs/audit.md`, "Erasure").

use std::time::Duration;

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tollgate_control::clickhouse::client;
use tollgate_control::config::{ClickHouseConfig, PostgresConfig};
use tollgate_control::lease::{Lease, LeaseError};
use tracing::{info, warn};

/// The `[retention]` section: days each table keeps its rows (0: forever)
/// and how often `tollgate process` enforces them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Seconds between runs in `tollgate process` (0: never; then run
    /// `tollgate retention run` from cron).
    pub interval_secs: u64,
    pub calls_days: u32,
    pub cost_adjustments_days: u32,
    pub cost_daily_days: u32,
    pub cost_daily_tags_days: u32,
    /// The latency rollup (`latency_minute_calls`, `latency_minute_buckets`,
    /// and the pre-0036 `latency_minute_hist`). Its first name,
    /// `latency_minute_hist_days`, is still read.
    #[serde(alias = "latency_minute_hist_days")]
    pub latency_minute_days: u32,
    pub error_patterns_minute_days: u32,
    pub error_recovery_minute_days: u32,
    pub breaker_transitions_days: u32,
    pub alert_transitions_days: u32,
    pub pipeline_health_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            interval_secs: 3600,
            calls_days: 0,
            cost_adjustments_days: 0,
            cost_daily_days: 0,
            cost_daily_tags_days: 0,
            latency_minute_days: 400,
            error_patterns_minute_days: 90,
            error_recovery_minute_days: 90,
            breaker_transitions_days: 400,
            alert_transitions_days: 400,
            pipeline_health_days: 30,
        }
    }
}

/// One table and how many days it keeps (never 0 here: those are skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableRetention {
    pub table: &'static str,
    pub days: u32,
}

/// Tables that must keep their rows at least as long as another: the
/// rollups and the repricing ledger outlive the facts they sum or correct,
/// so a finance report never shows less than the stored calls do, and a
/// stored call never loses its corrections (`calls.cost` plus its
/// adjustments is its effective cost).
const AT_LEAST_AS_LONG_AS: &[(&str, &str)] = &[
    ("cost_daily", "calls"),
    ("cost_daily_tags", "calls"),
    ("cost_adjustments", "calls"),
];

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("retention.{table}_days = {days} is shorter than retention.{source_table}_days = {}: {table} must keep its rows at least as long as {source_table} ({})", days_text(*source_days), remedy(*source_days))]
    Order {
        table: &'static str,
        days: u32,
        source_table: &'static str,
        source_days: u32,
    },
    #[error(transparent)]
    ClickHouse(#[from] crate::Error),
}

fn days_text(days: u32) -> String {
    if days == 0 {
        "0 (forever)".into()
    } else {
        days.to_string()
    }
}

fn remedy(source_days: u32) -> String {
    if source_days == 0 {
        "use 0 to keep them forever too".into()
    } else {
        format!("use 0 to keep them, or at least {source_days}")
    }
}

impl RetentionConfig {
    /// Every table with its days, in the order they are enforced.
    fn all(&self) -> [(&'static str, u32); 15] {
        [
            ("calls", self.calls_days),
            ("cost_adjustments", self.cost_adjustments_days),
            ("cost_daily", self.cost_daily_days),
            // One setting for every untagged cost rollup: a report reads one
            // or another by its dimensions (`tollgate_control::cost_rollup`),
            // and must not cover fewer days because it has fewer of them.
            ("cost_daily_by_team", self.cost_daily_days),
            ("cost_daily_by_user", self.cost_daily_days),
            ("cost_daily_by_key", self.cost_daily_days),
            ("cost_daily_tags", self.cost_daily_tags_days),
            // One setting for the latency rollup in each of its forms: the
            // report reads `latency_minute_calls` and its histogram
            // `latency_minute_buckets` together; `latency_minute_hist`
            // (before migration 0036) is no longer written and ages out.
            ("latency_minute_hist", self.latency_minute_days),
            ("latency_minute_calls", self.latency_minute_days),
            ("latency_minute_buckets", self.latency_minute_days),
            ("error_patterns_minute", self.error_patterns_minute_days),
            ("error_recovery_minute", self.error_recovery_minute_days),
            ("breaker_transitions", self.breaker_transitions_days),
            ("alert_transitions", self.alert_transitions_days),
            ("pipeline_health", self.pipeline_health_days),
        ]
    }

    /// The tables to enforce (days > 0), after checking that no table is
    /// kept shorter than one it must outlive.
    pub fn plan(&self) -> Result<Vec<TableRetention>, RetentionError> {
        let all = self.all();
        let days_of = |name: &str| all.iter().find(|(t, _)| *t == name).map_or(0, |(_, d)| *d);
        for (table, source_table) in AT_LEAST_AS_LONG_AS {
            let (days, source_days) = (days_of(table), days_of(source_table));
            // 0 keeps forever; a source kept forever needs its dependant kept
            // forever too.
            let shorter = days != 0 && (source_days == 0 || days < source_days);
            if shorter {
                return Err(RetentionError::Order {
                    table,
                    days,
                    source_table,
                    source_days,
                });
            }
        }
        Ok(all
            .into_iter()
            .filter(|(_, days)| *days > 0)
            .map(|(table, days)| TableRetention { table, days })
            .collect())
    }
}

/// One partition of a table as `system.parts` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
pub struct Partition {
    pub partition_id: String,
    /// Newest value of the partition key's DateTime column (epoch seconds;
    /// 0 for a table partitioned by a Date).
    pub newest_time: u32,
    /// Newest value of its Date column (days since the epoch; 0 for a table
    /// partitioned by a DateTime).
    pub newest_day: u32,
    pub rows: u64,
}

impl Partition {
    /// The last second any row of the partition can be at.
    pub fn newest_secs(&self) -> u64 {
        let by_day = if self.newest_day > 0 {
            (u64::from(self.newest_day) + 1) * 86_400 - 1
        } else {
            0
        };
        u64::from(self.newest_time).max(by_day)
    }
}

/// The partitions of a table, with the newest instant of each.
pub const PARTITIONS_SQL: &str = "SELECT partition_id, toUInt32(max(max_time)) AS newest_time, toUInt32(toUInt16(max(max_date))) AS newest_day, sum(rows) AS rows FROM system.parts WHERE database = ? AND table = ? AND active GROUP BY partition_id ORDER BY partition_id";

/// Drop one partition by its id (`system.parts.partition_id`).
pub fn drop_sql(table: &str) -> String {
    format!("ALTER TABLE {table} DROP PARTITION ID ?")
}

/// The partitions wholly older than `cutoff_secs` (epoch seconds): every
/// row in them is before it. A partition with no time recorded (both 0) is
/// never due.
pub fn due(partitions: &[Partition], cutoff_secs: u64) -> Vec<Partition> {
    partitions
        .iter()
        .filter(|p| {
            let newest = p.newest_secs();
            newest > 0 && newest < cutoff_secs
        })
        .cloned()
        .collect()
}

/// What a run did (or would do) to one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableOutcome {
    pub table: &'static str,
    pub days: u32,
    /// Epoch seconds: rows before it are past retention.
    pub cutoff_secs: u64,
    pub dropped: Vec<DroppedPartition>,
    /// Partitions left (holding a row at or after the cutoff).
    pub kept: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DroppedPartition {
    pub partition_id: String,
    pub rows: u64,
    pub newest: String,
}

/// Enforce `config` on the database now (`dry_run`: only say what would be
/// dropped).
pub async fn run(
    clickhouse: &ClickHouseConfig,
    config: &RetentionConfig,
    now_secs: u64,
    dry_run: bool,
) -> Result<Vec<TableOutcome>, RetentionError> {
    let plan = config.plan()?;
    let ch = client(clickhouse);
    let failed = |context: String| {
        move |source| RetentionError::from(crate::clickhouse::error(clickhouse, context, source))
    };
    let mut outcomes = Vec::with_capacity(plan.len());
    for TableRetention { table, days } in plan {
        let partitions: Vec<Partition> = ch
            .query(PARTITIONS_SQL)
            .bind(&clickhouse.database)
            .bind(table)
            .fetch_all()
            .await
            .map_err(failed(format!("cannot list the partitions of {table}")))?;
        let cutoff_secs = now_secs.saturating_sub(u64::from(days) * 86_400);
        let due = due(&partitions, cutoff_secs);
        let mut dropped = Vec::with_capacity(due.len());
        for partition in due {
            if !dry_run {
                ch.query(&drop_sql(table))
                    .bind(&partition.partition_id)
                    .execute()
                    .await
                    .map_err(failed(format!(
                        "cannot drop partition {} of {table}",
                        partition.partition_id
                    )))?;
                info!(table, partition = %partition.partition_id, rows = partition.rows, "retention: dropped partition");
            }
            dropped.push(DroppedPartition {
                newest: tollgate_contract::audit::entry::format_ms(
                    partition.newest_secs() * 1000 + 999,
                ),
                partition_id: partition.partition_id,
                rows: partition.rows,
            });
        }
        outcomes.push(TableOutcome {
            table,
            days,
            cutoff_secs,
            kept: partitions.len() - dropped.len(),
            dropped,
        });
    }
    Ok(outcomes)
}

/// The longest wait before a processor's first retention run.
pub const FIRST_RUN_AFTER: Duration = Duration::from_secs(600);

/// Name of the lease whose holder enforces retention.
pub const LEASE: &str = "retention";

/// Enforce retention every `interval_secs` (the first time after at most
/// [`FIRST_RUN_AFTER`]) until `shutdown`, whenever this
/// process holds the `retention` lease (held for two intervals and renewed
/// at each run, so a crashed holder is replaced after at most that). A
/// failed run is logged and tried again at the next interval; it never
/// stops the processor.
pub async fn run_periodically(
    clickhouse: ClickHouseConfig,
    postgres: PostgresConfig,
    config: RetentionConfig,
    holder: String,
    shutdown: CancellationToken,
) {
    if config.interval_secs == 0 {
        return;
    }
    if let Err(err) = config.plan() {
        warn!(%err, "retention is not enforced: fix the [retention] section");
        return;
    }
    let every = Duration::from_secs(config.interval_secs);
    let lease = Lease::new(LEASE, holder, every * 2);
    // The first run waits a while: a processor that restarts in a loop
    // should not drop partitions at every start.
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = tokio::time::sleep(every.min(FIRST_RUN_AFTER)) => {}
    }
    loop {
        match tollgate_control::postgres::connect(&postgres).await {
            Ok(pool) => match lease.acquire(&pool).await {
                Ok(_) => {
                    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
                    match run(&clickhouse, &config, now, false).await {
                        Ok(outcomes) => {
                            let dropped: usize = outcomes.iter().map(|o| o.dropped.len()).sum();
                            info!(dropped, "retention run done");
                        }
                        Err(err) => warn!(%err, "retention run failed; trying again next interval"),
                    }
                }
                Err(LeaseError::Held { holder, .. }) => {
                    info!(%holder, "retention: another process holds the lease")
                }
                Err(err) => warn!(%err, "retention: cannot take the lease"),
            },
            Err(err) => warn!(%err, "retention: postgresql unreachable"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// The statements retention sends, with sample values, for the SQL
/// compatibility check (`tollgate sql-catalog`).
pub fn catalog() -> Vec<(String, String)> {
    vec![
        (
            "retention.partitions".into(),
            PARTITIONS_SQL
                .replacen('?', "currentDatabase()", 1)
                .replacen('?', "'calls'", 1),
        ),
        (
            "retention.drop_partition".into(),
            drop_sql("calls").replacen('?', "'200001'", 1),
        ),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_latency_rollup_days_are_read_under_either_name() {
        for name in ["latency_minute_days", "latency_minute_hist_days"] {
            let config: RetentionConfig =
                serde_json::from_value(serde_json::json!({ name: 30 })).unwrap();
            assert_eq!(config.latency_minute_days, 30, "{name}");
        }
    }

    fn part(id: &str, newest_time: u32, newest_day: u32) -> Partition {
        Partition {
            partition_id: id.into(),
            newest_time,
            newest_day,
            rows: 1,
        }
    }

    #[test]
    fn only_wholly_older_partitions_are_due() {
        // 2026-01-31T23:59:59Z, 2026-02-01T00:00:00Z.
        let jan = part("202601", 1_769_903_999, 0);
        let feb = part("202602", 1_769_904_000, 0);
        let cutoff = 1_769_904_000;
        assert_eq!(due(&[jan.clone(), feb.clone()], cutoff), vec![jan.clone()]);
        assert!(due(std::slice::from_ref(&jan), cutoff - 1).is_empty());
        // A Date-partitioned table: day 20484 = 2026-01-31, its last second.
        let by_day = part("202601", 0, 20_484);
        assert_eq!(by_day.newest_secs(), 1_769_903_999);
        assert!(due(std::slice::from_ref(&by_day), 1_769_903_999).is_empty());
        assert_eq!(due(std::slice::from_ref(&by_day), cutoff), vec![by_day]);
        // Nothing known: never dropped.
        assert!(due(&[part("x", 0, 0)], u64::MAX).is_empty());
    }

    #[test]
    fn dependants_must_outlive_their_sources() {
        let ok = RetentionConfig::default().plan().unwrap();
        assert!(!ok.iter().any(|t| t.table == "calls"));
        assert!(!ok.iter().any(|t| t.table == "cost_daily"));
        let kept = RetentionConfig {
            calls_days: 400,
            ..RetentionConfig::default()
        };
        assert!(kept
            .plan()
            .unwrap()
            .iter()
            .any(|t| t.table == "calls" && t.days == 400));
        let short = RetentionConfig {
            calls_days: 400,
            cost_daily_days: 30,
            ..RetentionConfig::default()
        };
        assert_eq!(
            short.plan().unwrap_err().to_string(),
            "retention.cost_daily_days = 30 is shorter than retention.calls_days = 400: cost_daily must keep its rows at least as long as calls (use 0 to keep them, or at least 400)"
        );
        let forever = RetentionConfig {
            calls_days: 0,
            cost_adjustments_days: 500,
            ..RetentionConfig::default()
        };
        assert!(matches!(
            forever.plan(),
            Err(RetentionError::Order {
                table: "cost_adjustments",
                source_days: 0,
                ..
            })
        ));
        let longer = RetentionConfig {
            calls_days: 400,
            cost_daily_days: 800,
            ..RetentionConfig::default()
        };
        assert!(longer.plan().is_ok());
    }
}
