//! Provider credentials at rest: the API keys Tollgate presents to
//! OpenAI, Anthropic and the like, stored in PostgreSQL
//! (`provider_credentials`) sealed with AES-256-GCM under a master key
//! that never enters the database ([`master_key`]: from the environment
//! or a file; [`sealing`]: seal and open one credential; [`store`]: set,
//! list, remove, re-encrypt under a new key, and load for the proxy).
//! A decrypted credential lives only in a `secrecy::SecretString`: its
//! `Debug` is redacted and its bytes are zeroed when dropped.
//! `docs/proxy.md`, "Provider credentials", says how to use them.

pub mod master_key;
pub mod sealing;
pub mod store;

pub use master_key::{Keyring, MasterKey, MASTER_KEY_VAR, PREVIOUS_MASTER_KEY_VAR};
pub use sealing::{fingerprint, Sealed};
pub use store::{CredentialInfo, CredentialStore, Rotation, CREDENTIALS_CHANNEL};

use secrecy::{ExposeSecret, SecretString};
use tollgate_contract::Fault;

/// Longest credential accepted, in bytes.
pub const MAX_CREDENTIAL_BYTES: usize = 4096;

/// What can go wrong with master keys and sealed credentials. Messages
/// name the variable, file or provider and the reason; none contains a
/// key or a credential.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("no master key: set {MASTER_KEY_VAR} (base64 of 32 random bytes, e.g. `head -c 32 /dev/urandom | base64`) or secrets.master_key_file (a file holding that text); needed to {needed_for}")]
    MasterKeyMissing { needed_for: String },

    #[error("{origin} is not a usable master key: {reason} (base64 of 32 random bytes, e.g. `head -c 32 /dev/urandom | base64`)")]
    MasterKeyMalformed { origin: String, reason: String },

    #[error("cannot read the master key file {path} ({setting}): {reason}")]
    MasterKeyUnreadable {
        setting: String,
        path: String,
        reason: String,
    },

    #[error("both {var} and {setting} are set; give the master key one way only")]
    MasterKeyTwice { var: String, setting: String },

    #[error("cannot decrypt provider {provider}'s credential: wrong master key (the row is under key id {key_id}; this process holds key id {held})")]
    WrongMasterKey {
        provider: String,
        key_id: String,
        held: String,
    },

    #[error("cannot decrypt provider {provider}'s credential: authentication failed under key id {key_id} (the stored row was altered, or belongs to another provider)")]
    Altered { provider: String, key_id: String },

    #[error("invalid {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },

    #[error("the operating system's random source failed: {0}")]
    Random(String),

    #[error("postgresql query failed while {doing}: {source}")]
    Postgres {
        doing: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

impl SecretsError {
    pub(crate) fn postgres(doing: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| SecretsError::Postgres { doing, source }
    }

    /// Whose fault: bad input is the caller's; a missing, malformed or
    /// wrong master key is the operator's configuration (internal to the
    /// deployment); PostgreSQL is external.
    pub fn fault(&self) -> Fault {
        match self {
            SecretsError::InvalidInput { .. } => Fault::Caller,
            SecretsError::Postgres { .. } => Fault::External,
            _ => Fault::Internal,
        }
    }
}

/// Check a provider name: what `[proxy.providers.<name>]` calls it.
pub fn check_provider(provider: &str) -> Result<(), SecretsError> {
    let ok = !provider.is_empty()
        && provider.len() <= 64
        && provider
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(SecretsError::InvalidInput {
            field: "provider",
            reason: format!(
                "{provider:?} is not a provider name (1 to 64 letters, digits, '_', '-' or '.', as in [proxy.providers.<name>])"
            ),
        })
    }
}

/// Check a credential before it is sealed: it is sent in an HTTP header,
/// so visible ASCII only, and surrounding whitespace is a copy mistake.
pub fn check_credential(credential: &SecretString) -> Result<(), SecretsError> {
    let text = credential.expose_secret();
    let reason = if text.is_empty() {
        Some("is empty".to_string())
    } else if text.len() > MAX_CREDENTIAL_BYTES {
        Some(format!(
            "is {} bytes; at most {MAX_CREDENTIAL_BYTES}",
            text.len()
        ))
    } else if text.trim() != text {
        Some("starts or ends with whitespace".to_string())
    } else if !text.bytes().all(|b| b.is_ascii_graphic()) {
        Some("must be visible ASCII characters only (it is sent in an HTTP header)".to_string())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(SecretsError::InvalidInput {
            field: "credential",
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_and_credentials_are_checked() {
        assert!(check_provider("openai").is_ok());
        assert!(check_provider("azure-east_2").is_ok());
        let err = check_provider("open ai").unwrap_err().to_string();
        assert!(
            err.starts_with("invalid provider: \"open ai\" is not a provider name"),
            "{err}"
        );
        assert!(check_provider("").is_err());
        assert!(check_credential(&SecretString::from("sk-abc")).is_ok());
        for (bad, reason) in [
            ("", "is empty"),
            ("sk-abc\n", "starts or ends with whitespace"),
            ("sk-\u{e9}", "must be visible ASCII"),
            ("sk a", "must be visible ASCII"),
        ] {
            let err = check_credential(&SecretString::from(bad))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("invalid credential: {reason}")),
                "{err}"
            );
            // The error never repeats the credential.
            if !bad.is_empty() {
                assert!(!err.contains(bad), "{err}");
            }
        }
    }
}
