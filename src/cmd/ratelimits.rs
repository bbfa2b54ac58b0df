//! `tollgate ratelimits`: set, delete and list rate-limit tiers (requests
//! and tokens per minute per key, user, team or org) in PostgreSQL; each
//! change is also an `admin.rate_limit.set` / `admin.rate_limit.deleted`
//! event, through the outbox, as through the admin API. Every proxy
//! reloads them within `proxy.tiers.refresh_ms`; together the proxies admit
//! each limit per minute, claiming it from a shared pool (`docs/proxy.md`,
//! "Rate-limit tiers").

use tollgate_control::budgets::SubjectKind;
use tollgate_control::keys::KeyStore;
use tollgate_control::rate_limits::admin::SetOutcome;
use tollgate_control::rate_limits::{
    rate_limit_json, InvalidRateLimit, RateLimit, RateLimitSpec, RateLimitStore,
};

use crate::config::Config;

#[derive(clap::Subcommand)]
pub enum RateLimitsCommand {
    /// Create or replace the limit of one key, user, team or org.
    ///
    /// `set` replaces the whole limit: a limit left out is removed (`--rpm
    /// 10` on a limit of 5000 tokens/min leaves requests only). Pass both
    /// `--rpm` and `--tpm` to keep both; the output says what changed.
    Set {
        /// `key`, `user`, `team` or `org`.
        #[arg(long)]
        scope: String,
        /// The API-key, user, team or org id.
        #[arg(long)]
        id: String,
        /// Requests per minute (a whole number from 1).
        #[arg(long, allow_hyphen_values = true)]
        rpm: Option<String>,
        /// Tokens (input plus output) per minute (a whole number from 1).
        #[arg(long, allow_hyphen_values = true)]
        tpm: Option<String>,
        /// The org the limit belongs to (an org scope's own id when not given).
        #[arg(long)]
        org: Option<String>,
    },
    /// Delete a limit (see `ratelimits list` for ids).
    Delete {
        /// The limit's id, the first column of `ratelimits list`.
        #[arg(long)]
        id: i64,
    },
    /// List the limits.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

/// The flag that carries an API body field.
fn flag(err: &InvalidRateLimit) -> &str {
    match err.field.as_str() {
        "scope_kind" => "--scope",
        "scope_id" => "--id",
        "requests_per_minute" => "--rpm",
        "tokens_per_minute" => "--tpm",
        "org_id" => "--org",
        other => other,
    }
}

fn per_minute(n: Option<u64>) -> String {
    n.map_or_else(|| "-".to_string(), |n| n.to_string())
}

/// What a `set` did to an existing limit, every changed figure named:
/// `replaced: requests/min none → 10, tokens/min 5000 → none (pass both
/// --rpm and --tpm to keep both)`. A trial lost a tokens limit to a later
/// `--rpm` with only "(replaced)" said.
fn replaced(previous: &RateLimit, limit: &RateLimit) -> String {
    let figure = |n: Option<u64>| n.map_or_else(|| "none".to_string(), |n| n.to_string());
    let mut changes = Vec::new();
    let mut dropped = false;
    for (unit, before, after) in [
        (
            "requests/min",
            previous.requests_per_minute,
            limit.requests_per_minute,
        ),
        (
            "tokens/min",
            previous.tokens_per_minute,
            limit.tokens_per_minute,
        ),
    ] {
        if before != after {
            changes.push(format!("{unit} {} → {}", figure(before), figure(after)));
            dropped |= before.is_some() && after.is_none();
        }
    }
    if changes.is_empty() {
        return "replaced: unchanged".to_string();
    }
    format!(
        "replaced: {}{}",
        changes.join(", "),
        if dropped {
            " (set replaces the whole limit: pass both --rpm and --tpm to keep both)"
        } else {
            ""
        }
    )
}

pub async fn run(command: RateLimitsCommand, config: &Config) -> anyhow::Result<()> {
    let pool = tollgate_control::postgres::connect(&config.postgres).await?;
    let store = RateLimitStore::new(pool.clone());
    // The CLI administers every org.
    let any_org = |_: Option<&str>| true;
    match command {
        RateLimitsCommand::Set {
            scope,
            id,
            rpm,
            tpm,
            org,
        } => {
            let refuse = |e: InvalidRateLimit| anyhow::anyhow!("{}: {}", flag(&e), e.reason);
            let mut spec = RateLimitSpec::parse(&scope, &id, rpm.as_deref(), tpm.as_deref())
                .map_err(refuse)?;
            if let Some(org) = &org {
                spec = spec.in_org(org).map_err(refuse)?;
            }
            let spec = spec
                .naming_key(&KeyStore::new(pool.clone()))
                .await?
                .map_err(refuse)?;
            // The limit and its admin.rate_limit.set event commit together.
            let SetOutcome::Stored(set) = store.set(&spec, "cli", any_org).await? else {
                anyhow::bail!(
                    "rate limit not stored (the CLI changes every org's limits; this is a bug)"
                );
            };
            let (limit, previous) = (&set.limit, &set.previous);
            println!(
                "rate limit {}: {} {}{} {} requests/min {} tokens/min{}",
                limit.id,
                limit.scope_kind.name(),
                limit.scope_id,
                match (&limit.org_id, limit.scope_kind) {
                    (_, SubjectKind::Org) => String::new(),
                    (Some(org), _) => format!(" of org {org}:"),
                    (None, _) => " (in every org):".to_string(),
                },
                per_minute(limit.requests_per_minute),
                per_minute(limit.tokens_per_minute),
                previous
                    .as_ref()
                    .map(|previous| format!("; {}", replaced(previous, limit)))
                    .unwrap_or_default()
            );
            super::outbox::publish_now(config, &pool, &[set.event]).await;
        }
        RateLimitsCommand::Delete { id } => {
            let Some(deleted) = store.delete(id, "cli", any_org).await? else {
                anyhow::bail!("--id {id}: no such rate limit (see `tollgate ratelimits list`)");
            };
            println!(
                "rate limit {id} deleted: {}",
                serde_json::to_string(&rate_limit_json(&deleted.limit))?
            );
            super::outbox::publish_now(config, &pool, &[deleted.event]).await;
        }
        RateLimitsCommand::List { json } => {
            for l in store.all().await? {
                if json {
                    println!("{}", serde_json::to_string(&rate_limit_json(&l))?);
                } else {
                    println!(
                        "{:>4}  {:<16} {:<5} {:<36} {:>12} requests/min {:>14} tokens/min",
                        l.id,
                        l.org_id.as_deref().unwrap_or("(every org)"),
                        l.scope_kind.name(),
                        l.scope_id,
                        per_minute(l.requests_per_minute),
                        per_minute(l.tokens_per_minute),
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rpm: Option<u64>, tpm: Option<u64>) -> RateLimit {
        RateLimit {
            id: 1,
            scope_kind: SubjectKind::Key,
            scope_id: "k".into(),
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
            org_id: Some("o".into()),
            updated_by: "cli".into(),
            updated_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_replacement_says_what_changed_and_what_was_dropped() {
        assert_eq!(
            replaced(&limit(None, Some(5000)), &limit(Some(10), None)),
            "replaced: requests/min none → 10, tokens/min 5000 → none (set replaces the whole \
             limit: pass both --rpm and --tpm to keep both)"
        );
        assert_eq!(
            replaced(&limit(Some(10), Some(5000)), &limit(Some(20), Some(5000))),
            "replaced: requests/min 10 → 20"
        );
        assert_eq!(
            replaced(&limit(Some(10), None), &limit(Some(10), None)),
            "replaced: unchanged"
        );
    }
}
