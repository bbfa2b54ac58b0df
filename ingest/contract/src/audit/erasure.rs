//! The record of an erasure (GDPR art. 17) in the audit chain: the
//! `admin.personal_data.erased` event that `tollgate erase` appends to every
//! chain it erases entries of, naming those entries by position and the
//! rows erased per table — never the erased data itself. A verifier holds
//! every erased entry of a chain (a version 2 entry without its salt) to an
//! erasure record of the same chain naming its seq (`docs/audit.md`,
//! "Erasure"), so an erasure nobody recorded is reported.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::admin::admin_event;
use crate::event::Event;

/// `admin.personal_data.erased`: entries of a chain whose personal fields
/// were erased, and why.
pub const KIND_ERASURE: &str = "admin.personal_data.erased";

/// What one chain's erasure record says (the `admin` object of the event,
/// besides `actor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureRecord {
    /// One id per erasure request, shared by the records of every chain it
    /// touched.
    pub erasure_id: Uuid,
    /// Why, as the requester gave it (a ticket, "GDPR art. 17 request ...").
    pub reason: String,
    /// The chain whose entries are named.
    pub chain_id: String,
    /// The seqs of that chain whose personal fields are erased.
    pub seqs: Vec<u64>,
    /// Their entry hashes (hex), in the order of `seqs`: what still verifies.
    pub entry_hashes: Vec<String>,
    /// Rows holding the person's data, per table, when the erasure began,
    /// over every chain (all erased in that table; this chain's entries
    /// are `seqs`).
    pub tables: BTreeMap<String, u64>,
}

/// The event recording `record` for `org_id`, keyed by `team_id`, by
/// `actor`: it joins the org's chain of the team, or the chain `record`
/// names when that is the team's chain from before chains were per org
/// (`super::chain_id::chain_for`).
pub fn erasure_event(actor: &str, org_id: &str, team_id: &str, record: &ErasureRecord) -> Event {
    let payload = serde_json::to_value(record).unwrap_or_default();
    let mut event = admin_event(KIND_ERASURE, actor, payload);
    event.org_id = org_id.to_string();
    event.team_id = team_id.to_string();
    event
}

/// The entries an entry records as erased, each as `(seq, entry hash)`
/// (hex, lowercase): those of an `admin.personal_data.erased` entry naming
/// its own chain, each seq paired with the entry hash the record gives for
/// it; empty for any other entry. A verifier counts an erased entry as
/// recorded only when a record names its seq *and* its stored hash, so a
/// record that names a seq with any other hash (one forged without reading
/// the chain) excuses nothing.
pub fn recorded_erasures(kind: &str, chain_id: &str, event_json: &str) -> Vec<(u64, String)> {
    if kind != KIND_ERASURE {
        return Vec::new();
    }
    let Ok(event) = serde_json::from_str::<serde_json::Value>(event_json) else {
        return Vec::new();
    };
    let admin = &event["admin"];
    if admin["chain_id"].as_str() != Some(chain_id) {
        return Vec::new();
    }
    let (Some(seqs), Some(hashes)) = (admin["seqs"].as_array(), admin["entry_hashes"].as_array())
    else {
        return Vec::new();
    };
    seqs.iter()
        .zip(hashes)
        .filter_map(|(seq, hash)| Some((seq.as_u64()?, hash.as_str()?.to_ascii_lowercase())))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::validate::{parse_event, Limits};
    use chrono::Utc;

    #[test]
    fn record_passes_the_contract_and_reads_back() {
        let record = ErasureRecord {
            erasure_id: Uuid::nil(),
            reason: "ticket 7".into(),
            chain_id: "team-a".into(),
            seqs: vec![2, 5],
            entry_hashes: vec!["ab".repeat(32), "cd".repeat(32)],
            tables: BTreeMap::from([("calls".to_string(), 2)]),
        };
        let event = erasure_event("key:k1", "acme", "team-a", &record);
        assert_eq!(event.partition_key(), "team-a");
        assert_eq!(event.user_id, "");
        let value = serde_json::to_value(&event).unwrap();
        let parsed = parse_event(value, Utc::now(), &Limits::default()).unwrap();
        let json = serde_jcs::to_string(&parsed).unwrap();
        assert_eq!(
            recorded_erasures(KIND_ERASURE, "team-a", &json),
            vec![(2, "ab".repeat(32)), (5, "cd".repeat(32))]
        );
        assert!(recorded_erasures(KIND_ERASURE, "team-b", &json).is_empty());
        assert!(recorded_erasures("admin.price.added", "team-a", &json).is_empty());
    }
}
