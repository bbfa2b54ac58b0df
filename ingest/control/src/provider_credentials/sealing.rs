//! Sealing one provider credential: AES-256-GCM under a master key, with a
//! fresh random 96-bit nonce per encryption and the provider's name as
//! associated data, so a ciphertext copied onto another provider's row
//! does not decrypt. The row keeps the id of the key it was sealed under.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::master_key::{Keyring, MasterKey};
use super::SecretsError;

/// Bytes of an AES-GCM nonce (96 bits, as NIST SP 800-38D recommends).
pub const NONCE_BYTES: usize = 12;

/// A credential as stored: what it was sealed under and the sealed bytes
/// (ciphertext with its 16-byte tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// The associated data binding a ciphertext to its provider.
fn associated_data(provider: &str) -> Vec<u8> {
    let mut aad = b"tollgate provider credential v1\0".to_vec();
    aad.extend_from_slice(provider.as_bytes());
    aad
}

fn cipher(key: &MasterKey) -> Aes256Gcm {
    Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key.bytes()))
}

/// Seal `credential` of `provider` under `key`.
pub fn seal(
    key: &MasterKey,
    provider: &str,
    credential: &SecretString,
) -> Result<Sealed, SecretsError> {
    use rand::TryRngCore;
    let mut nonce = [0u8; NONCE_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut nonce)
        .map_err(|err| SecretsError::Random(err.to_string()))?;
    let aad = associated_data(provider);
    let ciphertext = cipher(key)
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: credential.expose_secret().as_bytes(),
                aad: &aad,
            },
        )
        .map_err(|_| SecretsError::Random("AES-GCM refused to encrypt".into()))?;
    Ok(Sealed {
        key_id: key.id().to_string(),
        nonce: nonce.to_vec(),
        ciphertext,
    })
}

/// Open the credential of `provider` with the key of `keyring` it was
/// sealed under.
pub fn open(
    keyring: &Keyring,
    provider: &str,
    sealed: &Sealed,
) -> Result<SecretString, SecretsError> {
    let key = keyring
        .get(&sealed.key_id)
        .ok_or_else(|| SecretsError::WrongMasterKey {
            provider: provider.to_string(),
            key_id: sealed.key_id.clone(),
            held: keyring.describe(),
        })?;
    let altered = || SecretsError::Altered {
        provider: provider.to_string(),
        key_id: sealed.key_id.clone(),
    };
    let nonce: [u8; NONCE_BYTES] = sealed.nonce.as_slice().try_into().map_err(|_| altered())?;
    let aad = associated_data(provider);
    let plain = Zeroizing::new(
        cipher(key)
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| altered())?,
    );
    let text = std::str::from_utf8(&plain).map_err(|_| altered())?;
    Ok(SecretString::from(text))
}

/// What lists show of a credential: `sha256:` and the first 16 hex digits
/// of its SHA-256, enough to tell which credential is stored (compare
/// `printf %s "$KEY" | sha256sum | cut -c1-16`), nothing to use.
pub fn fingerprint(credential: &SecretString) -> String {
    let digest = Sha256::digest(credential.expose_secret().as_bytes());
    format!("sha256:{}", &hex::encode(digest)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_bytes([byte; 32])
    }

    fn secret() -> SecretString {
        SecretString::from("sk-live-0123456789abcdef")
    }

    #[test]
    fn what_is_sealed_opens_with_the_same_key_and_provider() {
        let ring = Keyring::new(key(1), None);
        let sealed = seal(ring.current(), "openai", &secret()).unwrap();
        assert_eq!(sealed.key_id, ring.current().id());
        assert_eq!(sealed.nonce.len(), 12);
        // The plaintext is nowhere in what is stored; the tag is.
        assert_eq!(sealed.ciphertext.len(), secret().expose_secret().len() + 16);
        let needle = secret().expose_secret().as_bytes().to_vec();
        assert!(!sealed.ciphertext.windows(needle.len()).any(|w| w == needle));
        let opened = open(&ring, "openai", &sealed).unwrap();
        assert_eq!(opened.expose_secret(), secret().expose_secret());
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let k = key(1);
        let a = seal(&k, "openai", &secret()).unwrap();
        let b = seal(&k, "openai", &secret()).unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn tampering_with_ciphertext_nonce_or_provider_is_an_error() {
        let ring = Keyring::new(key(1), None);
        let sealed = seal(ring.current(), "openai", &secret()).unwrap();
        let expected = format!(
            "cannot decrypt provider openai's credential: authentication failed under key id {} (the stored row was altered, or belongs to another provider)",
            ring.current().id()
        );
        let mut flipped = sealed.clone();
        flipped.ciphertext[3] ^= 1;
        assert_eq!(
            open(&ring, "openai", &flipped).unwrap_err().to_string(),
            expected
        );
        let mut tag = sealed.clone();
        let last = tag.ciphertext.len() - 1;
        tag.ciphertext[last] ^= 0x80;
        assert!(open(&ring, "openai", &tag).is_err());
        let mut nonce = sealed.clone();
        nonce.nonce[0] ^= 1;
        assert_eq!(
            open(&ring, "openai", &nonce).unwrap_err().to_string(),
            expected
        );
        let mut short = sealed.clone();
        short.nonce.pop();
        assert!(open(&ring, "openai", &short).is_err());
        // Moved onto another provider's row: the associated data differs.
        let err = open(&ring, "anthropic", &sealed).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "cannot decrypt provider anthropic's credential: authentication failed"
            ),
            "{err}"
        );
        // A row claiming another key id that this keyring holds fails too.
        let other = Keyring::new(key(2), Some(key(1)));
        let mut relabelled = sealed.clone();
        relabelled.key_id = key(2).id().to_string();
        assert!(open(&other, "openai", &relabelled).is_err());
    }

    #[test]
    fn a_row_under_a_key_not_held_names_the_key_ids() {
        let sealed = seal(&key(1), "openai", &secret()).unwrap();
        let ring = Keyring::new(key(2), None);
        assert_eq!(
            open(&ring, "openai", &sealed).unwrap_err().to_string(),
            format!(
                "cannot decrypt provider openai's credential: wrong master key (the row is under key id {}; this process holds key id {})",
                key(1).id(),
                key(2).id()
            )
        );
        // With the old key as the previous one it opens.
        let rotating = Keyring::new(key(2), Some(key(1)));
        assert_eq!(
            open(&rotating, "openai", &sealed).unwrap().expose_secret(),
            secret().expose_secret()
        );
    }

    #[test]
    fn the_fingerprint_is_a_prefix_of_the_sha256() {
        let f = fingerprint(&SecretString::from("abc"));
        assert_eq!(f, "sha256:ba7816bf8f01cfea");
    }
}
