//! `tollgate mock-upstream`: serve the OpenAI/Anthropic stand-in
//! (`tollgate-mock-upstream`) for tests, demos and `tollgate bench proxy`.
//! Prints `mock-upstream listening on http://ADDR` on stdout once bound.

use anyhow::Context;
use tollgate_mock_upstream::{LatencyDist, MockConfig};

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// Time to first token: `fixed:MS`, `uniform:MIN..MAX` or `lognormal:MEDIAN,SIGMA`.
    #[arg(long, default_value = "fixed:20")]
    ttft: LatencyDist,
    /// Gap between two streamed tokens, same forms as --ttft.
    #[arg(long, default_value = "fixed:2")]
    inter_token: LatencyDist,
    /// Output tokens when the request sets no max_tokens.
    #[arg(long, default_value_t = 16)]
    output_tokens: u64,
    /// Require this provider key on every request (401 otherwise).
    #[arg(long, env = "TOLLGATE_MOCK_API_KEY")]
    api_key: Option<String>,
}

pub async fn run(args: Args, _config: &Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let config = MockConfig {
        ttft: args.ttft,
        inter_token: args.inter_token,
        default_output_tokens: args.output_tokens,
        api_key: args.api_key,
        ..MockConfig::default()
    };
    tracing::info!(%addr, "mock upstream listening");
    println!("mock-upstream listening on http://{addr}");
    tollgate_mock_upstream::serve(listener, config, super::shutdown::shutdown_signal())
        .await
        .context("mock upstream server failed")
}
