//! `tollgate keys` (not yet implemented).

use crate::config::Config;

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret once.
    Create {},
}

pub async fn run(_command: KeysCommand, _config: &Config) -> anyhow::Result<()> {
    anyhow::bail!("tollgate keys is not implemented yet")
}
