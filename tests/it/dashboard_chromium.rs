//! The SRE latency page in a real browser: `tollgate api` over known calls
//! from the last hour, Debian's headless Chromium loads `/sre/latency` with
//! its defaults, runs the page's script and Chart.js, and the test checks
//! that every chart plotted points (the script writes `data-points` on each
//! canvas after drawing) and that the totals table has one row per
//! provider/model, with the percentiles of a group too large to be exact
//! marked as estimates. A screenshot is saved under `tests/artifacts/` for
//! people.
//!
//! Chromium comes from `TOLLGATE_TEST_CHROMIUM`, else `/usr/bin/chromium`.

use crate::latency_fixture;
use crate::support;

use latency_fixture::{call, dataset, ReportEnv};
use support::chromium::run_chromium;

const CHART_IDS: [&str; 6] = [
    "duration-p50",
    "duration-p95",
    "duration-p99",
    "ttft-p50",
    "ttft-p95",
    "ttft-p99",
];

/// `(id, data-points)` of every `<canvas>` in the DOM.
fn canvases(dom: &str) -> Vec<(String, u64)> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        let end = tag[start..].find('"')? + start;
        Some(tag[start..end].to_string())
    };
    dom.split("<canvas")
        .skip(1)
        .map(|rest| {
            let tag = &rest[..rest.find('>').unwrap()];
            let id = attr(tag, "id").unwrap_or_default();
            let points = attr(tag, "data-points")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            (id, points)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_page_draws_charts_and_totals_in_chromium() {
    let mut env = ReportEnv::new("dashboard").await;
    // The page as a window too large to sort shows it: from the minute
    // rollups, with estimates above 1,000 calls (read from the calls,
    // every value is exact: `sre_latency`'s unit tests).
    env.read_rollups_only();
    // The hour before the current minute, so the default "Last hour" view
    // shows all of it.
    let now = chrono::Utc::now().timestamp();
    let base = now - now % 60 - 3_600 + 60;
    env.insert(&dataset(base)).await;
    // 1,200 calls of one more model: over the exact threshold, so its
    // totals are histogram estimates and must be marked.
    let batch: Vec<_> = (0..1_200u32)
        .map(|i| {
            call(
                "openai",
                "gpt-4o-batch",
                base + i64::from(i % 3_540),
                900 + i % 400,
                None,
            )
        })
        .collect();
    env.insert(&batch).await;
    env.start_api().await;
    let url = format!("{}/sre/latency", env.api_url());

    // The server-rendered page first: a plain HTTP check gives a clearer
    // failure than a browser would.
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert_eq!(html.matches("<tr class=\"group-row\"").count(), 5, "{html}");

    let profile = tempfile::tempdir().unwrap();
    let dom = {
        let url = url.clone();
        let profile = profile.path().to_path_buf();
        tokio::task::spawn_blocking(move || run_chromium(&url, &profile, &["--dump-dom"]))
            .await
            .unwrap()
    };
    let stderr = String::from_utf8_lossy(&dom.stderr);
    assert!(dom.status.success(), "chromium failed: {stderr}");
    let dom = String::from_utf8(dom.stdout).unwrap();

    let found = canvases(&dom);
    let ids: Vec<&str> = found.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, CHART_IDS, "the page has the six charts");
    for (id, points) in &found {
        assert!(
            *points > 0,
            "chart {id} plotted no points (the script did not run, or there was no data)\n\
             chromium stderr: {stderr}"
        );
    }
    let rows: Vec<&str> = dom.split("<tr class=\"group-row\"").skip(1).collect();
    assert_eq!(rows.len(), 5, "one totals row per provider/model");
    for label in [
        "anthropic / claude-sonnet-4",
        "mistral / mistral-large",
        "openai / gpt-4o",
        "openai / gpt-4o-batch",
        "openai / gpt-4o-mini",
    ] {
        assert!(dom.contains(label), "{label} missing from the page");
    }
    // Estimates are marked (≈, and the bound on hover); exact values not.
    for row in &rows {
        let row = &row[..row.find("</tr>").unwrap()];
        let estimates = row.matches("class=\"num estimate\"").count();
        if row.contains("gpt-4o-batch") {
            assert_eq!(estimates, 4, "the four duration cells: {row}");
            assert_eq!(row.matches('≈').count(), 4, "{row}");
            assert!(row.contains("within ±0.39% of the exact value"), "{row}");
        } else {
            assert_eq!(estimates, 0, "groups under 1,000 calls are exact: {row}");
            assert!(!row.contains('≈'), "{row}");
        }
    }
    assert!(
        dom.contains("exact for a group or chart point of at most 1,000 calls"),
        "the page says which values are exact"
    );

    // A screenshot for people (and for the reviewer's eyes).
    let artifacts = crate::support::repo_root().join("tests/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("sre_latency.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let out = {
        let url = url.clone();
        let profile = profile.path().to_path_buf();
        let arg = format!("--screenshot={}", shot.display());
        tokio::task::spawn_blocking(move || {
            run_chromium(&url, &profile, &[&arg, "--window-size=1400,1000"])
        })
        .await
        .unwrap()
    };
    assert!(
        out.status.success(),
        "chromium screenshot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 20_000,
        "screenshot {} is only {size} bytes",
        shot.display()
    );
    println!("screenshot: {}", shot.display());
}

/// `data-segments` of every `<canvas>` in the DOM: in how many unbroken
/// runs Chart.js drew the chart's lines.
fn segments(dom: &str) -> Vec<(String, u64)> {
    dom.split("<canvas")
        .skip(1)
        .map(|rest| {
            let tag = &rest[..rest.find('>').unwrap()];
            let attr = |name: &str| {
                let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
                Some(tag[start..start + tag[start..].find('"')?].to_string())
            };
            let id = attr("id").unwrap_or_default();
            let runs = attr("data-segments")
                .and_then(|v| v.parse().ok())
                .unwrap_or(u64::MAX);
            (id, runs)
        })
        .collect()
}

/// Minutes without calls are gaps in the latency charts, not a line drawn
/// across them: calls in the first ten minutes of the hour and ten minutes
/// half an hour later (an outage with no traffic between) draw each
/// chart as two runs, not one (the charts spanned gaps, curved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_charts_break_where_no_calls_were_made() {
    let mut env = ReportEnv::new("dashboard_gaps").await;
    let now = chrono::Utc::now().timestamp();
    let base = now - now % 60 - 3_600 + 60;
    let calls: Vec<_> = (0..10i64)
        .chain(40..50)
        .map(|minute| call("outage", "m-1", base + minute * 60 + 5, 400, Some(90)))
        .collect();
    env.insert(&calls).await;
    env.start_api().await;
    let url = format!(
        "{}/sre/latency?range=1h&bucket=1m&provider=outage",
        env.api_url()
    );
    let (status, html) = env
        .get_text("/sre/latency?range=1h&bucket=1m&provider=outage")
        .await;
    assert_eq!(status, 200, "{html}");

    let profile = tempfile::tempdir().unwrap();
    let dom = {
        let profile = profile.path().to_path_buf();
        tokio::task::spawn_blocking(move || run_chromium(&url, &profile, &["--dump-dom"]))
            .await
            .unwrap()
    };
    let stderr = String::from_utf8_lossy(&dom.stderr);
    assert!(dom.status.success(), "chromium failed: {stderr}");
    let dom = String::from_utf8(dom.stdout).unwrap();
    let found = segments(&dom);
    assert_eq!(found.len(), 6, "{dom}");
    for (id, runs) in &found {
        assert_eq!(
            *runs, 2,
            "{id}: the line breaks at the 30 minutes without calls\nchromium stderr: {stderr}"
        );
    }
    for (id, points) in canvases(&dom) {
        assert_eq!(points, 20, "{id}");
    }
}
