//! `tollgate bench reports` at a small N against the dev stack: the data
//! it generates is consistent (the rollups the reports read sum to the
//! calls, one audit entry per call, every failure in the error-pattern
//! rollup) and its table names every endpoint. Not about speed.

use crate::support::{self, clickhouse_query, d, TestEnv};

/// Every endpoint the bench must time, as its table names them.
const ENDPOINTS: [&str; 31] = [
    "latency report, 24 h",
    "latency report, 30 d",
    "latency report, 30 d by team",
    "latency page, 24 h",
    "latency page, 7 d",
    "slowest calls CSV, 24 h",
    "cost report by team",
    "cost report by model",
    "cost report by user",
    "cost report by tag",
    "cost overview",
    "cost page",
    "cost CSV",
    "top spenders CSV",
    "statement",
    "statement page",
    "statement CSV",
    "budgets",
    "budgets page",
    "budgets CSV",
    "budget burndown",
    "budget page",
    "audit search, org",
    "audit search, org + user, 7 d",
    "audit search page",
    "errors report, 24 h",
    "errors report, 7 d",
    "errors page, 24 h",
    "errors page, 7 d",
    "overview",
    "overview page",
];

const CALLS: u64 = 20_000;

#[tokio::test]
async fn bench_reports_generates_consistent_data_and_times_every_endpoint() {
    let env = TestEnv::new("bench_reports").await;
    let out = env.run(&[
        "bench",
        "reports",
        "--calls",
        &CALLS.to_string(),
        "--requests",
        "2",
        "--warmups",
        "1",
        "--chunk",
        "7000",
        "--keep",
    ]);
    let db = out
        .lines()
        .find_map(|l| l.strip_prefix("bench: ClickHouse and PostgreSQL databases "))
        .unwrap_or_else(|| panic!("no database named in:\n{out}"))
        .trim()
        .to_string();
    let dropper = Dropper(db.clone());

    // Every endpoint has a row with figures (a failed one says FAILED and
    // fails the run).
    for name in ENDPOINTS {
        let row = out
            .lines()
            .find(|l| l.trim_start().starts_with(name) && (l.contains("FAILED") || l.contains('.')))
            .unwrap_or_else(|| panic!("no row for `{name}` in:\n{out}"));
        assert!(!row.contains("FAILED"), "{row}");
    }
    assert!(out.contains("endpoints meet p95 < 150 ms"), "{out}");
    // The endpoints are timed once ClickHouse has merged what was generated.
    assert!(
        out.contains("ClickHouse merged the generated parts in"),
        "{out}"
    );
    assert!(
        out.contains(&format!("of {} endpoints", ENDPOINTS.len())),
        "{out}"
    );

    let q = |sql: String| async move { clickhouse_query(&sql).await.trim().to_string() };
    assert_eq!(
        q(format!("SELECT count() FROM {db}.calls")).await,
        CALLS.to_string()
    );
    assert_eq!(
        q(format!("SELECT count() FROM {db}.audit_chain")).await,
        CALLS.to_string()
    );
    // One chain per team, each numbered 1..n without gaps.
    assert_eq!(
        q(format!(
            "SELECT count() FROM (SELECT chain_id, count() AS n, min(seq) AS lo, max(seq) AS hi \
             FROM {db}.audit_chain GROUP BY chain_id) WHERE lo != 1 OR hi != n"
        ))
        .await,
        "0"
    );
    assert_eq!(
        q(format!("SELECT uniqExact(chain_id) FROM {db}.audit_chain")).await,
        "50"
    );

    // The cost rollups sum to the calls, in cost and in count.
    let calls_cost = d(&q(format!("SELECT toString(sum(cost)) FROM {db}.calls")).await);
    let daily_cost = d(&q(format!("SELECT toString(sum(cost)) FROM {db}.cost_daily")).await);
    let tag_cost = d(&q(format!(
        "SELECT toString(sum(cost)) FROM {db}.cost_daily_tags"
    ))
    .await);
    assert!(calls_cost > d("0"));
    assert_eq!(daily_cost, calls_cost);
    assert_eq!(tag_cost, calls_cost, "every call carries one feature tag");
    assert_eq!(
        q(format!("SELECT sum(calls) FROM {db}.cost_daily")).await,
        CALLS.to_string()
    );
    // The printed check names the same total the rollup holds.
    let check = out
        .lines()
        .find(|l| l.contains("cost report total"))
        .unwrap_or_else(|| panic!("no cost check in:\n{out}"));
    assert!(
        check.contains(&calls_cost.to_string()),
        "{check} vs {calls_cost}"
    );
    assert!(
        out.contains(&format!(
            "calls {CALLS} = audit entries {CALLS} = {CALLS} generated"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "latency report count {CALLS} = calls in its range {CALLS}"
        )),
        "{out}"
    );

    // A realistic spread: 30 days, every org, team, provider and model,
    // about 4 % failures, each in the error-pattern rollup.
    let days: u64 = q(format!(
        "SELECT uniqExact(toDate(occurred_at)) FROM {db}.calls"
    ))
    .await
    .parse()
    .unwrap();
    assert!((30..=31).contains(&days), "{days} days");
    assert_eq!(
        q(format!(
            "SELECT concat(toString(uniqExact(org_id)), ' ', toString(uniqExact(team_id)), ' ', \
             toString(uniqExact(provider)), ' ', toString(uniqExact(model))) FROM {db}.calls"
        ))
        .await,
        "10 50 4 8"
    );
    let failed: u64 = q(format!(
        "SELECT count() FROM {db}.calls WHERE kind = 'ai.call.failed'"
    ))
    .await
    .parse()
    .unwrap();
    assert!((400..=1200).contains(&failed), "{failed} failed calls");
    assert_eq!(
        q(format!(
            "SELECT sum(failures) FROM {db}.error_patterns_minute"
        ))
        .await,
        failed.to_string()
    );
    assert_eq!(
        q(format!(
            "SELECT count() FROM {db}.calls WHERE kind = 'ai.call.failed' AND error_signature = 0"
        ))
        .await,
        "0"
    );
    drop(dropper);
    drop(env);
}

/// Drops the bench's kept databases when the test ends, passed or not.
struct Dropper(String);

impl Drop for Dropper {
    fn drop(&mut self) {
        let name = self.0.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                clickhouse_query(&format!("DROP DATABASE IF EXISTS {name}")).await;
                use sqlx::Connection;
                let mut pg = sqlx::PgConnection::connect(&support::postgres_admin_url())
                    .await
                    .unwrap();
                // The name is the bench's: letters, digits and underscores.
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut pg)
                .await
                .unwrap();
            });
        });
        let _ = cleanup.join();
    }
}
