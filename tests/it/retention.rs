//! Retention (`[retention]`, `tollgate retention run`, the periodic run of
//! `tollgate process` under its lease): partitions whose rows are all past
//! a table's days are dropped, a partition holding one newer row is kept,
//! the totals of what is kept (and of the rollups kept forever) do not
//! change, a dry run drops nothing, and a second run is a no-op.

use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Duration as Days, TimeZone, Utc};
use serde_json::Value;

use crate::support::{TestEnv, PATIENCE};

const CONFIG: &str = "[retention]\ninterval_secs = 0\ncalls_days = 60\nlatency_minute_days = 60\nerror_patterns_minute_days = 0\nerror_recovery_minute_days = 0\n";

fn row(id: &str, at: DateTime<Utc>, input: u64) -> String {
    format!(
        "{{\"event_id\":\"{id}\",\"kind\":\"ai.call.completed\",\"occurred_at\":\"{}\",\"occurred_at_ms\":{},\"org_id\":\"acme\",\"team_id\":\"t\",\"user_id\":\"u\",\"provider\":\"openai\",\"model\":\"m\",\"outcome\":\"success\",\"duration_ms\":100,\"input_tokens\":{input}}}\n",
        at.format("%Y-%m-%d %H:%M:%S"),
        at.timestamp_millis()
    )
}

fn month_start(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
        .unwrap()
}

fn next_month(t: DateTime<Utc>) -> DateTime<Utc> {
    month_start(month_start(t) + Days::days(32))
}

fn dropped(report: &Value, table: &str) -> Vec<(String, u64)> {
    report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == table)
        .unwrap_or_else(|| panic!("no {table} in {report}"))["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partition_id"].as_str().unwrap().to_string(),
                p["rows"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn partitions_past_retention_are_dropped_and_the_rest_kept() {
    let env = TestEnv::with_extra_config("retention", CONFIG).await;
    let now = Utc::now();
    let cutoff = now - Days::days(60);
    // Two months wholly past retention; the month the cutoff falls in (a
    // row before it, one after it); this month.
    let old = now - Days::days(500);
    let older = now - Days::days(120);
    let straddle_first = month_start(cutoff);
    let straddle_last = next_month(cutoff) - Days::seconds(1);
    let rows = [
        row("e-old-1", old, 1),
        row("e-old-2", old + Days::seconds(1), 2),
        row("e-older", older, 4),
        row("e-straddle-1", straddle_first, 8),
        row("e-straddle-2", straddle_last, 16),
        row("e-now", now, 32),
    ];
    env.ch(&format!(
        "INSERT INTO {{db}}.calls FORMAT JSONEachRow\n{}",
        rows.concat()
    ))
    .await;
    let partition = |t: DateTime<Utc>| t.format("%Y%m").to_string();
    assert_eq!(
        env.ch_u64("SELECT sum(input_tokens) FROM {db}.calls").await,
        63
    );
    assert_eq!(
        env.ch_u64("SELECT sum(calls) FROM {db}.cost_daily").await,
        6
    );

    // Dry run: says what it would drop, drops nothing.
    let report: Value =
        serde_json::from_str(&env.run(&["retention", "run", "--dry-run", "--json"])).unwrap();
    assert_eq!(report["dry_run"], true);
    let mut want = vec![(partition(old), 2), (partition(older), 1)];
    want.sort();
    assert_eq!(dropped(&report, "calls"), want);
    assert_eq!(dropped(&report, "latency_minute_calls").len(), 2);
    // Its histogram goes with it, partition for partition.
    assert_eq!(
        dropped(&report, "latency_minute_buckets"),
        dropped(&report, "latency_minute_calls")
    );
    assert!(
        !report["tables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["table"] == "cost_daily"),
        "cost_daily is kept forever: {report}"
    );
    let lines = env.run(&["retention", "run", "--dry-run"]);
    assert!(
        lines.contains(&format!(
            "calls: would drop partition {} (2 rows",
            partition(old)
        )),
        "{lines}"
    );
    assert!(
        lines.contains("retention (dry run, nothing dropped): would drop 6 partition(s)"),
        "{lines}"
    );
    assert_eq!(env.ch_u64("SELECT count() FROM {db}.calls").await, 6);

    // The run drops exactly those.
    let report: Value = serde_json::from_str(&env.run(&["retention", "run", "--json"])).unwrap();
    assert_eq!(dropped(&report, "calls"), want);
    assert_eq!(
        env.ch(
            "SELECT groupArray(event_id) FROM (SELECT event_id FROM {db}.calls ORDER BY event_id)"
        )
        .await
        .trim(),
        "['e-now','e-straddle-1','e-straddle-2']"
    );
    assert_eq!(
        env.ch_u64("SELECT sum(input_tokens) FROM {db}.calls").await,
        56
    );
    // The rollups kept forever still hold every call; the latency rollup
    // lost the same months.
    assert_eq!(
        env.ch_u64("SELECT sum(calls) FROM {db}.cost_daily").await,
        6
    );
    assert_eq!(
        env.ch_u64("SELECT sum(input_tokens) FROM {db}.cost_daily")
            .await,
        63
    );
    assert_eq!(
        env.ch_u64(&format!(
            "SELECT count() FROM {{db}}.latency_minute_calls WHERE minute < toDateTime({})",
            straddle_first.timestamp()
        ))
        .await,
        0
    );
    assert_eq!(
        env.ch_u64(&format!(
            "SELECT count() FROM {{db}}.latency_minute_buckets WHERE minute < toDateTime({})",
            straddle_first.timestamp()
        ))
        .await,
        0
    );
    // The histogram keeps the three calls left (duration, no TTFT).
    assert_eq!(
        env.ch_u64("SELECT sum(calls) FROM {db}.latency_minute_buckets")
            .await,
        3
    );
    // Again: nothing left to drop.
    let report: Value = serde_json::from_str(&env.run(&["retention", "run", "--json"])).unwrap();
    assert!(dropped(&report, "calls").is_empty());

    // A table kept shorter than one it must outlive is refused, naming both.
    let out = env
        .tollgate(&["retention", "run", "--dry-run"])
        .env("TOLLGATE_RETENTION__COST_DAILY_DAYS", "30")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("retention.cost_daily_days = 30 is shorter than retention.calls_days = 60: cost_daily must keep its rows at least as long as calls"),
        "{err}"
    );

    // `tollgate process` enforces it on its own, under the lease.
    env.ch(&format!(
        "INSERT INTO {{db}}.calls FORMAT JSONEachRow\n{}",
        row("e-late", older, 64)
    ))
    .await;
    let log = std::fs::File::create(env.log_path("process")).unwrap();
    let mut process = env
        .tollgate(&["process", "--folds", "calls"])
        .env("TOLLGATE_RETENTION__INTERVAL_SECS", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut left = 1;
    while started.elapsed() < PATIENCE {
        left = env
            .ch_u64("SELECT count() FROM {db}.calls WHERE event_id = 'e-late'")
            .await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = process.kill();
    let _ = process.wait();
    assert_eq!(
        left,
        0,
        "the processor never dropped the partition; log:\n{}",
        std::fs::read_to_string(env.log_path("process")).unwrap_or_default()
    );
    assert_eq!(env.ch_u64("SELECT count() FROM {db}.calls").await, 3);
    let pool = sqlx::PgPool::connect(&env.pg_url).await.unwrap();
    let holder: String = sqlx::query_scalar("SELECT holder FROM leases WHERE name = 'retention'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(holder.ends_with(&format!(":{}", process.id())), "{holder}");
}
