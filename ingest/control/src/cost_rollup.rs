//! Which cost rollup a read of the daily cost sums goes to: the one place
//! that chooses.
//!
//! Four tables hold the same signed sums (calls, unpriced calls, tokens,
//! exact cost), fed by the same views from `calls` and `cost_adjustments`,
//! at different grains:
//!
//! | table | dimensions (besides the sums) | migration |
//! |---|---|---|
//! | `cost_daily_by_team` | day, org, team, provider, model, price version | 0037 |
//! | `cost_daily_by_key` | day, org, team, key | 0039 |
//! | `cost_daily_by_user` | day, org, team, user | 0039 |
//! | `cost_daily` | all of the above, user and key included | 0021 |
//!
//! Per cell each equals `cost_daily` summed over the dimensions it drops,
//! so a read whose group-by and filters use only columns a table has gets
//! the same figures from it as from `cost_daily`. [`table_for`] picks the
//! first table of [`ROLLUPS`] that has every column a read uses; they are
//! in order of expected size (rows per day: teams × models in use, keys,
//! users, and near one per call for `cost_daily`).

/// The rollup with every dimension.
pub const COST_DAILY: &str = "cost_daily";
/// The rollup without user and key.
pub const COST_DAILY_BY_TEAM: &str = "cost_daily_by_team";
/// The rollup per user, without key, provider, model and price version.
pub const COST_DAILY_BY_USER: &str = "cost_daily_by_user";
/// The rollup per key, without user, provider, model and price version.
pub const COST_DAILY_BY_KEY: &str = "cost_daily_by_key";

/// One rollup and the columns a read can group or filter by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollup {
    pub table: &'static str,
    pub columns: &'static [&'static str],
}

/// Every untagged cost rollup, smallest expected first; the last has
/// every dimension. The reads choose from it ([`table_for`]) and `tollgate
/// rollups check` checks each against the facts (`tollgate-processors`'
/// `cost::rollup_check`).
pub const ROLLUPS: [Rollup; 4] = [
    Rollup {
        table: COST_DAILY_BY_TEAM,
        columns: &[
            "day",
            "org_id",
            "team_id",
            "provider",
            "model",
            "price_version",
        ],
    },
    Rollup {
        table: COST_DAILY_BY_KEY,
        columns: &["day", "org_id", "team_id", "api_key_id"],
    },
    Rollup {
        table: COST_DAILY_BY_USER,
        columns: &["day", "org_id", "team_id", "user_id"],
    },
    Rollup {
        table: COST_DAILY,
        columns: &[
            "day",
            "org_id",
            "team_id",
            "user_id",
            "api_key_id",
            "provider",
            "model",
            "price_version",
        ],
    },
];

/// The rollup to read for a statement whose group-by and filters use
/// `columns` (the names of the rollup columns they read; the day range is
/// always there and does not matter): the first of [`ROLLUPS`] that has
/// all of them, and [`COST_DAILY`] for a column none has.
pub fn table_for<'a>(columns: impl IntoIterator<Item = &'a str>) -> &'static str {
    let columns: Vec<&str> = columns.into_iter().collect();
    ROLLUPS
        .iter()
        .find(|rollup| columns.iter().all(|c| rollup.columns.contains(c)))
        .map_or(COST_DAILY, |rollup| rollup.table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_user_or_key_reads_the_team_rollup() {
        assert_eq!(table_for([]), COST_DAILY_BY_TEAM);
        assert_eq!(table_for(["org_id"]), COST_DAILY_BY_TEAM);
        assert_eq!(table_for(["day", "team_id"]), COST_DAILY_BY_TEAM);
        assert_eq!(
            table_for(["day", "team_id", "provider", "model", "price_version"]),
            COST_DAILY_BY_TEAM
        );
    }

    #[test]
    fn user_or_key_alone_reads_its_own_rollup() {
        assert_eq!(table_for(["user_id"]), COST_DAILY_BY_USER);
        assert_eq!(
            table_for(["day", "org_id", "team_id", "user_id"]),
            COST_DAILY_BY_USER
        );
        assert_eq!(table_for(["api_key_id"]), COST_DAILY_BY_KEY);
        assert_eq!(table_for(["team_id", "api_key_id"]), COST_DAILY_BY_KEY);
    }

    #[test]
    fn user_or_key_with_a_dropped_dimension_reads_the_full_rollup() {
        // Both callers: neither per-caller rollup has the other.
        assert_eq!(table_for(["user_id", "api_key_id"]), COST_DAILY);
        // A caller with provider, model or price version.
        assert_eq!(table_for(["org_id", "user_id", "model"]), COST_DAILY);
        assert_eq!(table_for(["api_key_id", "provider"]), COST_DAILY);
        assert_eq!(table_for(["user_id", "price_version"]), COST_DAILY);
    }

    #[test]
    fn an_unknown_column_reads_the_full_rollup() {
        assert_eq!(table_for(["user_id_hash"]), COST_DAILY);
        assert_eq!(table_for(["tag_value"]), COST_DAILY);
    }

    #[test]
    fn the_full_rollup_has_every_column() {
        // The full rollup has every column any other has, so no read that a
        // smaller rollup serves is refused by it.
        let full = ROLLUPS[ROLLUPS.len() - 1];
        assert_eq!(full.table, COST_DAILY);
        for rollup in ROLLUPS {
            for column in rollup.columns {
                assert!(full.columns.contains(column), "{column}");
            }
        }
    }
}
