//! `tollgate audit ...`: audit chain tools. `keygen` creates the Ed25519
//! checkpoint signing key (a 32-byte seed, hex, in a file only its owner can
//! read) and prints its public key; `export` writes an NDJSON export with a
//! signed manifest; `checkpoints export` copies the checkpoint anchor (the
//! Kafka topic) to JSON lines a user can keep outside Tollgate.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use rand::rngs::OsRng;
use rand::TryRngCore;
use tollgate_contract::audit::checkpoint::checkpoint_line;
use tollgate_contract::audit::checkpoint::CheckpointSigner;
use tollgate_queries::audit::anchor;
use tollgate_queries::audit::search::SearchQuery;
use tollgate_queries::audit::trail::{export, export_search};

use crate::config::Config;

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Create a checkpoint signing key; point `[audit] signing_key_file` at it.
    Keygen {
        /// Where to write the key (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key of the configured signing key (hex).
    PublicKey,
    /// Export an org's (or team's) chains with their checkpoints and the
    /// public key as NDJSON, for offline verification (docs/audit.md).
    Export {
        /// The org whose chains (or entries) to export.
        #[arg(long)]
        org: String,
        /// Only the chains holding this team's entries (with a search: only
        /// this team's entries).
        #[arg(long)]
        team: Option<String>,
        /// Export only the entries of a search instead of whole chains: from
        /// this time (RFC 3339, a date, or epoch ms)...
        #[arg(long)]
        from: Option<String>,
        /// ...before this time (exclusive)...
        #[arg(long)]
        to: Option<String>,
        /// ...of this user...
        #[arg(long)]
        user: Option<String>,
        /// ...calling this model...
        #[arg(long)]
        model: Option<String>,
        /// ...with this outcome. Each entry then carries its inclusion proof.
        #[arg(long)]
        outcome: Option<String>,
        /// Output file; stdout when absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The checkpoint anchor (`kafka.audit_checkpoints_topic`).
    Checkpoints {
        #[command(subcommand)]
        command: CheckpointsCommand,
    },
}

#[derive(clap::Subcommand)]
pub enum CheckpointsCommand {
    /// Write every anchored checkpoint as JSON lines (one checkpoint
    /// object per line, in publishing order), for `verify-audit --anchor`
    /// and `docs/audit_verify.py --anchor`.
    Export {
        /// Output file; stdout when absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub async fn run(command: AuditCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        AuditCommand::Keygen { out } => {
            let mut seed = [0u8; 32];
            OsRng
                .try_fill_bytes(&mut seed)
                .context("cannot read the operating system's random number generator")?;
            let signer = CheckpointSigner::from_seed(&seed);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&out).with_context(|| {
                format!("cannot create {} (it must not exist yet)", out.display())
            })?;
            writeln!(file, "{}", hex::encode(seed))
                .with_context(|| format!("cannot write {}", out.display()))?;
            eprintln!(
                "wrote {}; set [audit] signing_key_file = \"{}\"; public key:",
                out.display(),
                out.display()
            );
            println!("{}", signer.public_key_hex());
        }
        AuditCommand::PublicKey => {
            let signer = config
                .audit
                .signer()?
                .context("no [audit] signing_key or signing_key_file configured")?;
            println!("{}", signer.public_key_hex());
        }
        AuditCommand::Export {
            org,
            team,
            from,
            to,
            user,
            model,
            outcome,
            out,
        } => {
            let mut pairs: Vec<(String, String)> = vec![("org".into(), org.clone())];
            for (name, value) in [
                ("team", &team),
                ("from", &from),
                ("to", &to),
                ("user", &user),
                ("model", &model),
                ("outcome", &outcome),
            ] {
                if let Some(value) = value {
                    pairs.push((name.into(), value.clone()));
                }
            }
            let query = SearchQuery::from_pairs(&pairs)
                .map_err(|e| anyhow::anyhow!("--{}: {}", e.field, e.reason))?;
            let search = from.is_some()
                || to.is_some()
                || user.is_some()
                || model.is_some()
                || outcome.is_some();
            let signer = config.audit.signer()?;
            if signer.is_none() {
                eprintln!("warning: no [audit] signing key: the export's manifest is not signed, so its completeness cannot be proven");
            }
            let signer = signer.as_ref();
            let ch = tollgate_control::clickhouse::client(&config.clickhouse);
            let summary = match &out {
                Some(path) => {
                    let file = tokio::fs::File::create(path)
                        .await
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    let mut writer = tokio::io::BufWriter::new(file);
                    if search {
                        export_search(&ch, &query, signer, &mut writer).await?
                    } else {
                        export(&ch, &org, team.as_deref(), signer, &mut writer).await?
                    }
                }
                None => {
                    let mut writer = tokio::io::BufWriter::new(tokio::io::stdout());
                    if search {
                        export_search(&ch, &query, signer, &mut writer).await?
                    } else {
                        export(&ch, &org, team.as_deref(), signer, &mut writer).await?
                    }
                }
            };
            eprintln!(
                "exported {} chains, {} entries, {} checkpoints",
                summary.chains, summary.entries, summary.checkpoints
            );
        }
        AuditCommand::Checkpoints {
            command: CheckpointsCommand::Export { out },
        } => {
            let read = anchor::read_topic(&config.kafka).await?;
            for (partition, offset, why) in &read.unreadable {
                eprintln!(
                    "warning: {} message {partition}/{offset} is not a checkpoint: {why}",
                    config.kafka.audit_checkpoints_topic
                );
            }
            let mut text = String::new();
            for cp in &read.checkpoints {
                text.push_str(&checkpoint_line(cp));
                text.push('\n');
            }
            match &out {
                Some(path) => std::fs::write(path, &text)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => std::io::stdout()
                    .write_all(text.as_bytes())
                    .context("cannot write to stdout")?,
            }
            eprintln!(
                "exported {} anchored checkpoints from topic {}",
                read.checkpoints.len(),
                config.kafka.audit_checkpoints_topic
            );
        }
    }
    Ok(())
}
