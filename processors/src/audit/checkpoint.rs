//! Signed checkpoints of a chain: the [`CheckpointRow`] stored in
//! `audit_checkpoints`, the exact message that is signed, the Ed25519
//! signing key (from configuration) and signature checks.
//!
//! A checkpoint covers the segment `from_seq..=to_seq` of one chain: the head
//! hash after `to_seq` and the RFC 6962 Merkle root of the segment's entry
//! hashes. The signed message is the RFC 8785 canonical JSON of
//! `{chain_id, created_at_ms, from_seq, head_hash, merkle_root, public_key,
//! to_seq, type: "tollgate.audit.checkpoint", v: 1}`.

use std::path::Path;

use clickhouse::Row;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::merkle;

/// One row of `audit_checkpoints`. Hashes, key and signature are lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct CheckpointRow {
    pub chain_id: String,
    pub from_seq: u64,
    pub to_seq: u64,
    pub head_hash: String,
    pub merkle_root: String,
    pub created_at_ms: u64,
    pub public_key: String,
    pub signature: String,
}

/// The bytes a checkpoint's signature covers.
pub fn signed_message(cp: &CheckpointRow) -> String {
    let object = serde_json::json!({
        "chain_id": cp.chain_id,
        "created_at_ms": cp.created_at_ms,
        "from_seq": cp.from_seq,
        "head_hash": cp.head_hash,
        "merkle_root": cp.merkle_root,
        "public_key": cp.public_key,
        "to_seq": cp.to_seq,
        "type": "tollgate.audit.checkpoint",
        "v": 1,
    });
    // A map of strings and integers always serializes.
    serde_jcs::to_string(&object).unwrap_or_default()
}

/// The processor's checkpoint signer.
#[derive(Clone)]
pub struct CheckpointSigner {
    key: SigningKey,
    public_hex: String,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("public_key", &self.public_hex)
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// From a 32-byte seed in hex (64 characters, surrounding whitespace ignored).
    pub fn from_hex_seed(seed: &str) -> Result<Self, String> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(seed.trim(), &mut bytes)
            .map_err(|e| format!("not a 64-character hex Ed25519 seed: {e}"))?;
        Ok(Self::from_seed(&bytes))
    }

    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let public_hex = hex::encode(key.verifying_key().to_bytes());
        Self { key, public_hex }
    }

    /// From `[audit] signing_key` (hex seed) or `signing_key_file` (a file
    /// holding the hex seed); `Ok(None)` when neither is set.
    pub fn from_config(seed: Option<&str>, file: Option<&Path>) -> Result<Option<Self>, String> {
        match (seed, file) {
            (Some(_), Some(_)) => {
                Err("set only one of audit.signing_key and audit.signing_key_file".into())
            }
            (Some(seed), None) => Self::from_hex_seed(seed)
                .map(Some)
                .map_err(|e| format!("audit.signing_key: {e}")),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("audit.signing_key_file {}: {e}", path.display()))?;
                Self::from_hex_seed(&text)
                    .map(Some)
                    .map_err(|e| format!("audit.signing_key_file {}: {e}", path.display()))
            }
            (None, None) => Ok(None),
        }
    }

    pub fn public_key_hex(&self) -> &str {
        &self.public_hex
    }

    /// Checkpoint `segment` (entry hashes of `from_seq..=to_seq`, in order).
    pub fn checkpoint(
        &self,
        chain_id: &str,
        from_seq: u64,
        segment: &[[u8; 32]],
        created_at_ms: u64,
    ) -> Option<CheckpointRow> {
        let last = segment.last()?;
        let mut cp = CheckpointRow {
            chain_id: chain_id.to_string(),
            from_seq,
            to_seq: from_seq + segment.len() as u64 - 1,
            head_hash: hex::encode(last),
            merkle_root: hex::encode(merkle::root(segment)),
            created_at_ms,
            public_key: self.public_hex.clone(),
            signature: String::new(),
        };
        cp.signature = hex::encode(self.key.sign(signed_message(&cp).as_bytes()).to_bytes());
        Some(cp)
    }
}

/// Parse a hex Ed25519 public key.
pub fn parse_public_key(hex_key: &str) -> Option<VerifyingKey> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_key.trim(), &mut bytes).ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// Why a checkpoint's signature does not hold, if it does not.
pub fn check_signature(cp: &CheckpointRow, trusted: Option<&VerifyingKey>) -> Result<(), String> {
    let Some(key) = trusted
        .copied()
        .or_else(|| parse_public_key(&cp.public_key))
    else {
        return Err(format!(
            "public key {:?} is not an Ed25519 key",
            cp.public_key
        ));
    };
    if let Some(trusted) = trusted {
        if hex::encode(trusted.to_bytes()) != cp.public_key {
            return Err(format!(
                "signed by key {}, not by the trusted key {}",
                cp.public_key,
                hex::encode(trusted.to_bytes())
            ));
        }
    }
    let mut sig = [0u8; 64];
    hex::decode_to_slice(&cp.signature, &mut sig)
        .map_err(|_| "signature is not 128 hex characters".to_string())?;
    key.verify(signed_message(cp).as_bytes(), &Signature::from_bytes(&sig))
        .map_err(|_| "signature does not verify".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let signer = CheckpointSigner::from_hex_seed(&"07".repeat(32)).unwrap();
        let segment = [[1u8; 32], [2u8; 32], [3u8; 32]];
        let cp = signer.checkpoint("team-a", 11, &segment, 1_000).unwrap();
        assert_eq!((cp.from_seq, cp.to_seq), (11, 13));
        assert_eq!(cp.head_hash, hex::encode([3u8; 32]));
        let trusted = parse_public_key(signer.public_key_hex()).unwrap();
        assert_eq!(check_signature(&cp, Some(&trusted)), Ok(()));
        assert_eq!(check_signature(&cp, None), Ok(()));
        let mut forged = cp.clone();
        forged.to_seq = 12;
        assert!(check_signature(&forged, Some(&trusted)).is_err());
        let other = CheckpointSigner::from_hex_seed(&"08".repeat(32)).unwrap();
        let foreign = other.checkpoint("team-a", 11, &segment, 1_000).unwrap();
        assert!(check_signature(&foreign, Some(&trusted))
            .unwrap_err()
            .contains("not by the trusted key"));
        assert!(signed_message(&cp).starts_with("{\"chain_id\":\"team-a\",\"created_at_ms\":1000,"));
        assert!(CheckpointSigner::from_hex_seed("zz").is_err());
    }
}
