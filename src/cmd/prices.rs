//! `tollgate prices`: import a LiteLLM-format price file into the catalog
//! (`import`), list the catalog (`list`). Every added version is also an
//! `admin.price.*` event, put in the outbox in the same transaction and
//! published before the command ends. `tollgate migrate` imports the default
//! catalog shipped in `migrations/prices/default_prices.json` the same way,
//! without events.

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use tollgate_control::prices::admin::PriceAdmin;
use tollgate_control::prices::litellm;
use tollgate_control::prices::store::{AddOutcome, PriceStore};

use crate::config::Config;

/// The default catalog, in LiteLLM's format (covers the simulator's models).
pub const DEFAULT_PRICES: &str = include_str!("../../migrations/prices/default_prices.json");

#[derive(clap::Subcommand)]
pub enum PricesCommand {
    /// Import a LiteLLM `model_prices_and_context_window.json`-format file.
    Import {
        /// The JSON file to import, in LiteLLM's format.
        file: PathBuf,
        /// When entries without `effective_from` take effect (RFC 3339);
        /// default: now.
        #[arg(long)]
        effective_from: Option<DateTime<Utc>>,
    },
    /// List every price version.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: PricesCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        PricesCommand::Import {
            file,
            effective_from,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let source = format!("import:{}", file.display());
            let outcome = import(
                config,
                &text,
                &source,
                effective_from.unwrap_or_else(Utc::now),
                true,
            )
            .await
            .with_context(|| format!("cannot import {}", file.display()))?;
            report("prices", &outcome);
            Ok(())
        }
        PricesCommand::List { json } => {
            let pool = tollgate_control::postgres::connect(&config.postgres).await?;
            let versions = PriceStore::new(pool).all().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&versions)?);
                return Ok(());
            }
            println!(
                "{:>5}  {:<10} {:<28} {:<25} {:>14} {:>14} {:>14} {:>14}  tiers",
                "id",
                "provider",
                "model",
                "effective_from",
                "input/token",
                "output/token",
                "cache read",
                "cache write"
            );
            for v in versions {
                let opt = |d: Option<rust_decimal::Decimal>| {
                    d.map(|d| d.to_string()).unwrap_or_else(|| "-".into())
                };
                // `>200000: 0.0000025/0.000015` (`>=` when inclusive).
                let tiers: Vec<String> = v
                    .tiers
                    .iter()
                    .map(|t| {
                        format!(
                            "{}{}: {}/{}",
                            if t.inclusive { ">=" } else { ">" },
                            t.above_tokens,
                            t.input_per_token,
                            opt(t.output_per_token)
                        )
                    })
                    .collect();
                println!(
                    "{:>5}  {:<10} {:<28} {:<25} {:>14} {:>14} {:>14} {:>14}  {}",
                    v.id,
                    v.provider,
                    v.model,
                    v.effective_from.to_rfc3339(),
                    v.input_per_token,
                    v.output_per_token,
                    opt(v.cache_read_per_token),
                    opt(v.cache_write_per_token),
                    tiers.join(" ")
                );
            }
            Ok(())
        }
    }
}

/// Parse `text` (LiteLLM format) and store new versions; when `publish`,
/// each with its admin event (same transaction), which is then published at
/// once (`outbox::publish_now`).
pub async fn import(
    config: &Config,
    text: &str,
    source: &str,
    default_effective_from: DateTime<Utc>,
    publish: bool,
) -> anyhow::Result<AddOutcome> {
    let parsed = litellm::parse(text, default_effective_from)?;
    let pool = tollgate_control::postgres::connect(&config.postgres).await?;
    let admin = PriceAdmin {
        store: PriceStore::new(pool.clone()),
    };
    let actor = publish.then_some("cli");
    let outcome = admin.add(&parsed.prices, source, actor).await?;
    if !parsed.skipped.is_empty() {
        println!(
            "prices: {} entries without prices skipped",
            parsed.skipped.len()
        );
    }
    report_not_imported(&parsed.not_imported);
    for s in &parsed.superseded {
        println!(
            "prices: entry `{}` not imported: `{}` prices the same provider/model differently and wins",
            s.entry, s.by
        );
    }
    super::outbox::publish_now(config, &pool, &outcome.events).await;
    Ok(outcome)
}

/// Import the shipped default catalog (entries without `effective_from`
/// take effect on 2025-01-01), without admin events: this is seeding, and
/// the rows record their source.
pub async fn import_default(config: &Config) -> anyhow::Result<AddOutcome> {
    let since = Utc
        .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .context("default effective_from")?;
    import(config, DEFAULT_PRICES, "default_prices.json", since, false).await
}

/// Every price of the file that was not imported, one line per key naming
/// each entry (refused entries separately): nothing is dropped silently.
fn report_not_imported(not_imported: &[litellm::NotImported]) {
    let mut by_key: std::collections::BTreeMap<(bool, &str), Vec<&str>> = Default::default();
    for n in not_imported {
        by_key
            .entry((n.entry_refused, n.key.as_str()))
            .or_default()
            .push(n.entry.as_str());
    }
    for ((refused, key), entries) in &by_key {
        let what = if *refused {
            "entries refused (Tollgate cannot bill them as priced)"
        } else {
            "entries imported without this price"
        };
        println!(
            "prices: `{key}` not imported, {} {what}: {}",
            entries.len(),
            entries.join(", ")
        );
    }
}

pub fn report(what: &str, outcome: &AddOutcome) {
    for v in &outcome.added {
        println!(
            "{what}: added version {} for {}/{} from {}",
            v.id,
            v.provider,
            v.model,
            v.effective_from.to_rfc3339()
        );
    }
    println!(
        "{what}: {} version(s) added, {} unchanged",
        outcome.added.len(),
        outcome.unchanged
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The demo prices every call the simulator makes out of the box.
    #[test]
    fn default_catalog_prices_every_simulated_model() {
        let parsed = litellm::parse(DEFAULT_PRICES, Utc::now()).unwrap();
        let catalog = tollgate_processors::cost::PriceCatalog::new(
            parsed.prices.into_iter().enumerate().map(|(i, p)| {
                let tiers = p.sorted_tiers();
                tollgate_processors::cost::PriceVersion {
                    id: i64::try_from(i).unwrap() + 1,
                    provider: p.provider,
                    model: p.model,
                    effective_from: p.effective_from,
                    input_per_token: p.input_per_token,
                    output_per_token: p.output_per_token,
                    cache_read_per_token: p.cache_read_per_token,
                    cache_write_per_token: p.cache_write_per_token,
                    reasoning_per_token: p.reasoning_per_token,
                    per_image: p.per_image,
                    per_audio_second: p.per_audio_second,
                    per_request: p.per_request,
                    tiers,
                    source: "default".into(),
                    note: p.note,
                }
            }),
        );
        for m in crate::workload::cast::MODELS {
            assert!(
                catalog.lookup(m.provider, m.model, Utc::now()).is_some(),
                "{}/{} has no default price",
                m.provider,
                m.model
            );
        }
    }
}
