//! `bench/proxy-vs-litellm` works: a quick run against Tollgate alone (CI
//! has no LiteLLM; the script installs its load generator itself) prints
//! the table with a row for the proxy in which every request succeeded, and
//! the proxy's key is revoked afterwards. Nothing about speed is asserted.

use std::process::Command;

use crate::support::{tollgate_bin, TestEnv};

#[tokio::test]
async fn quick_run_against_tollgate_prints_its_row_with_every_request_answered() {
    let env = TestEnv::new("vslitellm").await;
    let script = crate::support::repo_root().join("bench/proxy-vs-litellm");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(script)
            .args(["--quick", "--only", "tollgate"])
            .arg("--bin")
            .arg(tollgate_bin())
            .arg("--config")
            .arg(&env.config_path)
            .env_remove("TOLLGATE_CONFIG")
            .output()
            .map(|out| (out, env))
    })
    .await
    .unwrap()
    .unwrap();
    let (out, env) = out;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the script failed ({}):\n{stdout}\n{stderr}",
        out.status
    );

    // "   rate  target   p50 ms  p99 ms  added p50  added p99  success  CPU  RSS MiB"
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 5 && f[0] == "20")
        .collect();
    let direct = rows.iter().find(|f| f[1] == "direct");
    let tollgate = rows.iter().find(|f| f[1] == "tollgate");
    let (Some(direct), Some(tollgate)) = (direct, tollgate) else {
        panic!("no rows for the mock and the proxy at 20 req/s:\n{stdout}\n{stderr}");
    };
    assert_eq!(direct[4], "100.00%", "direct row: {direct:?}\n{stdout}");
    assert_eq!(tollgate.len(), 9, "tollgate row: {tollgate:?}\n{stdout}");
    assert_eq!(
        tollgate[6], "100.00%",
        "tollgate row: {tollgate:?}\n{stdout}"
    );
    // Added latency is the difference of the two rows' p50.
    let p50 = |row: &[&str]| row[2].parse::<f64>().unwrap();
    let added: f64 = tollgate[4].parse().unwrap();
    assert!(
        (added - (p50(tollgate) - p50(direct))).abs() < 0.011,
        "added p50 {added} is not {} - {}:\n{stdout}",
        p50(tollgate),
        p50(direct)
    );
    assert!(
        !stdout
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("litellm")),
        "--only tollgate drove LiteLLM:\n{stdout}"
    );

    // The bench's key was revoked: it is listed with a revocation time.
    let keys = env.tollgate(&["keys", "list", "--json"]).output().unwrap();
    let keys: serde_json::Value = serde_json::from_slice(&keys.stdout).unwrap();
    let bench_keys: Vec<&serde_json::Value> = keys
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| {
            k["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("bench-vs-litellm-")
        })
        .collect();
    assert_eq!(bench_keys.len(), 1, "keys: {keys:#}");
    assert!(
        !bench_keys[0]["revoked_at"].is_null(),
        "the bench key was not revoked: {:#}",
        bench_keys[0]
    );
}
