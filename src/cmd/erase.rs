//! `tollgate erase --org O --user U --reason R [--json]`: erase one
//! person's personal data on request (GDPR art. 17), recording it in the
//! audit chain first (`tollgate_control::erasure`; `docs/audit.md`,
//! "Erasure"). Prints the receipt; `--check` only counts the rows still
//! holding the person's id, in every table with a `user_id` column.

use std::time::Duration;

use anyhow::Context;
use tollgate_control::erasure::{Eraser, ErasureRequest, DECISION_REASONS};

use crate::config::Config;

/// Said when denied calls' decision reasons still name the person.
const REASONS_KEPT: &str = "audit_chain.decision_reason: the decision reasons of denied calls chained before 2026-12-07 name the user; each is hashed into its entry as it is, so they cannot be emptied without breaking the chain (docs/audit.md, \"Erasure\"); later entries say <user>";

#[derive(clap::Args)]
pub struct Args {
    /// The org the person belongs to.
    #[arg(long)]
    org: String,
    /// The person's user id, as events carry it.
    #[arg(long)]
    user: String,
    /// Why (a ticket or request reference); chained with the erasure.
    #[arg(long, required_unless_present = "check")]
    reason: Option<String>,
    /// Erase nothing: count the rows still holding the person's id.
    #[arg(long)]
    check: bool,
    /// Print the receipt as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<()> {
    let pool = tollgate_control::postgres::connect(&config.postgres).await?;
    let eraser = Eraser {
        clickhouse: config.clickhouse.clone(),
        kafka: config.kafka.clone(),
        pool,
        wait: Duration::from_secs(config.audit.erasure_wait_secs),
    };
    if args.check {
        let holding = eraser.holding(&args.org, &args.user).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&holding)?);
        } else {
            for (table, n) in &holding {
                println!("{table}: {n} row(s) hold the user id");
            }
            if holding.get(DECISION_REASONS).is_some_and(|n| *n > 0) {
                println!("{REASONS_KEPT}");
            }
        }
        return Ok(());
    }
    let request = ErasureRequest {
        org_id: args.org,
        user_id: args.user,
        reason: args.reason.unwrap_or_default(),
        actor: format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        ),
    };
    let receipt = eraser.erase(&request).await.context("erasure failed")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&receipt)?);
        return Ok(());
    }
    println!(
        "erasure {} in org {}: {}",
        receipt.erasure_id, receipt.org, receipt.reason
    );
    for (table, counts) in &receipt.tables {
        println!(
            "{table}: {} row(s) held the user id, {} still do",
            counts.before, counts.after
        );
    }
    if receipt
        .tables
        .get(DECISION_REASONS)
        .is_some_and(|c| c.after > 0)
    {
        println!("{REASONS_KEPT}");
    }
    for chain in &receipt.chains {
        println!(
            "chain {}: erased entries {:?}, recorded by entry {} ({})",
            chain.chain_id, chain.erased_seqs, chain.record_seq, chain.record_entry_hash
        );
    }
    if !receipt.kept_v1_entries.is_empty() {
        println!(
            "kept: {} version 1 audit entries, which hash the user id directly (docs/audit.md, \"Erasure\")",
            receipt.kept_v1_entries.len()
        );
    }
    println!("prove it: tollgate verify-audit --org {}", receipt.org);
    Ok(())
}
