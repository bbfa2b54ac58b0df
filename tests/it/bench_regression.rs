//! `tollgate bench regression` at a small scale against the dev stack: it
//! runs every bench, takes every figure of the catalogue, sets each beside
//! the baseline and flags the one past its tolerance without failing; a
//! baseline it cannot read is refused, naming the field, before any bench
//! runs. Not about speed: the baseline here is made so that no figure a
//! debug build can take is flagged but the one planted.

use serde_json::Value;

use crate::support::TestEnv;

/// Every figure the run must take (the catalogue, `figures.rs`), with the
/// way it improves.
const FIGURES: [(&str, bool); 18] = [
    ("ingest.events_per_s", true),
    ("ingest.processor_cpu_us_per_event", false),
    ("ingest.clickhouse_cpu_us_per_event", false),
    ("ingest.processor_peak_rss_mib", false),
    ("ingest_api.json_cpu_us_per_event", false),
    ("ingest_api.otlp_cpu_us_per_span", false),
    ("proxy.added_p50_ms", false),
    ("proxy.added_p99_ms", false),
    ("proxy.own_p50_ms", false),
    ("proxy.cpu_ms_per_call", false),
    ("proxy.errors", false),
    ("proxy.stream_ttft_added_p50_ms", false),
    ("proxy.stream_cpu_ms_per_call", false),
    ("proxy.stream_errors", false),
    ("audit.verify_entries_per_s", true),
    ("audit.in_memory_entries_per_s", true),
    ("reports.slowest_p95_ms", false),
    ("reports.median_p95_ms", false),
];

/// The figure planted past its tolerance: no machine verifies a trillion
/// entries a second.
const PLANTED: &str = "audit.verify_entries_per_s";

#[tokio::test]
async fn a_small_run_takes_every_figure_and_flags_the_one_past_its_tolerance() {
    let env = TestEnv::new("bench_regression").await;
    let mut figures = serde_json::Map::new();
    for (key, higher_is_better) in FIGURES {
        // A rate of 1/s or a cost of 10^9 is never beaten by a run.
        let value = if key == PLANTED {
            1e12
        } else if higher_is_better {
            1.0
        } else {
            1e9
        };
        figures.insert(key.into(), value.into());
    }
    let baseline = env.dir.path().join("baseline.json");
    std::fs::write(
        &baseline,
        serde_json::json!({
            "recorded": "2026-12-06T00:00:00Z", "commit": "test", "machine": "test",
            "figures": figures,
        })
        .to_string(),
    )
    .unwrap();
    let out_path = env.dir.path().join("run.json");
    let out = env.run(&[
        "bench",
        "regression",
        "--scale",
        "0.02",
        "--baseline",
        baseline.to_str().unwrap(),
        "--out",
        out_path.to_str().unwrap(),
    ]);

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    let taken = &report["run"]["figures"];
    for (key, _) in FIGURES {
        assert!(
            taken[key].is_number(),
            "{key} was not taken: {taken}\n{out}"
        );
    }
    assert_eq!(taken["proxy.errors"], 0.0, "{out}");
    for key in [
        "ingest.events_per_s",
        "audit.verify_entries_per_s",
        "proxy.cpu_ms_per_call",
        "reports.slowest_p95_ms",
    ] {
        assert!(taken[key].as_f64().unwrap() > 0.0, "{key}: {taken}");
    }
    // The ingest bench saw 3,000 events (0.02 of 150,000) in ClickHouse:
    // its peak RSS is a process's, not zero.
    assert!(
        taken["ingest.processor_peak_rss_mib"].as_f64().unwrap() > 1.0,
        "{taken}"
    );

    assert_eq!(report["flagged"], serde_json::json!([PLANTED]), "{out}");
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), FIGURES.len());
    let planted = rows.iter().find(|r| r["key"] == PLANTED).unwrap();
    let worse = planted["worse_by"].as_f64().unwrap();
    let expected = 1e12 / taken[PLANTED].as_f64().unwrap();
    assert!((worse / expected - 1.0).abs() < 1e-9, "{planted}");
    assert!(
        out.contains(&format!(
            "bench regression: 1 of 18 figures past their tolerance: {PLANTED}"
        )),
        "{out}"
    );
    assert!(out.contains("PAST TOLERANCE"), "{out}");
}

#[tokio::test]
async fn a_baseline_it_cannot_read_is_refused_before_any_bench_runs() {
    let env = TestEnv::new("bench_regression_bad").await;
    let cases = [
        (
            r#"{"recorded":"x","machine":"m","figures":{"ingest.speed":1}}"#,
            "figures.ingest.speed: not a figure of the catalogue",
        ),
        (
            r#"{"recorded":"x","machine":"m","figures":{"proxy.errors":-3}}"#,
            "figures.proxy.errors: -3 is not a figure this measure can take",
        ),
        (
            r#"{"recorded":"x","machine":"m"}"#,
            "missing field `figures`",
        ),
        ("not json at all", "expected ident"),
    ];
    for (i, (text, why)) in cases.into_iter().enumerate() {
        let path = env.dir.path().join(format!("baseline-{i}.json"));
        std::fs::write(&path, text).unwrap();
        let out = env
            .tollgate(&["bench", "regression", "--baseline", path.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text} was accepted");
        assert!(
            stderr.contains(path.to_str().unwrap()) && stderr.contains(why),
            "{text}: {stderr}"
        );
        assert!(!stderr.contains("[1/4]"), "a bench ran: {stderr}");
    }

    // A scaled run is not a baseline; a scale out of range is refused.
    for (args, why) in [
        (
            &["--scale", "0.5", "--record"][..],
            "--record takes a full-size run",
        ),
        (&["--scale", "0"][..], "\"0\" is not a scale"),
        (&["--scale", "2"][..], "\"2\" is not a scale"),
        (&["--scale", "NaN"][..], "\"NaN\" is not a scale"),
    ] {
        let path = env.dir.path().join("never-written.json");
        let mut all = vec!["bench", "regression", "--baseline", path.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = env.tollgate(&all).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
        assert!(!path.exists(), "{args:?} wrote a baseline");
    }
}
