//! `tollgate users`: people's accounts. `create --admin` makes the first
//! admin (of every org); `invite` prints the link an invited person opens
//! to choose a password; `list`, `grant`, `set-password` and `disable`
//! manage the rest.
//! Passwords are read from stdin (`--password-stdin`) or asked for on the
//! terminal, never taken from the command line.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use tollgate_control::accounts::{AccountStore, Grant, Role};

use crate::config::Config;

#[derive(clap::Subcommand)]
pub enum UsersCommand {
    /// Create an account with a password.
    Create {
        /// The person's email address, which they sign in with.
        #[arg(long)]
        email: String,
        /// Their name as the pages show it.
        #[arg(long, default_value = "")]
        name: String,
        /// Admin of every org (the first admin).
        #[arg(long)]
        admin: bool,
        /// Grants as `<org>:<role>` or `*:<role>` (roles: admin, finance,
        /// sre, compliance, viewer); repeatable or comma-separated.
        #[arg(long = "grant", value_delimiter = ',')]
        grants: Vec<String>,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Invite someone: prints the link where they choose a password.
    Invite {
        /// The invited person's email address.
        #[arg(long)]
        email: String,
        /// `<org>:<role>` or `*:<role>`.
        #[arg(long)]
        grant: String,
        /// The dashboard's address, for the link.
        #[arg(long, default_value = "http://127.0.0.1:8081")]
        base_url: String,
    },
    /// List accounts and their grants.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Replace an account's grants.
    Grant {
        /// The account's email address.
        #[arg(long)]
        email: String,
        /// The grants that replace the account's, as `<org>:<role>` or
        /// `*:<role>`; repeatable or comma-separated.
        #[arg(long = "grant", value_delimiter = ',', required = true)]
        grants: Vec<String>,
    },
    /// Set an account's password (someone who lost theirs): lifts a
    /// lockout and ends the account's sessions.
    SetPassword {
        /// The account's email address.
        #[arg(long)]
        email: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable an account and end its sessions.
    Disable {
        /// The account's email address.
        #[arg(long)]
        email: String,
    },
}

fn parse_grants(texts: &[String]) -> anyhow::Result<Vec<Grant>> {
    texts
        .iter()
        .map(|t| Grant::parse(t).map_err(|e| anyhow::anyhow!("--grant: {e}")))
        .collect()
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !from_stdin && stdin.is_terminal() {
        eprint!("password (at least 12 characters; shown as you type it): ");
        std::io::stderr().flush()?;
    } else if !from_stdin {
        anyhow::bail!("give the password on stdin with --password-stdin");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub async fn run(command: UsersCommand, config: &Config) -> anyhow::Result<()> {
    let pool = tollgate_control::postgres::connect(&config.postgres).await?;
    let accounts = AccountStore::new(pool.clone(), config.auth.clone());
    let actor = "cli";
    let result = async {
        match command {
            UsersCommand::Create {
                email,
                name,
                admin,
                grants,
                password_stdin,
            } => {
                let mut grants = parse_grants(&grants)?;
                if admin {
                    grants.push(Grant::new(None, Role::Admin));
                }
                if grants.is_empty() {
                    anyhow::bail!("give --admin or at least one --grant <org>:<role>");
                }
                let password = read_password(password_stdin)?;
                let user = accounts
                    .create_user(&email, &name, Some(&password), &grants, actor)
                    .await?;
                let described: Vec<String> = grants.iter().map(Grant::describe).collect();
                eprintln!("created {} ({})", user.email, described.join(", "));
                Ok(())
            }
            UsersCommand::Invite {
                email,
                grant,
                base_url,
            } => {
                let grant = Grant::parse(&grant).map_err(|e| anyhow::anyhow!("--grant: {e}"))?;
                let invitation = accounts.invite(&email, &grant, actor).await?;
                eprintln!(
                    "invited {} as {} until {}; send them this link (shown once):",
                    invitation.email,
                    grant.describe(),
                    invitation.expires_at.format("%Y-%m-%d %H:%M UTC")
                );
                println!(
                    "{}/invitations/{}",
                    base_url.trim_end_matches('/'),
                    invitation.token
                );
                Ok(())
            }
            UsersCommand::List { json } => {
                let users = accounts.list_users().await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&users)?);
                } else {
                    println!("{:<32} {:<24} {:<10} GRANTS", "EMAIL", "NAME", "STATE");
                    for u in &users {
                        let state = if u.user.disabled_at.is_some() {
                            "disabled"
                        } else if u.user.locked_until.is_some_and(|t| t > chrono::Utc::now()) {
                            "locked"
                        } else {
                            "active"
                        };
                        let grants: Vec<String> = u.grants.iter().map(Grant::describe).collect();
                        println!(
                            "{:<32} {:<24} {:<10} {}",
                            u.user.email,
                            u.user.display_name,
                            state,
                            grants.join(", ")
                        );
                    }
                }
                Ok(())
            }
            UsersCommand::Grant { email, grants } => {
                let grants = parse_grants(&grants)?;
                let user = find(&accounts, &email).await?;
                accounts.set_grants(user, &grants, actor).await?;
                eprintln!("{email}: grants replaced");
                Ok(())
            }
            UsersCommand::SetPassword {
                email,
                password_stdin,
            } => {
                let user = find(&accounts, &email).await?;
                let password = read_password(password_stdin)?;
                accounts.set_password(user, &password, actor).await?;
                eprintln!("{email}: password set, sessions ended");
                Ok(())
            }
            UsersCommand::Disable { email } => {
                let user = find(&accounts, &email).await?;
                accounts.disable(user, actor).await?;
                eprintln!("{email}: disabled, sessions ended");
                Ok(())
            }
        }
    }
    .await;
    pool.close().await;
    result
}

async fn find(accounts: &AccountStore, email: &str) -> anyhow::Result<uuid::Uuid> {
    let email = email.trim().to_lowercase();
    accounts
        .list_users()
        .await?
        .into_iter()
        .find(|u| u.user.email == email)
        .map(|u| u.user.id)
        .ok_or_else(|| anyhow::anyhow!("no account for {email} (see `tollgate users list`)"))
}
