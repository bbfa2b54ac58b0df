//! Which hash chain an event is appended to.
//!
//! A chain belongs to one org: its id is `<org>/<key>`, the org
//! percent-encoded (`%` and `/`) so it ends at the first `/`, and the key the
//! event's Kafka message key (its team id), or `~partition-<p>` for a message
//! without one. Events are keyed by team, so every event of one org's team
//! lands on one partition: each chain still has exactly one writer, the
//! consumer owning that partition, and no chain holds two orgs' entries.
//!
//! Chains written before chains were per org are named by the key alone
//! ([`legacy_chain_id`]): two orgs using one team id shared such a chain.
//! They are left as they are (they verify and export as before) and take no
//! new entries, except the record of an erasure of their own entries, which
//! must sit in the chain it names (see [`chain_for`]). A team id holding a
//! `/` gave an old chain the very id a new one may get (old `acme/alpha` of
//! any org, new `acme`'s team `alpha`); `docs/deployment.md` says how to
//! find such chains before upgrading.

use super::erasure::KIND_ERASURE;
use crate::Event;

/// The chain of org `org`'s events with message key `key` (`None` or empty:
/// a message without a key, on `partition`).
pub fn chain_id(org: &str, key: Option<&[u8]>, partition: i32) -> String {
    // Built in one allocation: the audit fold names a chain per event.
    let mut id = String::with_capacity(org.len() + key.map_or(16, <[u8]>::len) + 1);
    for c in org.chars() {
        match c {
            '%' => id.push_str("%25"),
            '/' => id.push_str("%2F"),
            c => id.push(c),
        }
    }
    id.push('/');
    match key {
        Some(k) if !k.is_empty() => id.push_str(&String::from_utf8_lossy(k)),
        _ => {
            id.push_str("~partition-");
            id.push_str(&partition.to_string());
        }
    }
    id
}

/// The chain of team `team`'s events of org `org` (events are keyed by
/// team).
pub fn team_chain_id(org: &str, team: &str) -> String {
    chain_id(org, Some(team.as_bytes()), 0)
}

/// The id a chain of key `key` had before chains were per org: the key
/// itself, or `~partition-<p>`.
pub fn legacy_chain_id(key: Option<&[u8]>, partition: i32) -> String {
    match key {
        Some(k) if !k.is_empty() => String::from_utf8_lossy(k).into_owned(),
        _ => format!("~partition-{partition}"),
    }
}

/// The chain `event` (message key `key`, on `partition`) is appended to: its
/// org's chain of the key, except that the record of an erasure of a
/// chain's entries goes to the chain it names when that is this key's
/// chain from before chains were per org (the one other chain written from
/// this key's partition, so the chain keeps a single writer).
pub fn chain_for(event: &Event, key: Option<&[u8]>, partition: i32) -> String {
    if event.kind.as_str() == KIND_ERASURE {
        let named = event
            .admin
            .as_ref()
            .and_then(|a| a.get("chain_id"))
            .and_then(serde_json::Value::as_str);
        if let Some(named) = named {
            if named == legacy_chain_id(key, partition) {
                return named.to_string();
            }
        }
    }
    chain_id(&event.org_id, key, partition)
}

/// Whether an event of org `org` and team `team` reaches chain `chain`: its
/// org's chain of the team, or the team's chain from before chains were per
/// org. Erasure records an erasure only in chains it can reach.
pub fn reaches(org: &str, team: &str, chain: &str) -> bool {
    chain == team || chain == team_chain_id(org, team)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::admin::admin_event;

    #[test]
    fn chains_are_per_org_and_cannot_collide() {
        assert_eq!(chain_id("acme", Some(b"alpha"), 3), "acme/alpha");
        assert_ne!(
            chain_id("acme", Some(b"alpha"), 0),
            chain_id("globex", Some(b"alpha"), 0)
        );
        // The org ends at the first `/`: an org spelling one cannot pose as
        // another org's team.
        assert_eq!(chain_id("a/b", Some(b"c"), 0), "a%2Fb/c");
        assert_ne!(
            chain_id("a/b", Some(b"c"), 0),
            chain_id("a", Some(b"b/c"), 0)
        );
        assert_eq!(chain_id("100%", Some(b"x"), 0), "100%25/x");
        assert_eq!(chain_id("acme", None, 2), "acme/~partition-2");
        assert_eq!(chain_id("acme", Some(b""), 2), "acme/~partition-2");
        assert_eq!(team_chain_id("acme", "alpha"), "acme/alpha");
        assert_eq!(legacy_chain_id(Some(b"alpha"), 1), "alpha");
        assert_eq!(legacy_chain_id(None, 1), "~partition-1");
    }

    #[test]
    fn an_erasure_record_goes_to_the_legacy_chain_it_names_and_nowhere_else() {
        let mut erasure = admin_event(
            KIND_ERASURE,
            "cli",
            serde_json::json!({"chain_id": "alpha", "seqs": [1]}),
        );
        erasure.org_id = "acme".into();
        erasure.team_id = "alpha".into();
        assert_eq!(chain_for(&erasure, Some(b"alpha"), 0), "alpha");
        // Naming another key's chain (another partition's writer) is not
        // followed.
        erasure.admin = Some(serde_json::json!({"chain_id": "beta", "seqs": [1]}));
        assert_eq!(chain_for(&erasure, Some(b"alpha"), 0), "acme/alpha");
        erasure.admin = Some(serde_json::json!({"chain_id": "acme/alpha", "seqs": [1]}));
        assert_eq!(chain_for(&erasure, Some(b"alpha"), 0), "acme/alpha");
        // Any other kind goes to its org's chain even when it names one.
        let mut other = admin_event(
            "admin.budget.set",
            "cli",
            serde_json::json!({"chain_id": "alpha"}),
        );
        other.org_id = "acme".into();
        assert_eq!(chain_for(&other, Some(b"alpha"), 0), "acme/alpha");
        assert!(reaches("acme", "alpha", "alpha"));
        assert!(reaches("acme", "alpha", "acme/alpha"));
        assert!(!reaches("acme", "alpha", "globex/alpha"));
        assert!(!reaches("acme", "alpha", "~partition-0"));
    }
}
