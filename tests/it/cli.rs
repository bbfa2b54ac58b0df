//! The command line as a shell uses it.

use std::io::Read;
use std::process::{Command, Stdio};

use crate::support::tollgate_bin;

/// `tollgate … | head` closes the pipe early: the command ends quietly
/// with status 141 (128 + SIGPIPE), as Unix tools do, not with a panic
/// and a backtrace note (`verify-audit | head -1` in a trial).
#[test]
fn a_reader_that_stops_early_ends_the_command_quietly() {
    let mut child = Command::new(tollgate_bin())
        .arg("sql-catalog")
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).unwrap();
    // The catalog is far larger than a pipe's buffer: the rest cannot fit.
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `tollgate <args>` with no configuration file, ClickHouse at a port
/// nothing listens on, and `extra` variables: (status, stdout, stderr).
fn unreachable_clickhouse(args: &[&str], extra: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = Command::new(tollgate_bin())
        .args(args)
        .env_remove("TOLLGATE_CONFIG")
        .env("TOLLGATE_CLICKHOUSE__URL", "http://127.0.0.1:1")
        .env("RUST_BACKTRACE", "0")
        .envs(extra.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A trial found `verify-audit` and `rollups check` exiting 1 alike for a
/// broken chain or a disagreeing rollup, for ClickHouse unreachable and
/// for `--from` after `--to`: cron could not tell a finding from a failure
/// to look. 1 is a finding only (`cost.rs` and `audit_chain.rs` see it), 2
/// a usage error, 3 a check that could not be made.
#[test]
fn checks_that_cannot_be_made_exit_3_and_usage_errors_2() {
    let (status, _, stderr) = unreachable_clickhouse(&["rollups", "check"], &[]);
    assert_eq!(status, Some(3), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");

    // A configuration that cannot be read is a usage error, not a finding
    // (it exited 1, "found broken", before the review).
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[clickhouse\nurl = 1\n").unwrap();
    for check in [
        &["verify-audit", "--org", "cli-exit"][..],
        &["rollups", "check"],
    ] {
        let mut args = vec!["--config", bad.to_str().unwrap()];
        args.extend_from_slice(check);
        let (status, _, stderr) = unreachable_clickhouse(&args, &[]);
        assert_eq!(status, Some(2), "{check:?}: {stderr}");
        assert!(stderr.contains("TOML"), "{stderr}");
    }

    let (status, stdout, stderr) = unreachable_clickhouse(
        &["verify-audit", "--org", "cli-exit", "--no-anchor", "--json"],
        &[],
    );
    assert_eq!(status, Some(3), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect(&stdout);
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["verdict"], "not_checked", "{report}");
    assert_eq!(report["exit_status"], 3, "{report}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("clickhouse at http://127.0.0.1:1") && error.contains("Connection refused"),
        "{report}"
    );

    // Kafka unreachable too: the anchor cannot be read, nothing is checked.
    let (status, _, stderr) = unreachable_clickhouse(
        &["verify-audit", "--org", "cli-exit"],
        &[("TOLLGATE_KAFKA__BROKERS", "127.0.0.1:1")],
    );
    assert_eq!(status, Some(3), "{stderr}");
    assert!(stderr.contains("checkpoint anchor"), "{stderr}");

    let (status, stdout, stderr) = unreachable_clickhouse(
        &[
            "verify-audit",
            "--org",
            "cli-exit",
            "--from",
            "2026-02-01",
            "--to",
            "2026-01-01",
            "--json",
        ],
        &[],
    );
    assert_eq!(status, Some(2), "{stderr}");
    assert!(stderr.contains("--from must be before --to"), "{stderr}");
    assert!(stdout.contains("\"usage_error\""), "{stdout}");

    for (from, says) in [
        ("1969-12-31", "before 1970-01-01"),
        ("0001-01-01", "before 1970-01-01"),
        ("2026-02-30", "not a day of the calendar"),
    ] {
        let (status, _, stderr) =
            unreachable_clickhouse(&["rollups", "check", "--from", from], &[]);
        assert_eq!(status, Some(2), "{stderr}");
        assert!(
            stderr.contains("--from") && stderr.contains(says),
            "{stderr}"
        );
    }
    let (status, _, stderr) = unreachable_clickhouse(
        &[
            "rollups",
            "check",
            "--from",
            "2026-03-02",
            "--to",
            "2026-03-01",
        ],
        &[],
    );
    assert_eq!(status, Some(2), "{stderr}");

    for command in [
        &["verify-audit", "--help"][..],
        &["rollups", "check", "--help"],
    ] {
        let (status, help, _) = unreachable_clickhouse(command, &[]);
        assert_eq!(status, Some(0));
        assert!(
            help.contains("Exit status:") && help.contains("3  could not check"),
            "{help}"
        );
    }
}

/// A trial made a key with `--models ''` (it could call no model, where
/// "any model when absent" was promised), could not see a key's scoping
/// in `keys list`, and had `keys revoke` echo a pasted secret to stderr.
#[tokio::test]
async fn key_scopes_are_checked_before_the_key_exists_listed_and_secrets_never_echoed() {
    let env = crate::support::TestEnv::new("cli_keys").await;
    for models in ["", "gpt-4o,,claude-*"] {
        let out = env
            .tollgate(&["keys", "create", "--name", "empty", "--models", models])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--models {models:?} accepted");
        assert!(
            stderr.contains("--models") && stderr.contains("is empty"),
            "{stderr}"
        );
    }
    let listed: serde_json::Value =
        serde_json::from_str(&env.run(&["keys", "list", "--json"])).unwrap();
    assert_eq!(listed, serde_json::json!([]), "a refused key was created");

    let secret = env.run(&[
        "keys",
        "create",
        "--name",
        "scoped",
        "--role",
        "proxy",
        "--team",
        "search",
        "--user",
        "ana",
        "--models",
        "gpt-4o,claude-*",
    ]);
    let secret = secret.trim();
    let prefix = &secret[3..11];
    let listed: serde_json::Value =
        serde_json::from_str(&env.run(&["keys", "list", "--json"])).unwrap();
    assert_eq!(listed[0]["prefix"], prefix, "{listed}");
    assert_eq!(listed[0]["team_id"], "search", "{listed}");
    assert_eq!(listed[0]["user_id"], "ana", "{listed}");
    assert_eq!(
        listed[0]["allowed_models"],
        serde_json::json!(["gpt-4o", "claude-*"]),
        "{listed}"
    );
    let table = env.run(&["keys", "list"]);
    assert!(
        table.contains("TEAM") && table.contains("MODELS"),
        "{table}"
    );
    let row = table.lines().find(|l| l.starts_with(prefix)).unwrap();
    for shown in ["search", "ana", "gpt-4o,claude-*"] {
        assert!(row.contains(shown), "{shown} missing: {row}");
    }

    // Revoking by the whole secret revokes its key and names the prefix
    // only; so does the refusal of a second revocation.
    let random = &secret[12..];
    for expect_success in [true, false] {
        let out = env.tollgate(&["keys", "revoke", secret]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), expect_success, "{stderr}");
        assert!(stderr.contains(prefix), "{stderr}");
        assert!(!stderr.contains(random), "the secret was echoed: {stderr}");
    }
    let out = env
        .tollgate(&["keys", "revoke", "sk-live-Abc123SecretThing"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("not a key prefix"), "{stderr}");
    assert!(!stderr.contains("Abc123SecretThing"), "{stderr}");
}

/// A trial with Kafka unreachable saw some 300 lines of librdkafka errors
/// over 15 s before `budgets set`'s one useful line (and `verify-audit`'s,
/// `audit checkpoints export`'s), and INFO lines with Debug-formatted
/// values from admin commands. A one-shot command logs warnings only and
/// none of librdkafka's, and gives up on a cluster that refuses every
/// connection at once.
#[tokio::test]
async fn one_shot_commands_stay_quiet_and_prompt_when_kafka_is_unreachable() {
    let env = crate::support::TestEnv::new("cli_quiet").await;
    let commands: [&[&str]; 3] = [
        &[
            "budgets",
            "set",
            "--kind",
            "org",
            "--id",
            "quiet-org",
            "--limit",
            "10",
        ],
        &["verify-audit", "--org", "quiet-org"],
        &["audit", "checkpoints", "export"],
    ];
    for args in commands {
        let started = std::time::Instant::now();
        let out = env
            .tollgate(args)
            .env("TOLLGATE_KAFKA__BROKERS", "127.0.0.1:1")
            .env("RUST_BACKTRACE", "0")
            .env_remove("TOLLGATE_LOG")
            .output()
            .unwrap();
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            took < std::time::Duration::from_secs(10),
            "{args:?} took {took:?}: {stderr}"
        );
        assert!(!stderr.contains("librdkafka"), "{args:?}: {stderr}");
        assert!(stderr.lines().count() < 15, "{args:?}: {stderr}");
        let useful = if args[0] == "budgets" {
            "not on Kafka yet"
        } else {
            "no broker answers"
        };
        assert!(stderr.contains(useful), "{args:?}: {stderr}");
    }

    // An admin command's INFO log (`user created` with its grants as Rust
    // Debug text) is not shown by default.
    let mut child = env
        .tollgate(&[
            "users",
            "create",
            "--email",
            "quiet@example.com",
            "--grant",
            "quiet-org:finance",
            "--password-stdin",
        ])
        .env_remove("TOLLGATE_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"a long enough password 42\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains(" INFO "), "{stderr}");
    assert!(!stderr.contains("Grant {"), "{stderr}");
}
