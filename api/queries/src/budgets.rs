//! Budget statuses as CSV (the budgets page shows the same strings).

use tollgate_control::budgets::BudgetStatus;

/// Budget statuses as CSV.
pub fn to_csv(statuses: &[BudgetStatus]) -> String {
    let mut out = String::from(
        "subject,period,enforcement,limit_usd,spend_usd,percent,state,forecast_usd,period_start,period_end\n",
    );
    for s in statuses {
        let fields = [
            s.subject.clone(),
            s.budget.period.name().to_string(),
            if s.budget.hard { "hard" } else { "soft" }.to_string(),
            s.budget.limit_usd.to_string(),
            s.spend_usd.to_string(),
            s.percent.to_string(),
            s.state.to_string(),
            s.forecast_usd.to_string(),
            s.period_start.to_string(),
            s.period_end.to_string(),
        ];
        out.push_str(
            &fields
                .iter()
                .map(|f| super::cost::csv_field(f))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
    }
    out
}
