//! `tollgate bench audit --entries N`: how fast `tollgate verify-audit`
//! verifies N chained entries (docs/performance.md, "Audit verification").
//!
//! 1. Creates a throw-away ClickHouse database (`tollgate_bench_audit_<id>`)
//!    and applies the ClickHouse migrations.
//! 2. Writes a real chain: N simulated events (the ingest bench's workload)
//!    mapped and chained as the audit fold does it (`entry_fields`,
//!    `chain_entry`, version 2 entries with a random salt each), spread
//!    round robin over `--chains` chains of org `bench`, with a signed
//!    version 2 checkpoint every `--checkpoint-every` entries of a chain,
//!    inserted into `audit_chain` and `audit_checkpoints`.
//! 3. Per round: the verification `verify-audit` runs (`verify_range`, held
//!    to the checkpoints as its anchor, with the trusted key), then, to show
//!    where the time goes, reading every row without verifying it, and
//!    verifying one chain from memory (no ClickHouse) on one thread and with
//!    its hashes worked out on every core.
//!
//! It stops with an error if the verification does not pass every entry.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use tollgate_contract::audit::chain_id::team_chain_id;
use tollgate_contract::audit::checkpoint::{parse_public_key, ChainRef, CheckpointSigner};
use tollgate_contract::audit::entry::{chain_entry, entry_fields, EntryRow, Position, GENESIS};
use tollgate_contract::audit::merkle::Compact;
use tollgate_queries::audit::pages::entries_page_sql;
use tollgate_queries::audit::verify::{verify_range, ChainVerifier};

use super::figures::{self as measure, Figures};
use super::process_stats::{self, CpuMeter};
use crate::cmd::simulate::progress_bar;
use crate::config::Config;
use crate::workload::{Workload, WorkloadSpec};

#[derive(clap::Args)]
pub struct Args {
    /// Entries to write and verify.
    #[arg(long, default_value_t = 1_000_000)]
    pub entries: u64,
    /// Chains the entries are spread over (round robin).
    #[arg(long, default_value_t = 8)]
    pub chains: u64,
    /// A signed checkpoint every this many entries of a chain.
    #[arg(long, default_value_t = 1_000)]
    pub checkpoint_every: usize,
    /// Verifications to time.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Rows per insert while writing the chain.
    #[arg(long, default_value_t = 100_000)]
    pub chunk: u64,
    /// Keep the bench database afterwards (to run `verify-audit` on it).
    #[arg(long)]
    pub keep: bool,
    /// Seed of the generated workload: the same seed, the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// The org every bench chain belongs to.
const ORG: &str = "bench";

/// One chain being written.
struct Writing {
    /// The chain id: [`ORG`]'s chain of `team`.
    id: String,
    team: String,
    seq: u64,
    head: [u8; 32],
    segment: Vec<[u8; 32]>,
    prefix: Compact,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<Figures> {
    anyhow::ensure!(args.entries > 0, "--entries must be at least 1");
    anyhow::ensure!(args.chains > 0, "--chains must be at least 1");
    anyhow::ensure!(
        args.checkpoint_every > 0,
        "--checkpoint-every must be at least 1"
    );
    let name = format!("tollgate_bench_audit_{}", Utc::now().format("%Y%m%d%H%M%S"));
    let mut bench = config.clickhouse.clone();
    bench.database = name.clone();
    eprintln!("bench: ClickHouse database {name}");
    tollgate_processors::migrations::migrate(&bench, |_| {})
        .await
        .context("cannot migrate the bench ClickHouse database")?;
    let ch = tollgate_control::clickhouse::client(&bench);
    // The server's CPU during each verification, when it runs here.
    let server = process_stats::port_of(&bench.url).and_then(process_stats::listener);
    let result = measure(&args, &ch, server).await;
    if args.keep {
        if let Ok((key, _)) = &result {
            eprintln!(
                "bench: kept; verify it with: TOLLGATE_CLICKHOUSE__DATABASE={name} tollgate verify-audit --org {ORG} --no-anchor --public-key {key}"
            );
        }
    } else {
        ch.query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute()
            .await
            .context("cannot drop the bench ClickHouse database")?;
    }
    result.map(|(_, figures)| figures)
}

/// Write the chains, then time the rounds; the public key, hex, and the
/// median round's figures.
async fn measure(
    args: &Args,
    ch: &clickhouse::Client,
    server: Option<u32>,
) -> anyhow::Result<(String, Figures)> {
    let seed: [u8; 32] = rand::random();
    let signer = CheckpointSigner::from_hex_seed(&hex::encode(seed))
        .map_err(|why| anyhow::anyhow!("bench signing key: {why}"))?;
    let public_hex = signer.public_key_hex().to_string();
    let trusted = parse_public_key(&public_hex).context("bench public key")?;

    let writing = Instant::now();
    let (bytes, checkpoints) = write_chains(args, ch, &signer).await?;
    let written = writing.elapsed();
    eprintln!(
        "bench: wrote {} entries ({} MiB of columns) and {} checkpoints in {:.1} s",
        args.entries,
        bytes >> 20,
        checkpoints.len(),
        written.as_secs_f64()
    );

    println!(
        "audit verification: {} entries, {} chains, a checkpoint every {} entries, {} MiB of columns",
        args.entries,
        args.chains,
        args.checkpoint_every,
        bytes >> 20
    );
    println!("| round | verify-audit (entries/s) | its CPU: verifier + ClickHouse (s) | read only (rows/s) | one chain in memory, 1 thread (entries/s) | same, hashed on every core (entries/s) |");
    println!("|---|---|---|---|---|---|");
    let (mut verify_rates, mut memory_rates) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds.max(1) {
        let cpu = CpuMeter::start(&[
            ("verifier", Some(std::process::id())),
            ("ClickHouse", server),
        ]);
        let started = Instant::now();
        let report = verify_range(
            ch,
            ORG,
            None,
            None,
            Some(checkpoints.as_slice()),
            Some(&trusted),
        )
        .await
        .context("verifying the bench chains")?;
        let verified = started.elapsed();
        let cpu = cpu_column(&cpu.used());
        if !report.ok || report.entries != args.entries {
            for line in report.lines() {
                eprintln!("{line}");
            }
            anyhow::bail!(
                "the bench chains did not verify: {} of {} entries passed",
                report.entries,
                args.entries
            );
        }
        let (rows, read) = read_only(args, ch).await?;
        let (one, single, parallel) = in_memory(ch).await?;
        println!(
            "| {round} | {} ({:.2} s) | {cpu} | {} ({:.2} s) | {} | {} |",
            rate(args.entries, verified),
            verified.as_secs_f64(),
            rate(rows, read),
            read.as_secs_f64(),
            rate(one, single),
            rate(one, parallel),
        );
        verify_rates.push(rate(args.entries, verified));
        memory_rates.push(rate(one, single));
    }
    let mut figures = Figures::default();
    figures.set(
        &measure::AUDIT_VERIFY_RATE,
        median(&mut verify_rates) as f64,
    );
    figures.set(
        &measure::AUDIT_MEMORY_RATE,
        median(&mut memory_rates) as f64,
    );
    Ok((public_hex, figures))
}

/// The median of the rounds' figures (the higher middle one of an even
/// count).
fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// `verifier + ClickHouse` CPU seconds; `–` for a process not measured
/// (a server elsewhere, or run as another user).
fn cpu_column(used: &[(String, f64)]) -> String {
    let of = |name: &str| {
        used.iter()
            .find(|(n, _)| n == name)
            .map_or_else(|| "–".to_string(), |(_, s)| format!("{s:.1}"))
    };
    format!("{} + {}", of("verifier"), of("ClickHouse"))
}

fn rate(n: u64, took: Duration) -> u64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let per_s = (n as f64 / took.as_secs_f64().max(1e-6)) as u64;
    per_s
}

/// The team of bench chain `i`.
fn chain_name(i: u64) -> String {
    format!("bench-chain-{i:02}")
}

/// The id of bench chain `i`: [`ORG`]'s chain of its team.
fn chain_id_of(i: u64) -> String {
    team_chain_id(ORG, &chain_name(i))
}

/// Write `args.entries` chained entries and their signed checkpoints; the
/// bytes of the entries' string columns, and the checkpoints.
async fn write_chains(
    args: &Args,
    ch: &clickhouse::Client,
    signer: &CheckpointSigner,
) -> anyhow::Result<(
    u64,
    Vec<tollgate_contract::audit::checkpoint::CheckpointRow>,
)> {
    let mut chains: Vec<Writing> = (0..args.chains)
        .map(|i| Writing {
            id: chain_id_of(i),
            team: chain_name(i),
            seq: 0,
            head: GENESIS,
            segment: Vec::with_capacity(args.checkpoint_every),
            prefix: Compact::new(),
        })
        .collect();
    let workload = Workload::new(WorkloadSpec::new(
        args.entries,
        chrono::Duration::minutes(60),
        args.seed,
    ))?;
    let bar = progress_bar(args.entries, "chain");
    let mut checkpoints = Vec::new();
    let mut bytes = 0u64;
    let mut insert = ch.insert::<EntryRow>("audit_chain").await?;
    let mut in_insert = 0u64;
    for (n, event) in workload.enumerate() {
        let count = chains.len();
        let chain = &mut chains[n % count];
        let mut fields = entry_fields(&event)
            .map_err(|why| anyhow::anyhow!("a simulated event has no entry: {why:?}"))?;
        fields.org_id = ORG.to_string();
        fields.team_id = chain.team.clone();
        chain.seq += 1;
        let offset = i64::try_from(chain.seq).unwrap_or(i64::MAX);
        let (row, hash) = chain_entry(
            fields,
            Position {
                chain_id: &chain.id,
                seq: chain.seq,
                partition: 0,
                offset,
            },
            &chain.head,
            &rand::random(),
        );
        bytes += [
            &row.chain_id,
            &row.event_id,
            &row.kind,
            &row.org_id,
            &row.team_id,
            &row.user_id,
            &row.api_key_id,
            &row.provider,
            &row.model,
            &row.outcome,
            &row.decision,
            &row.decision_reason,
            &row.event_json,
            &row.prev_hash,
            &row.entry_hash,
            &row.salt,
            &row.personal_commitment,
        ]
        .iter()
        .map(|s| s.len() as u64)
        .sum::<u64>();
        insert.write(&row).await?;
        in_insert += 1;
        if in_insert == args.chunk.max(1) {
            insert.end().await?;
            insert = ch.insert::<EntryRow>("audit_chain").await?;
            in_insert = 0;
        }
        chain.head = hash;
        chain.segment.push(hash);
        if chain.segment.len() == args.checkpoint_every {
            checkpoints.push(checkpoint(chain, signer)?);
        }
        bar.inc(1);
    }
    insert.end().await?;
    for chain in &mut chains {
        if !chain.segment.is_empty() {
            checkpoints.push(checkpoint(chain, signer)?);
        }
    }
    bar.finish_and_clear();
    let mut insert = ch
        .insert::<tollgate_contract::audit::checkpoint::CheckpointRow>("audit_checkpoints")
        .await?;
    for cp in &checkpoints {
        insert.write(cp).await?;
    }
    insert.end().await?;
    Ok((bytes, checkpoints))
}

/// Sign the chain's open segment, as the audit fold does.
fn checkpoint(
    chain: &mut Writing,
    signer: &CheckpointSigner,
) -> anyhow::Result<tollgate_contract::audit::checkpoint::CheckpointRow> {
    let from = chain.seq + 1 - chain.segment.len() as u64;
    let now = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
    let cp = signer
        .checkpoint(
            ChainRef {
                chain_id: &chain.id,
                org_id: ORG,
                team_id: &chain.team,
            },
            from,
            &chain.segment,
            &mut chain.prefix,
            now,
        )
        .with_context(|| format!("cannot checkpoint {} at {from}", chain.id))?;
    chain.segment.clear();
    Ok(cp)
}

/// Read every row of every chain, as the verifier does, without verifying.
async fn read_only(args: &Args, ch: &clickhouse::Client) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let mut rows = 0;
    for i in 0..args.chains {
        rows += read_chain(ch, &chain_id_of(i), |_| ()).await?;
    }
    // Reading another chain than was written would time nothing.
    anyhow::ensure!(
        rows == args.entries,
        "read {rows} entries back, {} were written",
        args.entries
    );
    Ok((rows, started.elapsed()))
}

/// Stream one chain's rows through `each`, in seq order; how many there were.
async fn read_chain(
    ch: &clickhouse::Client,
    chain: &str,
    mut each: impl FnMut(EntryRow),
) -> anyhow::Result<u64> {
    let mut cursor = ch
        .query(&entries_page_sql())
        .bind(chain)
        .bind(0u64)
        .bind(u64::MAX)
        .fetch::<EntryRow>()?;
    let mut rows = 0;
    while let Some(row) = cursor.next().await? {
        rows += 1;
        each(row);
    }
    Ok(rows)
}

/// The first chain verified from memory (no checkpoints: hashing and links
/// alone), one row at a time on one thread, then in batches hashed on every
/// core; its entries and both times.
async fn in_memory(ch: &clickhouse::Client) -> anyhow::Result<(u64, Duration, Duration)> {
    let chain = chain_id_of(0);
    let mut rows = Vec::new();
    read_chain(ch, &chain, |row| rows.push(row)).await?;
    let n = rows.len() as u64;
    anyhow::ensure!(n > 0, "chain {chain} has no entries to verify");
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut one = ChainVerifier::new(&chain, Vec::new(), None);
        rows.iter().all(|row| one.push(row));
        let single = started.elapsed();
        let started = Instant::now();
        let mut batched = ChainVerifier::new(&chain, Vec::new(), None);
        rows.chunks(8_192).all(|batch| batched.push_batch(batch));
        let parallel = started.elapsed();
        let (one, batched) = (one.finish(), batched.finish());
        anyhow::ensure!(
            one.first_break.is_none() && batched.first_break.is_none(),
            "chain {chain} did not verify from memory: {} / {}",
            one.line(),
            batched.line()
        );
        Ok((n, single, parallel))
    })
    .await?
}
