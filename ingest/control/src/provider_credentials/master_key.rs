//! The master keys that encrypt provider credentials: one 256-bit key,
//! written as base64, from `TOLLGATE_MASTER_KEY` or the file named by
//! `secrets.master_key_file`; during a rotation also the key before it
//! (`TOLLGATE_MASTER_KEY_PREVIOUS` or `secrets.previous_master_key_file`).
//! A key is known by its id, a fingerprint of the key that every stored
//! row carries, so a process picks the key a row needs without being told.

use base64::Engine;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::SecretsError;
use crate::config::SecretsConfig;

/// The variable holding the current master key (base64 of 32 bytes).
pub const MASTER_KEY_VAR: &str = "TOLLGATE_MASTER_KEY";
/// The variable holding the previous master key during a rotation.
pub const PREVIOUS_MASTER_KEY_VAR: &str = "TOLLGATE_MASTER_KEY_PREVIOUS";

const KEY_BYTES: usize = 32;

/// One AES-256 master key. Its bytes are zeroed when dropped and never
/// printed (`Debug` shows the id only).
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<[u8; KEY_BYTES]>,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

impl MasterKey {
    /// A key from its base64 text; `source` names where the text came from
    /// for the error (`TOLLGATE_MASTER_KEY`, `secrets.master_key_file /path`).
    pub fn from_base64(text: &str, source: &str) -> Result<Self, SecretsError> {
        let malformed = |reason: String| SecretsError::MasterKeyMalformed {
            origin: source.to_string(),
            reason,
        };
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|err| malformed(format!("not base64 ({err})")))?,
        );
        let bytes: [u8; KEY_BYTES] = decoded.as_slice().try_into().map_err(|_| {
            malformed(format!(
                "decodes to {} bytes; a master key is exactly {KEY_BYTES} bytes",
                decoded.len()
            ))
        })?;
        Ok(Self::from_bytes(bytes))
    }

    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        let bytes = Zeroizing::new(bytes);
        let digest = Sha256::new()
            .chain_update(b"tollgate master key id v1\0")
            .chain_update(bytes.as_slice())
            .finalize();
        let id = hex::encode(&digest[..8]);
        Self { bytes, id }
    }

    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, SecretsError> {
        use rand::TryRngCore;
        let mut bytes = [0u8; KEY_BYTES];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|err| SecretsError::Random(err.to_string()))?;
        Ok(Self::from_bytes(bytes))
    }

    /// The key as base64, the form it is configured in.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.bytes.as_slice()))
    }

    /// The key's id: 16 hex digits of a SHA-256 of the key (it tells keys
    /// apart and reveals nothing usable about the key).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn bytes(&self) -> &[u8; KEY_BYTES] {
        &self.bytes
    }

    /// Read a key from `path` (base64, surrounding whitespace ignored).
    pub fn from_file(path: &str, setting: &str) -> Result<Self, SecretsError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|err| {
            SecretsError::MasterKeyUnreadable {
                setting: setting.to_string(),
                path: path.to_string(),
                reason: err.to_string(),
            }
        })?);
        Self::from_base64(&text, &format!("{setting} ({path})"))
    }
}

/// The master keys a process holds: the current one (encrypts) and,
/// during a rotation, the previous one (only decrypts).
#[derive(Debug, Clone)]
pub struct Keyring {
    current: MasterKey,
    previous: Option<MasterKey>,
}

impl Keyring {
    pub fn new(current: MasterKey, previous: Option<MasterKey>) -> Self {
        let previous = previous.filter(|p| p.id() != current.id());
        Self { current, previous }
    }

    /// The key new rows are encrypted under.
    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// The key with `id`, if this keyring holds it.
    pub fn get(&self, id: &str) -> Option<&MasterKey> {
        std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .find(|k| k.id() == id)
    }

    /// The ids held, current first ("a1b2…, c3d4… (previous)").
    pub fn describe(&self) -> String {
        match &self.previous {
            Some(p) => format!("{} and {} (previous)", self.current.id(), p.id()),
            None => self.current.id().to_string(),
        }
    }

    /// The keys configured for this process: `TOLLGATE_MASTER_KEY` or
    /// `secrets.master_key_file` (not both), and optionally
    /// `TOLLGATE_MASTER_KEY_PREVIOUS` or `secrets.previous_master_key_file`.
    /// `Ok(None)` when no current key is configured (a previous key alone
    /// is an error: it would never be used).
    pub fn from_environment(config: &SecretsConfig) -> Result<Option<Self>, SecretsError> {
        Self::from_sources(config, |var| std::env::var(var).ok())
    }

    /// [`Keyring::from_environment`] with the environment given (tests).
    pub fn from_sources(
        config: &SecretsConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, SecretsError> {
        let current = one_key(
            env(MASTER_KEY_VAR),
            MASTER_KEY_VAR,
            config.master_key_file.as_deref(),
            "secrets.master_key_file",
        )?;
        let previous = one_key(
            env(PREVIOUS_MASTER_KEY_VAR),
            PREVIOUS_MASTER_KEY_VAR,
            config.previous_master_key_file.as_deref(),
            "secrets.previous_master_key_file",
        )?;
        match (current, previous) {
            (Some(current), previous) => Ok(Some(Self::new(current, previous))),
            (None, Some(_)) => Err(SecretsError::MasterKeyMissing {
                needed_for: "use a previous master key (it only decrypts beside a current one)"
                    .into(),
            }),
            (None, None) => Ok(None),
        }
    }
}

fn one_key(
    value: Option<String>,
    var: &str,
    file: Option<&str>,
    setting: &str,
) -> Result<Option<MasterKey>, SecretsError> {
    let value = value.map(Zeroizing::new);
    match (value, file) {
        (Some(_), Some(_)) => Err(SecretsError::MasterKeyTwice {
            var: var.to_string(),
            setting: setting.to_string(),
        }),
        (Some(text), None) => MasterKey::from_base64(&text, var).map(Some),
        (None, Some(path)) => MasterKey::from_file(path, setting).map(Some),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn config() -> SecretsConfig {
        SecretsConfig::default()
    }

    #[test]
    fn a_key_is_32_bytes_of_base64_and_its_id_is_stable() {
        let key = MasterKey::from_base64(KEY, MASTER_KEY_VAR).unwrap();
        assert_eq!(key.id().len(), 16);
        assert_eq!(
            key.id(),
            MasterKey::from_base64(&format!(" {KEY}\n"), "x")
                .unwrap()
                .id()
        );
        assert_eq!(key.to_base64().as_str(), KEY);
        assert!(!format!("{key:?}").contains(KEY));
    }

    #[test]
    fn malformed_keys_say_where_and_why() {
        let err = MasterKey::from_base64("not base64!", MASTER_KEY_VAR).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("TOLLGATE_MASTER_KEY is not a usable master key: not base64"),
            "{err}"
        );
        let err = MasterKey::from_base64("AAECAw==", MASTER_KEY_VAR).unwrap_err();
        assert_eq!(
            err.to_string(),
            "TOLLGATE_MASTER_KEY is not a usable master key: decodes to 4 bytes; a master key is exactly 32 bytes (base64 of 32 random bytes, e.g. `head -c 32 /dev/urandom | base64`)"
        );
    }

    #[test]
    fn the_keyring_comes_from_the_environment_or_files_not_both() {
        assert!(Keyring::from_sources(&config(), |_| None)
            .unwrap()
            .is_none());
        let ring = Keyring::from_sources(&config(), |v| (v == MASTER_KEY_VAR).then(|| KEY.into()))
            .unwrap()
            .unwrap();
        assert!(ring.get(ring.current().id()).is_some());
        let both = SecretsConfig {
            master_key_file: Some("/nonexistent".into()),
            ..config()
        };
        let err = Keyring::from_sources(&both, |v| (v == MASTER_KEY_VAR).then(|| KEY.into()))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("both TOLLGATE_MASTER_KEY and secrets.master_key_file"),
            "{err}"
        );
        let err = Keyring::from_sources(&both, |_| None).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "cannot read the master key file /nonexistent (secrets.master_key_file):"
            ),
            "{err}"
        );
        let err = Keyring::from_sources(&config(), |v| {
            (v == PREVIOUS_MASTER_KEY_VAR).then(|| KEY.into())
        })
        .unwrap_err();
        assert!(err.to_string().contains("TOLLGATE_MASTER_KEY"), "{err}");
    }

    #[test]
    fn a_key_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        std::fs::write(&path, format!("{KEY}\n")).unwrap();
        let with_file = SecretsConfig {
            master_key_file: Some(path.display().to_string()),
            previous_master_key_file: None,
        };
        let ring = Keyring::from_sources(&with_file, |_| None)
            .unwrap()
            .unwrap();
        assert_eq!(
            ring.current().id(),
            MasterKey::from_base64(KEY, "x").unwrap().id()
        );
    }
}
