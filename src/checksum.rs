//! The per-chunk ciphertext checksum (SPEC §4, docs/FORMAT.md).
//!
//! The GCM tag authenticates each chunk for whoever holds its key; this
//! checksum lets a backup or a scrub find storage corruption without the
//! key. Chunks carry CRC-64/NVME, the checksum S3 computes by default, at
//! memory speed (it replaced a SHA-256 per chunk, which cost as much CPU as
//! the AES-GCM and the plaintext SHA-256 together). Chunks written before it
//! keep their SHA-256 and are checked as such.
//!
//! Stored as text in `chunks.sealed_checksum`: `crc64nvme:` and 16 lower-hex
//! digits, or the 64 lower-hex digits of a SHA-256 (the older chunks').

use std::fmt;

use crc_fast::CrcAlgorithm;

/// One chunk object's checksum, as the catalog records it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum SealedChecksum {
    Crc64Nvme(u64),
    /// Chunks written before CRC-64/NVME.
    Sha256([u8; 32]),
}

const CRC64NVME: &str = "crc64nvme:";

impl SealedChecksum {
    /// The checksum new chunks carry.
    pub fn of(sealed: &[u8]) -> Self {
        Self::Crc64Nvme(crc_fast::checksum(CrcAlgorithm::Crc64Nvme, sealed))
    }

    /// Whether `sealed` has this checksum, by its own algorithm.
    pub fn matches(&self, sealed: &[u8]) -> bool {
        match self {
            Self::Crc64Nvme(_) => Self::of(sealed) == *self,
            Self::Sha256(want) => {
                let got = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, sealed);
                got.as_ref() == want.as_slice()
            }
        }
    }

    /// The stored form; `None` for anything else.
    pub fn parse(stored: &str) -> Option<Self> {
        let hex_of = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if let Some(digits) = stored.strip_prefix(CRC64NVME) {
            if digits.len() != 16 || !hex_of(digits) {
                return None;
            }
            return u64::from_str_radix(digits, 16).ok().map(Self::Crc64Nvme);
        }
        if stored.len() != 64 || !hex_of(stored) {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(stored, &mut out).ok()?;
        Some(Self::Sha256(out))
    }

    /// The SHA-256 when this is one (an older chunk's), for comparing with
    /// a backup manifest's file hash without reading the file again.
    pub fn sha256_hex(&self) -> Option<String> {
        match self {
            Self::Sha256(d) => Some(hex::encode(d)),
            Self::Crc64Nvme(_) => None,
        }
    }
}

/// The stored form.
impl fmt::Display for SealedChecksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Crc64Nvme(v) => write!(f, "{CRC64NVME}{v:016x}"),
            Self::Sha256(d) => f.write_str(&hex::encode(d)),
        }
    }
}

impl fmt::Debug for SealedChecksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64nvme_is_the_checksum_s3_computes() {
        // The CRC-64/NVME check value (the catalogue's "123456789" vector),
        // and the value S3 returns as x-amz-checksum-crc64nvme for the
        // empty object (AAAAAAAAAAA= is zero).
        assert_eq!(
            SealedChecksum::of(b"123456789"),
            SealedChecksum::Crc64Nvme(0xae8b_1486_0a79_9888)
        );
        assert_eq!(SealedChecksum::of(b""), SealedChecksum::Crc64Nvme(0));
    }

    #[test]
    fn stored_forms_round_trip_and_check_by_their_algorithm() {
        let sealed = b"sealed chunk bytes".repeat(1000);
        let crc = SealedChecksum::of(&sealed);
        let text = crc.to_string();
        assert!(text.starts_with("crc64nvme:") && text.len() == 26, "{text}");
        assert_eq!(SealedChecksum::parse(&text), Some(crc));
        assert!(crc.matches(&sealed));
        let mut flipped = sealed.clone();
        flipped[500] ^= 1;
        assert!(!crc.matches(&flipped));
        assert_eq!(crc.sha256_hex(), None);

        let legacy = crate::crypto::sha256_hex(&sealed);
        let sha = SealedChecksum::parse(&legacy).unwrap();
        assert_eq!(sha.to_string(), legacy);
        assert_eq!(sha.sha256_hex().as_deref(), Some(legacy.as_str()));
        assert!(sha.matches(&sealed));
        assert!(!sha.matches(&flipped));

        for bad in [
            "",
            "crc64nvme:",
            "crc64nvme:0123456789ABCDEF",
            "crc64nvme:0123456789abcde",
            "crc32c:01234567",
            &legacy[1..],
            &legacy.to_uppercase(),
        ] {
            assert_eq!(SealedChecksum::parse(bad), None, "{bad}");
        }
    }
}
