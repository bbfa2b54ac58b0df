//! The Merkle tree over a checkpoint's segment of entry hashes, as RFC 6962
//! (section 2.1) defines it: leaf = SHA-256(0x00 ‖ entry_hash), node =
//! SHA-256(0x01 ‖ left ‖ right), an n-leaf tree split at the largest power
//! of two below n. Inclusion proofs are RFC 6962 audit paths, verified with
//! the RFC 9162 (section 2.1.3.2) algorithm.

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
}
