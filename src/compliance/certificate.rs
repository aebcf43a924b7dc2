//! Deletion certificates, modelled on NIST SP 800-88 Rev. 1 Appendix G
//! ("Sample Certificate of Sanitization"): who sanitized what, when, by which
//! method, how it was verified, and, honestly, which copies the erasure
//! could not reach. Pure: no I/O.
//!
//! A certificate file is a JSON object `{"certificate": {…}, "signature":
//! "…"}`. The signature is a C2SP signed note by the deployment's audit key
//! whose text is
//!
//! ```text
//! callvault deletion certificate
//! <certificate id>
//! sha256:<hex SHA-256 of the certificate's canonical JSON>
//! ```
//!
//! The canonical JSON is the `certificate` object serialized as
//! [`Certificate`] declares it (fields in declaration order, no whitespace);
//! a certificate with a field added, removed or edited does not re-encode
//! to the signed hash, so [`verify`] refuses it.

use serde::{Deserialize, Serialize};

use crate::audit::note::{self, SignerKey, VerifierKey};
use crate::crypto::sha256_hex;

/// The `format` of every certificate this release writes.
pub const FORMAT: &str = "callvault-deletion-certificate/v1";
const NOTE_TITLE: &str = "callvault deletion certificate";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub format: String,
    pub certificate_id: String,
    pub tenant: String,
    /// When the certificate was completed (RFC 3339).
    pub issued_at: String,
    /// When the data keys were destroyed (RFC 3339).
    pub erased_at: String,
    pub standard: String,
    /// Who sanitized: the token (id and role) or the expiry job.
    pub sanitized_by: String,
    /// `request` or `retention_expiry`.
    pub trigger: String,
    /// Reason or legal basis as given (or the retention rule).
    pub reason: String,
    /// True when a request erased recordings before their `retain_until`.
    pub override_retention: bool,
    pub method: Method,
    /// The software that did it.
    pub tool: String,
    pub recordings: Vec<CertifiedRecording>,
    /// What was destroyed, in order.
    pub destroyed: Vec<String>,
    pub verification: Verification,
    /// Copies the erasure could not reach, with when they expire.
    pub copies_not_reached: Vec<UnreachedCopy>,
    /// The audit log and index of the erasure's event.
    pub audit_log: String,
    pub audit_event_index: u64,
    /// The note verifier key of the deployment's audit key, which signs
    /// this certificate (compare it with `callvault audit verifier-key`).
    pub verifier_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Method {
    /// SP 800-88 category: `Purge`.
    pub category: String,
    /// SP 800-88 technique: `Cryptographic Erase`.
    pub technique: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertifiedRecording {
    pub recording_id: String,
    pub external_call_id: String,
    /// Hex SHA-256 of the plaintext audio, as recorded at ingest.
    pub sha256: String,
    pub size_bytes: u64,
    pub ingested_at: String,
    /// The KMS key that had wrapped the recording's data key.
    pub kms_key_arn: String,
    /// Ciphertext objects deleted.
    pub chunk_objects: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verification {
    pub method: String,
    /// Catalog rows still naming an erased recording (must be 0).
    pub catalog_rows_remaining: u64,
    /// Objects still listed under an erased recording (must be 0).
    pub objects_remaining: u64,
    pub verified_at: String,
    /// `verified` when both counts are 0.
    pub result: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnreachedCopy {
    pub copy: String,
    pub detail: String,
    /// When it is gone at the latest (RFC 3339), if known.
    pub until: Option<String>,
}

/// The file form: the certificate and its signed note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCertificate {
    pub certificate: Certificate,
    pub signature: String,
}

impl Certificate {
    /// The canonical bytes the signature covers.
    pub fn canonical(&self) -> Vec<u8> {
        // Declaration order, no floats, no maps: deterministic.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn note_text(&self) -> String {
        format!(
            "{NOTE_TITLE}\n{}\nsha256:{}\n",
            self.certificate_id,
            sha256_hex(&self.canonical())
        )
    }

    /// Signs the certificate with the audit key.
    pub fn sign(self, key: &SignerKey) -> Result<SignedCertificate, String> {
        let signature = note::sign(&self.note_text(), &[key]).map_err(|e| e.to_string())?;
        Ok(SignedCertificate {
            certificate: self,
            signature,
        })
    }
}

impl SignedCertificate {
    /// The file's text (pretty JSON, newline-terminated).
    pub fn to_file(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// What a certificate that verified says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub certificate: Certificate,
    /// The key that verified it, and whether it came from the certificate
    /// itself (trust on first sight) rather than from the caller.
    pub key: VerifierKey,
    pub key_from_certificate: bool,
}

/// Verifies a certificate file offline. With `trusted`, the signature must
/// be by that key; without it, by the key the certificate names.
pub fn verify(file: &[u8], trusted: Option<&VerifierKey>) -> Result<Verified, String> {
    let signed: SignedCertificate = serde_json::from_slice(file)
        .map_err(|e| format!("not a callvault deletion certificate: {e}"))?;
    let c = &signed.certificate;
    if c.format != FORMAT {
        return Err(format!(
            "unknown certificate format `{}` (expected {FORMAT})",
            c.format
        ));
    }
    let (key, from_certificate) = match trusted {
        Some(k) => (k.clone(), false),
        None => (
            VerifierKey::parse(&c.verifier_key)
                .map_err(|e| format!("verifier_key: not a verifier key: {e}"))?,
            true,
        ),
    };
    let opened = note::open(signed.signature.as_bytes(), std::slice::from_ref(&key))
        .map_err(|e| format!("the signature does not verify with key {}: {e}", key.name()))?;
    if opened.text != c.note_text() {
        return Err(
            "the certificate does not match its signature: it was edited after signing".into(),
        );
    }
    if c.verification.result != "verified"
        || c.verification.catalog_rows_remaining != 0
        || c.verification.objects_remaining != 0
    {
        return Err("the certificate does not state a verified erasure".into());
    }
    Ok(Verified {
        certificate: signed.certificate,
        key,
        key_from_certificate: from_certificate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Certificate {
        Certificate {
            format: FORMAT.into(),
            certificate_id: "cert-1".into(),
            tenant: "t-1".into(),
            issued_at: "2026-11-26T10:00:00Z".into(),
            erased_at: "2026-11-26T09:59:59Z".into(),
            standard: "NIST SP 800-88 Rev. 1".into(),
            sanitized_by: "token:abc (compliance)".into(),
            trigger: "request".into(),
            reason: "GDPR Art. 17 request 42".into(),
            override_retention: false,
            method: Method {
                category: "Purge".into(),
                technique: "Cryptographic Erase".into(),
                description: "data key destroyed".into(),
            },
            tool: "callvault test".into(),
            recordings: vec![CertifiedRecording {
                recording_id: "r-1".into(),
                external_call_id: "call-1".into(),
                sha256: "00".repeat(32),
                size_bytes: 10,
                ingested_at: "2026-11-01T00:00:00Z".into(),
                kms_key_arn: "arn:aws:kms:eu-west-1:111122223333:key/k".into(),
                chunk_objects: 1,
            }],
            destroyed: vec!["the wrapped data key".into()],
            verification: Verification {
                method: "catalog queried, objects listed".into(),
                catalog_rows_remaining: 0,
                objects_remaining: 0,
                verified_at: "2026-11-26T10:00:00Z".into(),
                result: "verified".into(),
            },
            copies_not_reached: vec![UnreachedCopy {
                copy: "catalog backups".into(),
                detail: "until pruned".into(),
                until: Some("2027-01-01T00:00:00Z".into()),
            }],
            audit_log: "t-1".into(),
            audit_event_index: 7,
            verifier_key: String::new(),
        }
    }

    #[test]
    fn a_signed_certificate_verifies_and_an_edited_one_does_not() {
        let key = SignerKey::generate("callvault").unwrap();
        let mut c = sample();
        c.verifier_key = key.verifier().to_string();
        let file = c.sign(&key).unwrap().to_file();
        let ok = verify(file.as_bytes(), None).unwrap();
        assert!(ok.key_from_certificate);
        assert_eq!(ok.certificate.recordings[0].external_call_id, "call-1");
        assert!(verify(file.as_bytes(), Some(&key.verifier())).is_ok());

        let edited = file.replace("\"size_bytes\": 10", "\"size_bytes\": 11");
        assert_ne!(edited, file);
        let err = verify(edited.as_bytes(), None).unwrap_err();
        assert!(err.contains("edited"), "{err}");

        let other = SignerKey::generate("callvault").unwrap();
        assert!(verify(file.as_bytes(), Some(&other.verifier())).is_err());

        let added = file.replacen("\"tenant\"", "\"extra\": 1,\n    \"tenant\"", 1);
        assert!(verify(added.as_bytes(), None).is_err());
    }
}
