//! The cost overview: what a finance user reads at a glance for the period
//! and filters of a cost report. The top spenders (the five users and the
//! five API keys with the highest cost), the savings from cached input
//! tokens, and the month-end forecast of the running month when the period
//! covers it, plus the period's total.
//!
//! Assembled from cost report statements ([`super::cost`]: the report by
//! month × price version, and two top-N reports) and the price catalog. The
//! savings and the forecast are the statement's formulas
//! ([`statement::cache_savings`], [`statement::month_end_forecast`]), so an
//! overview of one team and month shows the statement's figures.
//!
//! A report that names a tag key covers the tagged spend (the tag rollup);
//! its overview does too, and has no top spenders (the tag rollup has no
//! user or key).

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use super::cost::{CostDimension, CostGroup, CostQuery, CostReport, CostTotals};
use super::statement;
use super::table::Table;
use super::{BoundSql, ReadModelError, ReadModels};
use tollgate_contract::catalog::PriceCatalog;

/// How many users and keys the overview lists.
pub const TOP_SPENDERS: u64 = 5;

/// The overview of one cost report's period and filters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CostOverview {
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// By parameter name, as in the report.
    pub filters: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag_key: Option<String>,
    /// The UTC day the overview was computed on (it decides the running
    /// month).
    pub today: NaiveDate,
    /// The period's totals (the report's `total`).
    pub total: CostTotals,
    /// The costliest users, highest first (the report's group order);
    /// `None` for a tag report.
    pub top_users: Option<Vec<CostGroup>>,
    /// The costliest API keys, likewise.
    pub top_keys: Option<Vec<CostGroup>>,
    /// Σ over price versions of cached input tokens × (input price −
    /// cache-read price); versions without a cache-read price save 0.
    /// `None` when the server has no price catalog.
    pub cache_savings: Option<Decimal>,
    /// The running month's forecast, when the period covers it.
    pub forecast: Option<MonthForecast>,
}

/// The month-end forecast of the running month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MonthForecast {
    /// `YYYY-MM`.
    pub month: String,
    /// The month's cost within the period and filters.
    pub cost_so_far: Decimal,
    pub days_in_month: i64,
    /// Seconds of the month up to the overview's instant (at least an
    /// hour).
    pub elapsed_seconds: i64,
    /// The month's seconds.
    pub month_seconds: i64,
    /// `cost_so_far × month_seconds / elapsed_seconds`, rounded once to 12
    /// places: the burn rate so far, as a monthly budget's forecast
    /// ([`statement::month_end_forecast`]).
    pub cost: Decimal,
}

/// The running month `[first day, first day of the next)` of `today`.
fn running_month(today: NaiveDate) -> (NaiveDate, NaiveDate) {
    let first = today.with_day(1).unwrap_or(today);
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(first);
    (first, next)
}

/// Whether the period and filters of `query` cover the running month so
/// far: the period starts on or before its first day and includes today,
/// and no filter names a day or another month.
pub fn covers_running_month(query: &CostQuery, today: NaiveDate) -> bool {
    let (first, _) = running_month(today);
    let month = first.format("%Y-%m").to_string();
    query.from <= first
        && query.to > today
        && query.filters.iter().all(|(d, v)| match d {
            CostDimension::Day => false,
            CostDimension::Month => *v == month,
            _ => true,
        })
}

/// The report of `query`'s period and filters by month and price version,
/// which the savings, the forecast and the total are computed from.
pub(crate) fn by_month_and_version(query: &CostQuery) -> CostQuery {
    CostQuery {
        group_by: vec![CostDimension::Month, CostDimension::PriceVersion],
        ..query.clone()
    }
}

/// The report whose top groups are the top spenders by `d` (user or key);
/// `None` for a tag report (the tag rollup has neither).
pub(crate) fn spenders(query: &CostQuery, d: CostDimension) -> Option<CostQuery> {
    query.tag_key.is_none().then(|| CostQuery {
        group_by: vec![d],
        ..query.clone()
    })
}

pub(crate) async fn run(
    models: &ReadModels,
    query: &CostQuery,
    catalog: Option<&PriceCatalog>,
    now: DateTime<Utc>,
) -> Result<CostOverview, ReadModelError> {
    let top = |d| async move {
        match spenders(query, d) {
            Some(q) => super::cost::run_top(models, &q, TOP_SPENDERS)
                .await
                .map(Some),
            None => Ok(None),
        }
    };
    let by_version = by_month_and_version(query);
    let (versions, users, keys) = tokio::try_join!(
        super::cost::run(models, &by_version),
        top(CostDimension::User),
        top(CostDimension::Key),
    )?;
    Ok(assemble(
        query,
        &versions,
        users.map(|r| r.groups),
        keys.map(|r| r.groups),
        catalog,
        now,
    ))
}

/// Build the overview from the report by month and price version and the
/// top groups. Pure: unit-tested without a server.
pub fn assemble(
    query: &CostQuery,
    by_month_and_version: &CostReport,
    top_users: Option<Vec<CostGroup>>,
    top_keys: Option<Vec<CostGroup>>,
    catalog: Option<&PriceCatalog>,
    now: DateTime<Utc>,
) -> CostOverview {
    let today = now.date_naive();
    let key = |g: &CostGroup, d: CostDimension| g.key.get(d.name()).cloned().unwrap_or_default();
    // Cached tokens per version over the whole period, then the statement's
    // savings per version: a version's savings are rounded once, as on its
    // statement line.
    let mut cached: BTreeMap<i64, i128> = BTreeMap::new();
    for g in &by_month_and_version.groups {
        let version: i64 = key(g, CostDimension::PriceVersion).parse().unwrap_or(0);
        if version != 0 {
            *cached.entry(version).or_default() += g.totals.cached_input_tokens;
        }
    }
    let cache_savings = catalog.map(|catalog| {
        cached
            .iter()
            .filter_map(|(version, tokens)| {
                statement::cache_savings(*tokens, catalog.by_id(*version)?)
            })
            .sum()
    });
    let forecast = covers_running_month(query, today)
        .then(|| {
            let (first, next) = running_month(today);
            let month = first.format("%Y-%m").to_string();
            let so_far: Decimal = by_month_and_version
                .groups
                .iter()
                .filter(|g| key(g, CostDimension::Month) == month)
                .filter_map(|g| g.totals.cost)
                .sum();
            let forecast = statement::month_end_forecast(so_far, first, next, now)?;
            Some(MonthForecast {
                month,
                cost_so_far: so_far,
                days_in_month: (next - first).num_days(),
                elapsed_seconds: forecast.elapsed_seconds,
                month_seconds: forecast.period_seconds,
                cost: forecast.forecast,
            })
        })
        .flatten();
    CostOverview {
        from: query.from,
        to: query.to,
        filters: query.filters_by_name(),
        tag_key: query.tag_key.clone(),
        today,
        total: by_month_and_version.total.clone(),
        top_users,
        top_keys,
        cache_savings,
        forecast,
    }
}

/// The top spenders' table (its CSV): the users, then the keys, each
/// ranked from 1, with the cost as in the report (exact decimal, or
/// `unpriced`).
pub fn top_table(overview: &CostOverview) -> Table {
    let mut table = Table::new([
        "dimension",
        "rank",
        "id",
        "calls",
        "unpriced_calls",
        "cost_usd",
    ]);
    for (d, groups) in [
        (CostDimension::User, &overview.top_users),
        (CostDimension::Key, &overview.top_keys),
    ] {
        for (i, g) in groups.iter().flatten().enumerate() {
            table.push([
                d.name().to_string(),
                (i + 1).to_string(),
                g.key.get(d.name()).cloned().unwrap_or_default(),
                g.totals.calls.to_string(),
                g.totals.unpriced_calls.to_string(),
                g.totals.cost_label(),
            ]);
        }
    }
    table
}

/// Sample statements for the SQL compatibility check: the report by month
/// and price version (plain and tagged) and the top-N report.
pub(crate) fn catalog() -> Vec<BoundSql> {
    let day = |d| NaiveDate::from_ymd_opt(2026, 3, d).unwrap_or_default();
    let query = CostQuery {
        from: day(1),
        to: day(31),
        group_by: vec![],
        filters: vec![
            (CostDimension::Team, "team-a".into()),
            (CostDimension::Provider, "openai".into()),
        ],
        tag_key: None,
    };
    let tagged = CostQuery {
        filters: vec![(CostDimension::Tag, "search".into())],
        tag_key: Some("feature".into()),
        ..query.clone()
    };
    let named = |mut sql: BoundSql, name| {
        sql.name = name;
        sql
    };
    let mut out = vec![
        named(
            super::cost::cost_sql(&by_month_and_version(&query)),
            "cost.overview.by_month_and_version",
        ),
        named(
            super::cost::cost_sql(&by_month_and_version(&tagged)),
            "cost.overview.tags.by_month_and_version",
        ),
    ];
    for (d, name) in [
        (CostDimension::User, "cost.overview.top_users"),
        (CostDimension::Key, "cost.overview.top_keys"),
    ] {
        if let Some(q) = spenders(&query, d) {
            out.push(named(super::cost::top_sql(&q, TOP_SPENDERS), name));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    /// `GET /api/v1/reports/cost/overview` of the sample, as JSON and its
    /// top spenders CSV.
    #[test]
    fn json_and_top_csv_snapshots() {
        let overview = crate::samples::overview();
        insta::assert_snapshot!("json", serde_json::to_string_pretty(&overview).unwrap());
        insta::assert_snapshot!("top_csv", top_table(&overview).to_csv());
    }
    use tollgate_contract::catalog::PriceVersion;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn day(m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, m, d).unwrap()
    }

    fn version(id: i64, input: &str, read: Option<&str>) -> PriceVersion {
        PriceVersion {
            id,
            provider: "p".into(),
            model: "m".into(),
            effective_from: Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
            input_per_token: d(input),
            output_per_token: Decimal::ZERO,
            cache_read_per_token: read.map(d),
            cache_write_per_token: None,
            reasoning_per_token: None,
            per_image: Decimal::ZERO,
            per_audio_second: Decimal::ZERO,
            per_request: Decimal::ZERO,
            tiers: Vec::new(),
            source: String::new(),
            note: String::new(),
        }
    }

    fn group(month: &str, version: u64, cached: i64, cost: Option<&str>) -> CostGroup {
        CostGroup {
            key: [
                ("month".to_string(), month.to_string()),
                ("price_version".to_string(), version.to_string()),
            ]
            .into(),
            totals: CostTotals {
                calls: 1,
                unpriced_calls: i64::from(cost.is_none()),
                cached_input_tokens: i128::from(cached),
                cost: cost.map(d),
                ..CostTotals::default()
            },
        }
    }

    fn report(query: &CostQuery, groups: Vec<CostGroup>) -> CostReport {
        let mut total = CostTotals::default();
        for g in &groups {
            total.calls += g.totals.calls;
            total.cost = Some(total.cost.unwrap_or_default() + g.totals.cost.unwrap_or_default());
        }
        CostReport {
            from: query.from,
            to: query.to,
            group_by: vec!["month".into(), "price_version".into()],
            filters: BTreeMap::new(),
            tag_key: None,
            groups,
            total,
        }
    }

    #[test]
    fn savings_per_version_and_forecast_of_the_running_month() {
        // 2026-11-22 00:00 UTC: 21 whole days of 30 elapsed.
        let now = day(11, 22).and_hms_opt(0, 0, 0).unwrap().and_utc();
        let query = CostQuery::new(day(10, 1), day(11, 23), vec![], vec![]).unwrap();
        let catalog = PriceCatalog::new([
            version(1, "0.000002", Some("0.0000005")),
            version(2, "0.000003", Some("0.000001")),
            version(3, "0.000001", None),
        ]);
        let by = report(
            &query,
            vec![
                group("2026-10", 1, 1000, Some("1.25")),
                group("2026-11", 1, 500, Some("0.5")),
                group("2026-11", 2, 300, Some("0.25")),
                group("2026-11", 3, 10_000, Some("0.1")),
                // Unpriced calls have version 0 and save nothing.
                group("2026-11", 0, 7, None),
            ],
        );
        let o = assemble(&query, &by, None, None, Some(&catalog), now);
        // 1500 × 0.0000015 + 300 × 0.000002 + 0 (no cache-read price)
        assert_eq!(o.cache_savings, Some(d("0.00285")));
        let f = o.forecast.unwrap();
        assert_eq!(f.month, "2026-11");
        assert_eq!(f.cost_so_far, d("0.85"));
        assert_eq!(
            (f.days_in_month, f.elapsed_seconds, f.month_seconds),
            (30, 21 * 86_400, 30 * 86_400)
        );
        // 0.85 × 30 / 21 = 1.214285714285|714...
        assert_eq!(f.cost, d("1.214285714286"));
        assert_eq!(o.total.cost, Some(d("2.1")));
        // Without a catalog nothing can be said about savings.
        let o = assemble(&query, &by, None, None, None, now);
        assert_eq!(o.cache_savings, None);
    }

    #[test]
    fn forecast_only_when_the_period_covers_the_running_month() {
        let today = day(11, 22);
        let q = |from, to, filters| CostQuery::new(from, to, vec![], filters).unwrap();
        assert!(covers_running_month(
            &q(day(11, 1), day(11, 23), vec![]),
            today
        ));
        assert!(covers_running_month(
            &q(day(1, 1), day(12, 31), vec![]),
            today
        ));
        // Starts after the first: the month so far is not in the period.
        assert!(!covers_running_month(
            &q(day(11, 2), day(11, 23), vec![]),
            today
        ));
        // Ends before today.
        assert!(!covers_running_month(
            &q(day(11, 1), day(11, 22), vec![]),
            today
        ));
        let month = |m: &str| vec![(CostDimension::Month, m.to_string())];
        assert!(covers_running_month(
            &q(day(10, 1), day(11, 23), month("2026-11")),
            today
        ));
        assert!(!covers_running_month(
            &q(day(10, 1), day(11, 23), month("2026-10")),
            today
        ));
        let one_day = vec![(CostDimension::Day, "2026-11-22".to_string())];
        assert!(!covers_running_month(
            &q(day(11, 1), day(11, 23), one_day),
            today
        ));
    }

    #[test]
    fn top_csv_ranks_users_then_keys() {
        let query = CostQuery::new(day(11, 1), day(11, 23), vec![], vec![]).unwrap();
        let spender = |dim: &str, id: &str, cost: Option<&str>| CostGroup {
            key: [(dim.to_string(), id.to_string())].into(),
            totals: CostTotals {
                calls: 2,
                unpriced_calls: i64::from(cost.is_none()) * 2,
                cost: cost.map(d),
                ..CostTotals::default()
            },
        };
        let o = assemble(
            &query,
            &report(&query, vec![]),
            Some(vec![
                spender("user", "=alice", Some("0.300000000000")),
                spender("user", "bob", None),
            ]),
            Some(vec![spender("key", "k1", Some("0.3"))]),
            None,
            day(11, 22).and_hms_opt(12, 0, 0).unwrap().and_utc(),
        );
        assert_eq!(
            top_table(&o).to_csv(),
            "dimension,rank,id,calls,unpriced_calls,cost_usd\n\
             user,1,'=alice,2,0,0.300000000000\n\
             user,2,bob,2,2,unpriced\n\
             key,1,k1,2,0,0.300000000000\n"
        );
    }

    #[test]
    fn top_sql_orders_priced_groups_by_cost_and_binds_the_limit() {
        let query = CostQuery::new(
            day(11, 1),
            day(11, 23),
            vec![],
            vec![(CostDimension::Team, "a".into())],
        )
        .unwrap();
        let q = spenders(&query, CostDimension::User).unwrap();
        let text = super::super::cost::top_sql(&q, TOP_SPENDERS).text();
        assert!(text.contains("user_id AS k_user"), "{text}");
        assert!(text.contains("team_id = 'a'"), "{text}");
        assert!(
            text.ends_with(
                "ORDER BY (s_calls != s_unpriced_calls OR s_cost != 0) DESC, s_cost DESC, \
                 k_day, k_month, k_org, k_team, k_user, k_key, k_provider, k_model, \
                 k_price_version, k_tag LIMIT 5"
            ),
            "{text}"
        );
        // A tag report has no spenders.
        let tagged = CostQuery::with_tag(
            day(11, 1),
            day(11, 23),
            vec![],
            vec![],
            Some("feature".into()),
        )
        .unwrap();
        assert!(spenders(&tagged, CostDimension::User).is_none());
    }
}
