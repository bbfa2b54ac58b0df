//! `tollgate verify-audit`: recompute an org's (or team's) audit chains from
//! ClickHouse, check every checkpoint's signature against the configured
//! (or given) public key, hold every chain to the checkpoint anchor (the
//! Kafka topic, or a file from `tollgate audit checkpoints export`), and
//! report per chain either what was verified or the first broken link.
//! Exits 1 when a chain is broken, 2 on a usage error or when nothing was
//! verified, 3 when it could not verify (`super::exit_status`).
//!
//! With `--export FILE` it verifies an export file instead, offline (no
//! ClickHouse, Kafka or PostgreSQL): the signed manifest, every chain or
//! every entry's proof, and the anchor file given with `--anchor`
//! (`processors/src/audit/export_verify.rs`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use ed25519_dalek::VerifyingKey;
use tollgate_contract::audit::checkpoint::parse_checkpoint_lines;
use tollgate_contract::audit::checkpoint::{parse_public_key, CheckpointRow};
use tollgate_control::clickhouse::client;
use tollgate_queries::audit::anchor;
use tollgate_queries::audit::export_verify::{verify_export, Progress};
use tollgate_queries::audit::search::parse_time_ms;
use tollgate_queries::audit::verify::{verify_range, Verdict};

use super::exit_status::{self, Tag};
use crate::config::Config;

#[derive(clap::Args)]
#[command(
    after_help = exit_status::help_table(
        "and a chain or checkpoint is broken",
        ", or nothing to verify (no chain holds entries of the org, team or range: a mistyped id?)",
    ),
    override_usage = "tollgate verify-audit --org <ORG> [--team <TEAM>] [--from <TIME>] [--to <TIME>] [OPTIONS]\n       \
                      tollgate verify-audit --export <FILE> [--anchor <FILE>] [--public-key <HEX|FILE>] [--json]"
)]
pub struct Args {
    /// Org whose chains to verify.
    #[arg(long, required_unless_present = "export")]
    org: Option<String>,
    /// Only the chains holding this team's entries.
    #[arg(long)]
    team: Option<String>,
    /// Only the chains holding the org's entries from this time on (RFC 3339,
    /// a date, or epoch ms); each is still verified from its first entry.
    #[arg(long)]
    from: Option<String>,
    /// ...and before this time (exclusive).
    #[arg(long)]
    to: Option<String>,
    /// Verify this export file (`tollgate audit export`, `GET
    /// /api/v1/audit/export`) offline instead of ClickHouse: its signed
    /// manifest, its chains (or each entry's inclusion proof), held to
    /// `--anchor FILE` when given. Needs no server.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["org", "team", "from", "to", "no_anchor"])]
    export: Option<PathBuf>,
    /// Trusted public key: 64 hex characters, or a file holding them (or
    /// the JSON of `GET /api/v1/audit/public-key`). Defaults to the
    /// configured signing key's; with `--export` and no key configured, the
    /// export's own (integrity, not origin).
    #[arg(long, value_name = "HEX|FILE")]
    public_key: Option<String>,
    /// Checkpoint anchor file (JSON lines from `tollgate audit checkpoints
    /// export`) instead of reading `kafka.audit_checkpoints_topic`.
    #[arg(long, conflicts_with = "no_anchor")]
    anchor: Option<PathBuf>,
    /// Verify against ClickHouse alone: a deleted newest checkpoint and the
    /// tail after it, or a dropped chain, then go unnoticed.
    #[arg(long)]
    no_anchor: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Every checkpoint of an anchor file.
fn anchor_file(path: &Path) -> anyhow::Result<Vec<CheckpointRow>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--anchor: cannot read {}", path.display()))?;
    parse_checkpoint_lines(&text)
        .map_err(|why| anyhow::anyhow!("--anchor {}: {why}", path.display()))
}

/// `--public-key`: hex, or a file holding hex or `{"public_key": hex}`.
fn public_key_arg(value: &str) -> anyhow::Result<VerifyingKey> {
    if let Some(key) = parse_public_key(value) {
        return Ok(key);
    }
    let path = Path::new(value);
    let hex_digits = value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit());
    anyhow::ensure!(
        path.is_file() || !hex_digits,
        "--public-key {value:?} is 64 hex characters but no usable Ed25519 public key (not a point of \
         the curve, or one of low order: a mistyped or made-up key)"
    );
    anyhow::ensure!(
        path.is_file(),
        "--public-key {value:?} is neither 64 hex characters of an Ed25519 public key nor a file"
    );
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--public-key: cannot read {}", path.display()))?;
    let hex_key = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v.get("public_key")
                .and_then(|k| k.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| text.trim().to_string());
    parse_public_key(&hex_key).with_context(|| {
        format!(
            "--public-key file {} holds no Ed25519 public key (64 hex characters, or JSON with \"public_key\")",
            path.display()
        )
    })
}

/// The anchored checkpoints: from `--anchor`, else from the topic.
async fn anchored(args: &Args, config: &Config) -> anyhow::Result<Option<Vec<CheckpointRow>>> {
    if args.no_anchor {
        return Ok(None);
    }
    if let Some(path) = &args.anchor {
        return anchor_file(path).map(Some).usage();
    }
    let read = anchor::read_topic(&config.kafka)
        .await
        .with_context(|| {
            "cannot read the checkpoint anchor (pass --anchor FILE, or --no-anchor to verify against clickhouse alone)"
        })
        .not_checked()?;
    for (partition, offset, why) in &read.unreadable {
        eprintln!(
            "warning: anchor message {partition}/{offset} of {} is not a checkpoint: {why}",
            config.kafka.audit_checkpoints_topic
        );
    }
    Ok(Some(read.checkpoints))
}

/// Verify as `args` say. An error is a usage error (exit 2) where it is
/// tagged so, else the verification could not be made (exit 3); with
/// `--json` it is also printed as `{"ok": false, "verdict": ..., "error":
/// ...}` so a script reading stdout never takes it for a report.
pub async fn run(args: Args, config: &Config) -> anyhow::Result<()> {
    let json = args.json;
    let result = verify(args, config).await.not_checked();
    if let (true, Err(err)) = (json, &result) {
        let verdict = match exit_status::of(err) {
            exit_status::USAGE => "usage_error",
            _ => "not_checked",
        };
        let object = serde_json::json!({
            "ok": false,
            "verdict": verdict,
            "exit_status": exit_status::of(err),
            "error": format!("{err:#}"),
        });
        println!("{}", serde_json::to_string_pretty(&object)?);
    }
    result
}

async fn verify(args: Args, config: &Config) -> anyhow::Result<()> {
    let trusted = match &args.public_key {
        Some(value) => Some(public_key_arg(value).usage()?),
        None => config
            .audit
            .signer()
            .usage()?
            .and_then(|s| parse_public_key(s.public_key_hex())),
    };
    if let Some(path) = args.export.clone() {
        return run_export(&path, args, trusted).await;
    }
    let org = args.org.clone().unwrap_or_default();
    if trusted.is_none() {
        eprintln!("warning: no trusted public key (--public-key or [audit] signing key): checkpoint signatures are checked against the key each checkpoint names");
    }
    let range = if args.from.is_some() || args.to.is_some() {
        let from = match &args.from {
            Some(text) => parse_time_ms("from", text)
                .map_err(|e| anyhow::anyhow!("--from: {}", e.reason))
                .usage()?,
            None => 0,
        };
        let to = match &args.to {
            Some(text) => parse_time_ms("to", text)
                .map_err(|e| anyhow::anyhow!("--to: {}", e.reason))
                .usage()?,
            None => u64::MAX,
        };
        if from >= to {
            return Err(anyhow::anyhow!("--from must be before --to")).usage();
        }
        Some((from, to))
    } else {
        None
    };
    let ch = client(&config.clickhouse);
    // A checkpoint is published, then inserted: one inserted after the
    // anchor was read but before its chain was can look unanchored. The
    // topic is read again in that case (a file is a fixed snapshot).
    let mut attempt = 1;
    let report = loop {
        let anchor = anchored(&args, config).await?;
        let report = verify_range(
            &ch,
            &org,
            args.team.as_deref(),
            range,
            anchor.as_deref(),
            trusted.as_ref(),
        )
        .await
        .with_context(|| {
            format!(
                "cannot read the audit chain from clickhouse at {}",
                config.clickhouse.url
            )
        })?;
        if !report.unanchored() || args.anchor.is_some() || attempt == 3 {
            break report;
        }
        attempt += 1;
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !report.chains.is_empty() {
        for line in report.lines() {
            println!("{line}");
        }
        println!(
            "{}: {} chains, {} entries, {} checkpoints in {} ms ({} entries/s)",
            if report.ok { "OK" } else { "BROKEN" },
            report.chains.len(),
            report.entries,
            report.checkpoints,
            report.elapsed_ms,
            report.entries_per_s
        );
    }
    if report.verdict == Verdict::NothingVerified {
        // Verifying nothing is not a pass: an org id mistyped (`trial-b`
        // for `trial-b/x`) would otherwise read as a verified trail.
        eprintln!(
            "nothing verified: no audit chain holds entries of org {org:?}{}{} (check the org id)",
            args.team
                .as_deref()
                .map(|t| format!(", team {t:?}"))
                .unwrap_or_default(),
            if range.is_some() { " in the range" } else { "" }
        );
    }
    exit_with(report.verdict)
}

/// End as `verdict` says: 0, 1 when broken, 2 when nothing was verified.
fn exit_with(verdict: Verdict) -> anyhow::Result<()> {
    match verdict.exit_status() {
        0 => Ok(()),
        status => std::process::exit(status),
    }
}

/// `verify-audit --export FILE`: read only the file (and `--anchor FILE`).
async fn run_export(path: &Path, args: Args, trusted: Option<VerifyingKey>) -> anyhow::Result<()> {
    let anchor = match &args.anchor {
        Some(file) => Some(anchor_file(file).usage()?),
        None => None,
    };
    let file = std::fs::File::open(path)
        .with_context(|| format!("--export: cannot open {}", path.display()))
        .usage()?;
    let name = path.display().to_string();
    let report = tokio::task::spawn_blocking(move || {
        let mut input = std::io::BufReader::with_capacity(1 << 20, file);
        // Shown only on a terminal (indicatif draws nothing otherwise).
        let bar = crate::cmd::simulate::progress_bar(0, "verifying");
        let mut progress = |p: Progress| {
            if p.pass == 1 {
                bar.set_prefix("reading");
            } else {
                bar.set_prefix("verifying");
            }
            bar.set_length(p.total);
            bar.set_position(p.bytes);
        };
        let report = verify_export(
            &mut input,
            trusted.as_ref(),
            anchor.as_deref(),
            &mut progress,
        );
        bar.finish_and_clear();
        report
    })
    .await
    .context("verifying the export stopped")?
    // The file named was opened but cannot be read (a directory, an I/O
    // error): a usage error like one that cannot be opened, as
    // docs/audit_verify.py says it.
    .with_context(|| format!("--export: cannot read {name}"))
    .usage()?;
    if report.key_from_header {
        eprintln!("warning: no trusted public key (--public-key or [audit] signing key): signatures are checked against the key in the export's header, which proves integrity, not origin");
    }
    if args.anchor.is_none() {
        eprintln!("warning: no --anchor FILE: checkpoints removed before the export was made, or a chain left out of it, go unnoticed");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for line in report.lines() {
            println!("{line}");
        }
        println!(
            "{}: export {name} ({} of org {}): {} chains, {} entries, {} checkpoints in {} ms ({} entries/s)",
            match report.verdict {
                Verdict::Verified => "OK",
                Verdict::Broken => "BROKEN",
                Verdict::NothingVerified => "NOTHING VERIFIED",
            },
            report.scope,
            report.org.as_deref().unwrap_or("?"),
            report.chains.len(),
            report.entries,
            report.checkpoints,
            report.elapsed_ms,
            report.entries_per_s
        );
    }
    if report.verdict == Verdict::NothingVerified {
        eprintln!(
            "nothing verified: the export {name} holds no entries (an org or team without \
             entries, or a search that found none)"
        );
    }
    exit_with(report.verdict)
}
