//! The local keyring: KMS semantics without a KMS, for the embedded default and
//! single-node use.
//!
//! Key-encryption keys (AES-256) live in `keyring.json` in the data directory,
//! created with mode 0600 and rewritten atomically and durably (write a 0600
//! temp file, fsync it, rename it over, fsync the directory) before a change
//! is reported done. The file is re-read on every operation so that operator
//! commands (`callvault keys disable …`) take effect on a running server at
//! once, as they would in AWS.
//!
//! Writers exclude each other, across threads and processes (a CLI beside a
//! running server), with an exclusive lock on `keyring.lock` and re-read the
//! file under it, so no writer loses another's keys. The lock is a file of its
//! own because `keyring.json` is replaced by rename: a lock on the old inode
//! would not exclude a writer that opened the new one. Readers take no lock:
//! the rename is atomic, they see the old file or the new one.
//!
//! Symmetric keys wrap as `"CVK1" || u32be(kek version) || nonce[12] ||
//! AES-256-GCM(kek, nonce, aad, data_key) || tag[16]`, where
//! `aad = u32be(len id) || id || encryption_context.canonical_bytes()` and `id`
//! is the key id (the ARN after `key/`), which a key shares with its
//! multi-Region replicas, as in AWS KMS.
//!
//! Like a regional KMS endpoint, a keyring opened for one region only sees
//! the keys of that region; `replicate_key` makes a multi-Region replica.
//!
//! Asymmetric keys (`RSA_2048`, `RSA_3072`) hold a PKCS#8 private key and wrap
//! with RSAES-OAEP-SHA-256, byte-compatible with AWS KMS: the public key from
//! `get_public_key` wraps locally, `decrypt` unwraps.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::{
    EncryptionContext, GeneratedDataKey, KeyDescription, KeyState, Kms, KmsError, PublicKeyInfo,
    PublicWrapKey, WrapAlgorithm, arn_key_id, arn_region,
};
use crate::crypto::{DataKey, fill_random};

const MAGIC: &[u8; 4] = b"CVK1";
const WRAPPED_LEN: usize = 4 + 4 + 12 + 32 + 16;

#[derive(Debug, Serialize, Deserialize, Default)]
struct KeyringFile {
    keys: Vec<LocalKey>,
    /// The deployment's audit signing key (a note signer key text), made on
    /// first use: the embedded default keeps it here, with the KEKs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audit_signing_key: Option<SecretText>,
}

/// Key text kept in the keyring: zeroized on drop, never printed.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct SecretText(String);

impl Drop for SecretText {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Serialize, Deserialize)]
struct LocalKey {
    arn: String,
    state: String,
    created_at_ms: i64,
    #[serde(default)]
    deletion_date_ms: Option<i64>,
    /// KMS KeySpec: `SYMMETRIC_DEFAULT` or `RSA_2048` / `RSA_3072`.
    #[serde(default = "symmetric")]
    spec: String,
    /// Base64 key material. Symmetric: KEK versions, the last one current
    /// (rotation appends). RSA: one PKCS#8 private key.
    versions: Vec<String>,
}

fn symmetric() -> String {
    "SYMMETRIC_DEFAULT".into()
}

impl Drop for LocalKey {
    fn drop(&mut self) {
        for v in &mut self.versions {
            v.zeroize();
        }
    }
}

impl std::fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKey")
            .field("arn", &self.arn)
            .field("state", &self.state)
            .field("spec", &self.spec)
            .field(
                "versions",
                &format_args!("<{} redacted>", self.versions.len()),
            )
            .finish_non_exhaustive()
    }
}

impl LocalKey {
    fn kek(&self, version: u32) -> Result<LessSafeKey, KmsError> {
        let b64 =
            self.versions
                .get(version as usize)
                .ok_or_else(|| KmsError::InvalidCiphertext {
                    arn: self.arn.clone(),
                })?;
        let mut raw = B64.decode(b64).map_err(|_| self.corrupt())?;
        let key = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| self.corrupt());
        raw.zeroize();
        Ok(LessSafeKey::new(key?))
    }

    fn check_usable(&self) -> Result<(), KmsError> {
        match self.state.as_str() {
            "Enabled" => Ok(()),
            "Disabled" => Err(KmsError::Disabled {
                arn: self.arn.clone(),
            }),
            "PendingDeletion" => Err(KmsError::PendingDeletion {
                arn: self.arn.clone(),
            }),
            other => Err(KmsError::InvalidState {
                arn: self.arn.clone(),
                state: other.to_owned(),
            }),
        }
    }

    fn algorithm(&self) -> WrapAlgorithm {
        WrapAlgorithm::for_key_spec(&self.spec).unwrap_or(WrapAlgorithm::SymmetricDefault)
    }

    /// Refuses an operation with the wrong algorithm for this key, as KMS does.
    fn check_algorithm(&self, alg: WrapAlgorithm) -> Result<(), KmsError> {
        if alg == self.algorithm() {
            Ok(())
        } else {
            Err(KmsError::InvalidCiphertext {
                arn: self.arn.clone(),
            })
        }
    }

    fn corrupt(&self) -> KmsError {
        KmsError::Other(format!("keyring entry for {} is corrupt", self.arn))
    }

    /// The RSA private key of an asymmetric key (its one PKCS#8 version).
    fn rsa_key(&self) -> Result<aws_lc_rs::rsa::PrivateDecryptingKey, KmsError> {
        let mut der = B64
            .decode(self.versions.first().ok_or_else(|| self.corrupt())?)
            .map_err(|_| self.corrupt())?;
        let key = aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(&der);
        der.zeroize();
        key.map_err(|_| self.corrupt())
    }

    fn rsa_private(&self) -> Result<aws_lc_rs::rsa::OaepPrivateDecryptingKey, KmsError> {
        aws_lc_rs::rsa::OaepPrivateDecryptingKey::new(self.rsa_key()?).map_err(|_| self.corrupt())
    }

    fn public_spki(&self) -> Result<Vec<u8>, KmsError> {
        use aws_lc_rs::encoding::AsDer;
        let spki = self
            .rsa_key()?
            .public_key()
            .as_der()
            .map_err(|_| self.corrupt())?;
        Ok(spki.as_ref().to_vec())
    }

    fn description(&self) -> KeyDescription {
        let state = match self.state.as_str() {
            "Enabled" => KeyState::Enabled,
            "Disabled" => KeyState::Disabled,
            "PendingDeletion" => KeyState::PendingDeletion,
            other => KeyState::Other(other.to_owned()),
        };
        KeyDescription {
            arn: self.arn.clone(),
            state,
            deletion_date_ms: self.deletion_date_ms,
            key_spec: self.spec.clone(),
            key_usage: "ENCRYPT_DECRYPT".into(),
            encryption_algorithms: vec![self.algorithm().as_str().to_owned()],
        }
    }
}

fn aad(arn: &str, ctx: &EncryptionContext) -> Vec<u8> {
    let id = arn_key_id(arn);
    let mut out = (id.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&ctx.canonical_bytes());
    out
}

/// What identifies one version of the keyring file: every save writes a
/// new file and renames it over the old one, so a new inode means a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            inode,
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

/// A local keyring rooted at one file.
#[derive(Debug)]
pub struct LocalKeyring {
    dir: PathBuf,
    path: PathBuf,
    region: String,
    /// The parsed file as last read, for the wrap and unwrap paths: a
    /// `stat` per operation instead of a read and a parse. Writers always
    /// re-read under the lock.
    cache: std::sync::Mutex<Option<(FileStamp, std::sync::Arc<KeyringFile>)>>,
}

impl LocalKeyring {
    pub fn open(data_dir: &Path, region: &str) -> Result<Self, KmsError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| KmsError::Other(format!("cannot create data dir: {e}")))?;
        let ring = Self {
            dir: data_dir.to_path_buf(),
            path: data_dir.join("keyring.json"),
            region: region.to_owned(),
            cache: std::sync::Mutex::new(None),
        };
        if !ring.path.exists() {
            let _lock = ring.lock()?;
            // Another process may have created it while we waited.
            if !ring.path.exists() {
                ring.save(&KeyringFile::default())?;
                // The data directory may be as new as the keyring (created
                // just now, here or by whoever opened the data dir first):
                // its own entry must be durable too.
                sync_dir(data_dir.parent().unwrap_or(Path::new(".")))
                    .map_err(|e| KmsError::Other(format!("cannot sync data dir: {e}")))?;
            }
        }
        Ok(ring)
    }

    /// Takes the exclusive writer lock, released when the returned file is
    /// dropped. Each call opens its own file description, so it excludes
    /// other threads of this process as well as other processes.
    fn lock(&self) -> Result<std::fs::File, KmsError> {
        let err = |e: std::io::Error| KmsError::Other(format!("cannot lock keyring: {e}"));
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(self.dir.join("keyring.lock")).map_err(err)?;
        file.lock().map_err(err)?;
        Ok(file)
    }

    /// The deployment's audit signing key, created (named `name`) and kept in
    /// the keyring on first use.
    pub fn audit_signer(&self, name: &str) -> Result<crate::audit::note::SignerKey, KmsError> {
        use crate::audit::note::SignerKey;
        use secrecy::ExposeSecret;
        let parse = |t: &SecretText| {
            SignerKey::parse(&t.0)
                .map_err(|_| KmsError::Other("keyring holds an invalid audit key".into()))
        };
        if let Some(t) = &self.load_shared()?.audit_signing_key {
            return parse(t);
        }
        let _lock = self.lock()?;
        let mut file = self.load()?;
        if let Some(t) = &file.audit_signing_key {
            return parse(t);
        }
        let key = SignerKey::generate(name).map_err(|e| KmsError::Other(e.to_string()))?;
        file.audit_signing_key = Some(SecretText(key.to_secret_text().expose_secret().to_owned()));
        self.save(&file)?;
        Ok(key)
    }

    /// The current file, from the cache while the file on disk is the one
    /// it was read from.
    fn load_shared(&self) -> Result<std::sync::Arc<KeyringFile>, KmsError> {
        let stamp = std::fs::metadata(&self.path)
            .map(|m| FileStamp::of(&m))
            .map_err(|e| KmsError::Unavailable(format!("cannot read keyring: {e}")))?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached, file)) = cache.as_ref()
            && *cached == stamp
        {
            return Ok(file.clone());
        }
        let file = std::sync::Arc::new(self.load()?);
        // Stamped with what was seen before reading: if the file changed in
        // between, the next call sees a new stamp and reads again.
        *cache = Some((stamp, file.clone()));
        Ok(file)
    }

    fn load(&self) -> Result<KeyringFile, KmsError> {
        let err = |e: std::io::Error| KmsError::Unavailable(format!("cannot read keyring: {e}"));
        let mut f = std::fs::File::open(&self.path).map_err(err)?;
        // Sized up front so the text holding key material is never moved by
        // a reallocation (which would free a copy unzeroized). The file is
        // never written in place, so its length cannot change under us.
        let len = f.metadata().map_err(err)?.len();
        let mut text = Zeroizing::new(String::with_capacity(
            usize::try_from(len).map_err(|_| KmsError::Other("keyring file too large".into()))?,
        ));
        f.read_to_string(&mut text).map_err(err)?;
        serde_json::from_str(&text).map_err(|_| KmsError::Other("keyring file is corrupt".into()))
    }

    /// Replaces the keyring durably. Callers hold the writer lock.
    fn save(&self, file: &KeyringFile) -> Result<(), KmsError> {
        let err = |e: std::io::Error| KmsError::Other(format!("cannot write keyring: {e}"));
        // The JSON holds key material: serialize into a buffer of the exact
        // size (counted first) so it never reallocates, and zeroize it after.
        let mut counter = ByteCounter(0);
        serde_json::to_writer_pretty(&mut counter, file)
            .map_err(|e| KmsError::Other(e.to_string()))?;
        let mut json = Zeroizing::new(Vec::with_capacity(counter.0));
        serde_json::to_writer_pretty(&mut *json, file)
            .map_err(|e| KmsError::Other(e.to_string()))?;
        // Created 0600 (tempfile's default on Unix) and removed if we fail.
        let mut tmp = tempfile::Builder::new()
            .prefix(".keyring.json.")
            .suffix(".tmp")
            .tempfile_in(&self.dir)
            .map_err(err)?;
        tmp.write_all(&json).map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(&self.path).map_err(|e| err(e.error))?;
        sync_dir(&self.dir).map_err(err)
    }

    fn with_key<T>(
        &self,
        key_id: &str,
        f: impl FnOnce(&LocalKey) -> Result<T, KmsError>,
    ) -> Result<T, KmsError> {
        let file = self.load_shared()?;
        let key = self.find(&file, key_id)?;
        f(key)
    }

    /// A key of this keyring's region; keys of other regions are not found,
    /// as a regional KMS endpoint does not know them.
    fn find<'f>(&self, file: &'f KeyringFile, arn: &str) -> Result<&'f LocalKey, KmsError> {
        file.keys
            .iter()
            .find(|k| k.arn == arn && arn_region(arn) == Some(self.region.as_str()))
            .ok_or_else(|| KmsError::NotFound {
                arn: arn.to_owned(),
            })
    }

    /// Creates a multi-Region replica of `arn` in `region` (same key id and
    /// key material, its own state) and returns the replica's ARN.
    pub fn replicate_key(&self, arn: &str, region: &str) -> Result<String, KmsError> {
        let _lock = self.lock()?;
        let mut file = self.load()?;
        let primary = self.find(&file, arn)?;
        let replica_arn = format!("arn:callvault:kms:{region}:local:key/{}", arn_key_id(arn));
        if file.keys.iter().any(|k| k.arn == replica_arn) {
            return Err(KmsError::Other(format!("{replica_arn} already exists")));
        }
        let replica = LocalKey {
            arn: replica_arn.clone(),
            state: "Enabled".into(),
            created_at_ms: crate::domain::now_ms(),
            deletion_date_ms: None,
            spec: primary.spec.clone(),
            versions: primary.versions.clone(),
        };
        file.keys.push(replica);
        self.save(&file)?;
        Ok(replica_arn)
    }

    fn modify(
        &self,
        key_arn: &str,
        f: impl FnOnce(&mut LocalKey) -> Result<(), KmsError>,
    ) -> Result<(), KmsError> {
        let _lock = self.lock()?;
        let mut file = self.load()?;
        let key = file
            .keys
            .iter_mut()
            .find(|k| k.arn == key_arn)
            .ok_or_else(|| KmsError::NotFound {
                arn: key_arn.to_owned(),
            })?;
        f(key)?;
        self.save(&file)
    }

    /// Creates a new enabled symmetric key and returns its ARN.
    pub fn create_key(&self) -> Result<String, KmsError> {
        let mut kek = [0u8; 32];
        fill_random(&mut kek).map_err(|e| KmsError::Other(e.to_string()))?;
        let material = B64.encode(kek);
        kek.zeroize();
        self.insert_key("SYMMETRIC_DEFAULT", material)
    }

    /// Creates a new enabled RSA key (`RSA_2048` or `RSA_3072`) for
    /// write-only ingest and returns its ARN.
    pub fn create_rsa_key(&self, spec: &str) -> Result<String, KmsError> {
        use aws_lc_rs::encoding::AsDer;
        let size = match spec {
            "RSA_2048" => aws_lc_rs::rsa::KeySize::Rsa2048,
            "RSA_3072" => aws_lc_rs::rsa::KeySize::Rsa3072,
            other => return Err(KmsError::Other(format!("unsupported key spec {other}"))),
        };
        let key = aws_lc_rs::rsa::PrivateDecryptingKey::generate(size)
            .map_err(|_| KmsError::Other("RSA key generation failed".into()))?;
        let der = key
            .as_der()
            .map_err(|_| KmsError::Other("RSA key encoding failed".into()))?;
        self.insert_key(spec, B64.encode(der.as_ref()))
    }

    fn insert_key(&self, spec: &str, material: String) -> Result<String, KmsError> {
        let arn = format!(
            "arn:callvault:kms:{}:local:key/{}",
            self.region,
            uuid::Uuid::new_v4()
        );
        // Owned by a `LocalKey` at once, so the material is zeroized on
        // every path, including a failed lock or load.
        let key = LocalKey {
            arn: arn.clone(),
            state: "Enabled".into(),
            created_at_ms: crate::domain::now_ms(),
            deletion_date_ms: None,
            spec: spec.to_owned(),
            versions: vec![material],
        };
        let _lock = self.lock()?;
        let mut file = self.load()?;
        file.keys.push(key);
        self.save(&file)?;
        Ok(arn)
    }

    pub fn set_enabled(&self, arn: &str, enabled: bool) -> Result<(), KmsError> {
        self.modify(arn, |k| {
            if k.state == "PendingDeletion" {
                return Err(KmsError::PendingDeletion { arn: k.arn.clone() });
            }
            k.state = if enabled { "Enabled" } else { "Disabled" }.into();
            Ok(())
        })
    }

    pub fn schedule_deletion(&self, arn: &str, days: u32) -> Result<(), KmsError> {
        self.modify(arn, |k| {
            k.state = "PendingDeletion".into();
            k.deletion_date_ms = Some(crate::domain::now_ms() + i64::from(days) * 86_400_000);
            Ok(())
        })
    }

    pub fn cancel_deletion(&self, arn: &str) -> Result<(), KmsError> {
        self.modify(arn, |k| {
            k.state = "Disabled".into();
            k.deletion_date_ms = None;
            Ok(())
        })
    }

    /// Adds a new KEK version; new wraps use it, old wraps stay decryptable.
    /// (Like AWS, only symmetric keys rotate.)
    pub fn rotate(&self, arn: &str) -> Result<(), KmsError> {
        self.modify(arn, |k| {
            if k.algorithm() != WrapAlgorithm::SymmetricDefault {
                return Err(KmsError::Other(format!(
                    "{} is asymmetric and cannot rotate",
                    k.arn
                )));
            }
            let mut kek = [0u8; 32];
            fill_random(&mut kek).map_err(|e| KmsError::Other(e.to_string()))?;
            k.versions.push(B64.encode(kek));
            kek.zeroize();
            Ok(())
        })
    }

    fn wrap(
        key: &LocalKey,
        data_key: &DataKey,
        ctx: &EncryptionContext,
    ) -> Result<Vec<u8>, KmsError> {
        if key.algorithm() == WrapAlgorithm::RsaesOaepSha256 {
            return PublicWrapKey::from_spki(&key.arn, &key.public_spki()?)?.wrap(data_key);
        }
        let version = u32::try_from(key.versions.len().saturating_sub(1))
            .map_err(|_| KmsError::Other("too many key versions".into()))?;
        let kek = key.kek(version)?;
        let mut nonce = [0u8; 12];
        fill_random(&mut nonce).map_err(|e| KmsError::Other(e.to_string()))?;
        // Room for the tag up front: growing would free a copy of the
        // plaintext data key unzeroized.
        let mut buf = Vec::with_capacity(data_key.expose().len() + AES_256_GCM.tag_len());
        buf.extend_from_slice(data_key.expose());
        kek.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(&key.arn, ctx)),
            &mut buf,
        )
        .map_err(|_| KmsError::Other("local wrap failed".into()))?;
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        buf.zeroize();
        Ok(out)
    }

    fn unwrap_key(
        key: &LocalKey,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        let bad = || KmsError::InvalidCiphertext {
            arn: key.arn.clone(),
        };
        if key.algorithm() == WrapAlgorithm::RsaesOaepSha256 {
            let private = key.rsa_private()?;
            let mut out = vec![0u8; private.min_output_size()];
            let res = private
                .decrypt(
                    &aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256,
                    wrapped,
                    &mut out,
                    None,
                )
                .map_err(|_| bad())
                .and_then(|plain| DataKey::from_slice(plain).map_err(|_| bad()));
            out.zeroize();
            return res;
        }
        if wrapped.len() != WRAPPED_LEN || &wrapped[..4] != MAGIC {
            return Err(bad());
        }
        let version = u32::from_be_bytes(wrapped[4..8].try_into().map_err(|_| bad())?);
        let nonce: [u8; 12] = wrapped[8..20].try_into().map_err(|_| bad())?;
        let kek = key.kek(version)?;
        let mut buf = wrapped[20..].to_vec();
        let res = kek
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(&key.arn, ctx)),
                &mut buf,
            )
            .map_err(|_| bad())
            .and_then(|plain| DataKey::from_slice(plain).map_err(|_| bad()));
        buf.zeroize();
        res
    }
}

/// Counts the bytes written through it (to size a buffer exactly).
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A rename into a directory is durable only once the directory itself is
/// fsynced. Only Unix can open a directory to sync it.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    // `Path::parent` of a relative path ends in "", which is the current directory.
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if cfg!(unix) {
        std::fs::File::open(dir)?.sync_all()
    } else {
        Ok(())
    }
}

#[async_trait]
impl Kms for LocalKeyring {
    fn region(&self) -> &str {
        &self.region
    }

    async fn generate_data_key(
        &self,
        key_id: &str,
        ctx: &EncryptionContext,
    ) -> Result<GeneratedDataKey, KmsError> {
        self.with_key(key_id, |key| {
            key.check_usable()?;
            if key.algorithm() != WrapAlgorithm::SymmetricDefault {
                // As in AWS: GenerateDataKey needs a symmetric key.
                return Err(KmsError::Other(format!(
                    "{} is asymmetric; GenerateDataKey needs a symmetric key",
                    key.arn
                )));
            }
            let plaintext = DataKey::generate().map_err(|e| KmsError::Other(e.to_string()))?;
            let wrapped = Self::wrap(key, &plaintext, ctx)?;
            Ok(GeneratedDataKey {
                plaintext,
                wrapped,
                key_arn: key.arn.clone(),
            })
        })
    }

    async fn decrypt(
        &self,
        key_arn: &str,
        algorithm: WrapAlgorithm,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        self.with_key(key_arn, |key| {
            key.check_usable()?;
            key.check_algorithm(algorithm)?;
            Self::unwrap_key(key, wrapped, ctx)
        })
    }

    async fn re_encrypt(
        &self,
        (source_arn, source_alg): (&str, WrapAlgorithm),
        wrapped: &[u8],
        ctx: &EncryptionContext,
        (destination_key_id, destination_alg): (&str, WrapAlgorithm),
    ) -> Result<(String, Vec<u8>), KmsError> {
        let file = self.load_shared()?;
        let (src, dst) = (
            self.find(&file, source_arn)?,
            self.find(&file, destination_key_id)?,
        );
        src.check_usable()?;
        dst.check_usable()?;
        src.check_algorithm(source_alg)?;
        dst.check_algorithm(destination_alg)?;
        let plain = Self::unwrap_key(src, wrapped, ctx)?;
        Ok((dst.arn.clone(), Self::wrap(dst, &plain, ctx)?))
    }

    async fn describe_key(&self, key_id: &str, _tenant: &str) -> Result<KeyDescription, KmsError> {
        self.with_key(key_id, |k| Ok(k.description()))
    }

    async fn get_public_key(&self, key_id: &str, _tenant: &str) -> Result<PublicKeyInfo, KmsError> {
        self.with_key(key_id, |k| {
            k.check_usable()?;
            if k.algorithm() != WrapAlgorithm::RsaesOaepSha256 {
                return Err(KmsError::Other(format!(
                    "{} is symmetric and has no public key",
                    k.arn
                )));
            }
            Ok(PublicKeyInfo {
                arn: k.arn.clone(),
                spki_der: k.public_spki()?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_on_separate_handles_never_lose_each_others_keys() {
        // Two handles on one data dir stand in for two processes: they share
        // nothing in memory, only the file lock.
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            LocalKeyring::open(dir.path(), "local").unwrap(),
            LocalKeyring::open(dir.path(), "local").unwrap(),
        );
        let arns: Vec<String> = std::thread::scope(|s| {
            let workers: Vec<_> = [&a, &b, &a, &b]
                .into_iter()
                .map(|ring| {
                    s.spawn(move || {
                        (0..5)
                            .map(|_| ring.create_key().unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        let file = a.load().unwrap();
        assert_eq!(file.keys.len(), arns.len());
        for arn in &arns {
            assert!(file.keys.iter().any(|k| &k.arn == arn), "{arn} was lost");
        }
    }

    #[cfg(unix)]
    #[test]
    fn keyring_and_lock_are_private_and_no_temp_file_is_left() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ring = LocalKeyring::open(dir.path(), "local").unwrap();
        ring.create_key().unwrap();
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            let name = entry.file_name().into_string().unwrap();
            assert_eq!(mode, 0o600, "{name} has mode {mode:o}");
            names.push(name);
        }
        names.sort();
        assert_eq!(names, ["keyring.json", "keyring.lock"]);
    }

    #[test]
    fn debug_output_never_shows_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let ring = LocalKeyring::open(dir.path(), "local").unwrap();
        ring.create_key().unwrap();
        ring.create_rsa_key("RSA_2048").unwrap();
        let file = ring.load().unwrap();
        let shown = format!("{file:?} {ring:?}");
        for key in &file.keys {
            assert!(!shown.contains(&key.versions[0]), "{shown}");
            assert!(shown.contains(&key.arn), "{shown}");
        }
        assert!(shown.contains("<1 redacted>"), "{shown}");
    }
}
