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

use super::view_repair::{
    Bound, Covered, Dimension, Feed, RefoldedTable, Sum, SummedTable, ViewTable,
};
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
    statements.extend(super::view_repair::catalog(&repaired()));
    statements.extend(crate::patterns::catalog());
    statements.extend(crate::recovery::catalog());
    statements
}

/// The calls that end a call's attempts (and those that failed).
const ENDED_CALLS: &str = "kind IN ('ai.call.completed', 'ai.call.failed')";

/// The catalog view's key expressions, as migration 0031 writes them.
const CATALOG_KEYS: &str = "error_signature AS signature, CAST(provider AS String) AS provider, \
     http_status, error_type, error_template AS template";

/// The three tables as migration 0031's views write them, for their repair
/// after a failed insert that stored its rows after all
/// ([`super::view_repair`]): the two sums per minute, and the catalog,
/// whose first and last seen are refolded (a second copy changes neither)
/// and checked by its keys (each pattern of the calls in it, its first and
/// last seen covering theirs).
pub fn repaired() -> Vec<ViewTable> {
    let text = |column| (column, Dimension::Text);
    let minute = "toStartOfMinute(occurred_at)".to_string();
    let strings = |columns: &[&str]| columns.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    vec![
        ViewTable::Summed(SummedTable {
            table: "error_patterns_minute",
            dimensions: vec![
                ("minute", Dimension::Minute),
                ("signature", Dimension::Number),
                text("org_id"),
                text("team_id"),
                text("api_key_id"),
                text("provider"),
                text("model"),
            ],
            sums: vec![
                ("failures", Sum::Count),
                ("calls_recovered", Sum::Count),
                ("calls_failed", Sum::Count),
            ],
            feeds: vec![
                Feed {
                    filter: "kind = 'ai.call.failed' AND error_signature != 0".into(),
                    dimensions: [minute.clone(), "error_signature".into()]
                        .into_iter()
                        .chain(strings(&[
                            "org_id",
                            "team_id",
                            "api_key_id",
                            "CAST(provider AS String)",
                            "CAST(model AS String)",
                        ]))
                        .collect(),
                    sums: strings(&["count()", "toUInt64(0)", "toUInt64(0)"]),
                },
                Feed {
                    filter: format!(
                        "last_attempt = 1 AND {ENDED_CALLS} \
                         AND (recovery_from_signature != 0 OR error_signature != 0)"
                    ),
                    dimensions: [minute.clone()]
                        .into_iter()
                        .chain(strings(&[
                            "if(recovery_from_signature != 0, recovery_from_signature, error_signature)",
                            "org_id",
                            "team_id",
                            "api_key_id",
                            "if(recovery_from_signature != 0, recovery_from_provider, CAST(provider AS String))",
                            "if(recovery_from_signature != 0, recovery_from_model, CAST(model AS String))",
                        ]))
                        .collect(),
                    sums: strings(&[
                        "toUInt64(0)",
                        "toUInt64(sum(outcome = 'success'))",
                        "toUInt64(sum(outcome != 'success'))",
                    ]),
                },
            ],
        }),
        ViewTable::Summed(SummedTable {
            table: "error_recovery_minute",
            dimensions: vec![
                ("minute", Dimension::Minute),
                ("from_signature", Dimension::Number),
                text("from_provider"),
                text("from_model"),
                text("strategy"),
                text("provider"),
                text("model"),
                text("org_id"),
                text("team_id"),
            ],
            sums: vec![
                ("attempts", Sum::Count),
                ("successes", Sum::Count),
                ("wait_ms", Sum::Count),
                ("duration_ms", Sum::Count),
                ("cost", Sum::Money),
            ],
            feeds: vec![Feed {
                filter: format!("recovery_from_signature != 0 AND {ENDED_CALLS}"),
                dimensions: [minute]
                    .into_iter()
                    .chain(strings(&[
                        "recovery_from_signature",
                        "recovery_from_provider",
                        "recovery_from_model",
                        "CAST(recovery_strategy AS String)",
                        "CAST(provider AS String)",
                        "CAST(model AS String)",
                        "org_id",
                        "team_id",
                    ]))
                    .collect(),
                sums: strings(&[
                    "count()",
                    "toUInt64(sum(outcome = 'success'))",
                    "sum(toUInt64(recovery_wait_ms))",
                    "sum(toUInt64(duration_ms))",
                    "sum(cost)",
                ]),
            }],
        }),
        ViewTable::Refolded(RefoldedTable {
            table: "error_pattern_catalog",
            columns: vec![
                "signature",
                "provider",
                "http_status",
                "error_type",
                "template",
                "first_seen",
                "last_seen",
            ],
            select: format!(
                "{CATALOG_KEYS}, minState(occurred_at) AS first_seen, \
                 maxState(occurred_at) AS last_seen"
            ),
            filter: "kind = 'ai.call.failed' AND error_signature != 0".into(),
            group_by: "signature, provider, http_status, error_type, template".into(),
            counted: None,
            covered: Some(Covered {
                keys: CATALOG_KEYS.into(),
                bounds: vec![
                    Bound {
                        stored: "minMerge(first_seen)",
                        facts: "min(occurred_at)",
                        covers: "<=",
                    },
                    Bound {
                        stored: "maxMerge(last_seen)",
                        facts: "max(occurred_at)",
                        covers: ">=",
                    },
                ],
            }),
        }),
    ]
}
