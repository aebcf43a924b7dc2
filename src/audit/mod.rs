//! The audit trail: every access to a recording or a key, per tenant, in an
//! append-only log of events hashed into a Merkle tree with signed
//! checkpoints.
//!
//! The verifiable core is pure: `event` (the event model and its canonical
//! encoding), `merkle`, `proof`, `note` and `checkpoint` do no I/O, no async,
//! and know nothing of gRPC, SQL, object stores or KMS (key generation reads
//! the system random source, like `crypto`). `trail` records events from the
//! use cases in their transactions and `log` serves what compliance staff
//! read; those two use the catalog. The catalog stores what these functions compute; the API and
//! CLI carry it. This documentation is the normative description; an auditor
//! can write an independent verifier from it alone.
//!
//! | module | what it is |
//! | --- | --- |
//! | [`event`] | audit events and their canonical encoding: the entry bytes of the log |
//! | [`merkle`] | `Hash`, leaf and node hashing, the tree hash of stored leaves, the compact range a log appends to, the perfect subtrees a log may store |
//! | [`proof`] | inclusion and consistency proofs: which leaf ranges form them, generation, verification |
//! | [`note`] | signed notes, Ed25519 signer and verifier keys in their text forms |
//! | [`checkpoint`] | the checkpoint body, signing it, and opening a signed one for an expected log |
//!
//! # 1. The tree (RFC 9162 §2.1.1, identical to RFC 6962 §2.1)
//!
//! A log is a sequence of entries `d[0], d[1], …` (byte strings: each
//! event's canonical encoding, defined in [`event`]). Hashes are SHA-256 (`H`), 32 bytes; `||` is concatenation.
//!
//! ```text
//! leaf hash      = H(0x00 || d[i])
//! node hash      = H(0x01 || left || right)
//! MTH({})        = H()            = e3b0c442 98fc1c14 9afbf4c8 996fb924 27ae41e4 649b934c a495991b 7852b855
//! MTH({d[0]})    = H(0x00 || d[0])
//! MTH(D[n])      = H(0x01 || MTH(D[0:k]) || MTH(D[k:n]))   for n > 1,
//!                  k = the largest power of two smaller than n
//! ```
//!
//! The root of a log of size `n` is `MTH(D[n])`. With the reference leaves
//! `d = 0x, 00, 10, 2021, 3031, 40414243, 5051525354555657,
//! 606162636465666768696a6b6c6d6e6f` (hex), the roots of sizes 1, 2 and 8 are
//! `6e340b9c…afa01d`, `fac54203…e3c125` and `5dc9da79…604328` (full values
//! in `merkle`'s tests).
//!
//! # 2. Inclusion proofs (RFC 9162 §2.1.3)
//!
//! The proof that `d[m]` is in `D[n]` (`0 ≤ m < n`) is `PATH(m, D[n])`:
//!
//! ```text
//! PATH(0, {d[0]}) = {}
//! PATH(m, D[n])   = PATH(m, D[0:k]) : MTH(D[k:n])       if m < k
//!                 = PATH(m - k, D[k:n]) : MTH(D[0:k])   if m ≥ k
//! ```
//!
//! It has exactly `b + popcount(m >> b)` hashes, `b` being the bit length of
//! `m XOR (n - 1)`; a proof of another length is refused. Verification, given
//! the leaf hash `r`, `m`, `n`, the proof and the root, is RFC 9162
//! §2.1.3.2: `fn = m`, `sn = n - 1`; for each proof hash `p`: if `sn = 0` fail;
//! if `fn` is odd or `fn = sn`, `r = H(0x01 || p || r)` and, while `fn` is even
//! and not 0, shift `fn` and `sn` right by one; otherwise `r = H(0x01 || r ||
//! p)`; then shift `fn` and `sn` right by one. Accept iff `sn = 0` and `r`
//! equals the root.
//!
//! A proof binds the tree size only through the root (leaf 3's proof in a tree
//! of 7 also "verifies" for size 8 against the size-7 root): always take the
//! size and the root together from one verified checkpoint.
//!
//! # 3. Consistency proofs (RFC 9162 §2.1.4)
//!
//! The proof that `D[n]` extends `D[m]` (`0 < m ≤ n`) is `SUBPROOF(m, D[n], true)`:
//!
//! ```text
//! SUBPROOF(m, D[m], true)  = {}
//! SUBPROOF(m, D[m], false) = {MTH(D[m])}
//! SUBPROOF(m, D[n], b)     = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])          if m ≤ k
//!                          = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])  if m > k
//! ```
//!
//! For `m = n` it is empty and the roots must be equal. For `m < n` it has
//! exactly `s + (b - t) + popcount((m - 1) >> b)` hashes, where `b` is the bit
//! length of `(m - 1) XOR (n - 1)`, `t` the number of trailing zero bits of
//! `m`, and `s` is 0 if `m` is a power of two, else 1. Verification is RFC 9162
//! §2.1.4.2: if `m` is a power of two, prepend the old root to the proof;
//! `fn = m - 1`, `sn = n - 1`; while `fn` is odd shift both right; `fr = sr =`
//! the first proof hash; for each further hash `c`: if `sn = 0` fail; if `fn`
//! is odd or `fn = sn`, `fr = H(0x01 || c || fr)`, `sr = H(0x01 || c || sr)`
//! and, while `fn` is even and not 0, shift both right; otherwise
//! `sr = H(0x01 || sr || c)`; then shift both right. Accept iff `sn = 0`, `fr`
//! is the old root and `sr` the new one. `m = 0` is refused: the RFC defines no
//! proof from the empty tree, and a verifier that has seen no checkpoint has
//! nothing to be consistent with.
//!
//! # 4. What a log stores
//!
//! Each proof hash is the MTH of a leaf range `[a, b)` whose start is 0 or a
//! multiple of `b - a` rounded up to a power of two (a *subtree range*), and a
//! proof's ranges are disjoint. So a log needs only its leaf hashes: a proof
//! costs O(n) hashing ([`merkle::range_root`]). A log that also stores the
//! hash of every perfect subtree `(level, index)` (leaves
//! `[index·2^level, (index+1)·2^level)`), as [`merkle::CompactRange::append`]
//! reports them, answers a proof in O(log² n) reads: a subtree range is the
//! concatenation of at most 64 perfect subtrees, largest first
//! ([`merkle::subtree_nodes`]), and its MTH is their right fold
//! `H(0x01 || h1 || H(0x01 || h2 || … hk))` ([`merkle::root_from_subtrees`]).
//! Appending needs only the current *compact range*: the hashes of the perfect
//! subtrees of `[0, n)`, one per set bit of `n`.
//!
//! # 5. Signed notes (c2sp.org/signed-note, Go's `sumdb/note`)
//!
//! A signed note is UTF-8 text with no character below U+0020 except newline:
//!
//! ```text
//! <text: one or more lines, each ending in "\n">
//! "\n"
//! "— " <key name> " " base64(key ID [4 bytes, big-endian] || signature) "\n"   (one or more)
//! ```
//!
//! The dash is U+2014 (em dash), base64 is RFC 4648 §4 with padding. The text
//! ends at the last blank line. The signature is Ed25519 (RFC 8032) over the
//! text bytes, final newline included, separating blank line excluded. A key
//! name is non-empty and has no Unicode white space and no `+`. For Ed25519:
//!
//! ```text
//! key ID            = first 4 bytes of H(key name || 0x0A || 0x01 || 32-byte public key)
//! verifier key text = <name> "+" <key ID, 8 lowercase hex digits> "+" base64(0x01 || public key)
//! signer key text   = "PRIVATE+KEY+" <name> "+" <key ID hex> "+" base64(0x01 || 32-byte seed)
//! ```
//!
//! Opening a note against a set of trusted verifier keys: any syntax error
//! rejects the note; a signature whose (name, key ID) is not a trusted key is
//! ignored; a trusted key's signature that does not verify rejects the note;
//! a key's repeated signature counts once; the note is accepted iff at least
//! one trusted key's signature verified. More than 100 signature lines, or two
//! trusted keys with the same name and ID, reject the note. Unlike Go, base64
//! with non-zero padding bits is refused, so a signature line has exactly one
//! accepted spelling.
//!
//! Example (Go's): signer key
//! `PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz`,
//! verifier key `PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW`,
//! and the text "If you think cryptography is the answer to your problem,\n
//! then you don't know what your problem is.\n" signs to the line `— PeterNeumann
//! x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=`.
//!
//! # 6. Checkpoints (c2sp.org/tlog-checkpoint)
//!
//! A checkpoint is a signed note whose text is exactly:
//!
//! ```text
//! <origin>\n                  the log's identity; non-empty
//! <tree size>\n               ASCII decimal, no leading zeros ("0" for the empty tree), < 2^64
//! <base64(root hash)>\n       the 32-byte MTH of the log at that size, canonical base64
//! [<extension line>\n …]      optional, each non-empty and opaque
//! ```
//!
//! A verifier opens the note with the log's verifier key(s), parses the text,
//! and checks the origin is the log it asked about ([`checkpoint::Checkpoint::open`]):
//! one key may sign the checkpoints of several logs, and another log's
//! checkpoint must not pass for this one. The log must never sign two
//! checkpoints that no consistency proof connects.

pub mod checkpoint;
pub mod ending;
pub mod event;
pub mod log;
pub mod merkle;
pub mod note;
pub mod proof;
pub mod trail;
pub mod verify;
