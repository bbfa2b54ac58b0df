//! Signed checkpoints of a chain: the [`CheckpointRow`] stored in
//! `audit_checkpoints`, the exact message that is signed, the Ed25519
//! signing key (from configuration) and signature checks.
//!
//! A checkpoint covers the segment `from_seq..=to_seq` of one chain: the head
//! hash after `to_seq` and the RFC 6962 Merkle root of the segment's entry
//! hashes. Version 2 (written since the checkpoints are anchored in Kafka)
//! adds the root of the whole chain prefix `1..=to_seq` (`tree_root`), the
//! RFC 9162 consistency proof from the previous checkpoint's tree
//! (`from_seq - 1` leaves) to this one, and the org and team of the chain's
//! newest entry, so an anchored checkpoint says whose chain it is. The
//! signed message is the RFC 8785 canonical JSON of the members
//! [`signed_message`] lists; the consistency proof is not signed (it is
//! checked against the two signed roots). Version 1 rows are still verified.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::merkle;

/// One row of `audit_checkpoints`. Hashes, key and signature are lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clickhouse-rows", derive(clickhouse::Row))]
pub struct CheckpointRow {
    pub chain_id: String,
    pub from_seq: u64,
    pub to_seq: u64,
    pub head_hash: String,
    pub merkle_root: String,
    pub created_at_ms: u64,
    pub public_key: String,
    pub signature: String,
    /// 1: segment root only; 2: also `tree_root`, `consistency`, org and team.
    #[serde(default = "version_1")]
    pub v: u8,
    /// v2: RFC 6962 root of the entry hashes `1..=to_seq`; empty for v1.
    #[serde(default)]
    pub tree_root: String,
    /// v2: org of the chain's entry `to_seq`.
    #[serde(default)]
    pub org_id: String,
    /// v2: team of the chain's entry `to_seq`.
    #[serde(default)]
    pub team_id: String,
    /// v2: RFC 9162 consistency proof from tree size `from_seq - 1` to
    /// `to_seq` (hex hashes; empty when `from_seq` is 1).
    #[serde(default)]
    pub consistency: Vec<String>,
}

fn version_1() -> u8 {
    1
}

/// The version of the checkpoints the fold writes.
pub const CHECKPOINT_VERSION: u8 = 2;

/// The chain a checkpoint is cut for.
#[derive(Debug, Clone, Copy)]
pub struct ChainRef<'a> {
    pub chain_id: &'a str,
    pub org_id: &'a str,
    pub team_id: &'a str,
}

/// The bytes a checkpoint's signature covers.
pub fn signed_message(cp: &CheckpointRow) -> String {
    let object = if cp.v >= 2 {
        serde_json::json!({
            "chain_id": cp.chain_id,
            "created_at_ms": cp.created_at_ms,
            "from_seq": cp.from_seq,
            "head_hash": cp.head_hash,
            "merkle_root": cp.merkle_root,
            "org_id": cp.org_id,
            "public_key": cp.public_key,
            "team_id": cp.team_id,
            "to_seq": cp.to_seq,
            "tree_root": cp.tree_root,
            "type": "tollgate.audit.checkpoint",
            "v": cp.v,
        })
    } else {
        serde_json::json!({
        "chain_id": cp.chain_id,
        "created_at_ms": cp.created_at_ms,
        "from_seq": cp.from_seq,
        "head_hash": cp.head_hash,
        "merkle_root": cp.merkle_root,
        "public_key": cp.public_key,
        "to_seq": cp.to_seq,
        "type": "tollgate.audit.checkpoint",
        "v": 1,
        })
    };
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

    pub fn public_key_hex(&self) -> &str {
        &self.public_hex
    }

    /// Checkpoint `segment` (entry hashes of `from_seq..=to_seq`, in order)
    /// after `prefix` (the whole-chain tree of entries `1..from_seq`), which
    /// is advanced over the segment. `None` for an empty segment or one that
    /// does not start right after the prefix.
    pub fn checkpoint(
        &self,
        chain: ChainRef<'_>,
        from_seq: u64,
        segment: &[[u8; 32]],
        prefix: &mut merkle::Compact,
        created_at_ms: u64,
    ) -> Option<CheckpointRow> {
        let last = segment.last()?;
        if prefix.size() + 1 != from_seq {
            return None;
        }
        let consistency = merkle::consistency_proof(prefix, segment, prefix.size())?;
        segment.iter().for_each(|h| prefix.push(h));
        let mut cp = CheckpointRow {
            chain_id: chain.chain_id.to_string(),
            from_seq,
            to_seq: from_seq + segment.len() as u64 - 1,
            head_hash: hex::encode(last),
            merkle_root: hex::encode(merkle::root(segment)),
            created_at_ms,
            public_key: self.public_hex.clone(),
            signature: String::new(),
            v: CHECKPOINT_VERSION,
            tree_root: hex::encode(prefix.root()),
            org_id: chain.org_id.to_string(),
            team_id: chain.team_id.to_string(),
            consistency: consistency.iter().map(hex::encode).collect(),
        };
        cp.signature = self.sign(&signed_message(&cp));
        Some(cp)
    }

    /// Hex Ed25519 signature of `message` (an export manifest).
    pub fn sign(&self, message: &str) -> String {
        hex::encode(self.key.sign(message.as_bytes()).to_bytes())
    }
}

/// Parse a hex Ed25519 public key.
pub fn parse_public_key(hex_key: &str) -> Option<VerifyingKey> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_key.trim(), &mut bytes).ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// Why a signature by `public_key` over `message` does not hold, if it does
/// not (checked against `trusted` when given, else the named key).
pub fn check_message(
    message: &str,
    public_key: &str,
    signature: &str,
    trusted: Option<&VerifyingKey>,
) -> Result<(), String> {
    let Some(key) = trusted.copied().or_else(|| parse_public_key(public_key)) else {
        return Err(format!("public key {public_key:?} is not an Ed25519 key"));
    };
    if let Some(trusted) = trusted {
        if hex::encode(trusted.to_bytes()) != public_key {
            return Err(format!(
                "signed by key {public_key}, not by the trusted key {}",
                hex::encode(trusted.to_bytes())
            ));
        }
    }
    let mut sig = [0u8; 64];
    hex::decode_to_slice(signature, &mut sig)
        .map_err(|_| "signature is not 128 hex characters".to_string())?;
    key.verify(message.as_bytes(), &Signature::from_bytes(&sig))
        .map_err(|_| "signature does not verify".to_string())
}

/// Why a checkpoint's signature does not hold, if it does not.
pub fn check_signature(cp: &CheckpointRow, trusted: Option<&VerifyingKey>) -> Result<(), String> {
    if cp.v != 1 && cp.v != CHECKPOINT_VERSION {
        return Err(format!("unknown checkpoint version {}", cp.v));
    }
    check_message(&signed_message(cp), &cp.public_key, &cp.signature, trusted)
}

/// A checkpoint as one JSON object, as the anchor topic
/// (`tollgate.audit.checkpoints`) and an export carry it:: its columns plus `"type": "checkpoint"`
/// (the same object as an export's checkpoint line).
pub fn checkpoint_line(cp: &CheckpointRow) -> String {
    #[derive(Serialize)]
    struct Line<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(flatten)]
        cp: &'a CheckpointRow,
    }
    // A struct of strings and integers always serializes.
    serde_json::to_string(&Line {
        kind: "checkpoint",
        cp,
    })
    .unwrap_or_default()
}

/// Parse one anchored checkpoint (a [`checkpoint_line`]).
pub fn parse_checkpoint_line(text: &str) -> Result<CheckpointRow, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if value.get("type").and_then(|t| t.as_str()) != Some("checkpoint") {
        return Err("not a checkpoint line (`type` is not \"checkpoint\")".into());
    }
    serde_json::from_value(value).map_err(|e| format!("not a checkpoint: {e}"))
}

/// Every checkpoint of an anchor file (JSON lines from `tollgate audit
/// checkpoints export`; blank lines skipped); the error names the line.
pub fn parse_checkpoint_lines(text: &str) -> Result<Vec<CheckpointRow>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(parse_checkpoint_line(line).map_err(|why| format!("line {}: {why}", n + 1))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let signer = CheckpointSigner::from_hex_seed(&"07".repeat(32)).unwrap();
        let segment = [[1u8; 32], [2u8; 32], [3u8; 32]];
        let chain = ChainRef {
            chain_id: "team-a",
            org_id: "org-a",
            team_id: "team-a",
        };
        let mut prefix = merkle::Compact::new();
        (0..10).for_each(|i| prefix.push(&[i; 32]));
        let before = prefix.root();
        let cp = signer
            .checkpoint(chain, 11, &segment, &mut prefix, 1_000)
            .unwrap();
        assert_eq!(cp.v, 2);
        assert_eq!(cp.tree_root, hex::encode(prefix.root()));
        let proof: Vec<[u8; 32]> = cp
            .consistency
            .iter()
            .map(|h| super::super::entry::parse_hash(h).unwrap())
            .collect();
        assert!(merkle::verify_consistency(
            10,
            13,
            &before,
            &prefix.root(),
            &proof
        ));
        // A segment that does not follow the prefix is refused.
        assert!(signer
            .checkpoint(chain, 20, &segment, &mut prefix, 1_000)
            .is_none());
        assert_eq!((cp.from_seq, cp.to_seq), (11, 13));
        assert_eq!(cp.head_hash, hex::encode([3u8; 32]));
        let trusted = parse_public_key(signer.public_key_hex()).unwrap();
        assert_eq!(check_signature(&cp, Some(&trusted)), Ok(()));
        assert_eq!(check_signature(&cp, None), Ok(()));
        let mut forged = cp.clone();
        forged.to_seq = 12;
        assert!(check_signature(&forged, Some(&trusted)).is_err());
        let mut forged = cp.clone();
        forged.tree_root = hex::encode([9u8; 32]);
        assert!(check_signature(&forged, Some(&trusted)).is_err());
        let mut downgraded = cp.clone();
        downgraded.v = 1;
        assert!(check_signature(&downgraded, Some(&trusted)).is_err());
        let other = CheckpointSigner::from_hex_seed(&"08".repeat(32)).unwrap();
        let mut prefix = merkle::Compact::new();
        (0..10).for_each(|i| prefix.push(&[i; 32]));
        let foreign = other
            .checkpoint(chain, 11, &segment, &mut prefix, 1_000)
            .unwrap();
        assert!(check_signature(&foreign, Some(&trusted))
            .unwrap_err()
            .contains("not by the trusted key"));
        assert!(signed_message(&cp).starts_with("{\"chain_id\":\"team-a\",\"created_at_ms\":1000,"));
        assert!(CheckpointSigner::from_hex_seed("zz").is_err());
    }
}
