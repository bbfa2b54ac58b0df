//! `tollgate ingest` (not yet implemented).

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {}

pub async fn run(_args: Args, _config: &Config) -> anyhow::Result<()> {
    anyhow::bail!("tollgate ingest is not implemented yet")
}
