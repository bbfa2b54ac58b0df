//! Sample reports built from plain values, no ClickHouse: one of each
//! report, with the figures a team could really see (percentiles of a busy
//! and a small group, priced and unpriced spend, a repricing correction, a
//! budget half spent). The snapshot tests of the reports' JSON and CSV
//! (here) and of their pages (`tollgate-dashboards`, feature `samples`)
//! render the same values, so a change to any of the three is a visible
//! diff. Names with a comma or a leading `=` check CSV quoting and the
//! formula guard.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;

use crate::burndown::{self, Burndown};
use crate::cost::{CostDimension, CostGroup, CostQuery, CostReport, CostTotals};
use crate::latency::{
    Dimension, GroupKey, LatencyFilters, LatencyGroup, LatencyReport, PercentileMethod,
    Percentiles, SeriesPoint, Stats, HISTOGRAM_MAX_RELATIVE_ERROR,
};
use crate::overview::{self, CostOverview};
use crate::statement::{self, RepricingRow, Statement};
use tollgate_contract::catalog::{PriceCatalog, PriceVersion};
use tollgate_control::budgets::{status_of, Budget, BudgetStatus, Period, SubjectKind};

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, d).unwrap_or_default()
}

fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, d, h, m, 0)
        .single()
        .unwrap_or_default()
}

/// `mantissa × 10^-scale`.
fn usd(mantissa: i64, scale: u32) -> Decimal {
    Decimal::new(mantissa, scale)
}

/// The day the finance samples are read on: 2026-03-22, in the running
/// month.
pub fn today() -> NaiveDate {
    day(22)
}

/// When the budget samples are read: 2026-03-22 14:30 UTC.
pub fn now() -> DateTime<Utc> {
    at(22, 14, 30)
}

// ---------------------------------------------------------------- latency

fn exact(p50: f64, p95: f64, p99: f64) -> Percentiles {
    Percentiles {
        p50,
        // A sample's p90: three quarters of the way from p50 to p95.
        p90: ((p50 + 3.0 * p95) / 4.0 * 1_000.0).round() / 1_000.0,
        p95,
        p99,
        method: PercentileMethod::Exact,
        max_relative_error: 0.0,
    }
}

fn estimated(p50: f64, p95: f64, p99: f64) -> Percentiles {
    Percentiles {
        method: PercentileMethod::Histogram,
        max_relative_error: HISTOGRAM_MAX_RELATIVE_ERROR,
        ..exact(p50, p95, p99)
    }
}

fn stats(count: u64, errors: u64, duration: Percentiles, ttft: Option<Percentiles>) -> Stats {
    Stats {
        count,
        errors,
        error_rate: errors as f64 / count as f64,
        duration_ms: duration,
        ttft_count: if ttft.is_some() { count } else { 0 },
        ttft_ms: ttft,
    }
}

/// The slowest calls of the sample latency window: one traced by the
/// proxy (hex ids), one with another producer's trace id (text a link must
/// escape), one without a trace.
pub fn slowest_calls() -> Vec<crate::slow_calls::SlowCall> {
    use crate::slow_calls::SlowCall;
    let call = |ms: u32, id: &str, trace_id: &str, span_id: &str| SlowCall {
        occurred_at: at(10, 10, 4) + chrono::Duration::milliseconds(i64::from(ms)),
        call_id: id.into(),
        attempt: 1,
        org: "acme".into(),
        team: "search".into(),
        provider: "openai".into(),
        model: "gpt-4o".into(),
        outcome: "success".into(),
        http_status: 200,
        duration_ms: ms,
        ttft_ms: (ms < 5000).then_some(ms / 4),
        trace_id: trace_id.into(),
        span_id: span_id.into(),
    };
    vec![
        call(
            9120,
            "0195d0a0-0000-7000-8000-000000000001",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
        ),
        call(
            4310,
            "0195d0a0-0000-7000-8000-000000000002",
            "batch run/7&x=<1>",
            "",
        ),
        call(2875, "0195d0a0-0000-7000-8000-000000000003", "", ""),
    ]
}

/// A quarter hour by provider and model in 5-minute buckets: a streamed
/// Anthropic group small enough for exact percentiles, and an OpenAI group
/// over 1,000 calls whose totals are histogram estimates.
pub fn latency_report() -> LatencyReport {
    let key = |provider: &str, model: &str| GroupKey {
        provider: Some(provider.into()),
        model: Some(model.into()),
        ..GroupKey::default()
    };
    let point = |minute: u32, stats: Stats| SeriesPoint {
        bucket_start: at(10, 10, minute),
        stats,
    };
    LatencyReport {
        from: at(10, 10, 0),
        to: at(10, 10, 15),
        bucket_secs: 300,
        group_by: vec![Dimension::Provider, Dimension::Model],
        groups: vec![
            LatencyGroup {
                key: key("anthropic", "claude-sonnet-4"),
                total: stats(
                    412,
                    3,
                    exact(842.317, 1910.5, 2480.004),
                    Some(exact(212.4, 388.0, 512.75)),
                ),
                series: vec![
                    point(
                        0,
                        stats(
                            140,
                            1,
                            exact(811.2, 1850.0, 2301.9),
                            Some(exact(205.1, 371.3, 498.0)),
                        ),
                    ),
                    point(
                        5,
                        stats(
                            137,
                            0,
                            exact(850.04, 1922.6, 2455.5),
                            Some(exact(214.0, 390.2, 505.6)),
                        ),
                    ),
                    point(
                        10,
                        stats(
                            135,
                            2,
                            exact(866.9, 1960.25, 2480.004),
                            Some(exact(218.8, 401.0, 512.75)),
                        ),
                    ),
                ],
            },
            LatencyGroup {
                key: key("openai", "gpt-4o"),
                total: stats(2318, 41, estimated(611.2, 1502.8, 2977.1), None),
                series: vec![
                    point(0, stats(790, 12, exact(598.5, 1460.0, 2810.4), None)),
                    point(5, stats(771, 15, exact(615.75, 1511.2, 2950.0), None)),
                    point(10, stats(757, 14, exact(620.3, 1530.9, 3012.6), None)),
                ],
            },
        ],
    }
}

// ---------------------------------------------------------------- cost

fn totals(calls: i64, unpriced: i64, input: i128, cached: i128, output: i128) -> CostTotals {
    CostTotals {
        calls,
        unpriced_calls: unpriced,
        input_tokens: input,
        cached_input_tokens: cached,
        output_tokens: output,
        ..CostTotals::default()
    }
}

fn group(key: &[(&str, &str)], totals: CostTotals, cost: Option<Decimal>) -> CostGroup {
    CostGroup {
        key: key
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        totals: CostTotals { cost, ..totals },
    }
}

/// March 2026 so far (to the 23rd, exclusive) by team and model.
pub fn cost_query() -> CostQuery {
    CostQuery {
        from: day(1),
        to: day(23),
        group_by: vec![CostDimension::Team, CostDimension::Model],
        filters: Vec::new(),
        tag_key: None,
    }
}

/// [`cost_query`]'s report: two priced groups (gpt-4o with cached input)
/// and an unpriced fine-tune, highest cost first.
pub fn cost_report() -> CostReport {
    CostReport::of_groups(
        &cost_query(),
        vec![
            group(
                &[("team", "team-search"), ("model", "gpt-4o")],
                CostTotals {
                    images: 12,
                    audio_ms: 90_500,
                    ..totals(1200, 0, 2_400_000, 600_000, 360_000)
                },
                Some(usd(8_850_000_000_000, 12)),
            ),
            group(
                &[("team", "team-support"), ("model", "claude-sonnet-4")],
                totals(640, 0, 1_280_000, 0, 192_000),
                Some(usd(6_720_000_000_000, 12)),
            ),
            group(
                &[("team", "team-labs"), ("model", "llama-3-70b,ft")],
                totals(25, 25, 50_000, 0, 10_000),
                None,
            ),
        ],
    )
}

fn price(
    id: i64,
    provider: &str,
    model: &str,
    input: Decimal,
    read: Decimal,
    output: Decimal,
) -> PriceVersion {
    PriceVersion {
        id,
        provider: provider.into(),
        model: model.into(),
        effective_from: at(1, 0, 0),
        input_per_token: input,
        output_per_token: output,
        cache_read_per_token: Some(read),
        cache_write_per_token: None,
        reasoning_per_token: None,
        per_image: Decimal::ZERO,
        per_audio_second: Decimal::ZERO,
        per_request: Decimal::ZERO,
        tiers: Vec::new(),
        source: "litellm".into(),
        note: String::new(),
    }
}

/// The price versions the samples' calls were priced at.
pub fn catalog() -> PriceCatalog {
    PriceCatalog::new([
        PriceVersion {
            per_image: usd(1, 2),
            ..price(7, "openai", "gpt-4o", usd(25, 7), usd(125, 8), usd(1, 5))
        },
        PriceVersion {
            per_audio_second: usd(1, 4),
            ..price(
                9,
                "openai",
                "gpt-4o-mini",
                usd(15, 8),
                usd(75, 9),
                usd(6, 7),
            )
        },
        price(
            12,
            "anthropic",
            "claude-sonnet-4",
            usd(3, 6),
            usd(3, 7),
            usd(15, 6),
        ),
    ])
}

/// The overview of [`cost_query`]'s period: the savings of gpt-4o's cached
/// input, the month-end forecast and the top spenders (one user name needs
/// the formula guard).
pub fn overview() -> CostOverview {
    let query = cost_query();
    let by_month_and_version = CostReport::of_groups(
        &CostQuery {
            group_by: vec![CostDimension::Month, CostDimension::PriceVersion],
            ..query.clone()
        },
        vec![
            group(
                &[("month", "2026-03"), ("price_version", "7")],
                totals(1200, 0, 2_400_000, 600_000, 360_000),
                Some(usd(8_850_000_000_000, 12)),
            ),
            group(
                &[("month", "2026-03"), ("price_version", "12")],
                totals(640, 0, 1_280_000, 0, 192_000),
                Some(usd(6_720_000_000_000, 12)),
            ),
            group(
                &[("month", "2026-03"), ("price_version", "0")],
                totals(25, 25, 50_000, 0, 10_000),
                None,
            ),
        ],
    );
    let spender = |d: &str, id: &str, totals: CostTotals, cost| group(&[(d, id)], totals, cost);
    overview::assemble(
        &query,
        &by_month_and_version,
        Some(vec![
            spender(
                "user",
                "=alice",
                totals(910, 0, 1_820_000, 450_000, 273_000),
                Some(usd(8_100_000_000_000, 12)),
            ),
            spender(
                "user",
                "bob",
                totals(930, 0, 1_860_000, 150_000, 279_000),
                Some(usd(7_470_000_000_000, 12)),
            ),
            spender("user", "carol", totals(25, 25, 50_000, 0, 10_000), None),
        ]),
        Some(vec![
            spender(
                "key",
                "k-prod",
                totals(1500, 0, 3_000_000, 600_000, 450_000),
                Some(usd(12_000_000_000_000, 12)),
            ),
            spender(
                "key",
                "k-dev",
                totals(340, 0, 680_000, 0, 102_000),
                Some(usd(3_570_000_000_000, 12)),
            ),
            spender("key", "k-labs", totals(25, 25, 50_000, 0, 10_000), None),
        ]),
        Some(&catalog()),
        now(),
    )
}

/// team-search's March statement: two priced lines (gpt-4o corrected by a
/// repricing, whose reversal has a line of its own), an unpriced one, and
/// the running month's forecast.
pub fn statement() -> Statement {
    let line = |provider: &str, model: &str, version: &str| {
        [
            ("provider", provider.to_string()),
            ("model", model.to_string()),
            ("price_version", version.to_string()),
        ]
    };
    let query = CostQuery {
        from: day(1),
        to: NaiveDate::from_ymd_opt(2026, 4, 1).unwrap_or_default(),
        group_by: vec![
            CostDimension::Provider,
            CostDimension::Model,
            CostDimension::PriceVersion,
        ],
        filters: vec![(CostDimension::Team, "team-search".into())],
        tag_key: None,
    };
    let groups = [
        (
            line("openai", "gpt-4o", "7"),
            CostTotals {
                images: 12,
                ..totals(1200, 0, 2_400_000, 600_000, 360_000)
            },
            Some(usd(8_600_000_000_000, 12)),
        ),
        (
            line("openai", "gpt-4o-mini", "9"),
            CostTotals {
                audio_ms: 90_500,
                ..totals(300, 0, 450_000, 0, 90_000)
            },
            Some(usd(121_500_000_000, 12)),
        ),
        (
            line("testprov", "=mystery,model", "0"),
            totals(4, 4, 8_000, 0, 1_000),
            None,
        ),
    ]
    .into_iter()
    .map(|(key, totals, cost)| CostGroup {
        key: key.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        totals: CostTotals { cost, ..totals },
    })
    .collect();
    // A correction moved gpt-4o's calls from version 6 to 7: 2.35 USD
    // reversed at 6 (which keeps no call, so no line of the report), 2.10
    // posted at 7; the net is -0.25 USD (Decimal(38, 12) mantissas).
    let repricing = [
        RepricingRow {
            provider: "openai".into(),
            model: "gpt-4o".into(),
            price_version: 7,
            cost: 2_100_000_000_000,
        },
        RepricingRow {
            provider: "openai".into(),
            model: "gpt-4o".into(),
            price_version: 6,
            cost: -2_350_000_000_000,
        },
    ];
    statement::assemble(
        "team-search",
        "2026-03",
        &CostReport::of_groups(&query, groups),
        &repricing,
        &catalog(),
        now(),
    )
}

// ---------------------------------------------------------------- budgets

/// A hard monthly team budget a third spent, a soft daily key budget past
/// its 80 % warning, and an untouched org budget (its id needs the
/// formula guard).
pub fn budgets() -> Vec<BudgetStatus> {
    let budget = |id, kind, subject: &str, period, limit, hard| Budget {
        id,
        subject_kind: kind,
        subject_id: subject.into(),
        period,
        limit_usd: limit,
        hard,
        thresholds: vec![50, 80, 100],
        org_id: Some(
            if kind == SubjectKind::Org {
                subject
            } else {
                "acme"
            }
            .to_string(),
        ),
    };
    vec![
        status_of(
            &budget(
                1,
                SubjectKind::Team,
                "team-search",
                Period::Monthly,
                usd(50, 0),
                true,
            ),
            usd(15_570_000_000_000, 12),
            now(),
        ),
        status_of(&daily_key_budget(), usd(1_700_000_000_000, 12), now()),
        status_of(
            &budget(
                3,
                SubjectKind::Org,
                "=acme",
                Period::Monthly,
                usd(100, 0),
                true,
            ),
            Decimal::ZERO,
            now(),
        ),
    ]
}

/// The soft daily budget of key `k-dev` (2 USD).
pub fn daily_key_budget() -> Budget {
    Budget {
        id: 2,
        subject_kind: SubjectKind::Key,
        subject_id: "k-dev".into(),
        period: Period::Daily,
        limit_usd: usd(2, 0),
        hard: false,
        thresholds: vec![50, 80, 100],
        org_id: Some("acme".into()),
    }
}

/// [`daily_key_budget`]'s burn-down at [`now`]: spend in five of the hours
/// so far, hour by hour.
pub fn burndown() -> Burndown {
    let hour = |h: u32| at(22, h, 0).timestamp();
    let spend = BTreeMap::from([
        (hour(8), usd(35, 2)),
        (hour(9), usd(4, 1)),
        (hour(11), usd(5, 1)),
        (hour(13), usd(3, 1)),
        (hour(14), usd(15, 2)),
    ]);
    // Cannot fail for these values (no decimal overflows).
    burndown::assemble(&daily_key_budget(), now(), &spend).unwrap_or_else(|_| Burndown {
        status: status_of(&daily_key_budget(), Decimal::ZERO, now()),
        as_of: now(),
        step: burndown::Step::Hour,
        points: Vec::new(),
    })
}

// ---------------------------------------------------------------- errors

fn sig(hex: &str) -> tollgate_contract::signature::SignatureId {
    hex.parse()
        .unwrap_or(tollgate_contract::signature::SignatureId(0))
}

/// A quarter hour of 2026-03-10 in 5-minute buckets: OpenAI's rate limit
/// (two raw ids merged into one pattern, seen for days, recovered mostly by
/// a fallback) and a new Anthropic overload.
pub fn errors_report() -> crate::errors::ErrorsReport {
    use crate::errors::{Affected, ErrorsReport, PatternPoint, PatternSummary};
    let point = |m: u32, failures, recovered, failed| PatternPoint {
        bucket_start: at(10, 10, m),
        failures,
        calls_recovered: recovered,
        calls_failed: failed,
    };
    let names = |count, names: &[&str]| Affected {
        count,
        names: names.iter().map(|n| n.to_string()).collect(),
    };
    ErrorsReport {
        from: at(10, 10, 0),
        to: at(10, 10, 15),
        bucket_secs: 300,
        filters: LatencyFilters::default(),
        patterns: vec![
            PatternSummary {
                signature: sig("1a2b3c4d5e6f7081"),
                members: vec![sig("1a2b3c4d5e6f7081"), sig("9f8e7d6c5b4a3921")],
                template: "Rate limit reached for <ID> in organization <ID> on tokens per min (TPM): Limit <NUM>, Used <NUM>, Requested <NUM>. Please try again in <DURATION>.".into(),
                provider: "openai".into(),
                http_status: 429,
                error_type: "rate_limit_exceeded".into(),
                models: vec!["gpt-4o".into(), "gpt-4o-mini".into()],
                failures: 1_204,
                calls_recovered: 1_100,
                calls_failed: 37,
                first_seen: Some(at(2, 8, 14)),
                last_seen: Some(at(10, 10, 14)),
                new: false,
                teams: names(4, &["search", "=cmd", "ads, eu"]),
                keys: names(9, &["search-key", "ads-key", "batch-key"]),
                series: vec![point(0, 400, 380, 10), point(5, 420, 390, 12), point(10, 384, 330, 15)],
            },
            PatternSummary {
                signature: sig("00c0ffee00c0ffee"),
                members: vec![sig("00c0ffee00c0ffee")],
                template: "Overloaded".into(),
                provider: "anthropic".into(),
                http_status: 529,
                error_type: "overloaded_error".into(),
                models: vec!["claude-sonnet-4".into()],
                failures: 12,
                calls_recovered: 9,
                calls_failed: 3,
                first_seen: Some(at(10, 10, 7)),
                last_seen: Some(at(10, 10, 12)),
                new: true,
                teams: names(1, &["search"]),
                keys: names(1, &["search-key"]),
                series: vec![point(5, 7, 5, 2), point(10, 5, 4, 1)],
            },
        ],
    }
}

/// The drill-down of the sample report's new Anthropic overload: two
/// sample messages, a retry that mostly fails and a fallback that works.
pub fn pattern_report() -> crate::errors::PatternReport {
    use crate::errors::{PatternMember, PatternReport, RecoveryRow, Sample};
    let report = errors_report();
    let pattern = report.patterns[1].clone();
    let id = pattern.signature;
    let sample = |m: u32, model: &str, request: &str| Sample {
        occurred_at: at(10, 10, m),
        signature: id,
        provider: "anthropic".into(),
        model: model.into(),
        team: "search".into(),
        api_key: "search-key".into(),
        http_status: 529,
        error_type: "overloaded_error".into(),
        message: format!("Overloaded (request {request})"),
        template: "Overloaded (request <ID>)".into(),
        variables: vec![request.into()],
        call_id: format!("call-{request}"),
        trace_id: String::new(),
        span_id: String::new(),
    };
    // One traced by the proxy, one with another producer's trace id (text
    // that links must escape).
    let traced = Sample {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: "00f067aa0ba902b7".into(),
        ..sample(12, "claude-sonnet-4", "req_011CXyz")
    };
    let other_producer = Sample {
        trace_id: "batch run/7&x=<1>".into(),
        ..sample(7, "claude-sonnet-4", "req_011CAbc")
    };
    PatternReport {
        from: report.from,
        to: report.to,
        bucket_secs: report.bucket_secs,
        filters: report.filters,
        member_templates: vec![PatternMember {
            signature: pattern.signature,
            template: pattern.template.clone(),
            first_seen: at(10, 10, 7),
            last_seen: at(10, 10, 12),
        }],
        pattern,
        samples: vec![traced, other_producer],
        recovery: vec![
            RecoveryRow {
                strategy: "fallback_provider".into(),
                provider: "openai".into(),
                model: "gpt-4o".into(),
                attempts: 8,
                successes: 8,
                success_rate: 1.0,
                mean_wait_ms: 0.0,
                added_latency_ms: 812.5,
                added_cost: usd(1_234_567, 9),
                added_cost_per_attempt: usd(154_320_875, 12),
            },
            RecoveryRow {
                strategy: "retry".into(),
                provider: "anthropic".into(),
                model: "claude-sonnet-4".into(),
                attempts: 6,
                successes: 1,
                success_rate: 0.1667,
                mean_wait_ms: 1_500.0,
                added_latency_ms: 2_230.3,
                added_cost: usd(0, 0),
                added_cost_per_attempt: usd(0, 0),
            },
        ],
    }
}

/// Two breakers on 2026-03-10 10:00-10:15: gpt-4o opened on the rate
/// limit, went half-open and closed again; Anthropic's provider breaker
/// is open.
pub fn breakers_report() -> crate::breakers::BreakersReport {
    use crate::breakers::{BreakerState, BreakersReport, Transition};
    let ms = |m: u32, s: u32, milli: i64| {
        Utc.with_ymd_and_hms(2026, 3, 10, 10, m, s)
            .single()
            .unwrap_or_default()
            + chrono::Duration::milliseconds(milli)
    };
    let transition = |at,
                      provider: &str,
                      model: &str,
                      from: &str,
                      to: &str,
                      generation,
                      calls,
                      failures,
                      reason: &str| Transition {
        at,
        provider: provider.into(),
        model: model.into(),
        from_state: from.into(),
        to_state: to.into(),
        generation,
        calls,
        failures,
        slow: 0,
        failure_rate: if calls == 0 {
            0.0
        } else {
            (failures as f64 / calls as f64 * 10_000.0).round() / 10_000.0
        },
        signature: (failures > 0).then(|| sig("1a2b3c4d5e6f7081")),
        reason: reason.into(),
    };
    BreakersReport {
        from: at(10, 10, 0),
        to: at(10, 10, 15),
        provider: None,
        model: None,
        breakers: vec![
            BreakerState {
                provider: "anthropic".into(),
                model: String::new(),
                state: "open".into(),
                since: ms(9, 3, 250),
                generation: 4,
                reason: "failure rate 62% over 40 calls".into(),
                transitions: 1,
            },
            BreakerState {
                provider: "openai".into(),
                model: "gpt-4o".into(),
                state: "closed".into(),
                since: ms(2, 31, 7),
                generation: 7,
                reason: "3 of 3 probes succeeded".into(),
                transitions: 3,
            },
        ],
        transitions: vec![
            transition(
                ms(1, 0, 120),
                "openai",
                "gpt-4o",
                "closed",
                "open",
                7,
                24,
                20,
                "failure rate 83% over 24 calls",
            ),
            transition(
                ms(2, 0, 121),
                "openai",
                "gpt-4o",
                "open",
                "half_open",
                7,
                0,
                0,
                "30 s open",
            ),
            transition(
                ms(2, 31, 7),
                "openai",
                "gpt-4o",
                "half_open",
                "closed",
                7,
                3,
                0,
                "3 of 3 probes succeeded",
            ),
            transition(
                ms(9, 3, 250),
                "anthropic",
                "",
                "closed",
                "open",
                4,
                40,
                25,
                "failure rate 62% over 40 calls",
            ),
        ],
        truncated: false,
    }
}

/// The overview of org `=acme` read at [`now`]: the month so far by day
/// with an unpriced call today, the org's daily budget past 80 %, the last
/// hour slower and failing more than yesterday's, one alert firing and one
/// pending, the budgets near their limit of [`budgets`] and the newest
/// patterns of [`errors_report`].
pub fn home() -> crate::home::Home {
    use crate::home::{DaySpend, FiringAlert, Health, Home, HourHealth, Spend, SpendFigure};
    let days: Vec<DaySpend> = (1..=22)
        .map(|d| DaySpend {
            day: day(d),
            spend_usd: usd(i64::from(d % 5) * 1_250_000 + 375_000, 6),
        })
        .collect();
    let month: Decimal = days.iter().map(|d| d.spend_usd).sum();
    let today = days.last().map(|d| d.spend_usd).unwrap_or_default();
    let hour = |from: DateTime<Utc>, calls, errors, p95_ms, p95_estimate| HourHealth {
        from,
        to: from + chrono::Duration::hours(1),
        calls,
        errors,
        error_rate: Some(errors as f64 / calls as f64),
        p95_ms: Some(p95_ms),
        p95_estimate,
    };
    Home {
        now: now(),
        org: Some("=acme".into()),
        spend: Some(Spend {
            today: SpendFigure {
                spend_usd: today,
                unpriced_calls: 3,
                budget_usd: Some(usd(3, 0)),
                percent: Some(usd(8_750, 2)),
            },
            month: SpendFigure {
                spend_usd: month,
                unpriced_calls: 41,
                budget_usd: Some(usd(1_000, 0)),
                percent: Some(usd(4_963, 2)),
            },
            days,
        }),
        health: Some(Health {
            now: hour(at(22, 13, 31), 12_480, 312, 2_481.5, true),
            yesterday: hour(at(21, 13, 31), 804, 8, 1_905.0, false),
        }),
        firing_alerts: Some(vec![FiringAlert {
            rule_id: 7,
            rule_name: "openai failing".into(),
            org_id: "=acme".into(),
            severity: "critical".into(),
            since: at(22, 14, 12),
            fired_at: Some(at(22, 14, 14)),
            value: Some("12.5000".into()),
            unit: "%".into(),
            link: "/sre/errors?range=custom&from=2026-03-22T14:24:00Z&to=2026-03-22T14:29:00Z&provider=openai".into(),
        }]),
        pending_alerts: 1,
        budgets_near_limit: Some(crate::home::near_limit(budgets())),
        newest_patterns: Some(crate::home::newest(errors_report().patterns)),
    }
}
