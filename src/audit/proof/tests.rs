//! Proof properties: an exhaustive check against the RFC's recursive
//! definitions, and a tamper table. Published vectors are in `vectors.rs`.

use std::collections::HashMap;
use std::ops::Range;

use super::*;
use crate::audit::merkle::tests::{h, mth};
use crate::audit::merkle::{
    CompactRange, NodeId, leaf_hash, range_root, root_from_subtrees, subtree_nodes,
};

/// RFC 9162 `PATH(m, D[n])`, recursively, over leaf hashes.
fn ref_path(m: usize, d: &[Hash]) -> Vec<Hash> {
    if d.len() <= 1 {
        return Vec::new();
    }
    let k = 1 << (d.len() - 1).ilog2();
    if m < k {
        let mut p = ref_path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = ref_path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

/// RFC 9162 `SUBPROOF(m, D[n], b)`, recursively.
fn ref_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    if m == d.len() {
        return if b { Vec::new() } else { vec![mth(d)] };
    }
    let k = 1 << (d.len() - 1).ilog2();
    let mut p = if m <= k {
        ref_subproof(m, &d[..k], b)
    } else {
        ref_subproof(m - k, &d[k..], false)
    };
    p.push(if m <= k { mth(&d[k..]) } else { mth(&d[..k]) });
    p
}

/// A log as a database would keep it: leaf hashes plus every perfect subtree
/// hash `CompactRange::append` reported.
pub(super) struct StoredTree {
    pub(super) leaves: Vec<Hash>,
    nodes: HashMap<NodeId, Hash>,
    pub(super) roots: Vec<Hash>,
}

impl StoredTree {
    pub(super) fn new(leaves: Vec<Hash>) -> Self {
        let mut range = CompactRange::new();
        let mut nodes = HashMap::new();
        let mut roots = vec![range.root()];
        for leaf in &leaves {
            nodes.extend(range.append(*leaf).unwrap());
            roots.push(range.root());
        }
        Self {
            leaves,
            nodes,
            roots,
        }
    }

    pub(super) fn range_hash(&self, range: Range<u64>) -> Result<Hash, MerkleError> {
        let ids = subtree_nodes(range)?;
        Ok(root_from_subtrees(
            &ids.iter().map(|id| self.nodes[id]).collect::<Vec<_>>(),
        ))
    }

    pub(super) fn inclusion(&self, index: u64, size: u64) -> Vec<Hash> {
        inclusion_proof(index, size, |r| self.range_hash(r)).unwrap()
    }

    pub(super) fn consistency(&self, old_size: u64, new_size: u64) -> Vec<Hash> {
        consistency_proof(old_size, new_size, |r| self.range_hash(r)).unwrap()
    }
}

fn numbered_leaves(n: u32) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

pub(super) fn hashes(hex_list: &[&str]) -> Vec<Hash> {
    hex_list.iter().map(|x| h(x)).collect()
}

/// For every tree size up to 300: the compact range's root is the recursive
/// MTH; every inclusion proof and every consistency proof (all pairs), built
/// from stored subtree hashes, has the length the verifier expects and
/// verifies; and up to 64 leaves they equal the RFC's recursive PATH and
/// SUBPROOF and the proofs built from leaf hashes alone.
#[test]
fn every_proof_up_to_300_leaves_verifies_and_matches_the_definitions() {
    const N: u32 = 300;
    let tree = StoredTree::new(numbered_leaves(N));
    let from_leaves = |r| range_root(&tree.leaves, r);
    for n in 0..=N as usize {
        assert_eq!(tree.roots[n], mth(&tree.leaves[..n]), "root of {n}");
    }
    for n in 1..=N as u64 {
        let root = &tree.roots[n as usize];
        for i in 0..n {
            let proof = tree.inclusion(i, n);
            assert_eq!(proof.len(), inclusion_len(i, n));
            verify_inclusion(&tree.leaves[i as usize], i, n, &proof, root).unwrap();
            if n <= 64 {
                let d = &tree.leaves[..n as usize];
                assert_eq!(proof, ref_path(i as usize, d), "PATH({i}, {n})");
                assert_eq!(proof, inclusion_proof(i, n, from_leaves).unwrap());
            }
        }
        for m in 1..=n {
            let proof = tree.consistency(m, n);
            assert_eq!(proof.len(), consistency_len(m, n), "{m} to {n}");
            verify_consistency(m, n, &proof, &tree.roots[m as usize], root).unwrap();
            if n <= 64 {
                let d = &tree.leaves[..n as usize];
                assert_eq!(proof, ref_subproof(m as usize, d, true), "PROOF({m}, {n})");
                assert_eq!(proof, consistency_proof(m, n, from_leaves).unwrap());
            }
        }
    }
}

fn flip(hash: &Hash) -> Hash {
    let mut bytes = *hash.as_bytes();
    bytes[31] ^= 1;
    Hash::from_bytes(bytes)
}

/// Each edit of a valid proof's inputs is refused, with the precise reason
/// where it is determined.
#[test]
fn tampered_proofs_are_refused() {
    let tree = StoredTree::new(numbered_leaves(41));
    let leaves = &tree.leaves;
    for (i, n) in [
        (0, 1),
        (0, 2),
        (3, 7),
        (4, 5),
        (6, 8),
        (12, 13),
        (17, 32),
        (39, 40),
    ] {
        let proof = tree.inclusion(i, n);
        let root = tree.roots[n as usize];
        let leaf = leaves[i as usize];
        let mut cases: Vec<(String, Result<(), MerkleError>)> = vec![
            (
                "other leaf".into(),
                verify_inclusion(&leaves[(i as usize + 1) % 40], i, n, &proof, &root),
            ),
            (
                "edited root".into(),
                verify_inclusion(&leaf, i, n, &proof, &flip(&root)),
            ),
            (
                "older root".into(),
                verify_inclusion(&leaf, i, n, &proof, &tree.roots[n as usize - 1]),
            ),
            (
                "index + 1".into(),
                verify_inclusion(&leaf, i + 1, n, &proof, &root),
            ),
            (
                "next checkpoint".into(),
                verify_inclusion(&leaf, i, n + 1, &proof, &tree.roots[n as usize + 1]),
            ),
            (
                "extra hash".into(),
                verify_inclusion(&leaf, i, n, &[proof.clone(), vec![root]].concat(), &root),
            ),
        ];
        if i > 0 {
            cases.push((
                "index - 1".into(),
                verify_inclusion(&leaf, i - 1, n, &proof, &root),
            ));
        }
        if n - 1 > i {
            let previous = &tree.roots[n as usize - 1];
            cases.push((
                "previous checkpoint".into(),
                verify_inclusion(&leaf, i, n - 1, &proof, previous),
            ));
        }
        if !proof.is_empty() {
            let short = &proof[..proof.len() - 1];
            cases.push((
                "truncated".into(),
                verify_inclusion(&leaf, i, n, short, &root),
            ));
        }
        for k in 0..proof.len() {
            let mut edited = proof.clone();
            edited[k] = flip(&edited[k]);
            let result = verify_inclusion(&leaf, i, n, &edited, &root);
            assert_eq!(
                result,
                Err(MerkleError::RootMismatch),
                "{i} in {n}: hash {k} edited"
            );
            if k + 1 < proof.len() {
                edited = proof.clone();
                edited.swap(k, k + 1);
                cases.push((
                    format!("swapped {k}"),
                    verify_inclusion(&leaf, i, n, &edited, &root),
                ));
            }
        }
        for (name, result) in cases {
            assert!(result.is_err(), "inclusion {i} in {n}: {name} was accepted");
        }
        assert_eq!(
            verify_inclusion(&leaf, n, n, &proof, &root),
            Err(MerkleError::IndexOutOfRange { index: n, size: n })
        );
    }

    for (m, n) in [
        (1, 2),
        (2, 5),
        (3, 7),
        (4, 8),
        (6, 8),
        (7, 16),
        (13, 40),
        (32, 33),
    ] {
        let proof = tree.consistency(m, n);
        let (old, new) = (tree.roots[m as usize], tree.roots[n as usize]);
        let mut cases: Vec<(String, Result<(), MerkleError>)> = vec![
            (
                "edited old root".into(),
                verify_consistency(m, n, &proof, &flip(&old), &new),
            ),
            (
                "edited new root".into(),
                verify_consistency(m, n, &proof, &old, &flip(&new)),
            ),
            (
                "swapped roots".into(),
                verify_consistency(m, n, &proof, &new, &old),
            ),
            (
                "old checkpoint - 1".into(),
                verify_consistency(m - 1, n, &proof, &tree.roots[m as usize - 1], &new),
            ),
            (
                "old checkpoint + 1".into(),
                verify_consistency(m + 1, n, &proof, &tree.roots[m as usize + 1], &new),
            ),
            (
                "new checkpoint + 1".into(),
                verify_consistency(m, n + 1, &proof, &old, &tree.roots[n as usize + 1]),
            ),
            (
                "new checkpoint - 1".into(),
                verify_consistency(m, n - 1, &proof, &old, &tree.roots[n as usize - 1]),
            ),
            (
                "truncated".into(),
                verify_consistency(m, n, &proof[..proof.len() - 1], &old, &new),
            ),
            (
                "extra hash".into(),
                verify_consistency(m, n, &[proof.clone(), vec![new]].concat(), &old, &new),
            ),
            (
                "empty proof".into(),
                verify_consistency(m, n, &[], &old, &new),
            ),
        ];
        for k in 0..proof.len() {
            let mut edited = proof.clone();
            edited[k] = flip(&edited[k]);
            cases.push((
                format!("hash {k} edited"),
                verify_consistency(m, n, &edited, &old, &new),
            ));
        }
        for (name, result) in cases {
            assert!(
                result.is_err(),
                "consistency {m} to {n}: {name} was accepted"
            );
        }
    }
    let root = tree.roots[3];
    assert_eq!(
        verify_consistency(0, 3, &[], &root, &root),
        Err(MerkleError::EmptyOldTree)
    );
    assert_eq!(
        verify_consistency(4, 3, &[], &root, &root),
        Err(MerkleError::SizeOrder {
            old_size: 4,
            new_size: 3
        })
    );
    assert_eq!(verify_consistency(3, 3, &[], &root, &root), Ok(()));
    assert_eq!(
        verify_consistency(3, 3, &[], &root, &flip(&root)),
        Err(MerkleError::NewRootMismatch)
    );
    assert_eq!(
        verify_consistency(3, 3, &[root], &root, &root),
        Err(MerkleError::ProofLength {
            expected: 0,
            actual: 1
        })
    );
    assert_eq!(
        inclusion_ranges(5, 5),
        Err(MerkleError::IndexOutOfRange { index: 5, size: 5 })
    );
    assert_eq!(consistency_ranges(0, 5), Err(MerkleError::EmptyOldTree));
}

/// A proof binds the tree size only through the root: leaf 3's proof in the
/// tree of 7 has the shape of its proof in the tree of 8, so it verifies for
/// "size 8" against the size-7 root. Callers must take size and root from one
/// verified checkpoint; with the size-8 root it fails, as it must.
#[test]
fn inclusion_binds_the_size_only_through_the_root() {
    let tree = StoredTree::new(numbered_leaves(8));
    let proof = tree.inclusion(3, 7);
    let leaf = &tree.leaves[3];
    assert_eq!(verify_inclusion(leaf, 3, 8, &proof, &tree.roots[7]), Ok(()));
    assert_eq!(
        verify_inclusion(leaf, 3, 8, &proof, &tree.roots[8]),
        Err(MerkleError::RootMismatch)
    );
}
