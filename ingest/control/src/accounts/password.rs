//! Passwords: argon2id with the `argon2` crate's defaults (RustCrypto,
//! the OWASP-recommended parameters), stored in PHC format, hashed and
//! checked off the async threads (a hash costs tens of milliseconds).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::TryRngCore;

use crate::error::ControlError;

/// The shortest password accepted.
pub const MIN_LEN: usize = 12;
/// The longest (argon2 takes any length; this bounds the work per request).
pub const MAX_LEN: usize = 1024;

/// Whether `password` is acceptable, or why not.
pub fn check_strength(password: &str) -> Result<(), ControlError> {
    let len = password.chars().count();
    if len < MIN_LEN {
        return Err(ControlError::InvalidInput {
            field: "password",
            reason: format!("must be at least {MIN_LEN} characters (got {len})"),
        });
    }
    if password.len() > MAX_LEN {
        return Err(ControlError::InvalidInput {
            field: "password",
            reason: format!("must be at most {MAX_LEN} bytes"),
        });
    }
    Ok(())
}

/// The PHC string of `password` under a fresh salt.
pub async fn hash(password: &str) -> Result<String, ControlError> {
    let password = password.to_string();
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        rand::rngs::OsRng
            .try_fill_bytes(&mut salt)
            .map_err(|e| ControlError::Internal(format!("operating system RNG failed: {e}")))?;
        let salt = SaltString::encode_b64(&salt)
            .map_err(|e| ControlError::Internal(format!("encoding a salt: {e}")))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ControlError::Internal(format!("hashing a password: {e}")))
    })
    .await
    .map_err(|e| ControlError::Internal(format!("hashing a password: {e}")))?
}

/// Whether `password` matches the stored PHC string `stored`.
pub async fn verify(password: &str, stored: &str) -> Result<bool, ControlError> {
    if password.len() > MAX_LEN {
        return Ok(false);
    }
    let password = password.to_string();
    let stored = stored.to_string();
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&stored).map_err(|e| {
            ControlError::Internal(format!("a stored password hash is unreadable: {e}"))
        })?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|e| ControlError::Internal(format!("checking a password: {e}")))?
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let stored = hash("correct horse battery").await.unwrap();
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(verify("correct horse battery", &stored).await.unwrap());
        assert!(!verify("correct horse batterY", &stored).await.unwrap());
        assert_ne!(
            stored,
            hash("correct horse battery").await.unwrap(),
            "salted"
        );
    }

    #[test]
    fn short_passwords_are_refused_naming_the_field() {
        let err = check_strength("short").unwrap_err().to_string();
        assert!(
            err.contains("password") && err.contains("at least 12"),
            "{err}"
        );
        assert!(check_strength("twelve chars").is_ok());
    }
}
