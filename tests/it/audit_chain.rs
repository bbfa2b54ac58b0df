//! The audit chain against real Kafka and ClickHouse: every event appended
//! once per chain, checkpoints signed, tampering done directly in ClickHouse
//! detected and located, `tollgate verify-audit --export` finding the same
//! breaks offline in an export file (and every tampering of the file), and
//! a SIGKILLed processor resuming every chain without gap or duplicate.
//! (The verifier independent of the project's code is docs/audit_verify.py,
//! run on the same kinds of exports by tests/audit_verify.)

use crate::support;

use support::kafka::produce_all;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};
use support::TestEnv;
use tollgate_contract::audit::checkpoint::CheckpointSigner;
use tollgate_contract::audit::entry::{entry_hash, EntryRow};

const SEED: &str = "4f1c0a7e3b9d2c8e5f6a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e";

/// The `[audit]` and `[processor]` sections of an audit test, each with a
/// consumer group of its own (with the default group, concurrent tests'
/// processors rebalanced each other, and `migrate` refused its backfills
/// while any other processor of that group ran).
pub(crate) fn audit_config(every: u64, extra: &str) -> String {
    format!(
        "[audit]\ngroup_id = \"{}\"\nsigning_key = \"{SEED}\"\ncheckpoint_every = {every}\ncheckpoint_interval_secs = 3600\n\n[processor]\ngroup_id = \"{}\"\nbatch_max_wait_ms = 200\n{extra}\n",
        support::unique("audit_group"),
        support::unique("processor_group")
    )
}

/// `per_team` events for each team, interleaved; one admin change and one
/// blocked call per team so those kinds are chained too.
fn traffic(teams: &[&str], per_team: usize, start: DateTime<Utc>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..per_team {
        for (t, team) in teams.iter().enumerate() {
            let occurred_at = (start + chrono::Duration::milliseconds((i * 50 + t) as i64))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let event_id = uuid::Uuid::now_v7().to_string();
            let event = if i == 3 {
                serde_json::json!({
                    "schema_version": 1, "event_id": event_id, "kind": "admin.budget.updated",
                    "occurred_at": occurred_at, "org_id": "org-a", "team_id": team,
                    "user_id": "admin", "admin": {"limit_usd": "100.5", "factor": 1.25}
                })
            } else {
                let blocked = i == 5;
                let provider = ["openai", "anthropic"][i % 2];
                let model = ["gpt-4o", "claude-sonnet-4"][i % 2];
                serde_json::json!({
                    "schema_version": 1, "event_id": event_id,
                    "kind": if blocked { "ai.call.blocked" } else { "ai.call.completed" },
                    "occurred_at": occurred_at, "org_id": "org-a", "team_id": team,
                    "user_id": format!("user-{}", i % 7), "api_key_id": format!("key-{}", i % 3),
                    "call": {"call_id": format!("c-{team}-{i}"), "provider": provider,
                             "model": model, "operation": "chat",
                             "duration_ms": 100 + i as u64, "outcome": if blocked { "blocked" } else { "success" },
                             "http_status": if blocked { 429 } else { 200 },
                             "usage": {"input_tokens": i as u64, "output_tokens": 3, "audio_seconds": 0.25},
                             "error": if blocked { serde_json::json!({"type": "budget_exceeded", "message": "team \"é\" over budget"}) } else { Value::Null }},
                    "tags": {"feature": "search"}
                })
            };
            let mut event = event;
            if event["call"]["error"].is_null() {
                if let Some(call) = event.get_mut("call").and_then(Value::as_object_mut) {
                    call.remove("error");
                }
            }
            out.push((team.to_string(), serde_json::to_vec(&event).unwrap()));
        }
    }
    out
}

/// SIGTERM and wait for a clean exit (the audit fold checkpoints the rest).
pub(crate) async fn stop(pid: u32) {
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.contains(") Z ") {
            break;
        }
        assert!(
            start.elapsed() < crate::support::PATIENCE,
            "process {pid} did not stop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `tollgate verify-audit --json`: (exit success, report).
fn verify_audit(env: &TestEnv, org: &str) -> (bool, Value) {
    verify_audit_with(env, org, &[])
}

/// `tollgate verify-audit --json <extra>`: (exit success, report).
pub(crate) fn verify_audit_with(env: &TestEnv, org: &str, extra: &[&str]) -> (bool, Value) {
    let mut args = vec!["verify-audit", "--org", org, "--json"];
    args.extend_from_slice(extra);
    let out = env.tollgate(&args).output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify-audit printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

pub(crate) fn chain_break(report: &Value, chain: &str) -> Option<(u64, String)> {
    let c = report["chains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["chain_id"] == chain)
        .unwrap_or_else(|| panic!("no chain {chain} in {report}"));
    let b = &c["first_break"];
    if b.is_null() {
        None
    } else {
        Some((
            b["seq"].as_u64().unwrap(),
            b["kind"].as_str().unwrap().to_string(),
        ))
    }
}

/// `tollgate verify-audit --export FILE --json <extra>`, offline: no
/// configuration file and no server address, only the trusted key.
fn verify_export(path: &std::path::Path, extra: &[&str]) -> (bool, Value) {
    let key = CheckpointSigner::from_hex_seed(SEED)
        .unwrap()
        .public_key_hex()
        .to_string();
    let mut cmd = std::process::Command::new(support::tollgate_bin());
    for (name, _) in std::env::vars() {
        if name.starts_with("TOLLGATE_") {
            cmd.env_remove(name);
        }
    }
    cmd.args(["verify-audit", "--export", path.to_str().unwrap()])
        .args(["--public-key", &key, "--json"])
        .args(extra);
    let out = cmd.output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify-audit --export printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.success(), report["ok"] == true, "{report:#}");
    (out.status.success(), report)
}

/// `verify_export` of `text`, written to `<dir>/<name>`.
pub(crate) fn verify_export_text(
    env: &TestEnv,
    name: &str,
    text: &str,
    extra: &[&str],
) -> (bool, Value) {
    let path = env.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    verify_export(&path, extra)
}

/// The file-level problems of an export report: `(kind, chain)`, sorted.
fn problems(report: &Value) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_string(),
                p["chain_id"].as_str().map(str::to_string),
            )
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn problem(kind: &str, chain: Option<&str>) -> (String, Option<String>) {
    (kind.to_string(), chain.map(str::to_string))
}

/// Every line of an export, each passed through `edit` (which may drop it).
fn edit_lines(text: &str, edit: &dyn Fn(Value) -> Option<Value>) -> String {
    text.lines()
        .filter_map(|l| edit(serde_json::from_str(l).unwrap()))
        .map(|v| format!("{v}\n"))
        .collect()
}

/// Run a mutation and wait until `check` (a count) reaches `want`.
async fn mutate(env: &TestEnv, sql: &str, check: &str, want: u64) {
    env.ch(sql).await;
    let got = env
        .wait_for_count(check, want, crate::support::PATIENCE)
        .await;
    assert_eq!(got, want, "mutation not applied: {sql}");
}

/// A quiet chain's newest entries are signed within
/// `checkpoint_interval_secs`, though no later message comes to flush the
/// fold (a trial found the tail of a quiet partition unsigned for 117 s
/// with a 60 s interval, until an unrelated message arrived).
#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_chain_is_checkpointed_within_its_interval() {
    let config = audit_config(1000, "").replace(
        "checkpoint_interval_secs = 3600",
        "checkpoint_interval_secs = 1",
    );
    let mut env = TestEnv::with_extra_config("audit_quiet", &config).await;
    let messages = traffic(
        &["team-quiet"],
        3,
        Utc::now() - chrono::Duration::minutes(5),
    );
    produce_all(&env.events_topic, &messages).await;
    let pid = env.spawn("process", &["process", "--folds", "audit"]);
    let got = env
        .wait_for_count(
            "SELECT count() FROM {db}.audit_checkpoints WHERE chain_id = 'org-a/team-quiet' AND to_seq = 3",
            1,
            crate::support::PATIENCE,
        )
        .await;
    // Checked while the processor still runs: a shutdown signs the rest
    // anyway.
    assert_eq!(
        got,
        1,
        "log:\n{}",
        std::fs::read_to_string(env.log_path("process")).unwrap_or_default()
    );
    stop(pid).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chain_checkpoints_and_tamper_detection() {
    let teams = [
        "team-ok",
        "team-edit",
        "team-delete",
        "team-swap",
        "team-trunc",
        "team-forge",
    ];
    let mut env = TestEnv::with_extra_config("audit_tamper", &audit_config(20, "")).await;
    let start = Utc.with_ymd_and_hms(2026, 3, 10, 10, 0, 0).unwrap();
    let messages = traffic(&teams, 50, start);
    produce_all(&env.events_topic, &messages).await;
    let pid = env.spawn("process", &["process", "--folds", "audit"]);
    let total = messages.len() as u64;
    let got = env
        .wait_for_count(
            "SELECT count() FROM {db}.audit_chain",
            total,
            Duration::from_secs(90),
        )
        .await;
    assert_eq!(
        got,
        total,
        "log:\n{}",
        std::fs::read_to_string(env.log_path("process")).unwrap_or_default()
    );
    stop(pid).await;

    // One chain per team, seq 1..=50, no gap, no duplicate.
    let per_chain = env
        .ch("SELECT chain_id, count(), uniqExact(seq), min(seq), max(seq) FROM {db}.audit_chain GROUP BY chain_id ORDER BY chain_id FORMAT TSV")
        .await;
    assert_eq!(per_chain.lines().count(), teams.len(), "{per_chain}");
    for line in per_chain.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(&cols[1..], &["50", "50", "1", "50"], "{line}");
    }
    // Checkpoints at 20, 40 and (shutdown) 50 on every chain.
    let cps = env
        .ch("SELECT chain_id, groupArray(to_seq) FROM (SELECT chain_id, to_seq FROM {db}.audit_checkpoints ORDER BY chain_id, to_seq) GROUP BY chain_id ORDER BY chain_id FORMAT TSV")
        .await;
    for line in cps.lines() {
        assert!(line.ends_with("[20,40,50]"), "{cps}");
    }
    let blocked = env
        .ch("SELECT decision, decision_reason FROM {db}.audit_chain WHERE kind = 'ai.call.blocked' AND chain_id = 'org-a/team-ok' FORMAT TSV")
        .await;
    assert!(
        blocked.starts_with("deny\tbudget_exceeded: team"),
        "{blocked}"
    );

    let (ok, report) = verify_audit(&env, "org-a");
    assert!(ok, "{report:#}");
    assert_eq!(report["entries"], total);
    assert_eq!(report["checkpoints"], 3 * teams.len() as u64);

    // The independent verifier agrees on the untouched export.
    let export = env.dir.path().join("export.ndjson");
    let out = env
        .tollgate(&[
            "audit",
            "export",
            "--org",
            "org-a",
            "--out",
            export.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The untouched export verifies offline: manifest, every link, every
    // checkpoint.
    let (ok, offline) = verify_export(&export, &[]);
    assert!(ok, "{offline:#}");
    assert_eq!(offline["entries"], total);
    assert_eq!(offline["checkpoints"], 3 * teams.len() as u64);
    assert_eq!(offline["chains"].as_array().unwrap().len(), teams.len());
    // The same attacks done to the file instead: each located the way
    // ClickHouse's are below (and as docs/audit_verify.py does,
    // tests/audit_verify), and the signed digest no longer holds.
    let text = std::fs::read_to_string(&export).unwrap();
    let at = |v: &Value, chain: &str, kind: &str| v["chain_id"] == chain && v["type"] == kind;
    let edited = edit_lines(&text, &|mut v| {
        if at(&v, "org-a/team-edit", "entry") && v["seq"] == 7 {
            v["model"] = Value::from("cheap-model");
        }
        Some(v)
    });
    let swapped = edit_lines(&text, &|mut v| {
        if at(&v, "org-a/team-swap", "entry") && (v["seq"] == 5 || v["seq"] == 6) {
            v["seq"] = Value::from(11 - v["seq"].as_u64().unwrap());
        }
        Some(v)
    });
    let swapped = {
        // ...and the two lines in seq order again.
        let mut lines: Vec<&str> = swapped.lines().collect();
        let i = lines
            .iter()
            .position(|l| {
                l.contains("\"chain_id\":\"org-a/team-swap\"") && l.contains("\"seq\":6,")
            })
            .unwrap();
        lines.swap(i, i + 1);
        lines.iter().map(|l| format!("{l}\n")).collect::<String>()
    };
    let forged = edit_lines(&text, &|mut v| {
        if at(&v, "org-a/team-forge", "checkpoint") && v["to_seq"] == 40 {
            let mut sig: Vec<char> = v["signature"].as_str().unwrap().chars().collect();
            sig[10] = if sig[10] == 'a' { 'b' } else { 'a' };
            v["signature"] = Value::from(sig.into_iter().collect::<String>());
        }
        Some(v)
    });
    for (what, tampered, chain, want) in [
        ("edited entry", &edited, "org-a/team-edit", (7, "edited")),
        (
            "swapped entries",
            &swapped,
            "org-a/team-swap",
            (5, "reordered"),
        ),
        (
            "forged signature",
            &forged,
            "org-a/team-forge",
            (40, "bad_signature"),
        ),
    ] {
        let (ok, report) = verify_export_text(&env, "tampered-file.ndjson", tampered, &[]);
        assert!(!ok, "{what}: {report:#}");
        assert_eq!(
            problems(&report),
            vec![problem("manifest_lines", None)],
            "{what}: {report:#}"
        );
        assert_eq!(
            chain_break(&report, chain),
            Some((want.0, want.1.to_string())),
            "{what}: {report:#}"
        );
        assert_eq!(chain_break(&report, "org-a/team-ok"), None, "{what}");
    }

    // Tamper, one chain each, directly in ClickHouse.
    mutate(
        &env,
        "ALTER TABLE {db}.audit_chain UPDATE model = 'cheap-model' WHERE chain_id = 'org-a/team-edit' AND seq = 7",
        "SELECT count() FROM {db}.audit_chain WHERE model = 'cheap-model'",
        1,
    )
    .await;
    mutate(
        &env,
        "ALTER TABLE {db}.audit_chain DELETE WHERE chain_id = 'org-a/team-delete' AND seq = 12",
        "SELECT 50 - count() FROM {db}.audit_chain WHERE chain_id = 'org-a/team-delete'",
        1,
    )
    .await;
    // Swap entries 5 and 6: copy them, delete them, insert them back with
    // their sequence numbers exchanged (seq is part of the sorting key, so
    // it cannot be updated in place).
    env.ch("CREATE TABLE {db}.swap_tmp ENGINE = Memory AS SELECT * FROM {db}.audit_chain WHERE chain_id = 'org-a/team-swap' AND seq IN (5, 6)")
        .await;
    mutate(
        &env,
        "ALTER TABLE {db}.audit_chain DELETE WHERE chain_id = 'org-a/team-swap' AND seq IN (5, 6)",
        "SELECT 50 - count() FROM {db}.audit_chain WHERE chain_id = 'org-a/team-swap'",
        2,
    )
    .await;
    env.ch("INSERT INTO {db}.audit_chain SELECT chain_id, 11 - seq AS seq, occurred_at, occurred_at_ms, event_id, kind, org_id, team_id, user_id, api_key_id, provider, model, outcome, decision, decision_reason, event_json, prev_hash, entry_hash, kafka_partition, kafka_offset, appended_at, v, salt, personal_commitment FROM {db}.swap_tmp")
        .await;
    mutate(
        &env,
        "ALTER TABLE {db}.audit_chain DELETE WHERE chain_id = 'org-a/team-trunc' AND seq >= 35",
        "SELECT 50 - count() FROM {db}.audit_chain WHERE chain_id = 'org-a/team-trunc'",
        16,
    )
    .await;
    let original = env
        .ch("SELECT signature FROM {db}.audit_checkpoints WHERE chain_id = 'org-a/team-forge' AND to_seq = 40 FORMAT TSV")
        .await;
    let mut forged: Vec<char> = original.trim().chars().collect();
    forged[10] = if forged[10] == 'a' { 'b' } else { 'a' };
    let forged: String = forged.into_iter().collect();
    mutate(
        &env,
        &format!("ALTER TABLE {{db}}.audit_checkpoints UPDATE signature = '{forged}' WHERE chain_id = 'org-a/team-forge' AND to_seq = 40"),
        &format!("SELECT count() FROM {{db}}.audit_checkpoints WHERE signature = '{forged}'"),
        1,
    )
    .await;

    let (ok, report) = verify_audit(&env, "org-a");
    assert!(!ok, "tampering not detected: {report:#}");
    assert_eq!(chain_break(&report, "org-a/team-ok"), None, "{report:#}");
    assert_eq!(
        chain_break(&report, "org-a/team-edit"),
        Some((7, "edited".into())),
        "{report:#}"
    );
    assert_eq!(
        chain_break(&report, "org-a/team-delete"),
        Some((12, "missing".into())),
        "{report:#}"
    );
    assert_eq!(
        chain_break(&report, "org-a/team-swap"),
        Some((5, "reordered".into())),
        "{report:#}"
    );
    assert_eq!(
        chain_break(&report, "org-a/team-trunc"),
        Some((35, "truncated".into())),
        "{report:#}"
    );
    assert_eq!(
        chain_break(&report, "org-a/team-forge"),
        Some((40, "bad_signature".into())),
        "{report:#}"
    );

    // The independent verifier finds the same places from a fresh export.
    let export = env.dir.path().join("tampered.ndjson");
    let out = env
        .tollgate(&[
            "audit",
            "export",
            "--org",
            "org-a",
            "--out",
            export.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A fresh export is signed over what the database now holds, so its
    // manifest holds; its chains break where the database's do.
    let (ok, offline) = verify_export(&export, &[]);
    assert!(!ok, "{offline:#}");
    assert_eq!(problems(&offline), vec![], "{offline:#}");
    for team in teams {
        let chain = format!("org-a/{team}");
        assert_eq!(
            chain_break(&offline, &chain),
            chain_break(&report, &chain),
            "{team}: {offline:#}"
        );
    }
}

/// Issue 10, item 5: what someone with write access to ClickHouse could do
/// unnoticed while the checkpoints lived only there (delete the newest
/// checkpoint and cut or rewrite the tail after the one before, drop a whole
/// chain), and what an export could hide while its header and footer were
/// unsigned (a dropped chain, a removed last checkpoint line, a cut at a
/// checkpoint boundary). `--no-anchor` is verification against ClickHouse
/// alone, as it was: it must still miss the database attacks (that is the
/// attack), and the anchored verification must report each with its kind
/// and seq, from the topic and from the exported anchor file alike.
#[tokio::test(flavor = "multi_thread")]
async fn anchor_and_signed_manifest_catch_removal() {
    let teams = ["team-ok", "team-tail", "team-rewrite", "team-drop"];
    let mut env = TestEnv::with_extra_config("audit_anchor", &audit_config(20, "")).await;
    let start = Utc.with_ymd_and_hms(2026, 3, 11, 10, 0, 0).unwrap();
    let messages = traffic(&teams, 50, start);
    produce_all(&env.events_topic, &messages).await;
    let pid = env.spawn("process", &["process", "--folds", "audit"]);
    let total = messages.len() as u64;
    let got = env
        .wait_for_count(
            "SELECT count() FROM {db}.audit_chain",
            total,
            Duration::from_secs(90),
        )
        .await;
    assert_eq!(got, total);
    stop(pid).await;

    // The anchor topic holds every checkpoint, kept forever.
    let anchor_file = env.dir.path().join("anchor.jsonl");
    let out = env
        .tollgate(&[
            "audit",
            "checkpoints",
            "export",
            "--out",
            anchor_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let anchored: Vec<Value> = std::fs::read_to_string(&anchor_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(anchored.len(), 3 * teams.len(), "{anchored:?}");
    assert!(anchored
        .iter()
        .all(|c| c["v"] == 2 && c["org_id"] == "org-a" && c["type"] == "checkpoint"));
    // `tollgate migrate` created the anchor append-only and unlimited.
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", support::kafka_brokers())
            .create()
            .unwrap();
    let anchor_topic = format!("{}.audit.checkpoints", env.name);
    let described = admin
        .describe_configs(
            &[rdkafka::admin::ResourceSpecifier::Topic(&anchor_topic)],
            &rdkafka::admin::AdminOptions::new(),
        )
        .await
        .unwrap();
    let resource = described.into_iter().next().unwrap().unwrap();
    for (name, want) in [
        ("cleanup.policy", "delete"),
        ("retention.ms", "-1"),
        ("retention.bytes", "-1"),
    ] {
        assert_eq!(
            resource.get(name).and_then(|e| e.value.as_deref()),
            Some(want),
            "{anchor_topic} {name}"
        );
    }
    let (ok, report) = verify_audit(&env, "org-a");
    assert!(ok, "{report:#}");

    // A whole-chain export before any tampering carries a signed manifest.
    let export = env.dir.path().join("export.ndjson");
    let out = env
        .tollgate(&[
            "audit",
            "export",
            "--org",
            "org-a",
            "--out",
            export.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&export).unwrap();
    let (ok, offline) = verify_export(&export, &["--anchor", anchor_file.to_str().unwrap()]);
    assert!(ok, "{offline:#}");
    let lines: Vec<&str> = text.lines().collect();
    let keep = |pred: &dyn Fn(&Value) -> bool| -> String {
        lines
            .iter()
            .filter(|l| pred(&serde_json::from_str::<Value>(l).unwrap()))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    // Each chain still verifies on its own after each of these; only the
    // manifest tells.
    let dropped_chain = keep(&|v| v["chain_id"] != "org-a/team-tail");
    let dropped_checkpoint = keep(&|v| {
        !(v["type"] == "checkpoint" && v["chain_id"] == "org-a/team-ok" && v["to_seq"] == 50)
    });
    let cut_at_checkpoint = keep(&|v| {
        !(v["chain_id"] == "org-a/team-ok"
            && ((v["type"] == "entry" && v["seq"].as_u64().unwrap() > 40)
                || (v["type"] == "checkpoint" && v["to_seq"] == 50)))
    });
    let cut_file: String = lines[..lines.len() - 1]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    let anchor_arg = ["--anchor", anchor_file.to_str().unwrap()];
    for (what, tampered, manifest, anchored) in [
        (
            "dropped chain",
            &dropped_chain,
            vec![
                problem("manifest_chain", Some("org-a/team-tail")),
                problem("manifest_lines", None),
            ],
            Some(("org-a/team-tail", (1, "truncated"))),
        ),
        (
            "dropped last checkpoint",
            &dropped_checkpoint,
            vec![
                problem("manifest_chain", Some("org-a/team-ok")),
                problem("manifest_lines", None),
            ],
            None,
        ),
        (
            "cut at a checkpoint boundary",
            &cut_at_checkpoint,
            vec![
                problem("manifest_chain", Some("org-a/team-ok")),
                problem("manifest_lines", None),
            ],
            Some(("org-a/team-ok", (41, "truncated"))),
        ),
        (
            "cut file",
            &cut_file,
            // No manifest, so none of the chains is the signed one either.
            vec![
                problem("manifest_chain", Some("org-a/team-drop")),
                problem("manifest_chain", Some("org-a/team-ok")),
                problem("manifest_chain", Some("org-a/team-rewrite")),
                problem("manifest_chain", Some("org-a/team-tail")),
                problem("no_manifest", None),
            ],
            None,
        ),
    ] {
        // Each chain left still verifies on its own; the manifest tells.
        let (ok, report) = verify_export_text(&env, "incomplete.ndjson", tampered, &[]);
        assert!(!ok, "{what} not detected: {report:#}");
        assert_eq!(problems(&report), manifest, "{what}: {report:#}");
        for c in report["chains"].as_array().unwrap() {
            assert!(c["first_break"].is_null(), "{what}: {report:#}");
        }
        // With the anchor, a removal is also located in its chain.
        let (ok, report) = verify_export_text(&env, "incomplete.ndjson", tampered, &anchor_arg);
        assert!(!ok, "{what} not detected: {report:#}");
        assert_eq!(problems(&report), manifest, "{what}: {report:#}");
        if let Some((chain, (seq, kind))) = anchored {
            assert_eq!(
                chain_break(&report, chain),
                Some((seq, kind.to_string())),
                "{what}: {report:#}"
            );
        }
    }

    // In ClickHouse: delete the newest checkpoint of team-tail and cut its
    // tail after the one before; delete team-rewrite's newest checkpoint
    // and rewrite its tail consistently (hashes recomputed); drop team-drop.
    mutate(
        &env,
        "ALTER TABLE {db}.audit_checkpoints DELETE WHERE chain_id IN ('org-a/team-tail', 'org-a/team-rewrite') AND to_seq = 50",
        "SELECT 2 - count() FROM {db}.audit_checkpoints WHERE to_seq = 50 AND chain_id IN ('org-a/team-tail', 'org-a/team-rewrite')",
        2,
    )
    .await;
    mutate(
        &env,
        "ALTER TABLE {db}.audit_chain DELETE WHERE chain_id = 'org-a/team-tail' AND seq > 40",
        "SELECT 50 - count() FROM {db}.audit_chain WHERE chain_id = 'org-a/team-tail'",
        10,
    )
    .await;
    let tail = env
        .ch("SELECT chain_id, seq, occurred_at, occurred_at_ms, event_id, kind, org_id, team_id, user_id, api_key_id, provider, model, outcome, decision, decision_reason, event_json, prev_hash, entry_hash, kafka_partition, kafka_offset, v, salt, personal_commitment FROM {db}.audit_chain WHERE chain_id = 'org-a/team-rewrite' AND seq > 40 ORDER BY seq FORMAT JSONEachRow")
        .await;
    let mut rows: Vec<Value> = tail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut prev: [u8; 32] = hex::decode(rows[0]["prev_hash"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    for row in &mut rows {
        for k in [
            "seq",
            "occurred_at_ms",
            "kafka_offset",
            "kafka_partition",
            "v",
        ] {
            if let Some(text) = row[k].as_str().map(str::to_string) {
                row[k] = Value::from(text.parse::<u64>().unwrap());
            }
        }
        if row["seq"] == 45 {
            row["model"] = Value::from("cheap-model");
        }
        row["prev_hash"] = Value::from(hex::encode(prev));
        row["occurred_at"] = Value::from(row["occurred_at_ms"].as_u64().unwrap() / 1000);
        prev = entry_hash(
            &prev,
            &serde_json::from_value::<EntryRow>(row.clone()).unwrap(),
        );
        row["entry_hash"] = Value::from(hex::encode(prev));
    }
    mutate(
        &env,
        "ALTER TABLE {db}.audit_chain DELETE WHERE chain_id = 'org-a/team-rewrite' AND seq > 40",
        "SELECT 50 - count() FROM {db}.audit_chain WHERE chain_id = 'org-a/team-rewrite'",
        10,
    )
    .await;
    let insert: String = rows.iter().map(|r| format!("{r}\n")).collect();
    env.ch(&format!("INSERT INTO {{db}}.audit_chain (chain_id, seq, occurred_at, occurred_at_ms, event_id, kind, org_id, team_id, user_id, api_key_id, provider, model, outcome, decision, decision_reason, event_json, prev_hash, entry_hash, kafka_partition, kafka_offset, v, salt, personal_commitment) FORMAT JSONEachRow\n{insert}"))
        .await;
    mutate(
        &env,
        "ALTER TABLE {db}.audit_chain DELETE WHERE chain_id = 'org-a/team-drop'",
        "SELECT 50 - count() FROM {db}.audit_chain WHERE chain_id = 'org-a/team-drop'",
        50,
    )
    .await;
    mutate(
        &env,
        "ALTER TABLE {db}.audit_checkpoints DELETE WHERE chain_id = 'org-a/team-drop'",
        "SELECT 3 - count() FROM {db}.audit_checkpoints WHERE chain_id = 'org-a/team-drop'",
        3,
    )
    .await;

    // ClickHouse alone: nothing to see (the attack).
    let (ok, report) = verify_audit_with(&env, "org-a", &["--no-anchor"]);
    assert!(ok, "ClickHouse alone should not see these: {report:#}");
    assert_eq!(report["chains"].as_array().unwrap().len(), 3, "{report:#}");

    // Held to the anchor, from the topic and from the file.
    for extra in [vec![], vec!["--anchor", anchor_file.to_str().unwrap()]] {
        let (ok, report) = verify_audit_with(&env, "org-a", &extra);
        assert!(!ok, "{extra:?}: not detected: {report:#}");
        assert_eq!(chain_break(&report, "org-a/team-ok"), None, "{report:#}");
        assert_eq!(
            chain_break(&report, "org-a/team-tail"),
            Some((41, "truncated".into())),
            "{report:#}"
        );
        assert_eq!(
            chain_break(&report, "org-a/team-rewrite"),
            Some((50, "checkpoint_mismatch".into())),
            "{report:#}"
        );
        assert_eq!(
            chain_break(&report, "org-a/team-drop"),
            Some((1, "truncated".into())),
            "{report:#}"
        );
    }

    // The API and the compliance page hold chains to the anchor too (they
    // read ClickHouse alone, and said "verified" to an auditor after a
    // trial cut a chain's tail), and say what they were held to.
    env.start_api().await;
    let compliance = env.create_key_with_role("compliance", Some("org-a"));
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        http.get(format!("{}{path}", env.api_url()))
            .bearer_auth(&compliance)
            .send()
    };
    let report: Value = get("/api/v1/audit/verify?org=org-a")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["ok"], false, "{report:#}");
    assert_eq!(report["anchor"]["state"], "held", "{report:#}");
    assert_eq!(
        chain_break(&report, "org-a/team-tail"),
        Some((41, "truncated".into())),
        "{report:#}"
    );
    assert_eq!(
        chain_break(&report, "org-a/team-rewrite"),
        Some((50, "checkpoint_mismatch".into())),
        "{report:#}"
    );
    assert_eq!(
        chain_break(&report, "org-a/team-drop"),
        Some((1, "truncated".into())),
        "{report:#}"
    );
    let page = get("/compliance/verify?org=org-a")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Held to the checkpoint anchor"), "{page}");
    assert!(page.contains("data-ok=\"false\""), "{page}");

    // An export made now is complete by its manifest (the server signs what
    // it holds) and passes on its own; held to the anchor file it breaks
    // where verify-audit does.
    let after = env.dir.path().join("after.ndjson");
    let out = env
        .tollgate(&[
            "audit",
            "export",
            "--org",
            "org-a",
            "--out",
            after.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, report) = verify_export(&after, &[]);
    assert!(
        ok,
        "without the anchor the export looks complete: {report:#}"
    );
    let (ok, report) = verify_export(&after, &anchor_arg);
    assert!(!ok, "{report:#}");
    assert_eq!(problems(&report), vec![], "{report:#}");
    assert_eq!(chain_break(&report, "org-a/team-ok"), None, "{report:#}");
    assert_eq!(
        chain_break(&report, "org-a/team-tail"),
        Some((41, "truncated".into())),
        "{report:#}"
    );
    assert_eq!(
        chain_break(&report, "org-a/team-rewrite"),
        Some((50, "checkpoint_mismatch".into())),
        "{report:#}"
    );
    assert_eq!(
        chain_break(&report, "org-a/team-drop"),
        Some((1, "truncated".into())),
        "{report:#}"
    );
}

/// SIGKILL the processor mid-stream, twice, and restart it: every chain is
/// continuous (seq 1..=n, each once), every event is in it once, and the
/// chains verify.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_stream_keeps_chains_continuous() {
    let teams: Vec<String> = (0..9).map(|i| format!("team-{i}")).collect();
    let team_refs: Vec<&str> = teams.iter().map(String::as_str).collect();
    let env =
        TestEnv::with_extra_config("audit_kill", &audit_config(100, "batch_max_rows = 150")).await;
    let start = Utc.with_ymd_and_hms(2026, 3, 10, 10, 0, 0).unwrap();
    let messages = traffic(&team_refs, 400, start);
    let total = messages.len() as u64;
    produce_all(&env.events_topic, &messages[..2400]).await;
    let mut kills = 0;
    for round in 0..2 {
        let mut child = env.spawn_child("process", &["process", "--folds", "audit"]);
        let before = env.ch_u64("SELECT count() FROM {db}.audit_chain").await;
        let target = before + 300 + round * 200;
        let seen = env
            .wait_for_count(
                "SELECT count() FROM {db}.audit_chain",
                target,
                Duration::from_secs(60),
            )
            .await;
        child.kill().unwrap();
        child.wait().unwrap();
        if seen < 2400 {
            kills += 1;
        }
        if round == 0 {
            produce_all(&env.events_topic, &messages[2400..]).await;
        }
    }
    let mut child = env.spawn_child("process", &["process", "--folds", "audit"]);
    let got = env
        .wait_for_count(
            "SELECT count() FROM {db}.audit_chain",
            total,
            Duration::from_secs(120),
        )
        .await;
    // A window in which an entry written twice would show up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got_after = env.ch_u64("SELECT count() FROM {db}.audit_chain").await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!((got, got_after), (total, total));
    assert!(kills >= 1, "no kill landed mid-stream");
    assert_eq!(
        env.ch_u64("SELECT uniqExact(event_id) FROM {db}.audit_chain")
            .await,
        total
    );
    let rows = env
        .ch("SELECT chain_id, count(), uniqExact(seq), min(seq), max(seq) FROM {db}.audit_chain GROUP BY chain_id FORMAT TSV")
        .await;
    let mut counts = HashMap::new();
    for line in rows.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(&cols[1..], &["400", "400", "1", "400"], "{line}");
        counts.insert(cols[0].to_string(), 400);
    }
    assert_eq!(counts.len(), teams.len());
    let (ok, report) = verify_audit(&env, "org-a");
    assert!(ok, "{report:#}");
    assert_eq!(report["entries"], total);
    eprintln!(
        "verified {} entries in {} ms ({} entries/s) after {kills} kills",
        report["entries"], report["elapsed_ms"], report["entries_per_s"]
    );
}

/// Produce `messages`, fold them with the audit fold alone until the chain
/// holds `entries`, stop it, and start the api.
async fn chain_then_serve(env: &mut TestEnv, messages: &[(String, Vec<u8>)], entries: u64) {
    produce_all(&env.events_topic, messages).await;
    let pid = env.spawn("process", &["process", "--folds", "audit"]);
    let got = env
        .wait_for_count(
            "SELECT count() FROM {db}.audit_chain",
            entries,
            Duration::from_secs(90),
        )
        .await;
    assert_eq!(got, entries);
    stop(pid).await;
    env.spawn("api", &["api"]);
    support::wait_http(
        &format!("{}/healthz", env.direct_api_url()),
        crate::support::PATIENCE,
        &env.log_path("api"),
    )
    .await;
}

/// The audit API: open public key; verify and export only for compliance
/// and admin keys; an org-scoped key never sees another org's trail.
#[tokio::test(flavor = "multi_thread")]
async fn api_roles_and_tenant_isolation() {
    let mut env = TestEnv::with_extra_config("audit_api", &audit_config(10, "")).await;
    let start = Utc.with_ymd_and_hms(2026, 3, 10, 10, 0, 0).unwrap();
    let mut messages = traffic(&["team-a1"], 15, start);
    let org_b: Vec<(String, Vec<u8>)> = traffic(&["team-b1"], 12, start)
        .into_iter()
        .map(|(k, v)| {
            let text = String::from_utf8(v)
                .unwrap()
                .replace("\"org-a\"", "\"org-b\"");
            (k, text.into_bytes())
        })
        .collect();
    messages.extend(org_b);
    chain_then_serve(&mut env, &messages, 27).await;

    let http = reqwest::Client::new();
    let get = |path: &str, key: Option<&str>| {
        let mut request = http.get(format!("{}{path}", env.direct_api_url()));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    let compliance_a = env.create_key_with_role("compliance", Some("org-a"));
    assert_eq!(
        get("/api/v1/audit/public-key", None)
            .await
            .unwrap()
            .status(),
        401,
        "every API route needs an identity"
    );
    let public: Value = get("/api/v1/audit/public-key", Some(&compliance_a))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected_key = hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&hex::decode(SEED).unwrap().try_into().unwrap())
            .verifying_key()
            .to_bytes(),
    );
    assert_eq!(public["public_key"], expected_key);

    let admin = env.create_key_with_role("admin", None);
    let ingest_a = env.create_key_with_role("ingest", Some("org-a"));

    let r = get("/api/v1/audit/verify?org=org-a", Some(&compliance_a))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(
        (
            report["ok"].clone(),
            report["verdict"].clone(),
            report["entries"].clone()
        ),
        (Value::from(true), Value::from("verified"), Value::from(15))
    );
    // A team (or org) without entries is not a verified trail: a trial read
    // a mistyped team as `"ok": true`, and the page as "verified".
    let admin_key = env.create_key_with_role("admin", None);
    let r = get(
        "/api/v1/audit/verify?org=org-a&team=typo-team",
        Some(&compliance_a),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(
        (
            report["ok"].clone(),
            report["verdict"].clone(),
            report["entries"].clone()
        ),
        (
            Value::from(false),
            Value::from("nothing_verified"),
            Value::from(0)
        )
    );
    let page = get("/compliance/verify?org=no-such-org", Some(&admin_key))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(
        page.contains(r#"data-ok="false""#)
            && page.contains("nothing verified: no audit chain holds entries of org no-such-org"),
        "{page}"
    );

    assert_eq!(
        get("/api/v1/audit/verify?org=org-a", None)
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        get("/api/v1/audit/verify?org=org-a", Some("tg_nope_x"))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        get("/api/v1/audit/verify?org=org-a", Some(&ingest_a))
            .await
            .unwrap()
            .status(),
        403
    );
    for path in [
        "/api/v1/audit/verify?org=org-b",
        "/api/v1/audit/export?org=org-b",
        "/api/v1/audit/export?org=org-b&team=team-b1",
    ] {
        let r = get(path, Some(&compliance_a)).await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let body = r.text().await.unwrap();
        assert!(!body.contains("team-b1"), "{body}");
    }

    // One entry by its chain id, whose `/` is percent-encoded in the path;
    // another org's entry is not there for this key.
    let r = get(
        "/api/v1/audit/entries/org-a%2Fteam-a1/3",
        Some(&compliance_a),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let entry: Value = r.json().await.unwrap();
    assert_eq!(
        (&entry["chain_id"], &entry["seq"], &entry["team_id"]),
        (&json!("org-a/team-a1"), &json!(3), &json!("team-a1"))
    );
    assert!(entry["proof"].is_object(), "{entry:#}");
    let r = get(
        "/api/v1/audit/entries/org-b%2Fteam-b1/3",
        Some(&compliance_a),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);

    let export = get("/api/v1/audit/export?org=org-a", Some(&compliance_a))
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    // Named by org and day, so two orgs' exports do not overwrite each other.
    assert_eq!(
        export.headers()["content-disposition"],
        format!(
            "attachment; filename=\"audit-org-a-{}.ndjson\"",
            chrono::Utc::now().format("%Y-%m-%d")
        )
        .as_str()
    );
    let body = export.text().await.unwrap();
    assert!(!body.contains("org-b") && !body.contains("team-b1"));
    let (ok, offline) = verify_export_text(&env, "api-export.ndjson", &body, &[]);
    assert!(ok, "{offline:#}");
    assert_eq!(
        offline["chains"].as_array().unwrap().len(),
        1,
        "{offline:#}"
    );
    assert_eq!(offline["chains"][0]["chain_id"], "org-a/team-a1");
    assert_eq!(offline["chains"][0]["entries"], 15);

    let r = get("/api/v1/audit/verify?org=org-b", Some(&admin))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["entries"], 12);
}

/// Chains are per org: org-a's events of team `_tollgate` (its alerting
/// changes) and org-b's of that team are two chains, so org-a's whole-chain
/// export holds both of org-a's chains entire and nothing of org-b's. A
/// chain from before chains were per org that holds two orgs' entries
/// (written here as the old fold named it: `_tollgate`) is left out of
/// org-a's whole export and named in its header with the number of org-a's
/// entries there instead.
#[tokio::test(flavor = "multi_thread")]
async fn an_export_leaves_out_chains_shared_with_other_orgs() {
    let mut env = TestEnv::with_extra_config("audit_shared", &audit_config(10, "")).await;
    let start = Utc.with_ymd_and_hms(2026, 3, 10, 10, 0, 0).unwrap();
    let as_org = |messages: Vec<(String, Vec<u8>)>, org: &str| -> Vec<(String, Vec<u8>)> {
        messages
            .into_iter()
            .map(|(k, v)| {
                let text = String::from_utf8(v)
                    .unwrap()
                    .replace("\"org-a\"", &format!("\"{org}\""));
                (k, text.into_bytes())
            })
            .collect()
    };
    let mut messages = traffic(&["team-a1"], 5, start);
    messages.extend(traffic(&["_tollgate"], 2, start));
    messages.extend(as_org(traffic(&["_tollgate"], 1, start), "org-b"));
    messages.extend(as_org(traffic(&["_tollgate"], 1, start), "_tollgate"));
    chain_then_serve(&mut env, &messages, 9).await;
    // One chain per org and team, each holding only its org's entries.
    let chains = env
        .ch("SELECT chain_id, org_id, count() FROM {db}.audit_chain GROUP BY chain_id, org_id ORDER BY chain_id, org_id FORMAT TSV")
        .await;
    assert_eq!(
        chains.lines().collect::<Vec<_>>(),
        [
            "_tollgate/_tollgate\t_tollgate\t1",
            "org-a/_tollgate\torg-a\t2",
            "org-a/team-a1\torg-a\t5",
            "org-b/_tollgate\torg-b\t1",
        ]
    );
    write_chain_of(
        &audit_client(&env),
        "_tollgate",
        &["org-a", "org-a", "org-b"],
        3,
        |_| {},
    )
    .await;
    let http = reqwest::Client::new();
    let export = |org: &str, key: String| {
        http.get(format!(
            "{}/api/v1/audit/export?org={org}",
            env.direct_api_url()
        ))
        .bearer_auth(key)
        .send()
    };
    let compliance_a = env.create_key_with_role("compliance", Some("org-a"));
    let r = export("org-a", compliance_a).await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(
        !body.contains("org-b"),
        "another org's entry leaked: {body}"
    );
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0]["shared_chains_omitted"],
        json!([{"chain_id": "_tollgate", "entries": 2}])
    );
    let entries: Vec<&Value> = lines.iter().filter(|l| l["type"] == "entry").collect();
    assert_eq!(entries.len(), 7);
    let exported: std::collections::BTreeMap<&str, usize> =
        entries.iter().fold(Default::default(), |mut m, e| {
            *m.entry(e["chain_id"].as_str().unwrap()).or_default() += 1;
            m
        });
    assert_eq!(
        exported,
        [("org-a/_tollgate", 2), ("org-a/team-a1", 5)].into()
    );
    let (ok, offline) = verify_export_text(&env, "shared.ndjson", &body, &[]);
    assert!(ok, "{offline:#}");
    // The control plane's trail (callers of every org) is its own chain.
    let admin = env.create_key_with_role("admin", None);
    let body = export("_tollgate", admin)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["shared_chains_omitted"], json!([]));
    let entries: Vec<&Value> = lines.iter().filter(|l| l["type"] == "entry").collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["chain_id"], "_tollgate/_tollgate");
}

/// Entries `1..=n` of `chain` (org `org-a`, team the chain id), chained
/// and checkpointed every 1000 entries as the audit fold does it, with
/// `tamper` applied to the rows before they are written straight into
/// ClickHouse (the checkpoints are signed over the untampered entries).
async fn write_chain(
    client: &clickhouse::Client,
    chain_id: &str,
    n: u64,
    tamper: impl FnOnce(&mut Vec<EntryRow>),
) {
    write_chain_of(client, chain_id, &["org-a"], n, tamper).await;
}

/// [`write_chain`] with entry `seq` of org `orgs[(seq - 1) % orgs.len()]`
/// (a chain of two orgs is one from before chains were per org).
async fn write_chain_of(
    client: &clickhouse::Client,
    chain_id: &str,
    orgs: &[&str],
    n: u64,
    tamper: impl FnOnce(&mut Vec<EntryRow>),
) {
    use tollgate_contract::audit::checkpoint::{ChainRef, CheckpointRow};
    use tollgate_contract::audit::entry::{chain_entry, EntryFields, Position, GENESIS};
    use tollgate_contract::audit::merkle::Compact;
    let signer = CheckpointSigner::from_hex_seed(SEED).unwrap();
    let event_json = format!(
        "{{\"call\":{{\"model\":\"gpt-4o\",\"pad\":\"{}\"}}}}",
        "x".repeat(300)
    );
    let mut prev = GENESIS;
    let mut segment = Vec::new();
    let mut prefix = Compact::new();
    let mut rows = Vec::with_capacity(usize::try_from(n).unwrap());
    let mut cps: Vec<CheckpointRow> = Vec::new();
    for seq in 1..=n {
        let fields = EntryFields {
            occurred_at_ms: 1_773_000_000_000 + seq,
            event_id: format!("e-{seq}"),
            kind: tollgate_contract::KIND_CALL_COMPLETED.into(),
            org_id: orgs[usize::try_from(seq - 1).unwrap() % orgs.len()].into(),
            team_id: chain_id.into(),
            user_id: "u".into(),
            api_key_id: "k".into(),
            provider: "openai".into(),
            model: "gpt-4o".into(),
            outcome: "success".into(),
            decision: String::new(),
            decision_reason: String::new(),
            event_json: event_json.clone(),
        };
        let (row, hash) = chain_entry(
            fields,
            Position {
                chain_id,
                seq,
                partition: 0,
                offset: seq as i64,
            },
            &prev,
            &rand::random(),
        );
        rows.push(row);
        prev = hash;
        segment.push(hash);
        if segment.len() == 1000 || seq == n {
            let chain = ChainRef {
                chain_id,
                org_id: orgs[usize::try_from(seq - 1).unwrap() % orgs.len()],
                team_id: chain_id,
            };
            cps.push(
                signer
                    .checkpoint(
                        chain,
                        seq + 1 - segment.len() as u64,
                        &segment,
                        &mut prefix,
                        1,
                    )
                    .unwrap(),
            );
            segment.clear();
        }
    }
    tamper(&mut rows);
    // A part per 1000 entries, the last written first: the verifier reads
    // pages unsorted from the server and must put them in seq order.
    for part in rows.chunks(1000).rev() {
        let mut insert = client.insert::<EntryRow>("audit_chain").await.unwrap();
        for row in part {
            insert.write(row).await.unwrap();
        }
        insert.end().await.unwrap();
    }
    let mut insert = client
        .insert::<CheckpointRow>("audit_checkpoints")
        .await
        .unwrap();
    for cp in &cps {
        insert.write(cp).await.unwrap();
    }
    insert.end().await.unwrap();
}

pub(crate) fn audit_client(env: &TestEnv) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(support::clickhouse_url())
        .with_database(&env.ch_database)
        .with_validation(false)
}

/// Chains verified at once, their hashes worked out in batches on every
/// core ahead of the links: each break is still found in its own chain at
/// its own seq, past the first batch (8192 rows), and the intact chains
/// beside them verify whole. Each chain is ten parts written last first.
/// A last entry moved to the highest seq there is is found missing where
/// it was, in a few statements (the empty seq ranges in between skipped).
#[tokio::test(flavor = "multi_thread")]
async fn parallel_verification_locates_each_chain_break() {
    let env = TestEnv::with_extra_config("audit_parallel", &audit_config(1000, "")).await;
    let client = audit_client(&env);
    let n = 10_000;
    write_chain(&client, "team-intact-1", n, |_| {}).await;
    write_chain(&client, "team-edited", n, |rows| {
        rows[8_999].model = "cheaper".into();
    })
    .await;
    write_chain(&client, "team-removed", n, |rows| {
        rows.remove(4_999);
    })
    .await;
    write_chain(&client, "team-swapped", n, |rows| {
        rows.swap(9_000, 9_001);
        rows[9_000].seq = 9_001;
        rows[9_001].seq = 9_002;
    })
    .await;
    write_chain(&client, "team-intact-2", n, |_| {}).await;
    write_chain(&client, "team-far", n, |rows| {
        rows.last_mut().unwrap().seq = u64::MAX;
    })
    .await;
    // The checkpoints went straight into ClickHouse, not to the anchor.
    let (ok, report) = verify_audit_with(&env, "org-a", &["--no-anchor"]);
    assert!(!ok, "{report:#}");
    let chains: Vec<&str> = report["chains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["chain_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        chains,
        [
            "team-edited",
            "team-far",
            "team-intact-1",
            "team-intact-2",
            "team-removed",
            "team-swapped"
        ]
    );
    assert_eq!(
        chain_break(&report, "team-edited"),
        Some((9_000, "edited".into()))
    );
    assert_eq!(
        chain_break(&report, "team-removed"),
        Some((5_000, "missing".into()))
    );
    assert_eq!(
        chain_break(&report, "team-swapped"),
        Some((9_001, "reordered".into()))
    );
    assert_eq!(
        chain_break(&report, "team-far"),
        Some((n, "missing".into()))
    );
    for intact in ["team-intact-1", "team-intact-2"] {
        assert_eq!(chain_break(&report, intact), None);
        let c = report["chains"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["chain_id"] == intact)
            .unwrap();
        assert_eq!(
            (c["entries"].as_u64(), c["checkpoints"].as_u64()),
            (Some(n), Some(10))
        );
    }
    // Entries verified before each break: 8999, 4999, 9000 and 9999 of the
    // broken chains, all of the intact ones.
    assert_eq!(report["entries"], 2 * n + 8_999 + 4_999 + 9_000 + (n - 1));
}

/// Verification rate: builds one chain of `TOLLGATE_TEST_AUDIT_ENTRIES`
/// (default 200 000) entries with checkpoints straight into ClickHouse and
/// times `tollgate verify-audit`. Ignored by default (it measures, it does
/// not test behaviour): `cargo test --test it -- --ignored
/// audit_chain::verification_rate`; `tollgate bench audit` measures more.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn verification_rate() {
    let n: u64 = std::env::var("TOLLGATE_TEST_AUDIT_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let env = TestEnv::with_extra_config("audit_rate", &audit_config(1000, "")).await;
    write_chain(&audit_client(&env), "team-big", n, |_| {}).await;
    let started = Instant::now();
    // The checkpoints went straight into ClickHouse, not to the anchor.
    let (ok, report) = verify_audit_with(&env, "org-a", &["--no-anchor"]);
    let wall = started.elapsed();
    assert!(ok, "{report:#}");
    assert_eq!(report["entries"], n);
    eprintln!(
        "verify-audit: {n} entries, {} checkpoints: {} ms inside ({} entries/s), {wall:?} wall",
        report["checkpoints"], report["elapsed_ms"], report["entries_per_s"]
    );
}
