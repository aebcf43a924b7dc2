//! The RFC 9162 §2.1 Merkle tree: hashing, the tree hash of stored leaves, and
//! the compact range a log appends to. Proofs are in [`super::proof`].
//!
//! Pure: no I/O. See the module documentation of [`super`] for the byte-exact
//! definitions; the functions here are their direct implementation.

use std::fmt;
use std::ops::Range;

use aws_lc_rs::digest::{Context, SHA256};

pub const HASH_LEN: usize = 32;
const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// A SHA-256 value in the tree: a leaf hash, an interior node or a root.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hash([u8; HASH_LEN]);

impl Hash {
    pub const fn from_bytes(bytes: [u8; HASH_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses a stored hash (a `BYTEA`/`BLOB` column, a decoded proof).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, MerkleError> {
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| MerkleError::HashLength(bytes.len()))
    }

    pub fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", hex::encode(self.0))
    }
}

/// Lowercase hex.
impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Everything that can go wrong in `merkle` and `proof`. Inputs are public
/// data, so the variants say exactly what did not match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MerkleError {
    #[error("a hash is {HASH_LEN} bytes, not {0}")]
    HashLength(usize),
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("leaf range {start}..{end} is not within the {size} stored leaves")]
    RangeOutOfBounds { start: u64, end: u64, size: u64 },
    #[error(
        "leaf range {start}..{end} is not a subtree (its start must be 0 or a multiple of its length rounded up to a power of two)"
    )]
    NotASubtree { start: u64, end: u64 },
    #[error("a compact range of size {size} has {expected} peaks, not {actual}")]
    PeakCount {
        size: u64,
        expected: usize,
        actual: usize,
    },
    #[error("the tree holds 2^64 - 1 leaves and cannot grow")]
    TreeFull,
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    SizeOrder { old_size: u64, new_size: u64 },
    #[error("no consistency proof exists from the empty tree (RFC 9162 §2.1.4 needs 0 < old size)")]
    EmptyOldTree,
    #[error("the proof has {actual} hashes where {expected} are needed")]
    ProofLength { expected: usize, actual: usize },
    #[error("the inclusion proof leads to another root: wrong leaf, index, size, proof or root")]
    RootMismatch,
    #[error("the consistency proof does not lead to the old root")]
    OldRootMismatch,
    #[error("the consistency proof does not lead to the new root")]
    NewRootMismatch,
}

/// `SHA-256(0x00 || data)`: the hash of one log entry.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[LEAF_PREFIX]);
    ctx.update(data);
    finish(ctx)
}

/// `SHA-256(0x01 || left || right)`: an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[NODE_PREFIX]);
    ctx.update(&left.0);
    ctx.update(&right.0);
    finish(ctx)
}

/// `SHA-256()` of no input: the root of the empty tree.
pub fn empty_root() -> Hash {
    finish(Context::new(&SHA256))
}

fn finish(ctx: Context) -> Hash {
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(ctx.finish().as_ref());
    Hash(out)
}

/// MTH over leaf hashes: the root of the tree whose leaves hash to
/// `leaf_hashes`, in order. O(n) hashes, O(log n) memory.
pub fn root(leaf_hashes: &[Hash]) -> Hash {
    let mut range = CompactRange::new();
    for leaf in leaf_hashes {
        range.push(*leaf);
    }
    range.root()
}

/// MTH of the leaves `range` of `leaf_hashes` (the leaf hashes of a tree,
/// from index 0). This is the `range_hash` that proof generation needs when
/// only leaf hashes are at hand: O(range length) hashes.
pub fn range_root(leaf_hashes: &[Hash], range: Range<u64>) -> Result<Hash, MerkleError> {
    let size = leaf_hashes.len() as u64;
    let out_of_bounds = MerkleError::RangeOutOfBounds {
        start: range.start,
        end: range.end,
        size,
    };
    if range.start > range.end || range.end > size {
        return Err(out_of_bounds);
    }
    let (Ok(start), Ok(end)) = (usize::try_from(range.start), usize::try_from(range.end)) else {
        return Err(out_of_bounds);
    };
    Ok(root(&leaf_hashes[start..end]))
}

/// A perfect subtree: the `2^level` leaves from `index << level`.
///
/// The natural key of a stored subtree hash (`CompactRange::append` returns
/// each one it completes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

/// The perfect subtrees, left to right and largest first, whose hashes give
/// the MTH of the leaves `range` with [`root_from_subtrees`].
///
/// Defined for *subtree ranges*: `start` is 0 or a multiple of the length
/// rounded up to a power of two. Every range in an inclusion or consistency
/// proof is one, and so is every tree `0..size`. At most 64 nodes.
pub fn subtree_nodes(range: Range<u64>) -> Result<Vec<NodeId>, MerkleError> {
    let not_a_subtree = MerkleError::NotASubtree {
        start: range.start,
        end: range.end,
    };
    let Some(len) = range.end.checked_sub(range.start) else {
        return Err(not_a_subtree);
    };
    if range.start != 0 && len != 0 {
        match len.checked_next_power_of_two() {
            Some(align) if range.start.is_multiple_of(align) => {}
            _ => return Err(not_a_subtree),
        }
    }
    let mut nodes = Vec::with_capacity(len.count_ones() as usize);
    let mut position = range.start;
    for level in (0..u64::BITS as u8).rev() {
        if (len >> level) & 1 == 1 {
            nodes.push(NodeId {
                level,
                index: position >> level,
            });
            position += 1 << level;
        }
    }
    Ok(nodes)
}

/// The MTH of a subtree range from the hashes of its [`subtree_nodes`], in the
/// same order: `h = last; h = node_hash(previous, h)` back to the first. The
/// empty list gives the empty root.
pub fn root_from_subtrees(hashes: &[Hash]) -> Hash {
    let mut iter = hashes.iter().rev();
    let Some(last) = iter.next() else {
        return empty_root();
    };
    iter.fold(*last, |right, left| node_hash(left, &right))
}

/// The state a log keeps to append leaves and compute its root without
/// reading old leaves: one hash per set bit of the tree size (the "peaks",
/// the roots of the perfect subtrees `subtree_nodes(0..size)`, largest first).
///
/// A database-backed log stores the peaks with the tree size (or rebuilds them
/// from stored subtree hashes with [`subtree_nodes`]), and per append stores
/// the leaf hash and, to answer proofs in O(log² n) reads, the subtree hashes
/// `append` returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompactRange {
    size: u64,
    peaks: Vec<Hash>,
}

impl CompactRange {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores a stored range: `peaks` are the hashes of
    /// `subtree_nodes(0..size)`, in that order.
    pub fn from_peaks(size: u64, peaks: Vec<Hash>) -> Result<Self, MerkleError> {
        let expected = size.count_ones() as usize;
        if peaks.len() != expected {
            return Err(MerkleError::PeakCount {
                size,
                expected,
                actual: peaks.len(),
            });
        }
        Ok(Self { size, peaks })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn peaks(&self) -> &[Hash] {
        &self.peaks
    }

    /// The tree's root (MTH of all its leaves). O(log n) hashes.
    pub fn root(&self) -> Hash {
        root_from_subtrees(&self.peaks)
    }

    /// Appends one leaf hash. Returns every perfect subtree this append
    /// completed, the new leaf first (level 0) and then upwards: the hashes a
    /// log stores if it answers proofs from subtree hashes. O(log n) hashes,
    /// amortised O(1).
    pub fn append(&mut self, leaf_hash: Hash) -> Result<Vec<(NodeId, Hash)>, MerkleError> {
        if self.size == u64::MAX {
            return Err(MerkleError::TreeFull);
        }
        let leaf_index = self.size;
        let mut completed = vec![(
            NodeId {
                level: 0,
                index: leaf_index,
            },
            leaf_hash,
        )];
        let mut level = 0u8;
        let mut hash = leaf_hash;
        while (leaf_index >> level) & 1 == 1 {
            let Some(left) = self.peaks.pop() else { break };
            hash = node_hash(&left, &hash);
            level += 1;
            completed.push((
                NodeId {
                    level,
                    index: leaf_index >> level,
                },
                hash,
            ));
        }
        self.peaks.push(hash);
        self.size += 1;
        Ok(completed)
    }

    /// `append` without reporting: for `root`, whose input is a slice and
    /// so holds fewer than 2^64 - 1 leaves.
    fn push(&mut self, leaf_hash: Hash) {
        let mut hash = leaf_hash;
        let mut size = self.size;
        while size & 1 == 1 {
            let Some(left) = self.peaks.pop() else { break };
            hash = node_hash(&left, &hash);
            size >>= 1;
        }
        self.peaks.push(hash);
        self.size += 1;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `testonly/constants.go` of github.com/transparency-dev/merkle (commit
    /// 417fb0c), Apache-2.0: the RFC 6962 reference inputs used across
    /// Certificate Transparency implementations.
    pub(crate) const LEAF_INPUTS: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    /// Same source: `RootHashes()`, by tree size 0..=8.
    pub(crate) const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    /// Same source: `NodeHashes()`, the perfect subtrees by (level, index).
    const NODES: [&[&str]; 4] = [
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
            "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
        ],
        &[
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        ],
        &[
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
        &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
    ];

    pub(crate) fn h(hex_text: &str) -> Hash {
        Hash::from_slice(&hex::decode(hex_text).unwrap()).unwrap()
    }

    pub(crate) fn reference_leaves() -> Vec<Hash> {
        LEAF_INPUTS
            .iter()
            .map(|input| leaf_hash(&hex::decode(input).unwrap()))
            .collect()
    }

    /// MTH exactly as RFC 9162 §2.1.1 writes it, recursively.
    pub(crate) fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                // The largest power of two smaller than n.
                let k = 1 << (n - 1).ilog2();
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn roots_match_the_rfc6962_reference_vectors() {
        let leaves = reference_leaves();
        for (size, want) in ROOTS.iter().enumerate() {
            assert_eq!(root(&leaves[..size]), h(want), "root({size})");
            assert_eq!(mth(&leaves[..size]), h(want), "mth({size})");
            assert_eq!(
                range_root(&leaves, 0..size as u64).unwrap(),
                h(want),
                "range_root(0..{size})"
            );
        }
        assert_eq!(empty_root(), h(ROOTS[0]));
    }

    #[test]
    fn append_reports_every_perfect_subtree_of_the_reference_tree() {
        let mut range = CompactRange::new();
        let mut stored = std::collections::BTreeMap::new();
        for (i, leaf) in reference_leaves().into_iter().enumerate() {
            assert_eq!(range.root(), h(ROOTS[i]));
            stored.extend(range.append(leaf).unwrap());
            assert_eq!(range.size(), i as u64 + 1);
            assert_eq!(range.peaks().len(), (i + 1).count_ones() as usize);
        }
        assert_eq!(range.root(), h(ROOTS[8]));
        let want: Vec<(NodeId, Hash)> = NODES
            .iter()
            .enumerate()
            .flat_map(|(level, row)| {
                row.iter().enumerate().map(move |(index, hash)| {
                    let id = NodeId {
                        level: level as u8,
                        index: index as u64,
                    };
                    (id, h(hash))
                })
            })
            .collect();
        let mut got: Vec<(NodeId, Hash)> = stored.into_iter().collect();
        got.sort_by_key(|(id, _)| (id.level, id.index));
        assert_eq!(got, want);
    }

    #[test]
    fn subtree_hashes_give_every_subtree_range_root() {
        let leaves: Vec<Hash> = (0u32..40).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut range = CompactRange::new();
        let mut stored = std::collections::HashMap::new();
        for leaf in &leaves {
            stored.extend(range.append(*leaf).unwrap());
        }
        for end in 0..=40u64 {
            for start in 0..=end {
                match subtree_nodes(start..end) {
                    Ok(ids) => {
                        let hashes: Vec<Hash> = ids.iter().map(|id| stored[id]).collect();
                        let want = mth(&leaves[start as usize..end as usize]);
                        assert_eq!(root_from_subtrees(&hashes), want, "{start}..{end}");
                        assert_eq!(range_root(&leaves, start..end).unwrap(), want);
                    }
                    Err(e) => {
                        let len = end - start;
                        assert!(
                            !start.is_multiple_of(len.next_power_of_two()),
                            "{start}..{end}: {e}"
                        );
                    }
                }
            }
            // Restoring from the stored peaks gives the same root.
            let ids = subtree_nodes(0..end).unwrap();
            let peaks = ids.iter().map(|id| stored[id]).collect();
            let restored = CompactRange::from_peaks(end, peaks).unwrap();
            assert_eq!(restored.root(), mth(&leaves[..end as usize]));
        }
    }

    #[test]
    fn bad_inputs_are_refused() {
        let leaves = reference_leaves();
        assert_eq!(Hash::from_slice(&[0; 31]), Err(MerkleError::HashLength(31)));
        assert!(matches!(
            range_root(&leaves, 3..9),
            Err(MerkleError::RangeOutOfBounds { .. })
        ));
        assert!(matches!(
            range_root(&leaves, std::ops::Range { start: 5, end: 4 }),
            Err(MerkleError::RangeOutOfBounds { .. })
        ));
        assert!(matches!(
            subtree_nodes(std::ops::Range { start: 5, end: 4 }),
            Err(MerkleError::NotASubtree { .. })
        ));
        assert!(matches!(
            subtree_nodes(2..5),
            Err(MerkleError::NotASubtree { .. })
        ));
        assert_eq!(subtree_nodes(0..u64::MAX).unwrap().len(), 64);
        assert!(matches!(
            CompactRange::from_peaks(3, vec![leaves[0]]),
            Err(MerkleError::PeakCount {
                expected: 2,
                actual: 1,
                ..
            })
        ));
        let mut full = CompactRange::from_peaks(u64::MAX, vec![leaves[0]; 64]).unwrap();
        assert_eq!(full.append(leaves[1]), Err(MerkleError::TreeFull));
    }
}
