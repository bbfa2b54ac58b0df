//! `tollgate reprice --model M --from T1 --to T2`: after a price correction,
//! bring the stored calls of one model in a time range to the prices the
//! catalog now gives them (see `processors::cost::reprice`: reversal and
//! posting rows in `cost_adjustments`, folded into `cost_daily`). Idempotent:
//! a second run changes nothing. Shows progress, and records the run as an
//! `admin.price.repriced` event.

use anyhow::Context;
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tollgate_processors::cost::admin::{admin_event, KIND_PRICE_REPRICED};
use tollgate_processors::cost::reprice;
use tollgate_processors::cost::store::PriceStore;
use tollgate_processors::outbox;
use uuid::Uuid;

use crate::config::Config;

/// Calls per insert (each call's reversal and posting stay together).
const CALLS_PER_INSERT: usize = 5_000;

#[derive(clap::Args)]
pub struct Args {
    /// The model whose calls are repriced, as the calls name it (a dated
    /// snapshot id is priced by its family's entry when it has none).
    #[arg(long)]
    model: String,
    /// Its provider, as the calls name it; needed when several catalog
    /// providers have this model, and for calls priced through an alias
    /// (`google` calls priced by LiteLLM's `gemini` entries, dated ids).
    #[arg(long)]
    provider: Option<String>,
    /// Start of the range (RFC 3339, inclusive).
    #[arg(long)]
    from: DateTime<Utc>,
    /// End of the range (RFC 3339, exclusive).
    #[arg(long)]
    to: DateTime<Utc>,
    /// Show what would change without writing anything.
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<()> {
    if args.from >= args.to {
        anyhow::bail!("--from must be before --to");
    }
    let pool = tollgate_ingest::postgres::connect(&config.postgres).await?;
    let store = PriceStore::new(pool.clone());
    let versions = store.all().await.context("cannot read the price catalog")?;
    let provider = match &args.provider {
        Some(p) => p.clone(),
        None => {
            let mut providers: Vec<&str> = versions
                .iter()
                .filter(|v| v.model == args.model)
                .map(|v| v.provider.as_str())
                .collect();
            providers.sort_unstable();
            providers.dedup();
            match providers.as_slice() {
                [one] => (*one).to_string(),
                [] => anyhow::bail!(
                    "no price version for model `{}`; pass --provider to reprice its calls as unpriced",
                    args.model
                ),
                many => anyhow::bail!(
                    "model `{}` has prices from several providers ({}); pass --provider",
                    args.model,
                    many.join(", ")
                ),
            }
        }
    };
    // One run per model at a time: two concurrent runs would both post the
    // same corrections.
    let mut lock = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock(hashtext($1))")
        .bind(format!("reprice/{provider}/{}", args.model))
        .execute(&mut *lock)
        .await
        .context("cannot take the reprice lock")?;
    let catalog = tollgate_processors::cost::PriceCatalog::new(versions);
    let client = tollgate_processors::clickhouse::client(&config.clickhouse);
    let reprice_id = Uuid::now_v7().to_string();
    let plan = reprice::plan(
        &client,
        &catalog,
        &provider,
        &args.model,
        args.from,
        args.to,
        &reprice_id,
    )
    .await
    .with_context(|| {
        format!(
            "cannot read calls from clickhouse at {}",
            config.clickhouse.url
        )
    })?;
    let delta = reprice::delta_decimal(&plan)
        .map(|d| d.to_string())
        .unwrap_or_else(|| "out of range".into());
    eprintln!(
        "reprice: {provider}/{}: {} call(s) examined, {} to change, cost change {delta} USD",
        args.model, plan.calls_examined, plan.calls_changed
    );
    if args.dry_run {
        println!("reprice: dry run, nothing written");
        return Ok(());
    }
    let bar = ProgressBar::new(plan.calls_changed);
    bar.set_style(
        ProgressStyle::with_template("{spinner} reprice [{bar:40}] {pos}/{len} calls ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    for calls in plan.by_month.values() {
        for chunk in calls.chunks(CALLS_PER_INSERT) {
            let rows: Vec<_> = chunk.iter().flatten().cloned().collect();
            reprice::insert(&client, &rows).await.context(
                "insert into cost_adjustments failed; run the same command again to finish",
            )?;
            bar.inc(chunk.len() as u64);
        }
    }
    bar.finish_and_clear();
    let event = admin_event(
        KIND_PRICE_REPRICED,
        "cli",
        json!({
            "reprice_id": reprice_id,
            "provider": provider,
            "model": args.model,
            "from": args.from,
            "to": args.to,
            "calls_examined": plan.calls_examined,
            "calls_changed": plan.calls_changed,
            "cost_delta": delta,
        }),
    );
    // The adjustments are in ClickHouse, so the event cannot share their
    // transaction; through the outbox it at least survives a Kafka outage.
    let enqueued = outbox::enqueue_alone(&pool, &event).await.context(
        "repricing is written to clickhouse, but its admin event could not be stored in the outbox",
    )?;
    super::outbox::publish_now(config, &pool, &[enqueued]).await;
    println!(
        "reprice: {} call(s) changed, cost change {delta} USD (reprice id {reprice_id})",
        plan.calls_changed
    );
    sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
        .bind(format!("reprice/{provider}/{}", args.model))
        .execute(&mut *lock)
        .await?;
    Ok(())
}
