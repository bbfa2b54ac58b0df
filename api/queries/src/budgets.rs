//! The budgets report's table: every budget's running period (the budgets
//! page shows the same cells, `format=csv` is its CSV).

use tollgate_control::budgets::BudgetStatus;

use super::table::{usd, Table};

/// Budget statuses as a table, one row per budget.
pub fn table(statuses: &[BudgetStatus]) -> Table {
    let mut table = Table::new([
        "budget_id",
        "org_id",
        "subject",
        "period",
        "enforcement",
        "limit_usd",
        "spend_usd",
        "remaining_usd",
        "percent",
        "state",
        "forecast_usd",
        "period_start",
        "period_end",
    ]);
    for s in statuses {
        table.push([
            s.budget.id.to_string(),
            s.budget.org_id.clone().unwrap_or_default(),
            s.subject.clone(),
            s.budget.period.name().to_string(),
            if s.budget.hard { "hard" } else { "soft" }.to_string(),
            usd(s.budget.limit_usd),
            usd(s.spend_usd),
            usd(s.remaining_usd),
            s.percent.to_string(),
            s.state.to_string(),
            usd(s.forecast_usd),
            s.period_start.to_string(),
            s.period_end.to_string(),
        ]);
    }
    table
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `GET /api/v1/finance/budgets` of the samples, as JSON and CSV.
    #[test]
    fn json_and_csv_snapshots() {
        let statuses = crate::samples::budgets();
        insta::assert_snapshot!("json", serde_json::to_string_pretty(&statuses).unwrap());
        insta::assert_snapshot!("csv", table(&statuses).to_csv());
    }
}
