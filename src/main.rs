//! The `tollgate` binary: one executable, one subcommand per role.

mod cmd;
mod config;
mod metrics;
mod telemetry;
mod workload;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Observability and billing pipeline for AI calls"
)]
struct Cli {
    /// TOML configuration file; `TOLLGATE_<SECTION>__<KEY>` variables override it.
    #[arg(long, short, global = true, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply ClickHouse and PostgreSQL migrations (safe to re-run).
    Migrate(cmd::migrate::Args),
    /// Serve the HTTP batch ingest API (`POST /v1/events`, `GET /v1/schema`)
    /// and the OTLP trace receiver (`POST /v1/traces`, OTLP/gRPC).
    Ingest(cmd::ingest::Args),
    /// Consume `tollgate.events` and fold it into ClickHouse.
    Process(cmd::process::Args),
    /// Serve the report API and dashboards.
    Api(cmd::api::Args),
    /// Serve the OpenAI/Anthropic-compatible proxy that records every call.
    Proxy(cmd::proxy::Args),
    /// Serve a stand-in for the OpenAI and Anthropic APIs (tests, demos, bench).
    MockUpstream(cmd::mock_upstream::Args),
    /// Manage the price catalog.
    #[command(subcommand)]
    Prices(cmd::prices::PricesCommand),
    /// Manage alert rules, silences and receivers.
    #[command(subcommand)]
    Alerts(cmd::alerts::AlertsCommand),
    /// Manage spend budgets.
    #[command(subcommand)]
    Budgets(cmd::budgets::BudgetsCommand),
    /// Manage rate-limit tiers (requests and tokens per minute).
    #[command(subcommand)]
    Ratelimits(cmd::ratelimits::RateLimitsCommand),
    /// The outbox of admin events: what is not on Kafka yet; publish it.
    #[command(subcommand)]
    Outbox(cmd::outbox::OutboxCommand),
    /// Recompute stored costs of one model after a price correction.
    Reprice(cmd::reprice::Args),
    /// Check the cost rollups against the calls they sum; repair them.
    #[command(subcommand)]
    Rollups(cmd::rollups::RollupsCommand),
    /// Drop ClickHouse partitions past their table's retention.
    #[command(subcommand)]
    Retention(cmd::retention::RetentionCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(cmd::keys::KeysCommand),
    /// Provider credentials, encrypted in PostgreSQL under the master key.
    #[command(subcommand)]
    Providers(cmd::providers::ProvidersCommand),
    /// Every route of `tollgate api` and who may use it.
    Routes {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// People's accounts: the first admin, invitations, grants.
    #[command(subcommand)]
    Users(cmd::users::UsersCommand),
    /// Generate realistic AI-call traffic.
    Simulate(cmd::simulate::Args),
    /// Measure the pipeline.
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
    /// Recompute an org's audit chains and checkpoints; report the first broken link.
    VerifyAudit(cmd::verify_audit::Args),
    /// Erase one person's personal data (GDPR art. 17), recorded in the audit chain.
    Erase(cmd::erase::Args),
    /// Audit chain tools: signing keys, export.
    #[command(subcommand)]
    Audit(cmd::audit::AuditCommand),
    /// Print every SQL statement the project sends to ClickHouse, as JSON
    /// (used by the chDB compatibility check).
    SqlCatalog(cmd::sql_catalog::Args),
    /// Print the effective configuration as TOML, after checking the
    /// proxy's routes as `tollgate proxy` does at start-up. Secrets are
    /// hidden: keys, passwords and client secrets as `<set, N characters,
    /// hidden>`, a URL's password as `***`.
    ShowConfig,
}

impl Command {
    /// The `service.name` of the spans this command exports
    /// (`telemetry::resource`): the role's, or `tollgate` for the one-shot
    /// commands.
    fn service_name(&self) -> &'static str {
        match self {
            Command::Ingest(_) => "tollgate-ingest",
            Command::Process(_) => "tollgate-process",
            Command::Api(_) => "tollgate-api",
            Command::Proxy(_) => "tollgate-proxy",
            Command::MockUpstream(_) => "tollgate-mock-upstream",
            _ => "tollgate",
        }
    }

    /// The log filter when `TOLLGATE_LOG` sets none. A server logs from
    /// INFO. A one-shot command an operator runs says what it did itself,
    /// so its log shows warnings and errors only, and none of librdkafka's
    /// (it logs every failed connection to an unreachable broker, some 300
    /// lines before the command's own error in a trial); the command's
    /// error says what failed. `TOLLGATE_LOG=info,librdkafka=debug` shows
    /// them all.
    fn default_log_filter(&self) -> &'static str {
        let one_shot = match self {
            Command::Alerts(command) => !matches!(command, cmd::alerts::AlertsCommand::Evaluate(_)),
            Command::Prices(_)
            | Command::Budgets(_)
            | Command::Ratelimits(_)
            | Command::Outbox(_)
            | Command::Rollups(_)
            | Command::Keys(_)
            | Command::Providers(_)
            | Command::Routes { .. }
            | Command::Users(_)
            | Command::VerifyAudit(_)
            | Command::Audit(_)
            | Command::SqlCatalog(_)
            | Command::ShowConfig => true,
            // Servers, and the long operations whose progress is logged.
            Command::Migrate(_)
            | Command::Ingest(_)
            | Command::Process(_)
            | Command::Api(_)
            | Command::Proxy(_)
            | Command::MockUpstream(_)
            | Command::Reprice(_)
            | Command::Retention(_)
            | Command::Simulate(_)
            | Command::Bench(_)
            | Command::Erase(_) => false,
        };
        if one_shot {
            "warn,librdkafka=off,rdkafka=off"
        } else {
            "info,rdkafka=warn"
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    quiet_when_stdout_closes();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // As anyhow's own `main` reports it, with the status the error
            // was tagged with (`cmd::exit_status`; 1 when untagged).
            eprintln!("Error: {err:?}");
            std::process::ExitCode::from(cmd::exit_status::of(&err))
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    use cmd::exit_status::Tag;
    // A configuration that cannot be read is a usage error (exit 2), as
    // the checking commands' status tables say: untagged, a typo in the
    // TOML made `verify-audit` exit 1, "found broken" (review).
    let config = Config::load(cli.config.as_deref()).usage()?;
    let _telemetry = telemetry::init(
        &config.telemetry,
        cli.command.service_name(),
        cli.command.default_log_filter(),
    )
    .usage()?;
    match cli.command {
        Command::Migrate(args) => cmd::migrate::run(args, &config).await,
        Command::Ingest(args) => cmd::ingest::run(args, &config).await,
        Command::Process(args) => cmd::process::run(args, &config).await,
        Command::Api(args) => cmd::api::run(args, &config).await,
        Command::Proxy(args) => cmd::proxy::run(args, &config).await,
        Command::MockUpstream(args) => cmd::mock_upstream::run(args, &config).await,
        Command::Prices(command) => cmd::prices::run(command, &config).await,
        Command::Alerts(command) => cmd::alerts::run(command, &config).await,
        Command::Budgets(command) => cmd::budgets::run(command, &config).await,
        Command::Ratelimits(command) => cmd::ratelimits::run(command, &config).await,
        Command::Outbox(command) => cmd::outbox::run(command, &config).await,
        Command::Reprice(args) => cmd::reprice::run(args, &config).await,
        Command::Rollups(command) => cmd::rollups::run(command, &config).await,
        Command::Retention(command) => cmd::retention::run(command, &config).await,
        Command::Keys(command) => cmd::keys::run(command, &config).await,
        Command::Providers(command) => cmd::providers::run(command, &config).await,
        Command::Users(command) => cmd::users::run(command, &config).await,
        Command::Routes { json } => cmd::api::print_routes(&config, json),
        Command::Simulate(args) => cmd::simulate::run(args, &config).await,
        Command::Bench(command) => cmd::bench::run(command, &config).await,
        Command::VerifyAudit(args) => cmd::verify_audit::run(args, &config).await,
        Command::Erase(args) => cmd::erase::run(args, &config).await,
        Command::Audit(command) => cmd::audit::run(command, &config).await,
        Command::SqlCatalog(args) => cmd::sql_catalog::run(args, &config).await,
        Command::ShowConfig => {
            if !config.proxy.providers.is_empty() {
                tollgate_proxy::routing::check(&config.proxy)
                    .map_err(|err| anyhow::anyhow!("invalid configuration: {err}"))?;
            }
            print!("{}", config.to_toml()?);
            Ok(())
        }
    }
}

/// `tollgate verify-audit … | head` closes the pipe before the command has
/// printed everything: std's `println!` then panics ("failed printing to
/// stdout: Broken pipe") with a backtrace note. The reader has what it
/// wanted, so the command ends quietly as Unix tools do, with status 141
/// (128 + SIGPIPE). Every other panic is reported as before.
fn quiet_when_stdout_closes() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        report(info);
    }));
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every argument of every command says what it is in `--help` (a
    /// trial found `--file`, `--org`, `--email`, `<PREFIX>` and others
    /// bare).
    #[test]
    fn every_argument_is_described_in_help() {
        fn bare(command: &clap::Command, path: &str, found: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                let generated = matches!(
                    arg.get_action(),
                    clap::ArgAction::Help
                        | clap::ArgAction::HelpShort
                        | clap::ArgAction::HelpLong
                        | clap::ArgAction::Version
                );
                if generated || arg.is_hide_set() {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    found.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                bare(sub, &path, found);
            }
        }
        let mut found = Vec::new();
        bare(&Cli::command(), "", &mut found);
        assert!(
            found.is_empty(),
            "arguments without help:\n{}",
            found.join("\n")
        );
    }
}
