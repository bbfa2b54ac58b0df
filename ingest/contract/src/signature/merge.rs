//! Learned merges and their order-independent application.
//!
//! The Drain tree (`drain`) learns in arrival order, so two replicas can
//! learn different things at different times. It therefore never renames a
//! signature itself: it proposes `Merge` records, which the fold stores in a
//! table every replica reads. A merged group's canonical id is the smallest
//! id in it, and its template the position-wise join of its members'
//! templates; both are functions of the *set* of merges (connected
//! components, a minimum and a join are all indifferent to order and
//! duplicates), so replicas holding the same merges agree on every id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::SignatureId;

/// The token standing for "any token" in a merged template.
pub const WILDCARD: &str = "<*>";

/// Signature `from` is the same pattern as `into`; `template` covers both.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Merge {
    pub from: SignatureId,
    pub into: SignatureId,
    pub template: String,
}

/// The position-wise join of two token sequences of equal length: equal
/// tokens stay, different ones become `<*>`. Commutative, associative and
/// idempotent, so a group's template does not depend on merge order.
pub(crate) fn join_tokens<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<&'a str> {
    a.iter()
        .zip(b)
        .map(|(x, y)| if x == y { *x } else { WILDCARD })
        .collect()
}

/// Every id mentioned by a set of merges, resolved to its group's smallest
/// id, with each group's template.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CanonicalIds {
    canonical: BTreeMap<SignatureId, SignatureId>,
    templates: BTreeMap<SignatureId, String>,
}

impl CanonicalIds {
    pub fn new(merges: &[Merge]) -> Self {
        // Union-find whose root is always the smallest id of its set.
        let mut parent: BTreeMap<SignatureId, SignatureId> = BTreeMap::new();
        fn root(parent: &mut BTreeMap<SignatureId, SignatureId>, id: SignatureId) -> SignatureId {
            let mut r = id;
            while let Some(&p) = parent.get(&r) {
                if p == r {
                    break;
                }
                r = p;
            }
            // Path compression keeps later look-ups short.
            let mut at = id;
            while at != r {
                let next = parent.get(&at).copied().unwrap_or(r);
                parent.insert(at, r);
                at = next;
            }
            r
        }
        for m in merges {
            parent.entry(m.from).or_insert(m.from);
            parent.entry(m.into).or_insert(m.into);
            let (a, b) = (root(&mut parent, m.from), root(&mut parent, m.into));
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            parent.insert(high, low);
        }
        let ids: Vec<SignatureId> = parent.keys().copied().collect();
        let canonical: BTreeMap<SignatureId, SignatureId> = ids
            .into_iter()
            .map(|id| (id, root(&mut parent, id)))
            .collect();

        // A group's template: the join of its merges' templates. The tree
        // only merges templates of one token count; should a stored merge
        // disagree, only the shortest templates count, so the answer is
        // still a function of the set.
        let mut groups: BTreeMap<SignatureId, Vec<Vec<&str>>> = BTreeMap::new();
        for m in merges {
            if let Some(&group) = canonical.get(&m.from) {
                groups
                    .entry(group)
                    .or_default()
                    .push(m.template.split_whitespace().collect());
            }
        }
        let templates = groups
            .into_iter()
            .filter_map(|(group, members)| {
                let shortest = members.iter().map(Vec::len).min()?;
                let joined = members
                    .iter()
                    .filter(|t| t.len() == shortest)
                    .cloned()
                    .reduce(|a, b| join_tokens(&a, &b))?;
                Some((group, joined.join(" ")))
            })
            .collect();
        Self {
            canonical,
            templates,
        }
    }

    /// The canonical id of `id`: the smallest id merged with it, or itself.
    pub fn canonical(&self, id: SignatureId) -> SignatureId {
        self.canonical.get(&id).copied().unwrap_or(id)
    }

    /// The merged template of the group `id` belongs to, if it was merged.
    pub fn template(&self, id: SignatureId) -> Option<&str> {
        self.templates.get(&self.canonical(id)).map(String::as_str)
    }
}

/// The canonical id of `id` under `merges`. Builds the whole map: use
/// `CanonicalIds` to resolve many ids against one merge set.
pub fn apply(merges: &[Merge], id: SignatureId) -> SignatureId {
    CanonicalIds::new(merges).canonical(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(from: u64, into: u64, template: &str) -> Merge {
        Merge {
            from: SignatureId(from),
            into: SignatureId(into),
            template: template.to_string(),
        }
    }

    #[test]
    fn groups_resolve_to_their_smallest_id_whatever_the_direction() {
        let merges = [m(9, 5, "a <*> c"), m(5, 7, "a b <*>"), m(3, 4, "x y")];
        let ids = CanonicalIds::new(&merges);
        for id in [5, 7, 9] {
            assert_eq!(ids.canonical(SignatureId(id)), SignatureId(5));
        }
        assert_eq!(ids.canonical(SignatureId(4)), SignatureId(3));
        assert_eq!(ids.canonical(SignatureId(42)), SignatureId(42));
        assert_eq!(ids.template(SignatureId(9)), Some("a <*> <*>"));
        assert_eq!(ids.template(SignatureId(42)), None);
        assert_eq!(apply(&merges, SignatureId(7)), SignatureId(5));
    }

    #[test]
    fn a_chain_resolves_to_the_smallest_at_any_depth() {
        let merges: Vec<Merge> = (1..50u64).rev().map(|i| m(i + 1, i, "t")).collect();
        let ids = CanonicalIds::new(&merges);
        assert_eq!(ids.canonical(SignatureId(50)), SignatureId(1));
    }
}
