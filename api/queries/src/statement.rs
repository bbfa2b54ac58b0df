//! The monthly statement of one team: one line per provider / model /
//! price version with the month's calls, tokens, the unit prices of that
//! version and the exact cost (the sum of stored per-call costs, from the
//! `cost_daily` rollup), the savings from cached input, the total, and for
//! the running month a month-end forecast from the burn rate so far.
//!
//! Assembled from the cost report ([`super::cost`]), the price catalog, and
//! the repricing corrections posted for the team's calls of the month
//! ([`REPRICING_SQL`]): each line says how much of its cost is a correction,
//! so a repair by `tollgate reprice` is visible, not silent.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use clickhouse::Row;
use serde::Deserialize;

use super::cost::{CostDimension, CostQuery, CostReport, CostTotals, COUNT_COLUMNS};
use super::params::{Expected, InvalidParameter, QueryParams};
use super::table::{usd, usd_or_empty, Table};
use super::{BoundSql, ReadModelError, ReadModels, SqlValue};
use tollgate_contract::catalog::{PriceCatalog, PriceVersion};
use tollgate_contract::cost::round;
use tollgate_contract::cost::{forecast_at_burn_rate, from_mantissa, BurnRateForecast};

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
    /// The net of the repricing corrections (reversals and postings of
    /// `tollgate reprice`) included in this line's cost; `None` when none
    /// were posted.
    pub repricing: Option<Decimal>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statement {
    pub team: String,
    /// `YYYY-MM`.
    pub month: String,
    pub lines: Vec<StatementLine>,
    pub total: CostTotals,
    pub cache_savings: Decimal,
    /// The net of every repricing correction in the total.
    pub repricing: Decimal,
    /// For the running month: its end-of-month cost at the burn rate so
    /// far ([`month_end_forecast`]).
    pub forecast: Option<Decimal>,
    /// When it was read: a month's statement can still change after the
    /// month ended (late calls, repricing).
    pub as_of: DateTime<Utc>,
    /// The month's calls that were stored after the month ended (a
    /// reporter's late or back-dated calls), included in the total; `None`
    /// when there were none (and for the running month).
    pub late: Option<LateCalls>,
}

/// Calls of a month stored after it ended: what changed its statement
/// since the month closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LateCalls {
    pub calls: u64,
    /// Their cost as priced when they were stored (a later repricing's
    /// corrections are in the statement's repricing, not here).
    pub cost_when_stored: Decimal,
    /// When the last of them was stored.
    pub last_stored_at: DateTime<Utc>,
}

/// How long after a month's end its calls may still arrive without
/// counting as late: the pipeline's own delay (a call of 23:59:59 stored
/// a second after midnight was not late; a reporter's batch of the day
/// before, an hour after, is).
pub const LATE_AFTER_SECS: u64 = 3_600;

/// The billable calls of a team's month (of one org when one is named)
/// that were stored (`ingested_at`, as Unix seconds) at or after the given
/// time, [`LATE_AFTER_SECS`] past the month's end: a statement shows them
/// as changed after the month closed.
pub const LATE_SQL: &str = "SELECT count() AS calls, sum(cost) AS cost, \
     toUInt32(max(ingested_at)) AS last_stored_at FROM calls \
     WHERE team_id = ? AND (? = '' OR org_id = ?) \
     AND kind IN ('ai.call.completed', 'ai.call.failed') \
     AND toDate(occurred_at, 'UTC') >= toDate(?) AND toDate(occurred_at, 'UTC') < toDate(?) \
     AND toUInt32(ingested_at) >= ?";

/// One row of [`LATE_SQL`].
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
struct LateRow {
    calls: u64,
    /// `Decimal(38, 12)` mantissa.
    cost: i128,
    last_stored_at: u32,
}

fn late_sql(team: &str, org: Option<&str>, first: NaiveDate, next: NaiveDate) -> BoundSql {
    let mut binds = team_month_binds(team, org, first, next);
    binds.push(SqlValue::UInt(
        u64::try_from(next.and_time(chrono::NaiveTime::MIN).and_utc().timestamp()).unwrap_or(0)
            + LATE_AFTER_SECS,
    ));
    BoundSql {
        name: "statement.late",
        template: LATE_SQL.to_string(),
        binds,
    }
}

/// The binds every statement query of a team's month starts with: the
/// team, the org twice (`? = '' OR org_id = ?`), the month's first day and
/// the next month's.
fn team_month_binds(
    team: &str,
    org: Option<&str>,
    first: NaiveDate,
    next: NaiveDate,
) -> Vec<SqlValue> {
    let org = org.unwrap_or_default();
    vec![
        SqlValue::Str(team.to_string()),
        SqlValue::Str(org.to_string()),
        SqlValue::Str(org.to_string()),
        SqlValue::Str(first.to_string()),
        SqlValue::Str(next.to_string()),
    ]
}

/// The calls of `team`'s month `[first, next)` stored after it ended (of
/// `org` when given); `None` when there are none.
pub(crate) async fn late(
    models: &ReadModels,
    team: &str,
    org: Option<&str>,
    first: NaiveDate,
    next: NaiveDate,
) -> Result<Option<LateCalls>, ReadModelError> {
    let sql = late_sql(team, org, first, next);
    let row = models
        .bounded(sql.query(models.client()).fetch_one::<LateRow>())
        .await
        .map_err(|err| models.classify(sql.name, err))?;
    if row.calls == 0 {
        return Ok(None);
    }
    let cost = from_mantissa(row.cost).ok_or_else(|| ReadModelError::UnexpectedRow {
        query: sql.name,
        detail: format!("a cost of mantissa {} is out of range", row.cost),
    })?;
    Ok(Some(LateCalls {
        calls: row.calls,
        cost_when_stored: twelve_places(cost),
        last_stored_at: DateTime::from_timestamp(i64::from(row.last_stored_at), 0)
            .unwrap_or_default(),
    }))
}

/// The month `YYYY-MM` as `[first day, first day of next month)`.
pub fn month_range(month: &str) -> Result<(NaiveDate, NaiveDate), InvalidParameter> {
    let shown: String = month.chars().take(40).collect();
    let bad = || InvalidParameter::new("month", format!("`{shown}` is not a month (YYYY-MM)"));
    let month = month.trim();
    if month.len() != 7 {
        return Err(bad());
    }
    let first = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").map_err(|_| bad())?;
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .ok_or_else(bad)?;
    let (min, max) = super::cost::date_bounds();
    if first < min || next > max {
        return Err(InvalidParameter::new(
            "month",
            format!("`{shown}` is outside the months a statement covers (its days must lie between {min} and {max})"),
        ));
    }
    Ok((first, next))
}

/// What `cached` input tokens saved at `price` against paying its plain
/// input price: `cached × (input_per_token − cache_read_per_token)`,
/// rounded once to 12 places. `None` when the version has no cache-read
/// price (cached tokens are then billed as plain input: nothing saved) or
/// the product overflows. The statement's lines and the cost overview
/// ([`super::overview`]) both use it.
pub fn cache_savings(cached: i128, price: &PriceVersion) -> Option<Decimal> {
    let read = price.cache_read_per_token?;
    let saved = Decimal::try_from_i128_with_scale(cached, 0)
        .ok()?
        .checked_mul(price.input_per_token.checked_sub(read)?)?;
    Some(twelve_places(round(saved)))
}

/// `amount` written with the 12 places every amount of a statement has
/// (exact already: only trailing zeros are added).
fn twelve_places(mut amount: Decimal) -> Decimal {
    amount.rescale(12);
    amount
}

/// The month-end forecast of a month `[first, next)` with `so_far` spent
/// by `now`: the burn rate so far over the month's seconds, as a budget of
/// that month forecasts it
/// ([`tollgate_contract::cost::forecast_at_burn_rate`]: `so_far × month
/// seconds / elapsed seconds`, elapsed at least an hour, rounded once to 12
/// places), on the budgets' clock of whole minutes
/// ([`super::burndown::clock`]: a page and its CSV asked for in the same
/// minute agree); `None` unless `now` lies in the month. Used by the
/// statement and the cost overview.
pub fn month_end_forecast(
    so_far: Decimal,
    first: NaiveDate,
    next: NaiveDate,
    now: DateTime<Utc>,
) -> Option<BurnRateForecast> {
    let now = super::burndown::clock(now);
    let today = now.date_naive();
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    if !(first <= today && today < next) {
        return None;
    }
    Some(forecast_at_burn_rate(
        so_far,
        midnight(first)?,
        midnight(next)?,
        now,
    ))
}

/// The net repricing correction of a team's month per provider / model /
/// price version: the `cost_adjustments` rows, by the day of their call
/// (as `cost_daily` counts them), of one org when one is named.
pub const REPRICING_SQL: &str = "SELECT toString(provider) AS provider, toString(model) AS model, \
     price_version, sum(cost) AS cost FROM cost_adjustments \
     WHERE team_id = ? AND (? = '' OR org_id = ?) \
     AND toDate(occurred_at, 'UTC') >= toDate(?) AND toDate(occurred_at, 'UTC') < toDate(?) \
     GROUP BY provider, model, price_version";

/// The orgs with calls of a team in a month (a team id names a team only
/// with its org): a statement of a team id that more than one org uses
/// must name the org.
pub const ORGS_SQL: &str = "SELECT DISTINCT toString(org_id) AS org_id FROM cost_daily_by_team \
     WHERE team_id = ? AND day >= toDate(?) AND day < toDate(?) ORDER BY org_id LIMIT 11";

/// One row of [`ORGS_SQL`].
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
struct OrgRow {
    org_id: String,
}

/// One row of [`REPRICING_SQL`].
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
pub struct RepricingRow {
    pub provider: String,
    pub model: String,
    pub price_version: u64,
    /// `Decimal(38, 12)` mantissa.
    pub cost: i128,
}

fn repricing_sql(team: &str, org: Option<&str>, first: NaiveDate, next: NaiveDate) -> BoundSql {
    BoundSql {
        name: "statement.repricing",
        template: REPRICING_SQL.to_string(),
        binds: team_month_binds(team, org, first, next),
    }
}

fn orgs_sql(team: &str, first: NaiveDate, next: NaiveDate) -> BoundSql {
    BoundSql {
        name: "statement.orgs",
        template: ORGS_SQL.to_string(),
        binds: vec![
            SqlValue::Str(team.to_string()),
            SqlValue::Str(first.to_string()),
            SqlValue::Str(next.to_string()),
        ],
    }
}

/// The repricing corrections of `team`'s month `[first, next)` (of `org`
/// when given).
pub(crate) async fn repricing(
    models: &ReadModels,
    team: &str,
    org: Option<&str>,
    first: NaiveDate,
    next: NaiveDate,
) -> Result<Vec<RepricingRow>, ReadModelError> {
    let sql = repricing_sql(team, org, first, next);
    models
        .bounded(sql.query(models.client()).fetch_all::<RepricingRow>())
        .await
        .map_err(|err| models.classify(sql.name, err))
}

/// The orgs with calls of `team` in `[first, next)` (at most 11).
pub(crate) async fn orgs(
    models: &ReadModels,
    team: &str,
    first: NaiveDate,
    next: NaiveDate,
) -> Result<Vec<String>, ReadModelError> {
    let sql = orgs_sql(team, first, next);
    let rows = models
        .bounded(sql.query(models.client()).fetch_all::<OrgRow>())
        .await
        .map_err(|err| models.classify(sql.name, err))?;
    Ok(rows.into_iter().map(|r| r.org_id).collect())
}

/// A statement names one org's team: without `org`, the team id must
/// have calls of at most one org in the month (`orgs`, from
/// [`ORGS_SQL`]), else the request must name the org.
pub fn one_org(
    team: &str,
    month: &str,
    org: Option<&str>,
    orgs: &[String],
) -> Result<(), InvalidParameter> {
    if org.is_some() || orgs.len() < 2 {
        return Ok(());
    }
    let shown: Vec<&str> = orgs.iter().take(10).map(String::as_str).collect();
    Err(InvalidParameter::new(
        "org",
        format!(
            "team {team:?} has calls of {} orgs in {month} ({}{}): name one with org=",
            if orgs.len() > 10 {
                "more than 10".to_string()
            } else {
                orgs.len().to_string()
            },
            shown.join(", "),
            if orgs.len() > 10 { ", ..." } else { "" }
        ),
    ))
}

/// The statements of this module, for the SQL compatibility check.
pub(crate) fn catalog() -> Vec<BoundSql> {
    let first = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap_or_default();
    let next = NaiveDate::from_ymd_opt(2026, 4, 1).unwrap_or_default();
    vec![
        repricing_sql("team-a", None, first, next),
        repricing_sql("team-a", Some("acme"), first, next),
        orgs_sql("team-a", first, next),
        late_sql("team-a", None, first, next),
        late_sql("team-a", Some("acme"), first, next),
    ]
}

/// A statement request as its query string names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementParams {
    /// As given; empty when not given.
    pub team: String,
    /// `YYYY-MM` as given; the running month when not given.
    pub month: String,
    /// Only this org's spend of the team (the sign-in gate sets it for
    /// people who see only some orgs).
    pub org: Option<String>,
}

/// Read a statement's query string: `team`, `month` (`YYYY-MM`, default:
/// the month of `today`) and the parameters in `extra`, which the caller
/// reads itself from the returned [`QueryParams`]. Unknown and repeated
/// parameters are errors.
pub fn parse_params(
    pairs: &[(String, String)],
    today: NaiveDate,
    extra: &[&str],
) -> Result<(StatementParams, QueryParams), InvalidParameter> {
    let names: Vec<&str> = ["team", "month", "org"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let params = QueryParams::parse(pairs, &Expected::names(&names))?;
    let request = StatementParams {
        team: params.get("team").unwrap_or_default().to_string(),
        month: params
            .get("month")
            .map(str::to_string)
            .unwrap_or_else(|| today.format("%Y-%m").to_string()),
        org: params.get("org").map(str::to_string),
    };
    Ok((request, params))
}

/// The cost report a statement is built from.
pub fn statement_query(
    team: &str,
    month: &str,
    org: Option<&str>,
) -> Result<CostQuery, InvalidParameter> {
    if team.is_empty() {
        return Err(InvalidParameter::new("team", "is required"));
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
        std::iter::once((CostDimension::Team, team.to_string()))
            .chain(org.map(|o| (CostDimension::Org, o.to_string())))
            .collect(),
    )
}

/// Build the statement from its report and the catalog. `now` decides
/// whether the month is running (and so gets a forecast).
pub fn assemble(
    team: &str,
    month: &str,
    report: &CostReport,
    repricing: &[RepricingRow],
    catalog: &PriceCatalog,
    now: DateTime<Utc>,
) -> Statement {
    let mut lines = Vec::with_capacity(report.groups.len());
    let mut savings_total = Decimal::ZERO;
    let mut repricing_total = Decimal::ZERO;
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
        let (provider, model) = (key("provider"), key("model"));
        let corrections: Vec<Decimal> = repricing
            .iter()
            .filter(|r| {
                r.provider == provider && r.model == model && r.price_version == price_version
            })
            .filter_map(|r| from_mantissa(r.cost))
            .collect();
        let line_repricing =
            (!corrections.is_empty()).then(|| twelve_places(corrections.iter().sum::<Decimal>()));
        repricing_total += line_repricing.unwrap_or_default();
        lines.push(StatementLine {
            provider,
            model,
            price_version,
            prices,
            totals: g.totals.clone(),
            cache_savings,
            repricing: line_repricing,
        });
    }
    // A correction of a version none of the month's calls keeps (a reprice
    // moved them all to another): the reversal nets its line's cost to 0,
    // so the report has no line for it. It gets a line of its own, with no
    // calls and a cost of 0, so that the lines' corrections add up to the
    // statement's net (left out, the net read as the whole new cost).
    let mut orphans: Vec<StatementLine> = Vec::new();
    for r in repricing {
        let Some(amount) = from_mantissa(r.cost) else {
            continue;
        };
        let has_line = |l: &StatementLine| {
            l.provider == r.provider && l.model == r.model && l.price_version == r.price_version
        };
        // A correction that moved no money (a call that was unpriced) has
        // nothing to show.
        if amount.is_zero() || lines.iter().any(has_line) {
            continue;
        }
        repricing_total += amount;
        match orphans.iter_mut().find(|l| has_line(l)) {
            Some(line) => line.repricing = line.repricing.map(|sum| sum + amount),
            None => orphans.push(StatementLine {
                provider: r.provider.clone(),
                model: r.model.clone(),
                price_version: r.price_version,
                prices: i64::try_from(r.price_version)
                    .ok()
                    .filter(|id| *id != 0)
                    .and_then(|id| catalog.by_id(id))
                    .cloned(),
                totals: CostTotals {
                    // 0 with the 12 places every amount has.
                    cost: Some(Decimal::new(0, 12)),
                    ..CostTotals::default()
                },
                cache_savings: None,
                repricing: Some(amount),
            }),
        }
    }
    lines.extend(orphans);
    lines.sort_by(|a, b| {
        (&a.provider, &a.model, a.price_version).cmp(&(&b.provider, &b.model, b.price_version))
    });
    let forecast = month_end_forecast(
        report.total.cost.unwrap_or_default(),
        report.from,
        report.to,
        now,
    )
    .map(|f| f.forecast);
    Statement {
        team: team.to_string(),
        month: month.to_string(),
        lines,
        total: report.total.clone(),
        cache_savings: twelve_places(savings_total),
        repricing: twelve_places(repricing_total),
        forecast,
        as_of: now,
        late: None,
    }
}

fn opt(d: Option<Decimal>) -> String {
    d.map(|d| d.to_string()).unwrap_or_default()
}

/// The statement's table (its CSV): one row per statement line, then
/// `total`.
pub fn table(s: &Statement) -> Table {
    let mut table = Table::new(
        [
            "provider",
            "model",
            "price_version",
            "input_per_token",
            "cache_read_per_token",
            "cache_write_per_token",
            "output_per_token",
            "reasoning_per_token",
            "per_image",
            "per_audio_second",
            "per_request",
        ]
        .into_iter()
        .chain(COUNT_COLUMNS)
        .chain(["cache_savings_usd", "repricing_usd", "cost_usd"]),
    );
    for l in &s.lines {
        let p = l.prices.as_ref();
        let price = |f: fn(&PriceVersion) -> Option<Decimal>| opt(p.and_then(f));
        let mut row = vec![
            l.provider.clone(),
            l.model.clone(),
            l.price_version.to_string(),
            price(|p| Some(p.input_per_token)),
            price(|p| p.cache_read_per_token),
            price(|p| p.cache_write_per_token),
            price(|p| Some(p.output_per_token)),
            price(|p| p.reasoning_per_token),
            price(|p| Some(p.per_image)),
            price(|p| Some(p.per_audio_second)),
            usd_or_empty(p.map(|p| p.per_request)),
        ];
        row.extend(l.totals.count_cells());
        row.extend([
            usd_or_empty(l.cache_savings),
            usd_or_empty(l.repricing),
            l.totals.cost_label(),
        ]);
        table.push(row);
    }
    let mut total = vec!["total".to_string()];
    total.extend(std::iter::repeat_n(String::new(), 10));
    total.extend(s.total.count_cells());
    total.extend([usd(s.cache_savings), usd(s.repricing), s.total.cost_label()]);
    table.push(total);
    table
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `GET /api/v1/finance/statement` of the sample, as JSON and CSV.
    #[test]
    fn json_and_csv_snapshots() {
        let statement = crate::samples::statement();
        insta::assert_snapshot!("json", serde_json::to_string_pretty(&statement).unwrap());
        insta::assert_snapshot!("csv", table(&statement).to_csv());
    }

    #[test]
    fn a_team_id_of_several_orgs_needs_the_org() {
        let orgs = |n: usize| (0..n).map(|i| format!("org-{i:02}")).collect::<Vec<_>>();
        assert!(one_org("t", "2026-12", None, &orgs(1)).is_ok());
        assert!(one_org("t", "2026-12", None, &[]).is_ok());
        assert!(one_org("t", "2026-12", Some("org-00"), &orgs(2)).is_ok());
        let err = one_org("t", "2026-12", None, &orgs(2)).unwrap_err();
        assert_eq!(err.field, "org");
        assert!(
            err.reason.contains("2 orgs in 2026-12 (org-00, org-01)"),
            "{err}"
        );
        let err = one_org("t", "2026-12", None, &orgs(11)).unwrap_err();
        assert!(
            err.reason.contains("more than 10 orgs") && err.reason.contains("org-09, ..."),
            "{err}"
        );
    }

    #[test]
    fn months() {
        let (a, b) = month_range("2026-12").unwrap();
        assert_eq!(
            (a.to_string(), b.to_string()),
            ("2026-12-01".into(), "2027-01-01".into())
        );
        assert!(month_range("2026-13").is_err());
        for bad in [
            "2026-1",
            "26-01",
            "2026-01-05",
            "9999-12",
            "1970-01",
            "2105-12",
        ] {
            let err = month_range(bad).unwrap_err();
            assert_eq!(err.field, "month", "{bad}");
            assert!(err.reason.contains(bad), "{bad}: {err}");
        }
        assert!(month_range("1970-02").is_ok() && month_range("2105-11").is_ok());
        assert!(statement_query("", "2026-03", None).is_err());
    }

    #[test]
    fn forecast_is_the_burn_rate_over_the_months_seconds() {
        let (first, next) = month_range("2026-11").unwrap();
        let at = |d, h, m| {
            NaiveDate::from_ymd_opt(2026, 11, d)
                .unwrap()
                .and_hms_opt(h, m, 0)
                .unwrap()
                .and_utc()
        };
        let forecast = |so_far: &str, now| {
            month_end_forecast(so_far.parse().unwrap(), first, next, now).map(|f| f.forecast)
        };
        // 1.5 over 9 whole days of 30: 1.5 × 30 / 9 = 5.
        assert_eq!(forecast("1.5", at(10, 0, 0)), Some("5".parse().unwrap()));
        // Half a month: twice the spend.
        assert_eq!(forecast("1.5", at(16, 0, 0)), Some("3".parse().unwrap()));
        // Two minutes into the month count as the first hour: 1.5 × 720.
        assert_eq!(forecast("1.5", at(1, 0, 2)), Some("1080".parse().unwrap()));
        // 1 × 30 / 7 = 4.285714285714|2857..., rounded to 12 places.
        assert_eq!(
            forecast("1", at(8, 0, 0)),
            Some("4.285714285714".parse().unwrap())
        );
        let next_month = next.and_hms_opt(0, 0, 0).unwrap().and_utc();
        assert_eq!(forecast("1", next_month), None);
        let f = month_end_forecast(Decimal::ONE, first, next, at(3, 12, 0)).unwrap();
        assert_eq!((f.elapsed_seconds, f.period_seconds), (216_000, 2_592_000));
    }

    /// One number: a month's forecast on the statement and the overview is
    /// the forecast of a monthly budget over the same spend at the same
    /// minute.
    #[test]
    fn the_month_end_forecast_is_a_monthly_budgets() {
        use tollgate_control::budgets::{status_of, Budget, Period, SubjectKind};
        let (first, next) = month_range("2026-12").unwrap();
        let budget = Budget {
            id: 1,
            subject_kind: SubjectKind::Org,
            subject_id: "acme".into(),
            period: Period::Monthly,
            limit_usd: Decimal::from(2_000),
            hard: false,
            thresholds: vec![],
            org_id: Some("acme".into()),
        };
        let spend: Decimal = "1300.123456789012".parse().unwrap();
        for now in [
            "2026-12-07T00:02:31Z",
            "2026-12-01T00:10:00Z",
            "2026-12-19T17:45:59Z",
        ] {
            let now: DateTime<Utc> = now.parse().unwrap();
            let ours = month_end_forecast(spend, first, next, now)
                .unwrap()
                .forecast;
            let budgets =
                status_of(&budget, spend, super::super::burndown::clock(now)).forecast_usd;
            assert_eq!(ours, budgets, "{now}");
        }
    }
}
