//! The cost rollup fold: `cost_daily` (UTC day × org × team × user × key ×
//! provider × model × price version), `cost_daily_by_team` (the same
//! without user and key), `cost_daily_by_user` and `cost_daily_by_key`
//! (day × org × team × user, and × key) and `cost_daily_tags` (day × org ×
//! team × tag key × tag value × provider × model × price version), summing
//! calls, unpriced calls, tokens and exact cost. ClickHouse folds them from
//! every insert into `calls` (`cost_daily_mv`, `cost_daily_by_team_mv`,
//! `cost_daily_by_user_mv`, `cost_daily_by_key_mv`, `cost_daily_tags_mv`)
//! and into `cost_adjustments` by `tollgate reprice` (`cost_adjustments_mv`,
//! `cost_adjustments_by_team_mv`, `cost_adjustments_by_user_mv`,
//! `cost_adjustments_by_key_mv`, `cost_adjustments_tags_mv`); the SQL is in
//! `migrations/clickhouse/0021_cost_daily.sql`, `0023_cost_daily_tags.sql`,
//! `0037_cost_daily_by_team.sql` and `0039_cost_daily_by_user_and_key.sql`.
//!
//! [`model`] is the same fold in Rust, pure, so its properties are checked
//! without a server; `tests/it/fold_models.rs` checks it against what the views
//! compute on the same rows, read back with [`CELLS_SQL`],
//! [`BY_TEAM_CELLS_SQL`], [`BY_USER_CELLS_SQL`], [`BY_KEY_CELLS_SQL`] and
//! [`TAG_CELLS_SQL`].

pub mod model;

use super::{FoldEntry, Runs};

pub const NAME: &str = "cost_rollup";

/// The registry's line for this fold.
pub const FOLD: FoldEntry = FoldEntry {
    name: NAME,
    description: "daily cost per team, user, key and model, per user, per key, and per tag (clickhouse views over calls and repricing)",
    runs: Runs::View {
        fed_by: super::calls::NAME,
        migrations: &[
            "0021_cost_daily.sql",
            "0023_cost_daily_tags.sql",
            "0037_cost_daily_by_team.sql",
            "0039_cost_daily_by_user_and_key.sql",
        ],
    },
    catalog,
};

/// `cost_daily` summed per cell, in the model's key order
/// ([`model::RollupKey`]); the day as `YYYY-MM-DD` and the cost as its
/// exact decimal text.
pub const CELLS_SQL: &str = "SELECT toString(day) AS cell_day, org_id, team_id, user_id, api_key_id, provider, model, price_version, \
     sum(calls) AS n_calls, sum(unpriced_calls) AS n_unpriced, sum(input_tokens) AS n_input, sum(output_tokens) AS n_output, toString(sum(cost)) AS total_cost \
     FROM cost_daily \
     GROUP BY day, org_id, team_id, user_id, api_key_id, provider, model, price_version \
     ORDER BY day, org_id, team_id, user_id, api_key_id, provider, model, price_version";

/// `cost_daily_by_team` summed per cell, in the shape of [`CELLS_SQL`] with
/// user and key empty ([`model::CostRollup::by_team_cells`]).
pub const BY_TEAM_CELLS_SQL: &str = "SELECT toString(day) AS cell_day, org_id, team_id, '' AS no_user, '' AS no_key, provider, model, price_version, \
     sum(calls) AS n_calls, sum(unpriced_calls) AS n_unpriced, sum(input_tokens) AS n_input, sum(output_tokens) AS n_output, toString(sum(cost)) AS total_cost \
     FROM cost_daily_by_team \
     GROUP BY day, org_id, team_id, provider, model, price_version \
     ORDER BY day, org_id, team_id, provider, model, price_version";

/// `cost_daily_by_user` summed per cell, in the shape of [`CELLS_SQL`] with
/// key, provider and model empty and price version 0
/// ([`model::CostRollup::by_user_cells`]).
pub const BY_USER_CELLS_SQL: &str = "SELECT toString(day) AS cell_day, org_id, team_id, user_id, '' AS no_key, '' AS no_provider, '' AS no_model, toUInt64(0) AS no_price_version, \
     sum(calls) AS n_calls, sum(unpriced_calls) AS n_unpriced, sum(input_tokens) AS n_input, sum(output_tokens) AS n_output, toString(sum(cost)) AS total_cost \
     FROM cost_daily_by_user \
     GROUP BY day, org_id, team_id, user_id \
     ORDER BY day, org_id, team_id, user_id";

/// `cost_daily_by_key` summed per cell, in the shape of [`CELLS_SQL`] with
/// user, provider and model empty and price version 0
/// ([`model::CostRollup::by_key_cells`]).
pub const BY_KEY_CELLS_SQL: &str = "SELECT toString(day) AS cell_day, org_id, team_id, '' AS no_user, api_key_id, '' AS no_provider, '' AS no_model, toUInt64(0) AS no_price_version, \
     sum(calls) AS n_calls, sum(unpriced_calls) AS n_unpriced, sum(input_tokens) AS n_input, sum(output_tokens) AS n_output, toString(sum(cost)) AS total_cost \
     FROM cost_daily_by_key \
     GROUP BY day, org_id, team_id, api_key_id \
     ORDER BY day, org_id, team_id, api_key_id";

/// `cost_daily_tags` summed per cell ([`model::TagRollupKey`]).
pub const TAG_CELLS_SQL: &str = "SELECT toString(day) AS cell_day, org_id, team_id, tag_key, tag_value, provider, model, price_version, \
     sum(calls) AS n_calls, sum(unpriced_calls) AS n_unpriced, sum(input_tokens) AS n_input, sum(output_tokens) AS n_output, toString(sum(cost)) AS total_cost \
     FROM cost_daily_tags \
     GROUP BY day, org_id, team_id, tag_key, tag_value, provider, model, price_version \
     ORDER BY day, org_id, team_id, tag_key, tag_value, provider, model, price_version";

/// The statements that read the rollups back as the model's cells.
pub fn catalog() -> Vec<(String, String)> {
    vec![
        ("cost_rollup.cells".into(), CELLS_SQL.into()),
        ("cost_rollup.by_team_cells".into(), BY_TEAM_CELLS_SQL.into()),
        ("cost_rollup.by_user_cells".into(), BY_USER_CELLS_SQL.into()),
        ("cost_rollup.by_key_cells".into(), BY_KEY_CELLS_SQL.into()),
        ("cost_rollup.tag_cells".into(), TAG_CELLS_SQL.into()),
    ]
}
