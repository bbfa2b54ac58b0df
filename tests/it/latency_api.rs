//! `GET /api/v1/reports/latency` against real ClickHouse: known calls are
//! written into `calls`, the materialized views fold them into
//! `latency_minute_calls` and `latency_minute_buckets`, and the report must give exact counts and error
//! rates, numpy's percentiles exactly for groups of at most 1000 calls and
//! within the stated bound above, the same bytes whatever the rollup's part
//! layout, working grouping and filters, and a 400 that names the parameter
//! for every bad request.

use crate::latency_fixture;
use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use latency_fixture::{
    assert_percentiles, assert_stats, call, ch, dataset, noise, type7, Call, ReportEnv,
};
use serde_json::{json, Value};

/// 2026-01-15T10:00:00Z; the data covers [BASE, BASE + 1 h).
const BASE: i64 = 1_768_471_200;
const FROM: &str = "2026-01-15T10:00:00Z";
const TO: &str = "2026-01-15T11:00:00Z";

async fn env_with_data(label: &str) -> (ReportEnv, Vec<Call>) {
    let mut env = ReportEnv::new(label).await;
    let calls = dataset(BASE);
    env.insert(&calls).await;
    env.insert(&noise(BASE)).await;
    env.start_api().await;
    (env, calls)
}

async fn fetch_report(env: &ReportEnv, query: &str) -> Value {
    let (status, body) = env
        .get_json(&format!(
            "/api/v1/reports/latency?from={FROM}&to={TO}&{query}"
        ))
        .await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

fn groups_of(report: &Value) -> &Vec<Value> {
    report["groups"].as_array().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_matches_exact_statistics_per_group_and_bucket() {
    let (env, calls) = env_with_data("latency_api").await;
    let report = fetch_report(&env, "group_by=provider,model&bucket=5m").await;

    assert_eq!(report["from"], FROM);
    assert_eq!(report["to"], TO);
    assert_eq!(report["bucket_secs"], 300);
    assert_eq!(report["group_by"], json!(["provider", "model"]));

    let mut expected: BTreeMap<(&str, &str), Vec<&Call>> = BTreeMap::new();
    for call in &calls {
        expected
            .entry((call.provider, call.model))
            .or_default()
            .push(call);
    }
    let groups = groups_of(&report);
    let keys: Vec<Value> = groups.iter().map(|g| g["key"].clone()).collect();
    let want: Vec<Value> = expected
        .keys()
        .map(|(provider, model)| json!({"provider": provider, "model": model}))
        .collect();
    assert_eq!(
        keys, want,
        "groups are the provider/model pairs, in key order"
    );

    for group in groups {
        let key = (
            group["key"]["provider"].as_str().unwrap(),
            group["key"]["model"].as_str().unwrap(),
        );
        let group_calls = &expected[&key];
        assert_stats(&format!("{key:?} total"), &group["total"], group_calls);

        // Series: every bucket with calls, in order, each exact.
        let mut by_bucket: BTreeMap<i64, Vec<&Call>> = BTreeMap::new();
        for call in group_calls {
            by_bucket
                .entry(call.at - call.at % 300)
                .or_default()
                .push(call);
        }
        let series = group["series"].as_array().unwrap();
        let starts: Vec<String> = series
            .iter()
            .map(|p| p["bucket_start"].as_str().unwrap().to_string())
            .collect();
        let want_starts: Vec<String> = by_bucket
            .keys()
            .map(|t| {
                chrono::DateTime::from_timestamp(*t, 0)
                    .unwrap()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            })
            .collect();
        assert_eq!(starts, want_starts, "{key:?} bucket starts");
        for (point, (start, bucket_calls)) in series.iter().zip(&by_bucket) {
            assert_stats(
                &format!("{key:?} bucket {start}"),
                &point["stats"],
                bucket_calls,
            );
        }
    }

    // Mistral never streams: no TTFT at all.
    let mistral = groups
        .iter()
        .find(|g| g["key"]["provider"] == "mistral")
        .unwrap();
    assert!(mistral["total"]["ttft_ms"].is_null());
    assert_eq!(mistral["total"]["ttft_count"], 0);
}

/// The cells of each totals row of a latency page: `(label, calls)`.
fn page_groups(page: &str) -> Vec<(String, u64)> {
    page.split("<tr class=\"group-row\">")
        .skip(1)
        .map(|row| {
            let cells: Vec<&str> = row[..row.find("</tr>").unwrap()]
                .split("<td")
                .skip(1)
                .map(|cell| {
                    let text = &cell[cell.find('>').unwrap() + 1..cell.find("</td>").unwrap()];
                    text.rsplit("</span>").next().unwrap().trim()
                })
                .collect();
            (
                cells[0].to_string(),
                cells[1].replace(',', "").parse().unwrap(),
            )
        })
        .collect()
}

/// The latency page takes `team=` as the API, the Errors page and latency
/// alert rules do (it was a 400 "unknown parameter"), and shows only that
/// team's calls: one group of exactly its calls with `group_by=` (what a
/// team-scoped alert's explain link asks for), its calls by model
/// otherwise, its slowest calls only, and the form shows the team.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_page_filters_by_team() {
    let (env, calls) = env_with_data("latency_page_team").await;
    let team_b: Vec<&Call> = calls.iter().filter(|c| c.team == "team-b").collect();
    assert!(!team_b.is_empty() && team_b.len() < calls.len());
    let window = format!("range=custom&from={FROM}&to={TO}&org=org-1");

    let (status, page) = env
        .get_text(&format!("/sre/latency?{window}&team=team-b&group_by="))
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page_groups(&page),
        vec![("all calls".to_string(), team_b.len() as u64)],
        "one group of team-b's calls"
    );
    assert!(
        page.contains("name=\"team\" value=\"team-b\""),
        "the form shows the team"
    );
    let slow: Vec<&str> = page.split("<tr class=\"slow-row\">").skip(1).collect();
    assert!(!slow.is_empty());
    for row in &slow {
        let team = row.split("<td>").nth(3).unwrap();
        assert!(team.starts_with("team-b</td>"), "{row}");
    }

    let (status, page) = env
        .get_text(&format!(
            "/sre/latency?{window}&team=team-b&group_by=provider,model"
        ))
        .await;
    assert_eq!(status, 200, "{page}");
    let groups = page_groups(&page);
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for c in &team_b {
        *want
            .entry(format!("{} / {}", c.provider, c.model))
            .or_default() += 1;
    }
    assert_eq!(groups, want.into_iter().collect::<Vec<_>>());

    // Without the filter the page shows the org's other team too.
    let (status, page) = env
        .get_text(&format!("/sre/latency?{window}&group_by=team"))
        .await;
    assert_eq!(status, 200, "{page}");
    let teams: Vec<String> = page_groups(&page).into_iter().map(|(l, _)| l).collect();
    assert_eq!(teams, ["team-a", "team-b"]);
}

/// Every bucket the page's menu offers works with every preset it offers
/// ("Last 24 hours" in 1m buckets was a 400: the window widened to 1,441
/// minutes); one too fine for the window is shown in a coarser bucket,
/// and the page says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_page_takes_every_offered_bucket_and_range() {
    let (env, _) = env_with_data("latency_page_buckets").await;
    for range in ["15m", "1h", "6h", "24h", "7d"] {
        for bucket in ["", "1m", "5m", "15m", "1h", "6h", "1d"] {
            let (status, page) = env
                .get_text(&format!("/sre/latency?range={range}&bucket={bucket}"))
                .await;
            assert_eq!(status, 200, "{range} {bucket}: {page}");
        }
    }
    let (_, page) = env.get_text("/sre/latency?range=24h&bucket=1m").await;
    assert!(page.contains("1m buckets"), "{page}");
    assert!(!page.contains("id=\"bucket-note\""), "{page}");
    let (_, page) = env.get_text("/sre/latency?range=7d&bucket=1m").await;
    assert!(
        page.contains("1m buckets would be 10,080 points over this window (at most 1,440): shown in 15m buckets."),
        "{page}"
    );
}

/// The SRE latency page's "Totals" table as CSV (`/sre/latency/totals.csv`,
/// linked from the page with its window, filters and grouping): one row per
/// group with the report's totals, which the test above checks against the
/// calls; the same numbers to the last digit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_csv_is_the_reports_totals() {
    let (env, calls) = env_with_data("latency_totals_csv").await;
    let window =
        format!("range=custom&from={FROM}&to={TO}&provider=openai&group_by=provider,model");
    let (status, page) = env.get_text(&format!("/sre/latency?{window}")).await;
    assert_eq!(status, 200, "{page}");
    let at = page.find("id=\"totals-csv-link\" href=\"").unwrap()
        + "id=\"totals-csv-link\" href=\"".len();
    let link = page[at..at + page[at..].find('"').unwrap()]
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    assert!(
        link.starts_with("/sre/latency/totals.csv?range=custom&from="),
        "{link}"
    );
    assert!(
        link.contains("&provider=openai") && link.contains("&group_by=provider%2Cmodel"),
        "{link}"
    );
    let (status, csv) = env.get_text(&link).await;
    assert_eq!(status, 200, "{csv}");
    let report = fetch_report(&env, "provider=openai&group_by=provider,model").await;
    let groups = groups_of(&report);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "provider,model,calls,errors,error_rate,duration_p50_ms,duration_p90_ms,duration_p95_ms,duration_p99_ms,duration_method,streamed_calls,ttft_p50_ms,ttft_p90_ms,ttft_p95_ms,ttft_p99_ms,ttft_method"
    );
    assert_eq!(lines.len() - 1, groups.len(), "{csv}");
    let openai_calls = calls.iter().filter(|c| c.provider == "openai").count() as u64;
    let mut csv_calls = 0;
    for (line, group) in lines[1..].iter().zip(groups) {
        let cells: Vec<&str> = line.split(',').collect();
        let total = &group["total"];
        assert_eq!(cells[0], group["key"]["provider"].as_str().unwrap());
        assert_eq!(cells[1], group["key"]["model"].as_str().unwrap());
        assert_eq!(cells[2], total["count"].to_string(), "{line}");
        assert_eq!(cells[3], total["errors"].to_string(), "{line}");
        assert_eq!(
            cells[4].parse::<f64>().unwrap(),
            total["error_rate"].as_f64().unwrap()
        );
        for (cell, (object, field)) in cells[5..].iter().zip([
            ("duration_ms", "p50"),
            ("duration_ms", "p90"),
            ("duration_ms", "p95"),
            ("duration_ms", "p99"),
            ("duration_ms", "method"),
            ("", "ttft_count"),
            ("ttft_ms", "p50"),
            ("ttft_ms", "p90"),
            ("ttft_ms", "p95"),
            ("ttft_ms", "p99"),
            ("ttft_ms", "method"),
        ]) {
            let value = if object.is_empty() {
                &total[field]
            } else {
                &total[object][field]
            };
            match value {
                Value::Null => assert_eq!(*cell, "", "{line}: {object}.{field}"),
                Value::String(s) => assert_eq!(cell, s, "{line}: {object}.{field}"),
                v => assert_eq!(
                    cell.parse::<f64>().unwrap(),
                    v.as_f64().unwrap(),
                    "{line}: {object}.{field}"
                ),
            }
        }
        csv_calls += cells[2].parse::<u64>().unwrap();
    }
    assert_eq!(csv_calls, openai_calls, "the filter holds");
    // A bad parameter is named, as on the page.
    let (status, body) = env.get_text("/sre/latency/totals.csv?range=2h").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("range"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouping_and_filters() {
    let (env, calls) = env_with_data("latency_groups").await;
    let count = |pred: &dyn Fn(&Call) -> bool| calls.iter().filter(|c| pred(c)).count() as u64;

    // By team: keys carry only the team.
    let report = fetch_report(&env, "group_by=team&bucket=1h").await;
    let groups = groups_of(&report);
    assert_eq!(groups.len(), 3);
    for group in groups {
        let team = group["key"]["team"].as_str().unwrap();
        assert_eq!(
            group["key"].as_object().unwrap().len(),
            1,
            "{}",
            group["key"]
        );
        let team_calls: Vec<&Call> = calls.iter().filter(|c| c.team == team).collect();
        assert_stats(team, &group["total"], &team_calls);
        // One 1 h bucket: the series point equals the total.
        let series = group["series"].as_array().unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0]["bucket_start"], FROM);
        assert_eq!(series[0]["stats"]["count"], group["total"]["count"]);
    }

    // By org then team.
    let report = fetch_report(&env, "group_by=org,team").await;
    let keys: Vec<Value> = groups_of(&report)
        .iter()
        .map(|g| g["key"].clone())
        .collect();
    assert_eq!(
        keys,
        vec![
            json!({"org": "org-1", "team": "team-a"}),
            json!({"org": "org-1", "team": "team-b"}),
            json!({"org": "org-2", "team": "team-c"}),
        ]
    );

    // Provider filter.
    let report = fetch_report(&env, "group_by=provider&provider=openai").await;
    let groups = groups_of(&report);
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["key"], json!({"provider": "openai"}));
    let openai: Vec<&Call> = calls.iter().filter(|c| c.provider == "openai").collect();
    assert_stats("openai", &groups[0]["total"], &openai);

    // Model and team filters together.
    let report = fetch_report(&env, "group_by=model&model=gpt-4o&team=team-b").await;
    let subset: Vec<&Call> = calls
        .iter()
        .filter(|c| c.model == "gpt-4o" && c.team == "team-b")
        .collect();
    assert_eq!(groups_of(&report).len(), 1);
    assert_stats("gpt-4o/team-b", &groups_of(&report)[0]["total"], &subset);

    // Org filter with default grouping (provider, model).
    let report = fetch_report(&env, "org=org-2").await;
    let total: u64 = groups_of(&report)
        .iter()
        .map(|g| g["total"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, count(&|c| c.org == "org-2"));
    assert_eq!(groups_of(&report).len(), 4);

    // No grouping: one group of everything, empty key.
    let report = fetch_report(&env, "group_by=").await;
    let groups = groups_of(&report);
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["key"], json!({}));
    let all: Vec<&Call> = calls.iter().collect();
    assert_stats("all", &groups[0]["total"], &all);

    // A filter that matches nothing: no groups, not an error.
    let report = fetch_report(&env, "provider=nobody").await;
    assert_eq!(report["groups"], json!([]));

    // Defaults: the last hour (no data there), 1-minute buckets.
    let (status, report) = env.get_json("/api/v1/reports/latency").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["bucket_secs"], 60);
    let from = chrono::DateTime::parse_from_rfc3339(report["from"].as_str().unwrap()).unwrap();
    let to = chrono::DateTime::parse_from_rfc3339(report["to"].as_str().unwrap()).unwrap();
    assert!(
        (to - from).num_seconds() == 3_600 || (to - from).num_seconds() == 3_660,
        "{report}"
    );
}

/// The group: 102 calls whose top values are 1749, 1782 and one
/// 60002 ms timeout. A t-digest reported p99 = 29,727 ms; numpy says
/// 1781.67 (h = 101 x 0.99 = 99.99: 0.99 of the way from 1749 to 1782).
fn tail_group(at: i64) -> Vec<Call> {
    let mut calls: Vec<Call> = (0..99u32)
        .map(|i| call("openai", "tail", at + i64::from(i % 60), 400 + i * 12, None))
        .collect();
    for ms in [1_749, 1_782, 60_002] {
        calls.push(call("openai", "tail", at + 30, ms, None));
    }
    calls
}

/// 200 calls of 300-900 ms with two timeouts: p95 and p99 are ordinary
/// values (p99 moves 1 % of the way towards the first timeout), where a
/// digest interpolated far towards the outliers.
fn outlier_group(at: i64) -> Vec<Call> {
    let mut calls: Vec<Call> = (0..198u32)
        .map(|i| {
            let ms = 300 + (i * 37) % 600;
            call(
                "openai",
                "outliers",
                at + i64::from(i % 60),
                ms,
                Some(ms / 4),
            )
        })
        .collect();
    for ms in [30_000, 60_002] {
        calls.push(call("openai", "outliers", at + 59, ms, Some(20_000)));
    }
    calls
}

fn durations(calls: &[Call]) -> Vec<f64> {
    calls.iter().map(|c| f64::from(c.duration_ms)).collect()
}

fn group<'a>(report: &'a Value, model: &str) -> &'a Value {
    groups_of(report)
        .iter()
        .find(|g| g["key"]["model"] == model)
        .unwrap_or_else(|| panic!("no group {model}: {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_groups_get_exact_percentiles() {
    let mut env = ReportEnv::new("latency_exact").await;
    let tail = tail_group(BASE);
    let outliers = outlier_group(BASE + 600);
    env.insert(&tail).await;
    env.insert(&outliers).await;
    env.start_api().await;
    let report = fetch_report(&env, "group_by=provider,model&bucket=1h").await;

    let total = &group(&report, "tail")["total"];
    assert_eq!(total["duration_ms"]["p99"], 1_781.67, "{total}");
    assert_eq!(total["duration_ms"]["method"], "exact", "{total}");
    assert_percentiles("tail", &total["duration_ms"], &durations(&tail));

    let total = &group(&report, "outliers")["total"];
    let values = durations(&outliers);
    assert!(type7(&values, 0.95) < 900.0 && type7(&values, 0.99) < 1_500.0);
    assert_percentiles("outliers", &total["duration_ms"], &values);
    let ttfts: Vec<f64> = outliers
        .iter()
        .filter_map(|c| c.ttft_ms)
        .map(f64::from)
        .collect();
    assert_percentiles("outliers ttft", &total["ttft_ms"], &ttfts);
    // The series points are exact too (one 1 h bucket each).
    let point = &group(&report, "tail")["series"][0]["stats"];
    assert_eq!(
        point["duration_ms"],
        total_of(&report, "tail")["duration_ms"]
    );
}

fn total_of<'a>(report: &'a Value, model: &str) -> &'a Value {
    &group(report, model)["total"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percentiles_keep_sub_millisecond_precision() {
    // From the rollups, the big group is a histogram estimate; from the
    // calls, exact: both must say numpy's median of 8. The window holds
    // 2,100 calls: read from the calls at a limit of 2,100, not at 2,099;
    // the totals sorted below 2,100 calls, counted per value from 2,100.
    for (label, sort_max_calls, count_min_calls, big_method) in [
        ("latency_submilli", 0, 0, "histogram"),
        ("latency_submilli_limit", 2_099, 0, "histogram"),
        ("latency_submilli_calls", 2_100, 2_101, "exact"),
        ("latency_submilli_counted", 2_100, 2_100, "exact"),
    ] {
        let mut env = ReportEnv::new(label).await;
        env.sort_at_most(sort_max_calls);
        env.count_from(count_min_calls);
        // The 985 x 7 ms and 1015 x 8 ms: a median of 7 (truncated)
        // was biased downwards; numpy says 8 (ranks 999 and 1000 are both 8).
        let mut big: Vec<Call> = (0..2_000u32)
            .map(|i| {
                call(
                    "openai",
                    "big",
                    BASE + i64::from(i % 60),
                    if i < 985 { 7 } else { 8 },
                    None,
                )
            })
            .collect();
        // 50 x 7 and 50 x 8: the median is 7.5, between two whole milliseconds.
        let half: Vec<Call> = (0..100u32)
            .map(|i| {
                call(
                    "openai",
                    "half",
                    BASE + 60 + i64::from(i % 60),
                    if i < 50 { 7 } else { 8 },
                    None,
                )
            })
            .collect();
        big.extend(half.iter().cloned());
        env.insert(&big).await;
        env.start_api().await;
        let report = fetch_report(&env, "group_by=provider,model&bucket=1h").await;
        let half_total = &total_of(&report, "half")["duration_ms"];
        assert_eq!(half_total["p50"], 7.5, "{half_total}");
        assert_percentiles("half", half_total, &durations(&half));
        let big_total = &total_of(&report, "big")["duration_ms"];
        assert_eq!(big_total["p50"], 8.0, "{big_total}");
        assert_eq!(big_total["method"], big_method, "{label}: {big_total}");
        assert_percentiles("big", big_total, &durations(&big[..2_000]));
    }
}

/// `n` calls of one model with a long tail, two in three streamed: above
/// the exact threshold, so the group's values are histogram estimates.
fn large_group(at: i64, n: u32) -> Vec<Call> {
    (0..n)
        .map(|i| {
            // A spread of values that are not on bucket bounds: 120 ms to
            // about 40 s, denser at the low end.
            let u = f64::from((i * 7_919) % n) / f64::from(n);
            let ms = (120.0 + 40_000.0 * u.powi(4)) as u32 + i % 7;
            call(
                "anthropic",
                "large",
                at + i64::from(i % 3_600),
                ms,
                (i % 3 != 0).then_some(ms / 5 + 13),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn estimates_say_so_and_keep_their_stated_bound() {
    let mut env = ReportEnv::new("latency_bound").await;
    env.read_rollups_only();
    let calls = large_group(BASE, 1_500);
    env.insert(&calls).await;
    env.start_api().await;
    let report = fetch_report(&env, "group_by=provider,model&bucket=5m").await;
    let total = total_of(&report, "large");
    assert_eq!(total["duration_ms"]["method"], "histogram", "{total}");
    assert_eq!(
        total["duration_ms"]["max_relative_error"], 0.00390625,
        "{total}"
    );
    let refs: Vec<&Call> = calls.iter().collect();
    // Total (1,500 calls, 1,000 streamed: TTFT exact, duration estimated)
    // and every 5-minute point (125 calls each: exact).
    assert_stats("large total", total, &refs);
    assert_eq!(total["ttft_ms"]["method"], "exact", "{total}");
    for point in group(&report, "large")["series"].as_array().unwrap() {
        let start = chrono::DateTime::parse_from_rfc3339(point["bucket_start"].as_str().unwrap())
            .unwrap()
            .timestamp();
        let bucket: Vec<&Call> = calls
            .iter()
            .filter(|c| c.at - c.at % 300 == start)
            .collect();
        assert_stats(&format!("large {start}"), &point["stats"], &bucket);
    }
    // Two more streamed calls (1,002) make TTFT an estimate too.
    let mut more = large_group(BASE, 1_500);
    more.truncate(3);
    env.insert(&more).await;
    let report = fetch_report(&env, "group_by=provider,model&bucket=1h").await;
    let total = total_of(&report, "large");
    assert_eq!(total["ttft_count"], 1_002, "{total}");
    assert_eq!(total["ttft_ms"]["method"], "histogram", "{total}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_0026_backfills_calls_stored_before_it() {
    let mut calls = dataset(BASE);
    calls.extend(large_group(BASE, 1_200));
    // Calls stored under the t-digest schema, then the migration; applied
    // twice, as an interrupted `tollgate migrate` would.
    let mut env = ReportEnv::migrated_before("latency_backfill", "0026").await;
    // The backfill is what is tested: the report must read the rollups.
    env.read_rollups_only();
    env.insert(&calls).await;
    env.insert(&noise(BASE)).await;
    let file = latency_fixture::migration_files()
        .into_iter()
        .find(|f| f.to_string_lossy().contains("0026_"))
        .unwrap();
    latency_fixture::apply_migration(&env.database, &file).await;
    latency_fixture::apply_migration(&env.database, &file).await;
    // The old rollup is gone; calls stored from now on reach the new one.
    let tables = ch(&env.database, "SHOW TABLES").await;
    assert!(!tables.lines().any(|t| t == "latency_minute"), "{tables}");
    // The later migrations (0036 takes the histogram out of this rollup).
    apply_migrations_from(&env.database, "0027").await;
    let later = tail_group(BASE + 1_800);
    env.insert(&later).await;
    calls.extend(later);
    env.start_api().await;
    let report = fetch_report(&env, "group_by=&bucket=15m").await;
    let all: Vec<&Call> = calls.iter().collect();
    assert_stats("all", &groups_of(&report)[0]["total"], &all);
    for point in groups_of(&report)[0]["series"].as_array().unwrap() {
        let start = chrono::DateTime::parse_from_rfc3339(point["bucket_start"].as_str().unwrap())
            .unwrap()
            .timestamp();
        let bucket: Vec<&Call> = calls
            .iter()
            .filter(|c| c.at - c.at % 900 == start)
            .collect();
        assert_stats(&format!("bucket {start}"), &point["stats"], &bucket);
    }
}

/// Apply the migration files whose names sort at or after `version`.
async fn apply_migrations_from(database: &str, version: &str) {
    for file in latency_fixture::migration_files() {
        if file.file_name().unwrap().to_str().unwrap() >= version {
            latency_fixture::apply_migration(database, &file).await;
        }
    }
}

/// The histogram as rows, `metric bucket calls total_us`, in order.
async fn histogram_rows(database: &str) -> String {
    ch(
        database,
        "SELECT metric, bucket, sum(calls), sum(total_us) FROM latency_minute_buckets \
         GROUP BY metric, bucket ORDER BY metric, bucket FORMAT TSV",
    )
    .await
}

/// Migration 0036 moves the histogram out of `sumMap` states: the rows it
/// backfills from the states stored before it give the report, byte for
/// byte, that the same calls give when the new views fold them, and
/// applying it again (an interrupted `tollgate migrate`) counts nothing
/// twice; calls stored afterwards reach both tables once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_0036_backfills_the_histogram_from_sum_map_states() {
    // Above the threshold for duration and TTFT (so the report reads the
    // histogram), and small groups beside it.
    let mut calls = large_group(BASE, 3_200);
    calls.extend(dataset(BASE));
    let mut old = ReportEnv::migrated_before("latency_0036_old", "0036").await;
    old.insert(&calls).await;
    old.insert(&noise(BASE)).await;
    // The 0026-era rollup holds the histogram as sumMap states.
    let states = ch(
        &old.database,
        "SELECT length(tupleElement(sumMapMerge(duration_hist), 1)) > 100 FROM latency_minute_hist",
    )
    .await;
    assert_eq!(states.trim(), "1");
    let file = latency_fixture::migration_files()
        .into_iter()
        .find(|f| f.to_string_lossy().contains("0036_"))
        .unwrap();
    latency_fixture::apply_migration(&old.database, &file).await;
    latency_fixture::apply_migration(&old.database, &file).await;
    apply_migrations_from(&old.database, "0037").await;

    let mut fresh = ReportEnv::new("latency_0036_new").await;
    fresh.insert(&calls).await;
    fresh.insert(&noise(BASE)).await;
    // What the views fold: completed and failed calls, the noise's two
    // outside the window included.
    let folded = |calls: &[Call]| {
        let folded: Vec<Call> = calls
            .iter()
            .cloned()
            .chain(noise(BASE))
            .filter(|c| matches!(c.kind, "ai.call.completed" | "ai.call.failed"))
            .collect();
        let streamed = folded.iter().filter(|c| c.ttft_ms.is_some()).count();
        (folded.len(), streamed)
    };
    let counts = "SELECT metric, sum(calls) FROM latency_minute_buckets GROUP BY metric ORDER BY metric FORMAT TSV";
    let (n, streamed) = folded(&calls);
    assert_eq!(
        ch(&old.database, counts).await,
        format!("0\t{n}\n1\t{streamed}\n")
    );
    assert_eq!(
        histogram_rows(&old.database).await,
        histogram_rows(&fresh.database).await
    );

    // What is compared is the rollups' answer.
    old.read_rollups_only();
    fresh.read_rollups_only();
    old.start_api().await;
    fresh.start_api().await;
    for query in [
        "group_by=provider,model&bucket=5m",
        "group_by=&bucket=1h",
        "group_by=team&bucket=15m",
    ] {
        let backfilled = report_text(&old, query).await;
        assert_eq!(backfilled, report_text(&fresh, query).await, "{query}");
        assert!(
            backfilled.contains("\"histogram\""),
            "{query}: {backfilled}"
        );
    }
    let report: Value =
        serde_json::from_str(&report_text(&old, "group_by=&bucket=1h").await).unwrap();
    let all: Vec<&Call> = calls.iter().collect();
    assert_stats("all", &groups_of(&report)[0]["total"], &all);

    // Calls stored after the switch are folded once into each new table,
    // and no longer into the old one.
    let old_rollup = "SELECT countMerge(calls) FROM latency_minute_hist FORMAT TSV";
    assert_eq!(ch(&old.database, old_rollup).await, format!("{n}\n"));
    let later = large_group(BASE + 60, 5);
    old.insert(&later).await;
    calls.extend(later);
    let (n, streamed) = folded(&calls);
    assert_eq!(
        ch(&old.database, counts).await,
        format!("0\t{n}\n1\t{streamed}\n")
    );
    let rollup = ch(
        &old.database,
        "SELECT countMerge(calls), sumMerge(ttft_calls) FROM latency_minute_calls FORMAT TSV",
    )
    .await;
    assert_eq!(rollup, format!("{n}\t{streamed}\n"));
    assert_eq!(
        ch(&old.database, old_rollup).await,
        format!("{}\n", folded(&calls[..calls.len() - 5]).0)
    );
}

/// The raw body of a report.
async fn report_text(env: &ReportEnv, query: &str) -> String {
    let (status, text) = env
        .get_text(&format!(
            "/api/v1/reports/latency?from={FROM}&to={TO}&{query}"
        ))
        .await;
    assert_eq!(status, 200, "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_calls_give_the_same_report_whatever_the_part_layout() {
    // Over the threshold (the histogram path) and under it, with TTFTs;
    // 6,000 in one group, so that a t-digest would compress while merging
    // (ClickHouse's does past 2,048 unmerged centroids), in whatever order
    // the parts come.
    let mut calls = large_group(BASE, 6_000);
    calls.extend(outlier_group(BASE + 300));
    calls.extend(dataset(BASE));

    // One insert: one part per table.
    let mut one = ReportEnv::new("latency_layout_one").await;
    one.read_rollups_only();
    one.insert(&calls).await;
    one.start_api().await;
    // The same calls in another order, in 25 inserts: 25 parts, which the
    // server merges in the background in an order of its own.
    let mut many = ReportEnv::new("latency_layout_many").await;
    many.read_rollups_only();
    let mut shuffled = calls.clone();
    shuffled.reverse();
    shuffled.rotate_left(777);
    for chunk in shuffled.chunks(shuffled.len() / 25 + 1) {
        many.insert(chunk).await;
    }
    many.start_api().await;

    for query in [
        "group_by=provider,model&bucket=5m",
        "group_by=&bucket=1h",
        "group_by=team&bucket=15m",
    ] {
        let want = report_text(&one, query).await;
        // Repeated requests right after the inserts: one answer.
        for _ in 0..10 {
            assert_eq!(report_text(&many, query).await, want, "{query}");
        }
        // And after the parts were merged.
        ch(&many.database, "OPTIMIZE TABLE latency_minute_calls FINAL").await;
        ch(
            &many.database,
            "OPTIMIZE TABLE latency_minute_buckets FINAL",
        )
        .await;
        assert_eq!(report_text(&many, query).await, want, "{query}");
    }
    let report: Value =
        serde_json::from_str(&report_text(&one, "group_by=&bucket=1h").await).unwrap();
    let all: Vec<&Call> = calls.iter().collect();
    assert_stats("all", &groups_of(&report)[0]["total"], &all);
}

/// Calls gone from `calls` while the rollups still count them (dropped by
/// a shorter `retention.calls_days`, or erased) are reported from the
/// rollups: the report is the same, byte for byte, as before they went
/// (every group here is at most 1000 calls, so both sources are exact).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_gone_from_the_facts_are_still_reported_from_the_rollups() {
    let (env, calls) = env_with_data("latency_calls_gone").await;
    let query = "group_by=provider,model&bucket=5m";
    let before = report_text(&env, query).await;
    let report: Value = serde_json::from_str(&before).unwrap();
    let gpt = groups_of(&report)
        .iter()
        .find(|g| g["key"]["model"] == "gpt-4o")
        .expect("gpt-4o's group");
    let n = calls.iter().filter(|c| c.model == "gpt-4o").count();
    assert_eq!(gpt["total"]["count"], n, "{gpt}");
    // Retention or an erasure takes gpt-4o's calls out of the facts.
    ch(
        &env.database,
        "ALTER TABLE calls DELETE WHERE model = 'gpt-4o'",
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = ch(
            &env.database,
            "SELECT count() FROM calls WHERE model = 'gpt-4o' FORMAT TSV",
        )
        .await;
        if left.trim() == "0" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the delete did not finish: {left}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(report_text(&env, query).await, before);
    // A filter that leaves out the missing calls reads the calls again:
    // the same group, the same numbers.
    let mini = "group_by=provider,model&bucket=5m&model=gpt-4o-mini";
    let from_calls: Value = serde_json::from_str(&report_text(&env, mini).await).unwrap();
    let mini_before = groups_of(&report)
        .iter()
        .find(|g| g["key"]["model"] == "gpt-4o-mini")
        .expect("gpt-4o-mini's group");
    assert_eq!(&groups_of(&from_calls)[0], mini_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_parameter_is_a_400_naming_it() {
    let mut env = ReportEnv::new("latency_bad").await;
    env.start_api().await;
    let cases = [
        ("from=yesterday", "from", "RFC 3339"),
        ("to=2026-01-15T25:00:00Z", "to", "RFC 3339"),
        (
            "from=2026-01-15T11:00:00Z&to=2026-01-15T10:00:00Z",
            "from",
            "earlier than",
        ),
        (
            "from=2025-01-01T00:00:00Z&to=2026-01-15T10:00:00Z",
            "from",
            "at most 31 days",
        ),
        (
            "group_by=provider,region",
            "group_by",
            "unknown dimension `region`",
        ),
        ("group_by=model,model", "group_by", "twice"),
        ("bucket=fast", "bucket", "not a duration"),
        ("bucket=30s", "bucket", "whole number of minutes"),
        (
            "from=2026-01-01T00:00:00Z&to=2026-01-15T00:00:00Z&bucket=1m",
            "bucket",
            "at most 1440",
        ),
        ("groupby=model", "groupby", "unknown parameter"),
        ("model=a&model=b", "model", "more than once"),
    ];
    for (query, parameter, reason) in cases {
        let (status, body) = env
            .get_json(&format!("/api/v1/reports/latency?{query}"))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["parameter"], parameter, "{query}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(reason), "{query}: {error}");
        assert!(
            error.contains(parameter),
            "{query}: the message names the parameter: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_refuses_to_start_with_clear_errors() {
    // Nothing listens on this port.
    let port = support::free_port();
    let env = ReportEnv::with_clickhouse(&format!("http://127.0.0.1:{port}"), "tollgate".into());
    let out = run_with_timeout(env.tollgate(&["api"]), Duration::from_secs(30));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unreachable"), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("[clickhouse] url"), "{stderr}");

    // Reachable, but the database was never migrated.
    let env = ReportEnv::with_database(support::unique("never_migrated"));
    let out = run_with_timeout(env.tollgate(&["api"]), Duration::from_secs(30));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not migrated"), "{stderr}");
    assert!(stderr.contains("tollgate migrate"), "{stderr}");
}

fn run_with_timeout(mut command: std::process::Command, timeout: Duration) -> std::process::Output {
    use std::process::Stdio;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("tollgate api kept running although it cannot work");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// A read over `clickhouse.read_max_memory_bytes` is stopped by ClickHouse
/// and answered 422 with what to change, by the API and by the page, and
/// ClickHouse runs nothing of it after the answer; every other test here
/// reads the same kind of data under the default limit and gets its 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_over_the_memory_limit_is_refused_naming_the_setting() {
    let mut env = ReportEnv::new("latency_memory_limit").await;
    env.insert(&dataset(BASE)).await;
    // Less than any statement needs (ClickHouse 18.16 counts every
    // allocation against it).
    env.limit_read_memory(1_000);
    env.start_api().await;

    let (status, body) = env
        .get_json(&format!(
            "/api/v1/reports/latency?from={FROM}&to={TO}&group_by=provider,model"
        ))
        .await;
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains(
            "needed more memory than clickhouse.read_max_memory_bytes allows (1000 bytes), and ClickHouse stopped it: narrow the time window"
        ),
        "{error}"
    );

    let (status, page) = env
        .get_text("/sre/latency?range=custom&from=2026-01-15T10%3A00&to=2026-01-15T11%3A00")
        .await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("clickhouse.read_max_memory_bytes"), "{page}");

    // Nothing of the refused reads is left running in the server.
    let running = support::clickhouse_query(&format!(
        "SELECT count() FROM system.processes WHERE query LIKE '%{}%' AND query NOT LIKE '%system.processes%'",
        env.database
    ))
    .await;
    assert_eq!(running.trim(), "0");
}
