//! `tollgate verify-audit`: recompute an org's (or team's) audit chains from
//! ClickHouse, check every checkpoint's signature against the configured
//! (or given) public key, hold every chain to the checkpoint anchor (the
//! Kafka topic, or a file from `tollgate audit checkpoints export`), and
//! report per chain either what was verified or the first broken link.
//! Exits 1 when a chain is broken.

use std::path::PathBuf;

use anyhow::Context;
use tollgate_processors::audit::anchor;
use tollgate_processors::audit::checkpoint::{parse_public_key, CheckpointRow};
use tollgate_processors::audit::search::parse_time_ms;
use tollgate_processors::audit::verify::{verify_range, BreakKind};
use tollgate_processors::clickhouse::client;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Org whose chains to verify.
    #[arg(long)]
    org: String,
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
    /// Trusted checkpoint public key (hex); defaults to the configured signing key's.
    #[arg(long)]
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

/// The anchored checkpoints: from `--anchor`, else from the topic.
async fn anchored(args: &Args, config: &Config) -> anyhow::Result<Option<Vec<CheckpointRow>>> {
    if args.no_anchor {
        return Ok(None);
    }
    if let Some(path) = &args.anchor {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--anchor: cannot read {}", path.display()))?;
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let cp = anchor::parse_checkpoint_line(line).map_err(|why| {
                anyhow::anyhow!("--anchor {} line {}: {why}", path.display(), n + 1)
            })?;
            out.push(cp);
        }
        return Ok(Some(out));
    }
    let read = anchor::read_topic(&config.kafka).await.with_context(|| {
        "cannot read the checkpoint anchor (pass --anchor FILE, or --no-anchor to verify against clickhouse alone)"
    })?;
    for (partition, offset, why) in &read.unreadable {
        eprintln!(
            "warning: anchor message {partition}/{offset} of {} is not a checkpoint: {why}",
            config.kafka.audit_checkpoints_topic
        );
    }
    Ok(Some(read.checkpoints))
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<()> {
    let trusted =
        match &args.public_key {
            Some(hex_key) => Some(parse_public_key(hex_key).with_context(|| {
                format!("--public-key {hex_key:?} is not an Ed25519 public key")
            })?),
            None => config
                .audit
                .signer()?
                .and_then(|s| parse_public_key(s.public_key_hex())),
        };
    if trusted.is_none() {
        eprintln!("warning: no trusted public key (--public-key or [audit] signing key): checkpoint signatures are checked against the key each checkpoint names");
    }
    let range = if args.from.is_some() || args.to.is_some() {
        let from = match &args.from {
            Some(text) => {
                parse_time_ms("from", text).map_err(|e| anyhow::anyhow!("--from: {}", e.reason))?
            }
            None => 0,
        };
        let to = match &args.to {
            Some(text) => {
                parse_time_ms("to", text).map_err(|e| anyhow::anyhow!("--to: {}", e.reason))?
            }
            None => u64::MAX,
        };
        anyhow::ensure!(from < to, "--from must be before --to");
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
            &args.org,
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
        let unanchored = report.chains.iter().any(|c| {
            c.first_break
                .as_ref()
                .is_some_and(|b| b.kind == BreakKind::Unanchored)
        });
        if !unanchored || args.anchor.is_some() || attempt == 3 {
            break report;
        }
        attempt += 1;
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
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
    if !report.ok {
        std::process::exit(1);
    }
    Ok(())
}
