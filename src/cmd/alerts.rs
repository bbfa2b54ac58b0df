//! `tollgate alerts rules|silences|receivers create|list|delete`: alerting
//! administration straight against PostgreSQL, with the same validation
//! and the same `admin.*` events (through the outbox, actor `cli`) as
//! `/api/v1/alerts/...`. Rules and receivers are given as a JSON file (the
//! API body; `-` reads stdin); a silence as a file or as flags. Lists print
//! the API's JSON. See `docs/alerting.md`.

use std::io::Read;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use tollgate_contract::alerts::{Matcher, ReceiverSpec, RuleSpec, SilenceSpec, MAX_BODY_BYTES};
use tollgate_control::alerts::{AlertStore, SilenceFilter};

use tollgate_alerting::AlertsMetrics;

use crate::config::Config;
use crate::metrics::MetricsRegistry;

#[derive(clap::Subcommand)]
pub enum AlertsCommand {
    /// Alert rules.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Silences (label matchers over a time range).
    #[command(subcommand)]
    Silences(SilencesCommand),
    /// Notification receivers (webhook, slack, alertmanager).
    #[command(subcommand)]
    Receivers(ReceiversCommand),
    /// Run the alert evaluator until SIGTERM (one replica is active at a
    /// time through the `alert-evaluator` lease; see docs/alerting.md
    /// "The evaluator").
    Evaluate(EvaluateArgs),
}

#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// Serve `GET /metrics` (and `GET /healthz`) on this address; overrides
    /// `alerting.metrics_listen` (`127.0.0.1:0`: a free port, logged).
    #[arg(long)]
    metrics_listen: Option<String>,
}

#[derive(clap::Subcommand)]
pub enum RulesCommand {
    /// Create a rule from a JSON file (the body of `POST /api/v1/alerts/rules`).
    Create {
        /// The JSON file holding the rule (its `org_id` names the org).
        #[arg(long)]
        file: String,
    },
    /// List rules as JSON.
    List {
        /// Only this org's rules; every org's without it.
        #[arg(long)]
        org: Option<String>,
    },
    /// Delete a rule.
    Delete {
        /// The rule's id (`alerts rules list`).
        #[arg(long)]
        id: i64,
        /// Only if it is still at this version.
        #[arg(long)]
        version: Option<i64>,
    },
}

#[derive(clap::Subcommand)]
pub enum SilencesCommand {
    /// Create a silence from a JSON file, or from flags.
    Create {
        /// The body of `POST /api/v1/alerts/silences`; excludes the other flags.
        #[arg(long, conflicts_with_all = ["org", "matcher", "ends_at", "duration_secs", "comment"])]
        file: Option<String>,
        /// The org whose alerts the silence mutes (required without
        /// `--file`).
        #[arg(long, required_unless_present = "file")]
        org: Option<String>,
        /// `name=value`, `name!=value`, `name=~regex` or `name!~regex`; repeat for more.
        #[arg(long)]
        matcher: Vec<String>,
        /// RFC 3339; default now.
        #[arg(long)]
        starts_at: Option<DateTime<Utc>>,
        /// RFC 3339.
        #[arg(long, conflicts_with = "duration_secs")]
        ends_at: Option<DateTime<Utc>>,
        /// Length from `--starts-at`, in seconds.
        #[arg(long)]
        duration_secs: Option<i64>,
        /// Why.
        #[arg(long)]
        comment: Option<String>,
    },
    /// List silences as JSON.
    List {
        /// Only this org's silences; every org's without it.
        #[arg(long)]
        org: Option<String>,
        /// `active` (not yet ended), `expired` or `all`.
        #[arg(long, default_value = "active")]
        state: String,
    },
    /// Expire a silence now.
    Delete {
        /// The silence's id (`alerts silences list`).
        #[arg(long)]
        id: i64,
    },
}

#[derive(clap::Subcommand)]
pub enum ReceiversCommand {
    /// Create a receiver from a JSON file (the body of `POST /api/v1/alerts/receivers`).
    Create {
        /// The JSON file holding the receiver (its `org_id` names the org).
        #[arg(long)]
        file: String,
    },
    /// List receivers as JSON (never their secrets).
    List {
        /// Only this org's receivers; every org's without it.
        #[arg(long)]
        org: Option<String>,
    },
    /// Delete a receiver no rule uses.
    Delete {
        /// The receiver's id (`alerts receivers list`).
        #[arg(long)]
        id: i64,
        /// Only if it is still at this version.
        #[arg(long)]
        version: Option<i64>,
    },
}

const ACTOR: &str = "cli";

/// The bytes of `path` (`-`: stdin), bounded like an API body.
fn read_body(path: &str) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let limit = (MAX_BODY_BYTES + 1) as u64;
    if path == "-" {
        std::io::stdin().take(limit).read_to_end(&mut bytes)?;
    } else {
        std::fs::File::open(path)
            .with_context(|| format!("--file {path}: cannot open"))?
            .take(limit)
            .read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}

/// A `--matcher` flag (`Matcher::parse`).
fn parse_matcher(text: &str) -> anyhow::Result<Matcher> {
    Matcher::parse(text).ok_or_else(|| {
        anyhow::anyhow!(
            "--matcher {text:?}: expected name=value, name!=value, name=~regex or name!~regex"
        )
    })
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `tollgate alerts evaluate`: evaluate every `alerting.interval_secs`
/// while holding the lease; SIGTERM or ctrl-c ends the current evaluation,
/// releases the lease (a standby takes over at its next interval) and exits 0.
/// With `alerting.metrics_listen` (or `--metrics-listen`) it serves
/// `GET /metrics` (`tollgate_alerts_*`, `crate::metrics`).
async fn evaluate(args: EvaluateArgs, config: &Config) -> anyhow::Result<()> {
    let pool = tollgate_control::postgres::connect(&config.postgres).await?;
    let holder = format!(
        "{}:{}:{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let on_signal = shutdown.clone();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "shutting down"),
        }
        on_signal.cancel();
    });
    let metrics = Arc::new(AlertsMetrics::default());
    let mut registry = MetricsRegistry::new("alerts");
    metrics.register(registry.section("alerts"));
    let listener = crate::metrics::listener::serve_configured(
        args.metrics_listen.as_deref(),
        config.alerting.metrics_listen.as_deref(),
        "alerting.metrics_listen",
        registry.into_exposition(),
        shutdown.clone(),
    )
    .await?;
    tracing::info!(%holder, interval_secs = config.alerting.interval_secs, "alert evaluator starting");
    let evaluator = tollgate_alerting::Evaluator::new(
        config.alerting.clone(),
        pool,
        &config.clickhouse,
        holder,
    )?
    .with_metrics(metrics);
    let result = evaluator.run(&config.kafka, shutdown.clone()).await;
    // The listener ends with the evaluator, whatever ended it.
    shutdown.cancel();
    if let Some(listener) = listener {
        let _ = listener.await;
    }
    result?;
    Ok(())
}

pub async fn run(command: AlertsCommand, config: &Config) -> anyhow::Result<()> {
    if let AlertsCommand::Evaluate(args) = command {
        return evaluate(args, config).await;
    }
    let pool = tollgate_control::postgres::connect(&config.postgres).await?;
    let store =
        AlertStore::new(pool.clone()).with_private_hosts(&config.alerting.receiver_private_hosts);
    let event = match command {
        AlertsCommand::Rules(RulesCommand::Create { file }) => {
            let spec = RuleSpec::from_json(&read_body(&file)?)
                .map_err(|r| anyhow::anyhow!("--file {file}: {}: {}", r.field, r.reason))?;
            let set = store.create_rule(&spec, ACTOR).await?;
            print_json(&set.value)?;
            Some(set.event)
        }
        AlertsCommand::Rules(RulesCommand::List { org }) => {
            print_json(&store.rules(org.as_deref()).await?)?;
            None
        }
        AlertsCommand::Rules(RulesCommand::Delete { id, version }) => {
            let deleted = store.delete_rule(None, id, version, ACTOR).await?;
            println!("rule {id} deleted ({})", deleted.value.spec.name);
            Some(deleted.event)
        }
        AlertsCommand::Silences(SilencesCommand::Create {
            file,
            org,
            matcher,
            starts_at,
            ends_at,
            duration_secs,
            comment,
        }) => {
            let now = Utc::now();
            let spec = match file {
                Some(file) => SilenceSpec::from_json(&read_body(&file)?, now)
                    .map_err(|r| anyhow::anyhow!("--file {file}: {}: {}", r.field, r.reason))?,
                None => {
                    let starts_at = starts_at.unwrap_or(now);
                    let ends_at = match (ends_at, duration_secs) {
                        (Some(end), _) => end,
                        (None, Some(secs)) => starts_at + Duration::seconds(secs.clamp(0, 1 << 32)),
                        (None, None) => anyhow::bail!("--ends-at or --duration-secs is required"),
                    };
                    let spec = SilenceSpec {
                        org_id: org.ok_or_else(|| anyhow::anyhow!("--org is required"))?,
                        matchers: matcher
                            .iter()
                            .map(|m| parse_matcher(m))
                            .collect::<anyhow::Result<_>>()?,
                        starts_at,
                        ends_at,
                        comment: comment.unwrap_or_default(),
                    };
                    spec.validate(now).map_err(|r| {
                        let flag = match r.field.as_str() {
                            "org_id" => "--org".to_string(),
                            "starts_at" => "--starts-at".to_string(),
                            "ends_at" => "--ends-at".to_string(),
                            "comment" => "--comment".to_string(),
                            other => format!("--matcher ({other})"),
                        };
                        anyhow::anyhow!("{flag}: {}", r.reason)
                    })?;
                    spec
                }
            };
            let set = store.create_silence(&spec, ACTOR).await?;
            print_json(&set.value)?;
            Some(set.event)
        }
        AlertsCommand::Silences(SilencesCommand::List { org, state }) => {
            let filter = match state.as_str() {
                "active" => SilenceFilter::Current,
                "expired" => SilenceFilter::Expired,
                "all" => SilenceFilter::All,
                other => anyhow::bail!("--state {other:?}: expected active, expired or all"),
            };
            // With each one's state, as the API lists them.
            let now = Utc::now();
            let silences: Vec<tollgate_queries::alert_lists::SilenceView> = store
                .silences(org.as_deref(), filter, now)
                .await?
                .into_iter()
                .map(|s| tollgate_queries::alert_lists::SilenceView::at(s, now))
                .collect();
            print_json(&silences)?;
            None
        }
        AlertsCommand::Silences(SilencesCommand::Delete { id }) => {
            let expired = store.expire_silence(None, id, Utc::now(), ACTOR).await?;
            println!(
                "silence {id} expired at {}",
                expired.value.spec.ends_at.to_rfc3339()
            );
            Some(expired.event)
        }
        AlertsCommand::Receivers(ReceiversCommand::Create { file }) => {
            let spec = ReceiverSpec::from_json(&read_body(&file)?)
                .map_err(|r| anyhow::anyhow!("--file {file}: {}: {}", r.field, r.reason))?;
            let set = store.create_receiver(&spec, ACTOR).await?;
            print_json(&set.value)?;
            Some(set.event)
        }
        AlertsCommand::Receivers(ReceiversCommand::List { org }) => {
            print_json(&store.receivers(org.as_deref()).await?)?;
            None
        }
        AlertsCommand::Receivers(ReceiversCommand::Delete { id, version }) => {
            let deleted = store.delete_receiver(None, id, version, ACTOR).await?;
            println!("receiver {id} deleted ({})", deleted.value.name);
            Some(deleted.event)
        }
        AlertsCommand::Evaluate(_) => None,
    };
    if let Some(event) = event {
        super::outbox::publish_now(config, &pool, &[event]).await;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tollgate_contract::alerts::MatchOp;

    #[test]
    fn matcher_flags() {
        let m = |s: &str| {
            let m = parse_matcher(s).unwrap();
            (m.name, m.op, m.value)
        };
        assert_eq!(
            m("team=search"),
            ("team".into(), MatchOp::Equal, "search".into())
        );
        assert_eq!(
            m("team!=a=b"),
            ("team".into(), MatchOp::NotEqual, "a=b".into())
        );
        assert_eq!(
            m("sev=~warn.*"),
            ("sev".into(), MatchOp::Regex, "warn.*".into())
        );
        assert_eq!(m("sev!~x"), ("sev".into(), MatchOp::NotRegex, "x".into()));
        assert!(parse_matcher("team").is_err());
    }
}
