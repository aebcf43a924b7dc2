//! A second, independent implementation of the chunk format (RustCrypto
//! `aes-gcm` + `hkdf`, written from docs/FORMAT.md alone) must decrypt what
//! the service wrote, and must reproduce the test vectors printed in the doc.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use callvault::domain::RecordingId;
use callvault::kms::{EncryptionContext, WrapAlgorithm};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::helpers::*;

fn lp(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn derive(dk: &[u8], salt: &[u8], purpose: u8, tenant: &str, rec: &str) -> [u8; 32] {
    let mut info = b"callvault".to_vec();
    info.push(1);
    info.push(purpose);
    lp(&mut info, tenant.as_bytes());
    lp(&mut info, rec.as_bytes());
    let mut out = [0u8; 32];
    Hkdf::<Sha256>::new(Some(salt), dk)
        .expand(&info, &mut out)
        .unwrap();
    out
}

/// One recording's chunk parameters, as FORMAT.md names them.
struct Rec<'a> {
    key: [u8; 32],
    prefix: &'a [u8],
    tenant: &'a str,
    rec: &'a str,
}

impl Rec<'_> {
    /// The nonce and associated data of chunk `index`.
    fn nonce_aad(&self, index: u32, fin: bool) -> (Vec<u8>, Vec<u8>) {
        let mut nonce = self.prefix.to_vec();
        nonce.extend_from_slice(&index.to_be_bytes());
        nonce.push(u8::from(fin));
        let mut aad = vec![1u8];
        lp(&mut aad, self.tenant.as_bytes());
        lp(&mut aad, self.rec.as_bytes());
        aad.extend_from_slice(&index.to_be_bytes());
        aad.push(u8::from(fin));
        (nonce, aad)
    }

    fn open(&self, index: u32, fin: bool, sealed: &[u8]) -> Option<Vec<u8>> {
        let (nonce, aad) = self.nonce_aad(index, fin);
        let payload = Payload {
            msg: sealed,
            aad: &aad,
        };
        Aes256Gcm::new_from_slice(&self.key)
            .unwrap()
            .decrypt(Nonce::from_slice(&nonce), payload)
            .ok()
    }

    fn seal(&self, index: u32, fin: bool, plain: &[u8]) -> Vec<u8> {
        let (nonce, aad) = self.nonce_aad(index, fin);
        let payload = Payload {
            msg: plain,
            aad: &aad,
        };
        Aes256Gcm::new_from_slice(&self.key)
            .unwrap()
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap()
    }
}

#[tokio::test]
async fn rustcrypto_decrypts_what_the_service_wrote() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let audio = fixture("speech_alaw.wav");
    let id = app
        .ingest("indep", audio.clone())
        .await
        .unwrap()
        .recording
        .unwrap()
        .recording_id;
    let rec = callvault::catalog::recordings::get(
        &mut *app.db().await,
        &app.tenant.id,
        &RecordingId::parse("id", &id).unwrap(),
    )
    .await
    .unwrap();
    let tenant = app.tenant.id.to_string();
    // Unwrapping the data key is KMS's job; the format is what is independent.
    let ctx = EncryptionContext {
        tenant: tenant.clone(),
        recording: id.clone(),
    };
    let dk = app
        .archive
        .kms
        .decrypt(
            &rec.key_arn,
            WrapAlgorithm::SymmetricDefault,
            &rec.wrapped_key,
            &ctx,
        )
        .await
        .unwrap();
    assert_eq!(
        derive(dk.expose(), &rec.salt, 2, &tenant, &id).to_vec(),
        rec.commitment,
        "key commitment"
    );
    let cipher = Rec {
        key: derive(dk.expose(), &rec.salt, 1, &tenant, &id),
        prefix: &rec.nonce_prefix,
        tenant: &tenant,
        rec: &id,
    };
    let chunks =
        callvault::catalog::recordings::chunks(&mut *app.db().await, &app.tenant.id, &rec.id)
            .await
            .unwrap();
    let mut plain = Vec::new();
    for c in &chunks {
        let sealed = app.archive.store.get(&c.object_key).await.unwrap();
        let fin = c.index + 1 == rec.chunk_count;
        plain.extend(cipher.open(c.index, fin, &sealed).expect("authentic chunk"));
    }
    assert!(plain == audio);
    app.shutdown().await;
}

/// Reads `name: hex` lines from docs/FORMAT.md.
fn doc_value(doc: &str, name: &str) -> Vec<u8> {
    let line = doc
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("FORMAT.md has no `{name}:` line"));
    hex::decode(line.trim()).unwrap()
}

#[test]
fn format_doc_vectors_hold_for_an_independent_implementation() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/FORMAT.md")).unwrap();
    let dk = doc_value(&doc, "data_key");
    let salt = doc_value(&doc, "salt");
    let prefix = doc_value(&doc, "nonce_prefix");
    let (t, r) = ("tenant-a", "rec-1");
    assert_eq!(
        derive(&dk, &salt, 2, t, r).to_vec(),
        doc_value(&doc, "commitment")
    );
    let key = derive(&dk, &salt, 1, t, r);
    let cipher = Rec {
        key,
        prefix: &prefix,
        tenant: t,
        rec: r,
    };
    assert_eq!(key.to_vec(), doc_value(&doc, "chunk_key"));
    assert_eq!(
        cipher.seal(0, false, b"hello, "),
        doc_value(&doc, "chunk_0")
    );
    assert_eq!(cipher.seal(1, true, b"world"), doc_value(&doc, "chunk_1"));
    assert_eq!(
        cipher.open(1, true, &doc_value(&doc, "chunk_1")).unwrap(),
        b"world"
    );
    // The final flag is authenticated: chunk 1 does not open as non-final.
    assert!(cipher.open(1, false, &doc_value(&doc, "chunk_1")).is_none());

    // Labels: nonce || AES-256-GCM(metadata_key, nonce, version || lp(T) || lp(R), json) || tag.
    let sealed = doc_value(&doc, "labels_sealed");
    let metadata_key = derive(&dk, &salt, 3, t, r);
    let mut aad = vec![1u8];
    lp(&mut aad, t.as_bytes());
    lp(&mut aad, r.as_bytes());
    let json = Aes256Gcm::new_from_slice(&metadata_key)
        .unwrap()
        .decrypt(
            Nonce::from_slice(&sealed[..12]),
            Payload {
                msg: &sealed[12..],
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(json, doc_value(&doc, "labels_json"));

    // A local keyring wrap: "CVK1" || u32be(version) || nonce || GCM(kek, nonce, aad, DK) || tag,
    // aad = u32be(len(id)) || id || for "recording", "tenant": u32be(len) || key || u32be(len) || value.
    let wrapped = doc_value(&doc, "keyring_wrapped");
    assert_eq!(&wrapped[..8], b"CVK1\0\0\0\0");
    let mut aad = Vec::new();
    for part in [
        &b"k-1"[..],
        b"recording",
        r.as_bytes(),
        b"tenant",
        t.as_bytes(),
    ] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part);
    }
    let unwrapped = Aes256Gcm::new_from_slice(&doc_value(&doc, "keyring_kek"))
        .unwrap()
        .decrypt(
            Nonce::from_slice(&wrapped[8..20]),
            Payload {
                msg: &wrapped[20..],
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(unwrapped, dk);
}
