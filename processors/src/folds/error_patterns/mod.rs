//! The error-patterns fold: `error_patterns_minute` (failures and call
//! endings per minute × signature × tenant × key × provider × model),
//! `error_pattern_catalog` (each signature's class, template, first and
//! last seen) and `error_recovery_minute` (what recovery attempts after a
//! failure did and cost). ClickHouse folds them from every insert into
//! `calls` (`migrations/clickhouse/0031_error_patterns.sql`, over the
//! columns of `0030_calls_error_patterns.sql` that the calls fold fills in
//! `folds/calls/pattern.rs`), in the same insert, so they are exactly-once
//! with the calls themselves.
//!
//! [`model`] is the same fold in Rust, pure; `tests/it/fold_models.rs`
//! checks it against the views on random rows, read back with
//! [`MINUTE_CELLS_SQL`], [`CATALOG_SQL`] and [`RECOVERY_CELLS_SQL`].
//!
//! Two learners read these tables and run with the calls fold (they are
//! started with it, like the budget watcher): the pattern learner
//! ([`crate::patterns`]: learned merges, announcements of new patterns) and
//! the recovery learner ([`crate::recovery`]: `recovery/…` decisions). Their
//! statements are listed in this fold's catalog.

pub mod model;

use super::{FoldEntry, Runs};

pub const NAME: &str = "error_patterns";

/// The registry's line for this fold.
pub const FOLD: FoldEntry = FoldEntry {
    name: NAME,
    description: "failure patterns per minute, the pattern catalog and recovery outcomes (clickhouse views over calls), with the pattern and recovery learners",
    runs: Runs::View {
        fed_by: super::calls::NAME,
        migrations: &["0030_calls_error_patterns.sql", "0031_error_patterns.sql"],
    },
    catalog,
};

/// `error_patterns_minute` summed per cell, in the model's key order
/// ([`model::MinuteKey`]), the minute as epoch seconds.
pub const MINUTE_CELLS_SQL: &str = "SELECT toUInt32(minute) AS at, signature, org_id, team_id, api_key_id, provider, model, \
     sum(failures) AS n_failures, sum(calls_recovered) AS n_recovered, sum(calls_failed) AS n_failed \
     FROM error_patterns_minute \
     GROUP BY minute, signature, org_id, team_id, api_key_id, provider, model \
     ORDER BY minute, signature, org_id, team_id, api_key_id, provider, model";

/// `error_pattern_catalog` per row of its key ([`model::CatalogKey`]), first
/// and last seen as epoch seconds. The pattern learner reads it too.
pub const CATALOG_SQL: &str = "SELECT signature, provider, http_status, error_type, template, \
     toUInt32(minMerge(first_seen)) AS first_at, toUInt32(maxMerge(last_seen)) AS last_at \
     FROM error_pattern_catalog \
     GROUP BY signature, provider, http_status, error_type, template \
     ORDER BY signature, provider, http_status, error_type, template";

/// `error_recovery_minute` summed per cell ([`model::RecoveryKey`]), the
/// cost as its exact decimal text.
pub const RECOVERY_CELLS_SQL: &str = "SELECT from_signature, from_provider, from_model, strategy, provider, model, toUInt32(minute) AS at, org_id, team_id, \
     sum(attempts) AS n_attempts, sum(successes) AS n_successes, sum(wait_ms) AS total_wait, sum(duration_ms) AS total_duration, toString(sum(cost)) AS total_cost \
     FROM error_recovery_minute \
     GROUP BY from_signature, from_provider, from_model, strategy, provider, model, minute, org_id, team_id \
     ORDER BY from_signature, from_provider, from_model, strategy, provider, model, minute, org_id, team_id";

/// The statements that read the views back, and the learners'.
pub fn catalog() -> Vec<(String, String)> {
    let mut statements: Vec<(String, String)> = vec![
        (
            "error_patterns.minute_cells".into(),
            MINUTE_CELLS_SQL.into(),
        ),
        ("error_patterns.catalog".into(), CATALOG_SQL.into()),
        (
            "error_patterns.recovery_cells".into(),
            RECOVERY_CELLS_SQL.into(),
        ),
    ];
    statements.extend(crate::patterns::catalog());
    statements.extend(crate::recovery::catalog());
    statements
}
