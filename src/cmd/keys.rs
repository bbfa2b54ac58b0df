//! `tollgate keys`: create, list and revoke API keys. `create` prints the
//! secret alone on the last line of stdout (once; only its hash is stored)
//! and a human description on stderr, so scripts can capture the secret.

use tollgate_control::error::ControlError;
use tollgate_control::keys::{prefix_named, KeyStore, ROLES};

use crate::config::Config;

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret once.
    Create {
        /// What the key is for, e.g. the service that uses it.
        #[arg(long)]
        name: String,
        /// Restrict the key to one org's events; without it the key may send
        /// events of any org.
        #[arg(long)]
        org: Option<String>,
        /// ingest, proxy, admin, finance, sre, compliance or viewer
        /// (docs/ingest-api.md, "Keys").
        #[arg(long, default_value = "ingest")]
        role: String,
        /// Team the proxy records this key's calls under.
        #[arg(long)]
        team: Option<String>,
        /// User the proxy records this key's calls under.
        #[arg(long)]
        user: Option<String>,
        /// Models the key may use through the proxy (comma-separated, exact
        /// names or `prefix*`); any model when absent. An empty list or
        /// item (`''`, `a,,b`) is refused.
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
    },
    /// List keys (never their secrets), with the team, user and models
    /// each is scoped to.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key.
    Revoke {
        /// The key's prefix: the 8 characters after `tg_`, as `keys list`
        /// shows it (a whole secret is taken too, and never echoed back).
        prefix: String,
    },
}

pub async fn run(command: KeysCommand, config: &Config) -> anyhow::Result<()> {
    let pool = tollgate_control::postgres::connect(&config.postgres).await?;
    let keys = KeyStore::new(pool.clone());
    let result = match command {
        KeysCommand::Create {
            name,
            org,
            role,
            team,
            user,
            models,
        } => {
            // Checked before the key exists: a refused scope must not leave
            // behind a key scoped to nothing.
            tollgate_proxy::auth::check_scope(team.as_deref(), user.as_deref(), &models)
                .map_err(scope_flag)?;
            let created = keys.create(&name, org.as_deref(), &role).await?;
            if team.is_some() || user.is_some() || !models.is_empty() {
                tollgate_proxy::auth::set_scope(
                    &pool,
                    created.id,
                    team.as_deref(),
                    user.as_deref(),
                    &models,
                )
                .await?;
            }
            eprintln!(
                "created API key {} (id {}, name {name:?}, role {role}, org {}); store the secret now, it is not shown again:",
                created.prefix,
                created.id,
                org.as_deref().unwrap_or("any")
            );
            println!("{}", created.secret);
            Ok(())
        }
        KeysCommand::List { json } => {
            let all = keys.list_scoped().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                println!(
                    "{:<10} {:<24} {:<20} {:<11} {:<16} {:<16} {:<24} {:<20} REVOKED",
                    "PREFIX", "NAME", "ORG", "ROLE", "TEAM", "USER", "MODELS", "CREATED"
                );
                for listed in &all {
                    let key = &listed.key;
                    println!(
                        "{:<10} {:<24} {:<20} {:<11} {:<16} {:<16} {:<24} {:<20} {}",
                        key.prefix,
                        printable(&key.name),
                        printable(key.org_id.as_deref().unwrap_or("*")),
                        key.role,
                        printable(listed.team_id.as_deref().unwrap_or("-")),
                        printable(listed.user_id.as_deref().unwrap_or("-")),
                        listed
                            .allowed_models
                            .as_ref()
                            .map_or_else(|| "*".to_string(), |m| printable(&m.join(","))),
                        key.created_at.format("%Y-%m-%d %H:%M:%S"),
                        key.revoked_at
                            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                            .unwrap_or_else(|| "-".into())
                    );
                }
                eprintln!("{} keys; roles: {}", all.len(), ROLES.join(", "));
            }
            Ok(())
        }
        KeysCommand::Revoke { prefix: given } => {
            // What was given may be a pasted secret: only a prefix is ever
            // printed.
            let Some(prefix) = prefix_named(&given) else {
                pool.close().await;
                anyhow::bail!(
                    "<PREFIX>: not a key prefix: give the 8 lowercase letters or digits after \
                     `tg_` that `tollgate keys list` shows (what was given is not repeated here, \
                     in case it is a secret)"
                );
            };
            if given.trim() != prefix && given.trim() != format!("tg_{prefix}") {
                eprintln!(
                    "note: that looks like a whole secret; revoking the key with its prefix \
                     {prefix}"
                );
            }
            if keys.revoke(prefix).await? {
                eprintln!("revoked API key {prefix}");
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "no active API key has prefix {prefix:?} (see `tollgate keys list`)"
                ))
            }
        }
    };
    pool.close().await;
    result
}

/// A refused `--team`, `--user` or `--models`, naming the flag.
fn scope_flag(err: ControlError) -> anyhow::Error {
    match err {
        ControlError::InvalidInput { field, reason } => {
            anyhow::anyhow!("--{field}: {reason}")
        }
        other => other.into(),
    }
}

/// `text` with control characters escaped (`\u{7}`), so a name stored
/// before they were refused cannot move the terminal's cursor or colour.
fn printable(text: &str) -> String {
    // Control characters, and the bidirectional overrides and isolates that
    // reorder what follows them on the line.
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    };
    if text.chars().any(unsafe_char) {
        text.chars()
            .map(|c| {
                if unsafe_char(c) {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_print_without_terminal_controls() {
        assert_eq!(
            printable("trial2\u{7}bell\u{1b}[31m"),
            "trial2\\u{7}bell\\u{1b}[31m"
        );
        assert_eq!(printable("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(printable("plain-name é"), "plain-name é");
    }

    /// `keys create --help` names every role a key can have (a trial found
    /// `viewer` missing from it while the refusal of a bad role listed it).
    #[test]
    fn the_role_help_names_every_role() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            keys: KeysCommand,
        }
        let mut cli = <Cli as clap::CommandFactory>::command();
        let create = cli.find_subcommand_mut("create").unwrap();
        let role = create
            .get_arguments()
            .find(|a| a.get_id() == "role")
            .unwrap();
        let help = role.get_help().unwrap().to_string();
        for name in ROLES {
            assert!(help.contains(name), "{name} missing from: {help}");
        }
    }
}
