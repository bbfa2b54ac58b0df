//! Which cost rollup a read of the daily cost sums goes to: the one place
//! that chooses.
//!
//! `cost_daily` (migration 0021) has every dimension, user and key
//! included, and so near one row per call at scale; `cost_daily_by_team`
//! (0037) has the same signed sums without user and key (day × org × team
//! × provider × model × price version), fed by the same views, so per cell
//! it equals `cost_daily` summed over user and key. A read that neither
//! groups nor filters by user or key gets the same figures from either and
//! reads the narrow one.

/// The rollup with every dimension.
pub const COST_DAILY: &str = "cost_daily";
/// The rollup without user and key.
pub const COST_DAILY_BY_TEAM: &str = "cost_daily_by_team";

/// The columns only [`COST_DAILY`] has.
pub const PER_CALLER_COLUMNS: [&str; 2] = ["user_id", "api_key_id"];

/// The rollup to read for a statement whose group-by and filters use
/// `columns` (the column names or expressions it groups or filters by;
/// the day range is always there and does not matter).
pub fn table_for<'a>(columns: impl IntoIterator<Item = &'a str>) -> &'static str {
    let per_caller = columns
        .into_iter()
        .any(|column| PER_CALLER_COLUMNS.contains(&column));
    if per_caller {
        COST_DAILY
    } else {
        COST_DAILY_BY_TEAM
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_or_key_reads_the_full_rollup() {
        assert_eq!(table_for(["user_id"]), COST_DAILY);
        assert_eq!(table_for(["team_id", "api_key_id"]), COST_DAILY);
        assert_eq!(table_for(["org_id", "user_id", "model"]), COST_DAILY);
    }

    #[test]
    fn everything_else_reads_the_narrow_rollup() {
        assert_eq!(table_for([]), COST_DAILY_BY_TEAM);
        assert_eq!(table_for(["org_id"]), COST_DAILY_BY_TEAM);
        assert_eq!(
            table_for([
                "toString(day)",
                "team_id",
                "toString(provider)",
                "toString(model)",
                "price_version"
            ]),
            COST_DAILY_BY_TEAM
        );
        // A column named like a per-caller one inside an expression is not one.
        assert_eq!(table_for(["toString(user_id_hash)"]), COST_DAILY_BY_TEAM);
    }
}
