//! `tollgate reprice --model M --from T1 --to T2` (or `--all`): after a price
//! correction or a change of the cost formula, bring the stored calls of one
//! model (or of every model) in a time range to the prices the
//! catalog now gives them (see `processors::cost::reprice`: reversal and
//! posting rows in `cost_adjustments`, folded into `cost_daily`). Idempotent:
//! a second run changes nothing. Shows progress, and records the run as an
//! `admin.price.repriced` event.

use anyhow::Context;
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tollgate_contract::admin::{admin_event, KIND_PRICE_REPRICED};
use tollgate_control::outbox;
use tollgate_control::prices::store::PriceStore;
use tollgate_processors::cost::reprice;
use uuid::Uuid;

use crate::config::Config;

/// Calls per insert (each call's reversal and posting stay together).
const CALLS_PER_INSERT: usize = 5_000;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["model", "all"])))]
pub struct Args {
    /// The model whose calls are repriced, as the calls name it (a dated
    /// snapshot id is priced by its family's entry when it has none).
    #[arg(long)]
    model: Option<String>,
    /// Reprice the calls of every provider and model (after a change of the
    /// cost formula or of price resolution, e.g. aliases and tiers). With
    /// `--all`, `--from` defaults to the first stored call and `--to` to
    /// tomorrow.
    #[arg(long, conflicts_with = "provider")]
    all: bool,
    /// Its provider, as the calls name it; needed when several catalog
    /// providers have this model, and for calls priced through an alias
    /// (`google` calls priced by LiteLLM's `gemini` entries, dated ids).
    #[arg(long)]
    provider: Option<String>,
    /// Start of the range (RFC 3339, inclusive).
    #[arg(long, required_unless_present = "all")]
    from: Option<DateTime<Utc>>,
    /// End of the range (RFC 3339, exclusive).
    #[arg(long, required_unless_present = "all")]
    to: Option<DateTime<Utc>>,
    /// Show what would change without writing anything.
    #[arg(long)]
    dry_run: bool,
}

/// What one reprice run changed, summed over its models.
#[derive(Default)]
struct Outcome {
    calls_examined: u64,
    calls_changed: u64,
    cost_delta: Option<rust_decimal::Decimal>,
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<()> {
    // Before 1970 nothing is stored (`occurred_at` is an unsigned epoch).
    let from = args.from.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let to = args
        .to
        .unwrap_or_else(|| Utc::now() + chrono::Duration::days(1));
    if from >= to {
        anyhow::bail!("--from must be before --to");
    }
    let pool = tollgate_control::postgres::connect(&config.postgres).await?;
    let store = PriceStore::new(pool.clone());
    let versions = store.all().await.context("cannot read the price catalog")?;
    let client = tollgate_control::clickhouse::client(&config.clickhouse);
    let models = match &args.model {
        Some(model) => vec![(
            provider_of(&versions, model, args.provider.as_deref())?,
            model.clone(),
        )],
        None => reprice::models_with_calls(&client, from, to)
            .await
            .with_context(|| {
                format!(
                    "cannot read calls from clickhouse at {}",
                    config.clickhouse.url
                )
            })?,
    };
    let catalog = tollgate_processors::cost::PriceCatalog::new(versions);
    let reprice_id = Uuid::now_v7().to_string();
    let mut total = Outcome {
        cost_delta: Some(rust_decimal::Decimal::ZERO),
        ..Outcome::default()
    };
    for (provider, model) in &models {
        let one = reprice_model(
            config,
            &pool,
            &client,
            &catalog,
            provider,
            model,
            from,
            to,
            &reprice_id,
            args.dry_run,
            // One named model is always on record; `--all` records only the
            // models it changed.
            args.model.is_some(),
        )
        .await?;
        total.calls_examined += one.calls_examined;
        total.calls_changed += one.calls_changed;
        total.cost_delta = total
            .cost_delta
            .zip(one.cost_delta)
            .and_then(|(a, b)| a.checked_add(b));
    }
    let delta = total
        .cost_delta
        .map(|d| d.to_string())
        .unwrap_or_else(|| "out of range".into());
    if args.dry_run {
        println!("reprice: dry run, nothing written");
    } else {
        println!(
            "reprice: {} call(s) changed, cost change {delta} USD ({} call(s) of {} model(s) examined; reprice id {reprice_id})",
            total.calls_changed,
            total.calls_examined,
            models.len(),
        );
    }
    Ok(())
}

/// The provider of `model`: the one given, or the only one with a price.
fn provider_of(
    versions: &[tollgate_processors::cost::PriceVersion],
    model: &str,
    given: Option<&str>,
) -> anyhow::Result<String> {
    if let Some(p) = given {
        return Ok(p.to_string());
    }
    let mut providers: Vec<&str> = versions
        .iter()
        .filter(|v| v.model == model)
        .map(|v| v.provider.as_str())
        .collect();
    providers.sort_unstable();
    providers.dedup();
    match providers.as_slice() {
        [one] => Ok((*one).to_string()),
        [] => anyhow::bail!(
            "no price version for model `{model}`; pass --provider to reprice its calls as unpriced"
        ),
        many => anyhow::bail!(
            "model `{model}` has prices from several providers ({}); pass --provider",
            many.join(", ")
        ),
    }
}

/// Reprice the calls of one provider/model in `[from, to)`: plan, insert
/// the adjustments, record an `admin.price.repriced` event.
#[allow(clippy::too_many_arguments)]
async fn reprice_model(
    config: &Config,
    pool: &sqlx::PgPool,
    client: &clickhouse::Client,
    catalog: &tollgate_processors::cost::PriceCatalog,
    provider: &str,
    model: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    reprice_id: &str,
    dry_run: bool,
    record_unchanged: bool,
) -> anyhow::Result<Outcome> {
    // One run per model at a time: two concurrent runs would both post the
    // same corrections.
    let mut lock = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock(hashtext($1))")
        .bind(format!("reprice/{provider}/{model}"))
        .execute(&mut *lock)
        .await
        .context("cannot take the reprice lock")?;
    let plan = reprice::plan(client, catalog, provider, model, from, to, reprice_id)
        .await
        .with_context(|| {
            format!(
                "cannot read calls from clickhouse at {}",
                config.clickhouse.url
            )
        })?;
    let cost_delta = reprice::delta_decimal(&plan);
    let delta = cost_delta
        .map(|d| d.to_string())
        .unwrap_or_else(|| "out of range".into());
    eprintln!(
        "reprice: {provider}/{model}: {} call(s) examined, {} to change, cost change {delta} USD",
        plan.calls_examined, plan.calls_changed
    );
    let outcome = Outcome {
        calls_examined: plan.calls_examined,
        calls_changed: plan.calls_changed,
        cost_delta,
    };
    if dry_run || (plan.calls_changed == 0 && !record_unchanged) {
        unlock(&mut lock, provider, model).await?;
        return Ok(outcome);
    }
    let bar = ProgressBar::new(plan.calls_changed);
    bar.set_style(
        ProgressStyle::with_template("{spinner} reprice [{bar:40}] {pos}/{len} calls ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    for calls in plan.by_month.values() {
        for chunk in calls.chunks(CALLS_PER_INSERT) {
            let rows: Vec<_> = chunk.iter().flatten().cloned().collect();
            reprice::insert(client, &rows).await.context(
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
            "model": model,
            "from": from,
            "to": to,
            "calls_examined": plan.calls_examined,
            "calls_changed": plan.calls_changed,
            "cost_delta": delta,
        }),
    );
    // The adjustments are in ClickHouse, so the event cannot share their
    // transaction; through the outbox it at least survives a Kafka outage.
    let enqueued = outbox::enqueue_alone(pool, &event).await.context(
        "repricing is written to clickhouse, but its admin event could not be stored in the outbox",
    )?;
    super::outbox::publish_now(config, pool, &[enqueued]).await;
    unlock(&mut lock, provider, model).await?;
    Ok(outcome)
}

async fn unlock(
    lock: &mut sqlx::pool::PoolConnection<sqlx::Postgres>,
    provider: &str,
    model: &str,
) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
        .bind(format!("reprice/{provider}/{model}"))
        .execute(&mut **lock)
        .await?;
    Ok(())
}
