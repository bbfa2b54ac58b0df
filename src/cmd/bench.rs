//! `tollgate bench` (not yet implemented).

use crate::config::Config;

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// End-to-end ingest throughput.
    Ingest {},
}

pub async fn run(_command: BenchCommand, _config: &Config) -> anyhow::Result<()> {
    anyhow::bail!("tollgate bench is not implemented yet")
}
