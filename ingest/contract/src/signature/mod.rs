//! Error signatures: which failure pattern one failed call belongs to.
//!
//! A pure function of the error as the call event records it (provider, HTTP
//! status, `error.type`, `error.message`), so the processors' error-pattern
//! fold and the proxy (looking up the learned recovery for the error it just
//! got) compute the same id, on every replica, after every restart, whatever
//! order events arrive in. `docs/error-patterns.md` lists the masking rules,
//! the exact inputs of the id and why.
//!
//! - `mask`: message -> template + masked variable parts;
//! - `signature`: the template and the deterministic id;
//! - `drain`: a Drain-style tree that proposes merges of signatures whose
//!   templates differ only where masking could not tell a variable;
//! - `merge`: applying those merges, order-independently.

pub mod drain;
pub mod mask;
pub mod merge;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::event::ProviderError;

pub use drain::{DrainConfig, DrainConfigError, DrainTree};
pub use mask::{mask, Masked, VarKind, Variable};
pub use merge::{apply, CanonicalIds, Merge};

/// Bumped whenever a masking rule or the id's inputs change: ids are stored,
/// and a new rule set must not silently mix with ids of the old one.
pub const SIGNATURE_VERSION: &str = "tollgate.signature.v1";

/// The id of one failure pattern: the first 8 bytes (big-endian) of a
/// SHA-256 over the pattern's class and template. 64 bits keep a birthday
/// collision below one in a million up to six million distinct patterns;
/// it is a `UInt64` column in ClickHouse and 16 hex digits in JSON (a JSON
/// number would lose precision in a browser).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SignatureId(pub u64);

impl fmt::Display for SignatureId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A signature id that is not 16 hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signature id {0:?} is not 16 hexadecimal digits")]
pub struct BadSignatureId(pub String);

impl FromStr for SignatureId {
    type Err = BadSignatureId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BadSignatureId(s.to_string()));
        }
        u64::from_str_radix(s, 16)
            .map(SignatureId)
            .map_err(|_| BadSignatureId(s.to_string()))
    }
}

impl Serialize for SignatureId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SignatureId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One failed call's error, as the call event records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorInput<'a> {
    /// `Call::provider`: `openai`, `anthropic`, `google`, `bedrock`, ...
    pub provider: &'a str,
    /// `Call::http_status`; 0 when no answer came (timeout, connect error).
    pub http_status: u16,
    /// `ProviderError::error_type`: the provider's error type, or its code
    /// when it has no type; the proxy's own kinds (`timeout`,
    /// `connect_error`, `upstream_disconnected`, `http_503`) otherwise.
    pub error_type: &'a str,
    pub message: &'a str,
}

impl<'a> ErrorInput<'a> {
    /// The input for a call event's error.
    pub fn from_call(provider: &'a str, http_status: u16, error: &'a ProviderError) -> Self {
        Self {
            provider,
            http_status,
            error_type: &error.error_type,
            message: &error.message,
        }
    }
}

/// The pattern one error belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub id: SignatureId,
    /// The inputs of the id, normalised as they were hashed.
    pub provider: String,
    pub http_status: u16,
    pub error_type: String,
    pub template: String,
    /// This message's masked parts, in order (not part of the id).
    pub variables: Vec<Variable>,
}

impl Signature {
    /// The class a signature belongs to: signatures are only ever merged
    /// within one class (`drain`), so a learned merge never joins two
    /// providers, statuses or error types.
    pub fn class(&self) -> (&str, u16, &str) {
        (&self.provider, self.http_status, &self.error_type)
    }
}

/// The signature of one error: mask the message, then hash the class and
/// the template.
pub fn signature(input: &ErrorInput<'_>) -> Signature {
    let Masked {
        template,
        variables,
    } = mask(input.message);
    let (provider, error_type) = normalised_class(input.provider, input.error_type);
    let id = signature_id(&provider, input.http_status, error_type, &template);
    Signature {
        id,
        provider,
        http_status: input.http_status,
        error_type: error_type.to_string(),
        template,
        variables,
    }
}

/// The id [`signature`] gives an error whose message masks to `template`,
/// for a message known in advance (masked once, not on every call): the
/// provider and error type are normalised as `signature` normalises them.
pub fn signature_of_template(
    provider: &str,
    http_status: u16,
    error_type: &str,
    template: &str,
) -> SignatureId {
    let (provider, error_type) = normalised_class(provider, error_type);
    signature_id(&provider, http_status, error_type, template)
}

/// The provider (trimmed, lower-case) and error type (trimmed) as a
/// signature's id hashes them.
fn normalised_class<'a>(provider: &str, error_type: &'a str) -> (String, &'a str) {
    (provider.trim().to_ascii_lowercase(), error_type.trim())
}

/// The id of (provider, exact HTTP status, error type, template), each
/// length-prefixed so that no two different tuples hash the same bytes.
/// The provider is expected lower-case and the error type trimmed, as
/// `signature` passes them.
pub fn signature_id(
    provider: &str,
    http_status: u16,
    error_type: &str,
    template: &str,
) -> SignatureId {
    let mut hasher = Sha256::new();
    let status = http_status.to_string();
    for field in [
        SIGNATURE_VERSION,
        provider,
        status.as_str(),
        error_type,
        template,
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    SignatureId(u64::from_be_bytes(first))
}

#[cfg(test)]
mod tests;
