//! Inclusion and consistency proofs (RFC 9162 §2.1.3 and §2.1.4): which leaf
//! ranges a proof consists of, generating it, and verifying it.
//!
//! Pure: no I/O. A proof is a list of MTHs of disjoint leaf ranges. Generation
//! is split in two so that async or database-backed callers can fetch what
//! they need in between:
//!
//! 1. [`inclusion_ranges`] / [`consistency_ranges`] name the ranges (index
//!    arithmetic, O(log n));
//! 2. the caller hashes each range: from stored leaf hashes with
//!    [`super::merkle::range_root`] (O(n) hashes per proof in all, the ranges
//!    being disjoint), or from stored perfect-subtree hashes with
//!    [`super::merkle::subtree_nodes`] + [`super::merkle::root_from_subtrees`]
//!    (O(log n) reads per range, O(log² n) per proof).
//!
//! [`inclusion_proof`] and [`consistency_proof`] do both steps with a
//! synchronous `range_hash` closure. Verification follows the RFC's
//! algorithms step by step, after checking the proof has the exact length the
//! sizes require.

use std::ops::Range;

use super::merkle::{Hash, MerkleError, node_hash};

/// The leaf ranges whose MTHs form the inclusion proof of leaf `index` in the
/// tree of `size` leaves, in proof order (bottom up): RFC 9162 `PATH(m, D[n])`.
pub fn inclusion_ranges(index: u64, size: u64) -> Result<Vec<Range<u64>>, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let (mut lo, mut hi, mut m) = (0u64, size, index);
    let mut ranges = Vec::new();
    // PATH appends the sibling after recursing, so walking top-down collects
    // the proof in reverse.
    while hi - lo > 1 {
        let k = split(hi - lo);
        if m < k {
            ranges.push(lo + k..hi);
            hi = lo + k;
        } else {
            ranges.push(lo..lo + k);
            lo += k;
            m -= k;
        }
    }
    ranges.reverse();
    Ok(ranges)
}

/// The leaf ranges whose MTHs form the consistency proof from the tree of
/// `old_size` leaves to the tree of `new_size`, in proof order: RFC 9162
/// `PROOF(m, D[n])` = `SUBPROOF(m, D[n], true)`. Empty when the sizes are
/// equal.
pub fn consistency_ranges(old_size: u64, new_size: u64) -> Result<Vec<Range<u64>>, MerkleError> {
    check_sizes(old_size, new_size)?;
    let (mut lo, mut hi, mut m) = (0u64, new_size, old_size);
    // SUBPROOF's flag b: whether the old root is the subtree we stand on
    // (then the verifier already has it and it is left out).
    let mut old_root_is_here = true;
    let mut ranges = Vec::new();
    loop {
        if m == hi - lo {
            if !old_root_is_here {
                ranges.push(lo..hi);
            }
            break;
        }
        let k = split(hi - lo);
        if m <= k {
            ranges.push(lo + k..hi);
            hi = lo + k;
        } else {
            ranges.push(lo..lo + k);
            lo += k;
            m -= k;
            old_root_is_here = false;
        }
    }
    ranges.reverse();
    Ok(ranges)
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves.
/// `range_hash(r)` must return the MTH of the leaves `r` of that tree (for
/// leaf hashes in memory: `|r| merkle::range_root(&leaves, r)`); it is called
/// once per proof hash, O(log n) times.
pub fn inclusion_proof<E: From<MerkleError>>(
    index: u64,
    size: u64,
    range_hash: impl FnMut(Range<u64>) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    inclusion_ranges(index, size)?
        .into_iter()
        .map(range_hash)
        .collect()
}

/// The consistency proof from the tree of `old_size` leaves to the tree of
/// `new_size`; `range_hash` as for [`inclusion_proof`], over the new tree.
pub fn consistency_proof<E: From<MerkleError>>(
    old_size: u64,
    new_size: u64,
    range_hash: impl FnMut(Range<u64>) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    consistency_ranges(old_size, new_size)?
        .into_iter()
        .map(range_hash)
        .collect()
}

/// Checks that `leaf_hash` is leaf `index` of the tree of `size` leaves whose
/// root is `root` (RFC 9162 §2.1.3.2). O(log n) hashes.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_len(index, size);
    let length_error = MerkleError::ProofLength {
        expected,
        actual: proof.len(),
    };
    if proof.len() != expected {
        return Err(length_error);
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if sn == 0 {
            return Err(length_error);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(length_error);
    }
    if r != *root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `new_size` leaves with root `new_root` extends the
/// tree of `old_size` leaves with root `old_root` (RFC 9162 §2.1.4.2).
///
/// Equal sizes need an empty proof and equal roots. `old_size` 0 is refused
/// ([`MerkleError::EmptyOldTree`]): the RFC defines no proof for it, and a
/// verifier that has seen no checkpoint has nothing to be consistent with.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), MerkleError> {
    check_sizes(old_size, new_size)?;
    let expected = consistency_len(old_size, new_size);
    let length_error = MerkleError::ProofLength {
        expected,
        actual: proof.len(),
    };
    if proof.len() != expected {
        return Err(length_error);
    }
    if old_size == new_size {
        return if old_root == new_root {
            Ok(())
        } else {
            Err(MerkleError::NewRootMismatch)
        };
    }
    // Step 2: a power-of-two old tree is a node of the new one, and its root
    // is where the path starts.
    let (first, rest) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        match proof.split_first() {
            Some(split) => split,
            None => return Err(length_error),
        }
    };
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return Err(length_error);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(length_error);
    }
    if fr != *old_root {
        return Err(MerkleError::OldRootMismatch);
    }
    if sr != *new_root {
        return Err(MerkleError::NewRootMismatch);
    }
    Ok(())
}

fn check_sizes(old_size: u64, new_size: u64) -> Result<(), MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::SizeOrder { old_size, new_size });
    }
    if old_size == 0 {
        return Err(MerkleError::EmptyOldTree);
    }
    Ok(())
}

/// The largest power of two smaller than `n` (n ≥ 2): RFC 9162's `k`.
fn split(n: u64) -> u64 {
    1 << (n - 1).ilog2()
}

fn bit_len(x: u64) -> u32 {
    u64::BITS - x.leading_zeros()
}

/// Proof length for leaf `index` of `size` (index < size): one hash per level
/// below the point where the paths to `index` and `size - 1` part, plus one
/// per left sibling above it.
pub(crate) fn inclusion_len(index: u64, size: u64) -> usize {
    let inner = bit_len(index ^ (size - 1));
    (inner + (index >> inner).count_ones()) as usize
}

/// Proof length from `old_size` to `new_size` (0 < old ≤ new): the inclusion
/// proof of leaf `old_size - 1` above the largest perfect subtree it ends, plus
/// that subtree's root unless it is the whole old tree.
pub(crate) fn consistency_len(old_size: u64, new_size: u64) -> usize {
    if old_size == new_size {
        return 0;
    }
    let last = old_size - 1;
    let fork = bit_len(last ^ (new_size - 1));
    let inner = fork - old_size.trailing_zeros();
    let border = (last >> fork).count_ones();
    let seed = u32::from(!old_size.is_power_of_two());
    (seed + inner + border) as usize
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod vectors;
