//! The latency report over a 30-day window (issue 17, part 5), against
//! real ClickHouse: calls with known durations spread over 30 days and
//! many hours, the window's edges in the middle of hours, groups of at most
//! and of more than 1000 calls, a 6-hour bucket of more than 1000 calls.
//! Every number of the report must be the report's definition to the last
//! digit (docs/latency.md): for a group or bucket of at most 1000 values
//! the type-7 percentiles of the values; above, the same interpolation
//! between histogram order statistics, each the mean of the bucket
//! (256 per power of two, as migration 0036 computes them) where the
//! running count first exceeds the rank. Computed here from the calls, so
//! whichever statements serve the report (series first, totals from the
//! series' counts, the series histogram folded as read) must agree with
//! the one definition.

use std::collections::BTreeMap;

use serde_json::Value;
use tollgate_queries::latency::{Percentiles, EXACT_MAX_CALLS, LEVELS};

use crate::latency_fixture::{call, Call, ReportEnv, NEVER_COUNTED};

/// 2026-01-01T00:00:00Z.
const DAY0: i64 = 1_767_225_600;
/// The window: from 00:17 on day 0 to 23:43 on day 29 (neither edge on an
/// hour), 30 days less 34 minutes.
const FROM_SECS: i64 = DAY0 + 17 * 60;
const TO_SECS: i64 = DAY0 + 29 * 86_400 + 23 * 3_600 + 43 * 60;
const BUCKET: i64 = 21_600;

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A deterministic spread with a tail: 80 ms to about 30 s.
fn duration_of(i: u32, n: u32) -> u32 {
    let u = f64::from((i * 7_919) % n) / f64::from(n);
    (80.0 + 30_000.0 * u.powi(5)) as u32 + i % 11
}

/// The calls: three provider/model groups and calls just outside the
/// window on both sides (which the report must leave out).
fn calls() -> Vec<Call> {
    let mut out = Vec::new();
    // "big": 3,000 calls, 1,300 of them in one 6-hour bucket (day 12,
    // 06:00-12:00), the rest every 14 minutes; one in four streamed (750:
    // the total's TTFT is exact, its duration an estimate).
    let n = 3_000;
    let busy = DAY0 + 12 * 86_400 + 6 * 3_600;
    for i in 0..n {
        let at = if i < 1_300 {
            busy + i64::from(i) * 16
        } else {
            FROM_SECS + i64::from(i - 1_300) * 14 * 60 + 31
        };
        let ms = duration_of(i, n);
        let mut c = call("openai", "big", at, ms, (i % 4 == 0).then_some(ms / 7 + 3));
        c.team = if i % 2 == 0 { "team-a" } else { "team-b" };
        c.error = i % 37 == 0;
        out.push(c);
    }
    // "streamed": 1,500 calls, every one streamed, spread over the whole
    // window (about 12 per 6-hour bucket).
    let n = 1_500;
    for i in 0..n {
        let at = FROM_SECS + i64::from(i) * 1_727;
        let ms = duration_of(i, n) + 40;
        out.push(call("google", "streamed", at, ms, Some(ms / 3 + 1)));
    }
    // "small": 400 calls, every 107 minutes, half streamed.
    let n = 400;
    for i in 0..n {
        let at = FROM_SECS + i64::from(i) * 107 * 60 + 5;
        let ms = duration_of(i, n) / 2 + 60;
        out.push(call(
            "anthropic",
            "small",
            at,
            ms,
            (i % 2 == 1).then_some(ms / 4),
        ));
    }
    // Outside: the minute before the window, and its end (exclusive).
    for (i, at) in [FROM_SECS - 60, FROM_SECS - 1, TO_SECS, TO_SECS + 59]
        .into_iter()
        .enumerate()
    {
        for model in ["big", "streamed", "small"] {
            out.push(call("openai", model, at, 99_000 + i as u32, Some(5)));
        }
    }
    out
}

/// The histogram bucket of `v` microseconds: its lower bound, with
/// `w = max(1, 2^floor(log2 v) / 256)` (migration 0036).
fn bucket_of(v: u64) -> u64 {
    let exp2 = if v == 0 {
        0
    } else {
        1u64 << (63 - v.leading_zeros())
    };
    let w = (exp2 / 256).max(1);
    v / w * w
}

/// The report's percentiles of `values_ms` by the definition: read from
/// the calls (`every_value`), the type-7 percentiles at any count; from the
/// rollups, above 1000 values, the histogram's.
fn expected(values_ms: &[u32], every_value: bool) -> Option<Percentiles> {
    if values_ms.is_empty() {
        return None;
    }
    let mut us: Vec<u64> = values_ms.iter().map(|ms| u64::from(*ms) * 1_000).collect();
    us.sort_unstable();
    let n = us.len() as u64;
    let last = n - 1;
    let value_at = |k: u64| -> f64 {
        if n <= EXACT_MAX_CALLS || every_value {
            return us[k as usize] as f64;
        }
        let mut buckets: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for v in &us {
            let entry = buckets.entry(bucket_of(*v)).or_default();
            entry.0 += 1;
            entry.1 += v;
        }
        let mut running = 0;
        for (count, sum) in buckets.values() {
            running += count;
            if running > k {
                return *sum as f64 / *count as f64;
            }
        }
        panic!("rank {k} beyond {n} values");
    };
    let stats: Vec<f64> = LEVELS
        .iter()
        .flat_map(|q| {
            let lo = (last as f64 * q).floor() as u64;
            [value_at(lo), value_at((lo + 1).min(last))]
        })
        .collect();
    if every_value {
        Percentiles::of_every_value(n, &stats)
    } else {
        Percentiles::from_order_stats(n, &stats)
    }
}

/// Check one `Stats` object against the calls it covers, every number.
fn assert_identical(label: &str, stats: &Value, calls: &[&Call], every_value: bool) {
    let durations: Vec<u32> = calls.iter().map(|c| c.duration_ms).collect();
    let ttfts: Vec<u32> = calls.iter().filter_map(|c| c.ttft_ms).collect();
    let errors = calls.iter().filter(|c| c.error).count();
    assert_eq!(stats["count"], calls.len(), "{label}: {stats}");
    assert_eq!(stats["errors"], errors, "{label}: {stats}");
    assert_eq!(stats["ttft_count"], ttfts.len(), "{label}: {stats}");
    assert_eq!(
        stats["duration_ms"],
        serde_json::to_value(expected(&durations, every_value)).unwrap(),
        "{label} duration over {} values",
        durations.len()
    );
    assert_eq!(
        stats["ttft_ms"],
        serde_json::to_value(expected(&ttfts, every_value)).unwrap(),
        "{label} ttft over {} values",
        ttfts.len()
    );
}

/// Check a whole report: its groups (keyed by `key` of a call), their
/// totals and every 6-hour point; returns how many points had more than
/// 1000 calls.
fn assert_report(
    report: &Value,
    calls: &[Call],
    every_value: bool,
    key: impl Fn(&Call) -> Vec<String>,
) -> usize {
    let mut by_group: BTreeMap<Vec<String>, Vec<&Call>> = BTreeMap::new();
    for c in calls
        .iter()
        .filter(|c| (FROM_SECS..TO_SECS).contains(&c.at))
    {
        by_group.entry(key(c)).or_default().push(c);
    }
    let groups = report["groups"].as_array().unwrap();
    assert_eq!(groups.len(), by_group.len(), "{report}");
    let mut large_points = 0;
    for (group, (name, group_calls)) in groups.iter().zip(&by_group) {
        let label = name.join("/");
        assert_identical(
            &format!("{label} total"),
            &group["total"],
            group_calls,
            every_value,
        );
        let mut by_bucket: BTreeMap<i64, Vec<&Call>> = BTreeMap::new();
        for c in group_calls {
            by_bucket.entry(c.at - c.at % BUCKET).or_default().push(c);
        }
        let series = group["series"].as_array().unwrap();
        let starts: Vec<&str> = series
            .iter()
            .map(|p| p["bucket_start"].as_str().unwrap())
            .collect();
        let want: Vec<String> = by_bucket.keys().map(|t| rfc3339(*t)).collect();
        assert_eq!(starts, want, "{label} bucket starts");
        for (point, (start, bucket_calls)) in series.iter().zip(&by_bucket) {
            if bucket_calls.len() > EXACT_MAX_CALLS as usize {
                large_points += 1;
            }
            assert_identical(
                &format!("{label} {}", rfc3339(*start)),
                &point["stats"],
                bucket_calls,
                every_value,
            );
        }
    }
    large_points
}

async fn report(env: &ReportEnv, query: &str) -> Value {
    let (status, body) = env
        .get_json(&format!(
            "/api/v1/reports/latency?from={}&to={}&bucket=6h&{query}",
            rfc3339(FROM_SECS),
            rfc3339(TO_SECS)
        ))
        .await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_days_are_the_definition_to_the_last_digit() {
    // From the minute rollups (kept values, histogram above 1000 values)
    // and from the calls themselves (every value, exact at any count;
    // the totals sorted, or counted per value): the same calls, each
    // source's definition to the last digit.
    for (label, every_value, counted) in [
        ("latency_30d", false, false),
        ("latency_30d_calls", true, false),
        ("latency_30d_counted", true, true),
    ] {
        let mut env = ReportEnv::new(label).await;
        if !every_value {
            env.read_rollups_only();
        }
        env.count_from(if counted { 0 } else { NEVER_COUNTED });
        let calls = calls();
        env.insert(&calls).await;
        env.start_api().await;
        thirty_days(&env, &calls, every_value).await;
    }
}

async fn thirty_days(env: &ReportEnv, calls: &[Call], every_value: bool) {
    let large = if every_value { "exact" } else { "histogram" };
    // By provider and model: "small" needs the totals' kept values,
    // "big" a histogram for its total's duration and for its busy bucket
    // (from the rollups).
    let by_model = report(env, "group_by=provider,model").await;
    let large_points = assert_report(&by_model, calls, every_value, |c| {
        vec![c.provider.to_string(), c.model.to_string()]
    });
    assert_eq!(large_points, 1, "the busy bucket of \"big\"");
    let big = by_model["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"]["model"] == "big")
        .expect("the group \"big\"");
    assert_eq!(big["total"]["count"], 3_000, "{big}");
    assert_eq!(big["total"]["duration_ms"]["method"], large);
    assert_eq!(big["total"]["ttft_ms"]["method"], "exact");

    // By team: the "big" calls of team-a and team-b (half the busy bucket
    // each: exact), the others all in team-a; team-b's total has 375
    // streamed calls (exact TTFT), team-a's 2,075.
    let by_team = report(env, "group_by=team").await;
    assert_eq!(
        assert_report(&by_team, calls, every_value, |c| vec![c.team.to_string()]),
        0
    );

    // Only "streamed", ungrouped: both metrics above 1000 values, so from
    // the rollups its totals come from the series' counts and the
    // histogram alone.
    let streamed = report(env, "group_by=&model=streamed").await;
    let large_points = assert_report(
        &streamed,
        &calls
            .iter()
            .filter(|c| c.model == "streamed")
            .cloned()
            .collect::<Vec<_>>(),
        every_value,
        |_| Vec::new(),
    );
    assert_eq!(large_points, 0);
    let total = &streamed["groups"][0]["total"];
    assert_eq!(total["count"], 1_500, "{total}");
    assert_eq!(total["duration_ms"]["method"], large, "{total}");
    assert_eq!(total["ttft_ms"]["method"], large, "{total}");
}
