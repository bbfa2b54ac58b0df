//! `tollgate bench`: measurements that print their figures. Nothing here
//! asserts on speed; the numbers are for people and for the docs.

mod ingest;

use crate::config::Config;

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// End-to-end ingest: produce N events to Kafka and time until all are
    /// visible in ClickHouse, with consumer lag over time and the processor's
    /// peak RSS. Runs against a fresh topic and database it creates.
    Ingest(ingest::Args),
}

pub async fn run(command: BenchCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        BenchCommand::Ingest(args) => ingest::run(args, config).await,
    }
}
