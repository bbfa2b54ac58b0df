//! The Merkle trees of the audit chain, as RFC 6962 (section 2.1) defines
//! them: leaf = SHA-256(0x00 ‖ entry_hash), node = SHA-256(0x01 ‖ left ‖
//! right), an n-leaf tree split at the largest power of two below n.
//!
//! A checkpoint carries two roots: `merkle_root` over its segment (inclusion
//! proofs of single entries stay short and cheap to build) and, from
//! checkpoint version 2, `tree_root` over the whole chain prefix `1..=to_seq`,
//! so that successive checkpoints of a chain are linked by RFC 9162 (section
//! 2.1.4) consistency proofs: the tree of the later one provably extends the
//! tree of the earlier one (the log is append-only).
//!
//! Inclusion proofs are RFC 6962 audit paths, verified with the RFC 9162
//! (section 2.1.3.2) algorithm; consistency proofs are built as RFC 9162
//! section 2.1.4.1 says and verified with section 2.1.4.2. [`Compact`] keeps
//! the roots of the perfect subtrees of a prefix (at most 64 hashes), which
//! is all the fold needs to extend the whole-chain tree and prove
//! consistency without holding every entry hash.

use sha2::{Digest, Sha256};

pub fn leaf_hash(entry_hash: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry_hash);
    h.finalize().into()
}

pub fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Largest power of two strictly below `n` (n >= 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// The tree head of `entries` (entry hashes, in seq order); the hash of the
/// empty string for no entries, as RFC 6962 says.
pub fn root(entries: &[[u8; 32]]) -> [u8; 32] {
    match entries.len() {
        0 => Sha256::digest([]).into(),
        1 => leaf_hash(&entries[0]),
        n => {
            let k = split(n);
            node_hash(&root(&entries[..k]), &root(&entries[k..]))
        }
    }
}

/// The audit path of leaf `index` in the tree over `entries`, leaf side
/// first. `None` when `index` is out of range.
pub fn inclusion_proof(entries: &[[u8; 32]], index: usize) -> Option<Vec<[u8; 32]>> {
    if index >= entries.len() {
        return None;
    }
    let mut path = Vec::new();
    path_into(entries, index, &mut path);
    Some(path)
}

fn path_into(entries: &[[u8; 32]], index: usize, path: &mut Vec<[u8; 32]>) {
    let n = entries.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if index < k {
        path_into(&entries[..k], index, path);
        path.push(root(&entries[k..]));
    } else {
        path_into(&entries[k..], index - k, path);
        path.push(root(&entries[..k]));
    }
}

/// Whether `entry_hash` is leaf `index` of a `size`-leaf tree with `root`.
pub fn verify_inclusion(
    entry_hash: &[u8; 32],
    index: u64,
    size: u64,
    path: &[[u8; 32]],
    root: &[u8; 32],
) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf_hash(entry_hash);
    for p in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && &r == root
}

/// The perfect-subtree roots (largest first) of a tree of `size` leaves:
/// enough to compute its root, to extend it, and to prove that a larger tree
/// extends it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compact {
    size: u64,
    nodes: Vec<[u8; 32]>,
}

impl Compact {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append one leaf (an entry hash).
    pub fn push(&mut self, entry_hash: &[u8; 32]) {
        let mut hash = leaf_hash(entry_hash);
        let mut size = self.size;
        while size & 1 == 1 {
            let Some(left) = self.nodes.pop() else { break };
            hash = node_hash(&left, &hash);
            size >>= 1;
        }
        self.nodes.push(hash);
        self.size += 1;
    }

    /// The RFC 6962 tree head of the leaves pushed so far.
    pub fn root(&self) -> [u8; 32] {
        let mut nodes = self.nodes.iter().rev();
        let Some(last) = nodes.next() else {
            return Sha256::digest([]).into();
        };
        nodes.fold(*last, |right, left| node_hash(left, &right))
    }

    /// `(start, size, hash)` of each perfect subtree.
    fn spans(&self) -> Vec<(u64, u64, [u8; 32])> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut start = 0;
        let mut bits: Vec<u64> = (0..64)
            .rev()
            .map(|b| 1u64 << b)
            .filter(|b| self.size & b != 0)
            .collect();
        bits.truncate(self.nodes.len());
        for (size, hash) in bits.into_iter().zip(&self.nodes) {
            out.push((start, size, *hash));
            start += size;
        }
        out
    }
}

/// The leaves `prefix ++ appended`, where the prefix is known only by its
/// perfect-subtree roots.
struct Virtual<'a> {
    spans: Vec<(u64, u64, [u8; 32])>,
    prefix: u64,
    appended: &'a [[u8; 32]],
}

impl Virtual<'_> {
    /// MTH(D[lo:hi]); `None` for a range inside the prefix that is not one
    /// of its perfect subtrees (never needed for roots and consistency).
    fn mth(&self, lo: u64, hi: u64) -> Option<[u8; 32]> {
        if let Some((_, _, h)) = self.spans.iter().find(|(s, n, _)| *s == lo && s + n == hi) {
            return Some(*h);
        }
        if lo >= self.prefix {
            let a = usize::try_from(lo - self.prefix).ok()?;
            let b = usize::try_from(hi - self.prefix).ok()?;
            return self.appended.get(a..b).map(root);
        }
        if hi - lo <= 1 {
            return None;
        }
        let k = split(usize::try_from(hi - lo).ok()?) as u64;
        Some(node_hash(&self.mth(lo, lo + k)?, &self.mth(lo + k, hi)?))
    }

    /// RFC 9162 section 2.1.4.1 SUBPROOF(m, D[lo:hi], b).
    fn subproof(&self, m: u64, lo: u64, hi: u64, b: bool, out: &mut Vec<[u8; 32]>) -> Option<()> {
        let n = hi - lo;
        if m == n {
            if !b {
                out.push(self.mth(lo, hi)?);
            }
            return Some(());
        }
        let k = split(usize::try_from(n).ok()?) as u64;
        if m <= k {
            self.subproof(m, lo, lo + k, b, out)?;
            out.push(self.mth(lo + k, hi)?);
        } else {
            self.subproof(m - k, lo + k, hi, false, out)?;
            out.push(self.mth(lo, lo + k)?);
        }
        Some(())
    }
}

/// The RFC 9162 consistency proof from the tree of the first `old_size`
/// leaves to the tree of all leaves `prefix ++ appended`, where `old_size`
/// is at least `prefix.size()` (pass an empty prefix and every leaf in
/// `appended` for a proof between any two sizes). Empty when `old_size` is 0
/// or equals the new size. `None` when `old_size` exceeds the new size.
pub fn consistency_proof(
    prefix: &Compact,
    appended: &[[u8; 32]],
    old_size: u64,
) -> Option<Vec<[u8; 32]>> {
    let n = prefix.size + appended.len() as u64;
    if old_size > n || old_size < prefix.size {
        return None;
    }
    let mut out = Vec::new();
    if old_size == 0 || old_size == n {
        return Some(out);
    }
    let leaves = Virtual {
        spans: prefix.spans(),
        prefix: prefix.size,
        appended,
    };
    leaves.subproof(old_size, 0, n, true, &mut out)?;
    Some(out)
}

/// RFC 9162 section 2.1.4.2: whether `proof` shows that the tree of
/// `old_size` leaves with root `old_root` is a prefix of the tree of
/// `new_size` leaves with root `new_root`. An empty old tree is consistent
/// with every tree (and needs an empty proof).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &[u8; 32],
    new_root: &[u8; 32],
    proof: &[[u8; 32]],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == 0 {
        return proof.is_empty();
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<[u8; 32]> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    &fr == old_root && &sr == new_root && s == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: usize) -> Vec<[u8; 32]> {
        (0..n)
            .map(|i| Sha256::digest((i as u64).to_be_bytes()).into())
            .collect()
    }

    #[test]
    fn small_trees_by_hand() {
        let e = entries(3);
        let (a, b, c) = (leaf_hash(&e[0]), leaf_hash(&e[1]), leaf_hash(&e[2]));
        assert_eq!(root(&e[..1]), a);
        assert_eq!(root(&e[..2]), node_hash(&a, &b));
        assert_eq!(root(&e), node_hash(&node_hash(&a, &b), &c));
        assert_eq!(inclusion_proof(&e, 2).unwrap(), vec![node_hash(&a, &b)]);
        assert_eq!(inclusion_proof(&e, 0).unwrap(), vec![b, c]);
    }

    #[test]
    fn every_proof_verifies_and_wrong_ones_do_not() {
        for n in 1..40 {
            let e = entries(n);
            let r = root(&e);
            for i in 0..n {
                let proof = inclusion_proof(&e, i).unwrap();
                assert!(
                    verify_inclusion(&e[i], i as u64, n as u64, &proof, &r),
                    "n={n} i={i}"
                );
                let other = e[(i + 1) % n];
                if n > 1 {
                    assert!(!verify_inclusion(&other, i as u64, n as u64, &proof, &r));
                }
            }
            assert!(inclusion_proof(&e, n).is_none());
        }
    }

    #[test]
    fn compact_roots_match_the_tree() {
        let e = entries(70);
        let mut c = Compact::new();
        assert_eq!(c.root(), root(&[]));
        for (i, h) in e.iter().enumerate() {
            c.push(h);
            assert_eq!(c.root(), root(&e[..=i]), "size {}", i + 1);
        }
    }

    #[test]
    fn consistency_proofs_verify_and_wrong_ones_do_not() {
        let e = entries(40);
        for n in 1..=e.len() {
            let new_root = root(&e[..n]);
            for m in 0..=n {
                let old_root = root(&e[..m]);
                // From every leaf, and from a compact prefix plus the rest
                // (as the fold builds it).
                let full = consistency_proof(&Compact::new(), &e[..n], m as u64).unwrap();
                let mut prefix = Compact::new();
                e[..m].iter().for_each(|h| prefix.push(h));
                let compact = consistency_proof(&prefix, &e[m..n], m as u64).unwrap();
                assert_eq!(full, compact, "m={m} n={n}");
                assert!(
                    verify_consistency(m as u64, n as u64, &old_root, &new_root, &full),
                    "m={m} n={n}"
                );
                if m > 0 && m < n {
                    let other = root(&e[1..=m]);
                    assert!(!verify_consistency(
                        m as u64, n as u64, &other, &new_root, &full
                    ));
                    let mut bad = full.clone();
                    bad[0][0] ^= 1;
                    assert!(!verify_consistency(
                        m as u64, n as u64, &old_root, &new_root, &bad
                    ));
                }
            }
        }
        // The RFC 9162 example tree of 7 leaves: from 3 to 7 is [c, d, g, l].
        let e = entries(7);
        let l = |i: usize| leaf_hash(&e[i]);
        let proof = consistency_proof(&Compact::new(), &e, 3).unwrap();
        assert_eq!(
            proof,
            vec![l(2), l(3), node_hash(&l(0), &l(1)), root(&e[4..])]
        );
    }
}
