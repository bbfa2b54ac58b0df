//! The monthly statement of one team: one line per provider / model /
//! price version with the month's calls, tokens, the unit prices of that
//! version and the exact cost (the sum of stored per-call costs, from the
//! `cost_daily` rollup), the savings from cached input, the total, and for
//! the running month a month-end forecast from the burn rate so far.
//!
//! Assembled from the cost report ([`super::cost`]) and the price catalog;
//! it has no SQL of its own.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;

use super::cost::{csv_field, CostDimension, CostQuery, CostReport, CostTotals};
use super::latency::InvalidParameter;
use crate::cost::fold::round;
use crate::cost::{PriceCatalog, PriceVersion};

/// One line of a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementLine {
    pub provider: String,
    pub model: String,
    /// 0 for the calls nobody could price.
    pub price_version: u64,
    /// The version's unit prices; `None` for unpriced calls (or a version
    /// no longer in the catalog).
    pub prices: Option<PriceVersion>,
    #[serde(flatten)]
    pub totals: CostTotals,
    /// What the cached input tokens would have cost at the plain input
    /// price, minus what they cost.
    pub cache_savings: Option<Decimal>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statement {
    pub team: String,
    /// `YYYY-MM`.
    pub month: String,
    pub lines: Vec<StatementLine>,
    pub total: CostTotals,
    pub cache_savings: Decimal,
    /// For the running month: cost so far / days elapsed x days in month.
    pub forecast: Option<Decimal>,
}

/// The month `YYYY-MM` as `[first day, first day of next month)`.
pub fn month_range(month: &str) -> Result<(NaiveDate, NaiveDate), InvalidParameter> {
    let bad = || InvalidParameter {
        parameter: "month",
        reason: format!("`{month}` is not a month (YYYY-MM)"),
    };
    let first = NaiveDate::parse_from_str(&format!("{}-01", month.trim()), "%Y-%m-%d")
        .map_err(|_| bad())?;
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .ok_or_else(bad)?;
    Ok((first, next))
}

/// What `cached` input tokens saved at `price` against paying its plain
/// input price: `cached × (input_per_token − cache_read_per_token)`,
/// rounded once to 12 places. `None` when the version has no cache-read
/// price (cached tokens are then billed as plain input: nothing saved) or
/// the product overflows. The statement's lines and the cost overview
/// ([`super::overview`]) both use it.
pub fn cache_savings(cached: i64, price: &PriceVersion) -> Option<Decimal> {
    let read = price.cache_read_per_token?;
    let saved = Decimal::from(cached).checked_mul(price.input_per_token.checked_sub(read)?)?;
    Some(round(saved))
}

/// The month-end forecast of a month `[first, next)` with `so_far` spent
/// by `today`: `so_far × days in month / days elapsed (including today)`,
/// rounded once to 12 places; `None` unless `today` lies in the month.
/// Used by the statement and the cost overview.
pub fn month_end_forecast(
    so_far: Decimal,
    first: NaiveDate,
    next: NaiveDate,
    today: NaiveDate,
) -> Option<Decimal> {
    (first <= today && today < next).then(|| {
        let elapsed = (today - first).num_days() + 1;
        let days = (next - first).num_days();
        round(so_far * Decimal::from(days) / Decimal::from(elapsed.max(1)))
    })
}

/// The cost report a statement is built from.
pub fn statement_query(team: &str, month: &str) -> Result<CostQuery, InvalidParameter> {
    if team.is_empty() {
        return Err(InvalidParameter {
            parameter: "team",
            reason: "is required".into(),
        });
    }
    let (from, to) = month_range(month)?;
    CostQuery::new(
        from,
        to,
        vec![
            CostDimension::Provider,
            CostDimension::Model,
            CostDimension::PriceVersion,
        ],
        vec![(CostDimension::Team, team.to_string())],
    )
}

/// Build the statement from its report and the catalog. `today` decides
/// whether the month is running (and so gets a forecast).
pub fn assemble(
    team: &str,
    month: &str,
    report: &CostReport,
    catalog: &PriceCatalog,
    today: NaiveDate,
) -> Statement {
    let mut lines = Vec::with_capacity(report.groups.len());
    let mut savings_total = Decimal::ZERO;
    for g in &report.groups {
        let key = |k: &str| g.key.get(k).cloned().unwrap_or_default();
        let price_version: u64 = key("price_version").parse().unwrap_or(0);
        let prices = i64::try_from(price_version)
            .ok()
            .filter(|id| *id != 0)
            .and_then(|id| catalog.by_id(id))
            .cloned();
        let cache_savings = prices
            .as_ref()
            .and_then(|p| cache_savings(g.totals.cached_input_tokens, p));
        savings_total += cache_savings.unwrap_or_default();
        lines.push(StatementLine {
            provider: key("provider"),
            model: key("model"),
            price_version,
            prices,
            totals: g.totals.clone(),
            cache_savings,
        });
    }
    lines.sort_by(|a, b| {
        (&a.provider, &a.model, a.price_version).cmp(&(&b.provider, &b.model, b.price_version))
    });
    let forecast = month_end_forecast(
        report.total.cost.unwrap_or_default(),
        report.from,
        report.to,
        today,
    );
    Statement {
        team: team.to_string(),
        month: month.to_string(),
        lines,
        total: report.total.clone(),
        cache_savings: savings_total,
        forecast,
    }
}

fn opt(d: Option<Decimal>) -> String {
    d.map(|d| d.to_string()).unwrap_or_default()
}

/// The statement as CSV: one line per statement line, then `total`. Same
/// strings as the page.
pub fn to_csv(s: &Statement) -> String {
    let mut out = String::from(
        "provider,model,price_version,input_per_token,cache_read_per_token,cache_write_per_token,output_per_token,reasoning_per_token,per_request,calls,unpriced_calls,input_tokens,cached_input_tokens,cache_write_tokens,output_tokens,reasoning_tokens,cache_savings_usd,cost_usd\n",
    );
    for l in &s.lines {
        let p = l.prices.as_ref();
        let fields = [
            l.provider.clone(),
            l.model.clone(),
            l.price_version.to_string(),
            p.map(|p| p.input_per_token.to_string()).unwrap_or_default(),
            opt(p.and_then(|p| p.cache_read_per_token)),
            opt(p.and_then(|p| p.cache_write_per_token)),
            p.map(|p| p.output_per_token.to_string())
                .unwrap_or_default(),
            opt(p.and_then(|p| p.reasoning_per_token)),
            p.map(|p| p.per_request.to_string()).unwrap_or_default(),
            l.totals.calls.to_string(),
            l.totals.unpriced_calls.to_string(),
            l.totals.input_tokens.to_string(),
            l.totals.cached_input_tokens.to_string(),
            l.totals.cache_write_tokens.to_string(),
            l.totals.output_tokens.to_string(),
            l.totals.reasoning_tokens.to_string(),
            opt(l.cache_savings),
            l.totals.cost_label(),
        ];
        out.push_str(
            &fields
                .iter()
                .map(|f| csv_field(f))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
    }
    let t = &s.total;
    let total = [
        "total".to_string(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        t.calls.to_string(),
        t.unpriced_calls.to_string(),
        t.input_tokens.to_string(),
        t.cached_input_tokens.to_string(),
        t.cache_write_tokens.to_string(),
        t.output_tokens.to_string(),
        t.reasoning_tokens.to_string(),
        s.cache_savings.to_string(),
        t.cost_label(),
    ];
    out.push_str(&total.join(","));
    out.push('\n');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn months() {
        let (a, b) = month_range("2026-12").unwrap();
        assert_eq!(
            (a.to_string(), b.to_string()),
            ("2026-12-01".into(), "2027-01-01".into())
        );
        assert!(month_range("2026-13").is_err());
        assert!(statement_query("", "2026-03").is_err());
    }

    #[test]
    fn forecast_counts_today_as_elapsed() {
        let (first, next) = month_range("2026-11").unwrap();
        let day = |d| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        let so_far: Decimal = "1.5".parse().unwrap();
        // 1.5 × 30 / 10
        assert_eq!(
            month_end_forecast(so_far, first, next, day(10)),
            Some("4.5".parse().unwrap())
        );
        // 1.5 × 30 / 1 on the first day.
        assert_eq!(
            month_end_forecast(so_far, first, next, day(1)),
            Some("45".parse().unwrap())
        );
        assert_eq!(month_end_forecast(so_far, first, next, next), None);
        // 1 × 30 / 7 = 4.285714285714|2857..., rounded to 12 places.
        assert_eq!(
            month_end_forecast(Decimal::ONE, first, next, day(7)),
            Some("4.285714285714".parse().unwrap())
        );
    }
}
