//! The chunk format: key derivation, key commitment, chunk sealing and opening.
//!
//! This module is pure: no I/O, no async, no knowledge of gRPC, SQL, object
//! stores or KMS. `docs/FORMAT.md` is the normative description of every byte
//! produced here; the test vectors at the bottom of this file are the ones
//! printed in that document.
//!
//! Layout summary (format version 1):
//!
//! ```text
//! PRK          = HKDF-Extract(salt[32], data_key[32])                 (SHA-256)
//! chunk_key    = HKDF-Expand(PRK, info(0x01), 32)
//! commitment   = HKDF-Expand(PRK, info(0x02), 32)
//! metadata_key = HKDF-Expand(PRK, info(0x03), 32)
//! info(p)      = "callvault" || version || p || u16be(len t) || t || u16be(len r) || r
//! nonce        = nonce_prefix[7] || u32be(index) || final(0x00|0x01)
//! aad          = version || u16be(len t) || t || u16be(len r) || r || u32be(index) || final
//! chunk object = AES-256-GCM(chunk_key, nonce, aad, plaintext) || tag[16]
//! ```

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The only format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
pub const DATA_KEY_LEN: usize = 32;
pub const SALT_LEN: usize = 32;
pub const NONCE_PREFIX_LEN: usize = 7;
pub const TAG_LEN: usize = 16;
pub const COMMITMENT_LEN: usize = 32;
const METADATA_NONCE_LEN: usize = 12;

pub const MIN_CHUNK_SIZE: u32 = 64 * 1024;
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
pub const DEFAULT_CHUNK_SIZE: u32 = 1024 * 1024;

const INFO_LABEL: &[u8] = b"callvault";
const PURPOSE_CHUNK_KEY: u8 = 0x01;
const PURPOSE_COMMITMENT: u8 = 0x02;
const PURPOSE_METADATA_KEY: u8 = 0x03;
/// Chunk index + final flag occupy the nonce after the prefix.
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    #[error("data key must be {DATA_KEY_LEN} bytes")]
    DataKeyLength,
    #[error("identifier too long for the format (max 65535 bytes)")]
    IdentifierTooLong,
    #[error("key commitment mismatch: wrong data key or tampered recording parameters")]
    CommitmentMismatch,
    #[error("chunk {index} failed authentication")]
    ChunkAuthentication { index: u32 },
    #[error("chunk {index} is malformed: {reason}")]
    ChunkMalformed { index: u32, reason: &'static str },
    #[error("encrypted metadata failed authentication")]
    MetadataAuthentication,
    #[error("chunk size {0} outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}")]
    ChunkSize(u32),
    #[error("the system random source failed")]
    Random,
}

/// A plaintext 256-bit data key. Lives only in memory, zeroized on drop, and
/// never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; DATA_KEY_LEN]);

impl DataKey {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; DATA_KEY_LEN] = bytes.try_into().map_err(|_| CryptoError::DataKeyLength)?;
        Ok(Self(arr))
    }

    /// A fresh random key (the local keyring's GenerateDataKey).
    pub fn generate() -> Result<Self, CryptoError> {
        let mut k = [0u8; DATA_KEY_LEN];
        fill_random(&mut k)?;
        Ok(Self(k))
    }

    pub fn expose(&self) -> &[u8; DATA_KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// Per-recording public parameters, stored in the catalog beside the wrapped key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingParams {
    pub salt: [u8; SALT_LEN],
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl RecordingParams {
    pub fn generate() -> Result<Self, CryptoError> {
        let mut salt = [0u8; SALT_LEN];
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        fill_random(&mut salt)?;
        fill_random(&mut nonce_prefix)?;
        Ok(Self { salt, nonce_prefix })
    }
}

/// Lowercase hex SHA-256: the catalog's form for plaintext, object and token digests.
/// The length of a blind-index digest.
pub const BLIND_INDEX_LEN: usize = 32;

/// A keyed blind index: HMAC-SHA256 under the tenant's index key over
/// `domain || 0x00 || len(part) || part || …` (lengths as 8-byte big
/// endian), so that equal inputs match and nothing else can be learned
/// without the key. `domain` separates what is indexed (`participant`,
/// `label`).
pub fn blind_index(key: &DataKey, domain: &str, parts: &[&[u8]]) -> [u8; BLIND_INDEX_LEN] {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.expose());
    let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
    ctx.update(domain.as_bytes());
    ctx.update(&[0]);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    let mut out = [0u8; BLIND_INDEX_LEN];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data))
}

pub fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    aws_lc_rs::rand::fill(buf).map_err(|_| CryptoError::Random)
}

pub fn validate_chunk_size(size: u32) -> Result<u32, CryptoError> {
    if (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size) {
        Ok(size)
    } else {
        Err(CryptoError::ChunkSize(size))
    }
}

/// Length-prefixed encoding of (tenant, recording) shared by `info` and `aad`.
fn binding(tenant: &str, recording: &str) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::with_capacity(4 + tenant.len() + recording.len());
    for part in [tenant.as_bytes(), recording.as_bytes()] {
        let len = u16::try_from(part.len()).map_err(|_| CryptoError::IdentifierTooLong)?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part);
    }
    Ok(out)
}

/// The per-recording derived secrets. Holds the PRK only for as long as it
/// takes to expand the three outputs.
struct Derived {
    chunk_key: [u8; 32],
    commitment: [u8; COMMITMENT_LEN],
    metadata_key: [u8; 32],
}

impl Drop for Derived {
    fn drop(&mut self) {
        self.chunk_key.zeroize();
        self.metadata_key.zeroize();
    }
}

fn derive(data_key: &DataKey, salt: &[u8; SALT_LEN], bind: &[u8]) -> Derived {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(data_key.expose());
    let expand = |purpose: u8| -> [u8; 32] {
        let mut info = Vec::with_capacity(INFO_LABEL.len() + 2 + bind.len());
        info.extend_from_slice(INFO_LABEL);
        info.push(FORMAT_VERSION);
        info.push(purpose);
        info.extend_from_slice(bind);
        let mut out = [0u8; 32];
        // Expanding 32 bytes from SHA-256 cannot exceed the 255*32 HKDF limit,
        // so these calls are infallible for our fixed lengths.
        #[allow(clippy::expect_used)]
        prk.expand(&[&info], hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut out))
            .expect("HKDF-SHA-256 expand of 32 bytes");
        out
    };
    Derived {
        chunk_key: expand(PURPOSE_CHUNK_KEY),
        commitment: expand(PURPOSE_COMMITMENT),
        metadata_key: expand(PURPOSE_METADATA_KEY),
    }
}

/// Constant-time equality for the commitment check.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut acc = 0u8;
    for (x, y) in a.iter().zip(b) {
        acc |= std::hint::black_box(x ^ y);
    }
    acc == 0
}

/// Seals and opens the chunks of one recording.
pub struct RecordingCipher {
    chunk_key: LessSafeKey,
    metadata_key: LessSafeKey,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    /// version || binding, the fixed head of every chunk's AAD.
    aad_head: Vec<u8>,
    commitment: [u8; COMMITMENT_LEN],
}

impl std::fmt::Debug for RecordingCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingCipher").finish_non_exhaustive()
    }
}

impl RecordingCipher {
    /// Derives the recording's keys. Used on ingest, where the commitment is
    /// then written to the catalog.
    pub fn new(
        data_key: &DataKey,
        params: &RecordingParams,
        tenant: &str,
        recording: &str,
    ) -> Result<Self, CryptoError> {
        let bind = binding(tenant, recording)?;
        let derived = derive(data_key, &params.salt, &bind);
        let mut aad_head = Vec::with_capacity(1 + bind.len());
        aad_head.push(FORMAT_VERSION);
        aad_head.extend_from_slice(&bind);
        let key = |bytes: &[u8; 32]| {
            // AES-256 accepts exactly 32 bytes, which is what we pass.
            #[allow(clippy::expect_used)]
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte AES key"))
        };
        Ok(Self {
            chunk_key: key(&derived.chunk_key),
            metadata_key: key(&derived.metadata_key),
            nonce_prefix: params.nonce_prefix,
            aad_head,
            commitment: derived.commitment,
        })
    }

    /// Derives the keys and checks them against the stored commitment, in
    /// constant time, before anything can be decrypted.
    pub fn new_checked(
        data_key: &DataKey,
        params: &RecordingParams,
        tenant: &str,
        recording: &str,
        expected_commitment: &[u8],
    ) -> Result<Self, CryptoError> {
        let cipher = Self::new(data_key, params, tenant, recording)?;
        if ct_eq(&cipher.commitment, expected_commitment) {
            Ok(cipher)
        } else {
            Err(CryptoError::CommitmentMismatch)
        }
    }

    pub fn commitment(&self) -> &[u8; COMMITMENT_LEN] {
        &self.commitment
    }

    fn nonce(&self, index: u32, is_final: bool) -> Nonce {
        let mut n = [0u8; NONCE_LEN];
        n[..NONCE_PREFIX_LEN].copy_from_slice(&self.nonce_prefix);
        n[NONCE_PREFIX_LEN..NONCE_PREFIX_LEN + 4].copy_from_slice(&index.to_be_bytes());
        n[NONCE_LEN - 1] = u8::from(is_final);
        Nonce::assume_unique_for_key(n)
    }

    fn aad(&self, index: u32, is_final: bool) -> Vec<u8> {
        let mut aad = Vec::with_capacity(self.aad_head.len() + 5);
        aad.extend_from_slice(&self.aad_head);
        aad.extend_from_slice(&index.to_be_bytes());
        aad.push(u8::from(is_final));
        aad
    }

    /// Seals one chunk in place: `plaintext` becomes `ciphertext || tag`.
    ///
    /// The caller must never seal two different plaintexts under the same
    /// (index, final) of one recording; ingest guarantees this by sealing each
    /// index exactly once and re-sending the same sealed bytes on retry.
    pub fn seal_chunk(&self, index: u32, is_final: bool, mut buf: Vec<u8>) -> Vec<u8> {
        let aad = self.aad(index, is_final);
        gcm_seal(&self.chunk_key, self.nonce(index, is_final), &aad, &mut buf);
        buf
    }

    /// Opens one chunk in place. Returns the plaintext only if the tag
    /// verifies; on failure the buffer is zeroed and dropped, so no byte of an
    /// unauthenticated chunk can leave this function.
    pub fn open_chunk(
        &self,
        index: u32,
        is_final: bool,
        mut buf: Vec<u8>,
    ) -> Result<Vec<u8>, CryptoError> {
        if buf.len() <= TAG_LEN {
            return Err(CryptoError::ChunkMalformed {
                index,
                reason: "shorter than a tag plus one byte",
            });
        }
        let aad = self.aad(index, is_final);
        match gcm_open(&self.chunk_key, self.nonce(index, is_final), &aad, &mut buf) {
            Some(n) => {
                buf.truncate(n);
                Ok(buf)
            }
            None => {
                buf.zeroize();
                Err(CryptoError::ChunkAuthentication { index })
            }
        }
    }

    /// Seals small metadata (the PII labels) under the recording's metadata
    /// key: `nonce[12] || ciphertext || tag`.
    pub fn seal_metadata(&self, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; METADATA_NONCE_LEN];
        fill_random(&mut nonce)?;
        Ok(self.seal_metadata_with(nonce, plaintext))
    }

    /// [`seal_metadata`](Self::seal_metadata) with a given nonce (the
    /// FORMAT.md vector; every real seal takes a random one).
    fn seal_metadata_with(&self, nonce: [u8; METADATA_NONCE_LEN], plaintext: &[u8]) -> Vec<u8> {
        let mut buf = plaintext.to_vec();
        gcm_seal(
            &self.metadata_key,
            Nonce::assume_unique_for_key(nonce),
            &self.aad_head,
            &mut buf,
        );
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        out
    }

    pub fn open_metadata(&self, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < METADATA_NONCE_LEN + TAG_LEN {
            return Err(CryptoError::MetadataAuthentication);
        }
        let (nonce, body) = sealed.split_at(METADATA_NONCE_LEN);
        let nonce: [u8; METADATA_NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| CryptoError::MetadataAuthentication)?;
        let mut buf = body.to_vec();
        let n = gcm_open(
            &self.metadata_key,
            Nonce::assume_unique_for_key(nonce),
            &self.aad_head,
            &mut buf,
        )
        .ok_or(CryptoError::MetadataAuthentication)?;
        buf.truncate(n);
        Ok(buf)
    }
}

/// AES-256-GCM seal in place: `buf` becomes `ciphertext || tag`. The one
/// sealing primitive of the format (chunks and labels), checked against
/// Project Wycheproof's vectors.
fn gcm_seal(key: &LessSafeKey, nonce: Nonce, aad: &[u8], buf: &mut Vec<u8>) {
    // Sealing only fails past GCM's 64 GiB limit, far above MAX_CHUNK_SIZE.
    #[allow(clippy::expect_used)]
    key.seal_in_place_append_tag(nonce, Aad::from(aad), buf)
        .expect("within the AES-GCM length limit");
}

/// AES-256-GCM open in place of `ciphertext || tag`: the plaintext length
/// (the plaintext is `buf[..n]`), or `None` when the tag does not verify.
fn gcm_open(key: &LessSafeKey, nonce: Nonce, aad: &[u8], buf: &mut [u8]) -> Option<usize> {
    key.open_in_place(nonce, Aad::from(aad), buf)
        .ok()
        .map(|plain| plain.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Project Wycheproof's AES-GCM vectors (every group with a 256-bit
    /// key, a 96-bit nonce and a 128-bit tag: the only shape the format
    /// uses) through the format's own seal and open.
    #[test]
    fn aes_gcm_passes_wycheproof() {
        use wycheproof::TestResult;
        let set = wycheproof::aead::TestSet::load(wycheproof::aead::TestName::AesGcm).unwrap();
        let (mut valid, mut invalid) = (0, 0);
        for group in set.test_groups {
            if group.key_size != 256 || group.nonce_size != 96 || group.tag_size != 128 {
                continue;
            }
            for t in group.tests {
                let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &t.key).unwrap());
                let nonce = || Nonce::try_assume_unique_for_key(&t.nonce).unwrap();
                let mut sealed = [&t.ct[..], &t.tag[..]].concat();
                let opened = gcm_open(&key, nonce(), &t.aad, &mut sealed);
                match t.result {
                    TestResult::Valid | TestResult::Acceptable => {
                        assert_eq!(opened, Some(t.pt.len()), "tcId {}", t.tc_id);
                        assert_eq!(&sealed[..t.pt.len()], &t.pt[..], "tcId {}", t.tc_id);
                        let mut buf = t.pt.to_vec();
                        gcm_seal(&key, nonce(), &t.aad, &mut buf);
                        assert_eq!(buf, [&t.ct[..], &t.tag[..]].concat(), "tcId {}", t.tc_id);
                        valid += 1;
                    }
                    TestResult::Invalid => {
                        assert_eq!(opened, None, "tcId {} ({}) opened", t.tc_id, t.comment);
                        invalid += 1;
                    }
                }
            }
        }
        assert!(
            valid >= 20 && invalid >= 10,
            "{valid} valid, {invalid} invalid vectors run"
        );
    }

    /// The vector printed in docs/FORMAT.md.
    pub(crate) fn vector() -> (DataKey, RecordingParams) {
        let dk = DataKey::from_slice(&(0u8..32).collect::<Vec<_>>()).unwrap();
        let salt: [u8; 32] = core::array::from_fn(|i| 0x40 + i as u8);
        let params = RecordingParams {
            salt,
            nonce_prefix: [0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6],
        };
        (dk, params)
    }

    #[test]
    fn test_vector_matches_format_doc() {
        let (dk, params) = vector();
        let c = RecordingCipher::new(&dk, &params, "tenant-a", "rec-1").unwrap();
        assert_eq!(
            hex::encode(c.commitment()),
            "0c417b18cce2fae51840a5893d6fa8ed7f6e0180599f936f8fb3b23072a0fdc5"
        );
        let sealed = c.seal_chunk(0, false, b"hello, ".to_vec());
        assert_eq!(
            hex::encode(&sealed),
            "b36ec6fdcc80067fee6767fe30c279b05000429b7dd54d"
        );
        let sealed = c.seal_chunk(1, true, b"world".to_vec());
        assert_eq!(
            hex::encode(&sealed),
            "866c2b8c861f622ad06fa8c5f022790a2c54ba74ca"
        );
    }

    /// The labels vector printed in docs/FORMAT.md.
    #[test]
    fn labels_vector_matches_format_doc() {
        let (dk, params) = vector();
        let c = RecordingCipher::new(&dk, &params, "tenant-a", "rec-1").unwrap();
        let nonce: [u8; 12] = core::array::from_fn(|i| 0xb0 + i as u8);
        let sealed = c.seal_metadata_with(nonce, br#"{"agent":"alex"}"#);
        assert_eq!(hex::encode(&sealed), LABELS_VECTOR);
        assert_eq!(c.open_metadata(&sealed).unwrap(), br#"{"agent":"alex"}"#);
    }

    const LABELS_VECTOR: &str =
        "b0b1b2b3b4b5b6b7b8b9babbb3070141992ef728bae30c543ca37745f5a9f9f92b0dd099eed9eab55536ebdb";

    /// A chunk buffer with room for the tag is sealed where it is: ingest
    /// allocates its chunk buffers so, and sealing must not copy 1 MiB
    /// into a second buffer of twice the size.
    #[test]
    fn sealing_with_room_for_the_tag_does_not_reallocate() {
        let (dk, params) = vector();
        let c = RecordingCipher::new(&dk, &params, "t", "r").unwrap();
        let mut buf = Vec::with_capacity((1 << 20) + TAG_LEN);
        buf.resize(1 << 20, 5u8);
        let at = buf.as_ptr();
        let sealed = c.seal_chunk(0, false, buf);
        assert_eq!(sealed.as_ptr(), at);
        assert_eq!(sealed.len(), (1 << 20) + TAG_LEN);
        assert_eq!(sealed.capacity(), (1 << 20) + TAG_LEN);
    }

    #[test]
    fn round_trip_and_every_binding_matters() {
        let (dk, params) = vector();
        let c = RecordingCipher::new(&dk, &params, "t", "r").unwrap();
        let sealed = c.seal_chunk(3, false, vec![7u8; 1000]);
        assert_eq!(sealed.len(), 1000 + TAG_LEN);
        assert_eq!(
            c.open_chunk(3, false, sealed.clone()).unwrap(),
            vec![7u8; 1000]
        );

        let other_tenant = RecordingCipher::new(&dk, &params, "u", "r").unwrap();
        let other_rec = RecordingCipher::new(&dk, &params, "t", "s").unwrap();
        let cases: Vec<(&str, Result<Vec<u8>, CryptoError>)> = vec![
            ("wrong index", c.open_chunk(4, false, sealed.clone())),
            ("final flag", c.open_chunk(3, true, sealed.clone())),
            (
                "other tenant",
                other_tenant.open_chunk(3, false, sealed.clone()),
            ),
            (
                "other recording",
                other_rec.open_chunk(3, false, sealed.clone()),
            ),
            ("bit flip", {
                let mut s = sealed.clone();
                s[10] ^= 1;
                c.open_chunk(3, false, s)
            }),
            (
                "truncated",
                c.open_chunk(3, false, sealed[..sealed.len() - 1].to_vec()),
            ),
            ("extended", {
                let mut s = sealed.clone();
                s.push(0);
                c.open_chunk(3, false, s)
            }),
        ];
        for (name, res) in cases {
            assert_eq!(
                res,
                Err(CryptoError::ChunkAuthentication {
                    index: if name == "wrong index" { 4 } else { 3 }
                }),
                "{name}"
            );
        }
        assert!(matches!(
            c.open_chunk(0, false, vec![0; TAG_LEN]),
            Err(CryptoError::ChunkMalformed { .. })
        ));
    }

    #[test]
    fn commitment_rejects_wrong_key() {
        let (dk, params) = vector();
        let c = RecordingCipher::new(&dk, &params, "t", "r").unwrap();
        let wrong = DataKey::from_slice(&[9u8; 32]).unwrap();
        let err =
            RecordingCipher::new_checked(&wrong, &params, "t", "r", c.commitment()).unwrap_err();
        assert_eq!(err, CryptoError::CommitmentMismatch);
        assert!(RecordingCipher::new_checked(&dk, &params, "t", "r", c.commitment()).is_ok());
    }

    #[test]
    fn metadata_round_trip_and_binding() {
        let (dk, params) = vector();
        let c = RecordingCipher::new(&dk, &params, "t", "r").unwrap();
        let sealed = c.seal_metadata(b"{\"agent\":\"x\"}").unwrap();
        assert_eq!(c.open_metadata(&sealed).unwrap(), b"{\"agent\":\"x\"}");
        let other = RecordingCipher::new(&dk, &params, "t", "r2").unwrap();
        assert_eq!(
            other.open_metadata(&sealed),
            Err(CryptoError::MetadataAuthentication)
        );
    }

    #[test]
    fn data_key_debug_is_redacted() {
        let (dk, _) = vector();
        assert_eq!(format!("{dk:?}"), "DataKey(<redacted>)");
    }

    #[test]
    fn chunk_size_bounds() {
        assert!(validate_chunk_size(DEFAULT_CHUNK_SIZE).is_ok());
        assert!(validate_chunk_size(MIN_CHUNK_SIZE - 1).is_err());
        assert!(validate_chunk_size(MAX_CHUNK_SIZE + 1).is_err());
    }
}
