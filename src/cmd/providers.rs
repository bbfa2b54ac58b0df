//! `tollgate providers`: the credentials the proxy presents to providers,
//! stored in PostgreSQL sealed under the master key (`TOLLGATE_MASTER_KEY`
//! or `secrets.master_key_file`): set (from stdin or a variable, never from
//! the command line, where `ps` and shell history would keep it), list
//! (fingerprints and times, never a credential), remove, re-encrypt every
//! row under a new master key in one transaction (`rotate-key`), and make
//! a master key (`generate-master-key`). See docs/proxy.md, "Provider
//! credentials".

use std::io::{Read, Write};

use anyhow::Context;
use secrecy::SecretString;
use tollgate_control::provider_credentials::{
    CredentialStore, Keyring, MasterKey, SecretsError, MASTER_KEY_VAR, PREVIOUS_MASTER_KEY_VAR,
};
use zeroize::Zeroizing;

use crate::config::Config;

/// Who CLI changes are recorded as.
const ACTOR: &str = "cli";

#[derive(clap::Subcommand)]
pub enum ProvidersCommand {
    /// Store (or replace) a provider's credential, encrypted. The
    /// credential comes from `--stdin` or `--from-env VARIABLE` (one of
    /// them is required), never from the command line.
    #[command(group(clap::ArgGroup::new("source").required(true).args(["stdin", "from_env"])))]
    Set {
        /// The provider's name, as in `[proxy.providers.<name>]`.
        provider: String,
        /// Read the credential from standard input (one line).
        #[arg(long)]
        stdin: bool,
        /// Read the credential from this environment variable.
        #[arg(long, value_name = "VARIABLE")]
        from_env: Option<String>,
    },
    /// List stored credentials: provider, master key id, fingerprint, times.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a provider's stored credential.
    Remove {
        /// The provider's name, as in `[proxy.providers.<name>]`.
        provider: String,
    },
    /// Re-encrypt every stored credential under a new master key, in one
    /// transaction (the current key, and the previous one if set, decrypt).
    RotateKey {
        /// A file holding the new master key (base64 of 32 bytes).
        #[arg(long, value_name = "FILE")]
        new_key_file: String,
    },
    /// Write a new random master key (base64 of 32 bytes) to a file
    /// readable by its owner only; prints its key id.
    GenerateMasterKey {
        /// The file to write the key to (refused if it exists).
        #[arg(long, value_name = "FILE")]
        out: String,
    },
}

pub async fn run(command: ProvidersCommand, config: &Config) -> anyhow::Result<()> {
    if let ProvidersCommand::GenerateMasterKey { out } = &command {
        return generate(out);
    }
    let keyring = Keyring::from_environment(&config.secrets)?;
    let pool = tollgate_control::postgres::connect(&config.postgres).await?;
    let store = CredentialStore::new(pool.clone());
    let result = match command {
        ProvidersCommand::Set {
            provider,
            stdin,
            from_env,
        } => {
            let keyring = keyring.ok_or_else(|| SecretsError::MasterKeyMissing {
                needed_for: format!("encrypt provider {provider}'s credential"),
            })?;
            let credential = read_credential(stdin, from_env.as_deref())?;
            if !config.proxy.providers.contains_key(&provider) {
                eprintln!(
                    "warning: this configuration has no [proxy.providers.{provider}]; a proxy uses a stored credential only for the providers it is configured with"
                );
            }
            let (info, event) = store.set(&keyring, &provider, &credential, ACTOR).await?;
            println!(
                "stored the credential of provider {} (key id {}, fingerprint {}); running proxies use it within moments",
                info.provider, info.key_id, info.fingerprint
            );
            super::outbox::publish_now(config, &pool, &[event]).await;
            Ok(())
        }
        ProvidersCommand::List { json } => {
            let all = store.list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                println!(
                    "{:<20} {:<16} {:<24} {:<25} UPDATED BY",
                    "PROVIDER", "KEY ID", "FINGERPRINT", "UPDATED"
                );
                for c in all {
                    println!(
                        "{:<20} {:<16} {:<24} {:<25} {}",
                        c.provider,
                        c.key_id,
                        c.fingerprint,
                        c.updated_at.format("%Y-%m-%d %H:%M:%S UTC"),
                        c.updated_by
                    );
                }
            }
            Ok(())
        }
        ProvidersCommand::Remove { provider } => match store.remove(&provider, ACTOR).await? {
            Some((info, event)) => {
                println!(
                    "removed the credential of provider {} (fingerprint {}); running proxies call it without one from now on",
                    info.provider, info.fingerprint
                );
                super::outbox::publish_now(config, &pool, &[event]).await;
                Ok(())
            }
            None => Err(anyhow::anyhow!(
                "no credential stored for provider {provider}"
            )),
        },
        ProvidersCommand::RotateKey { new_key_file } => {
            let keyring = keyring.ok_or_else(|| SecretsError::MasterKeyMissing {
                needed_for: "decrypt the stored credentials before re-encrypting them".into(),
            })?;
            let new = MasterKey::from_file(&new_key_file, "--new-key-file")?;
            let rotation = store.rotate(&keyring, &new, ACTOR).await?;
            println!(
                "re-encrypted {} provider credential(s) ({}) from key id(s) {} to key id {} in one transaction",
                rotation.providers.len(),
                rotation.providers.join(", "),
                if rotation.from_key_ids.is_empty() {
                    "-".to_string()
                } else {
                    rotation.from_key_ids.join(", ")
                },
                rotation.to_key_id
            );
            eprintln!(
                "next: run every proxy and api with the new key as {MASTER_KEY_VAR} (or secrets.master_key_file) \
                 and, until all of them do, the old one as {PREVIOUS_MASTER_KEY_VAR} (or secrets.previous_master_key_file); \
                 proxies still on the old key keep the credentials they hold"
            );
            if let Some(event) = rotation.event {
                super::outbox::publish_now(config, &pool, &[event]).await;
            }
            Ok(())
        }
        ProvidersCommand::GenerateMasterKey { .. } => Ok(()),
    };
    pool.close().await;
    result
}

/// The credential from stdin (one line, its line ending removed) or from
/// an environment variable.
fn read_credential(stdin: bool, from_env: Option<&str>) -> anyhow::Result<SecretString> {
    let text = match (stdin, from_env) {
        (_, Some(var)) => Zeroizing::new(std::env::var(var).map_err(|_| {
            anyhow::anyhow!("--from-env {var}: the environment variable {var} is not set")
        })?),
        (true, None) => {
            let mut text = Zeroizing::new(String::new());
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the credential from standard input")?;
            let line = text.strip_suffix('\n').unwrap_or(&text);
            Zeroizing::new(line.strip_suffix('\r').unwrap_or(line).to_string())
        }
        (false, None) => anyhow::bail!("give the credential with --stdin or --from-env VARIABLE"),
    };
    Ok(SecretString::from(text.as_str()))
}

fn generate(out: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let key = MasterKey::generate()?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("cannot create {out} (an existing file is never overwritten)"))?;
    writeln!(file, "{}", key.to_base64().as_str())?;
    file.sync_all()?;
    println!("wrote a new master key to {out} (key id {})", key.id());
    Ok(())
}
