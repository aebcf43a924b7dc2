//! The local keyring: KMS semantics without a KMS, for the embedded default and
//! single-node use.
//!
//! Key-encryption keys (AES-256) live in `keyring.json` in the data directory,
//! created with mode 0600 and rewritten atomically and durably (write a 0600
//! temp file, fsync it, rename it over, fsync the directory) before a change
//! is reported done. Wraps and unwraps read it through a cache that a `stat`
//! validates on every operation (a new inode, size or mtime means a new
//! file), so operator commands (`callvault keys local disable …`) take effect
//! on a running server at once, as they would in AWS.
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

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::{Zeroize, Zeroizing};

use super::{KmsError, WrapAlgorithm, arn_key_id, arn_region};
use crate::crypto::fill_random;

mod key;
#[cfg(test)]
mod tests;
mod wrap;

use key::{KeyringFile, LocalKey, SecretText};

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
        crate::store::create_private_dir_all(data_dir)
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

    /// Copies the keyring file to `dest`, a new file (mode 0600, fsynced),
    /// for a backup. Taken under the writer lock, so no key operation of
    /// another process is in progress, and the copy is a whole version of
    /// the file that the next writer will build on.
    pub fn copy_to(&self, dest: &Path) -> Result<(), KmsError> {
        let err = |e: std::io::Error| KmsError::Other(format!("cannot copy keyring: {e}"));
        let _lock = self.lock()?;
        let mut src = std::fs::File::open(&self.path).map_err(err)?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut out = opts.open(dest).map_err(err)?;
        // A kernel copy on Linux: the key material passes through no buffer
        // of ours that would need zeroizing.
        std::io::copy(&mut src, &mut out).map_err(err)?;
        out.sync_all().map_err(err)
    }

    /// The ARNs of the keys the keyring file at `path` holds (a backup's
    /// copy), to check it against the catalog that needs them. Reads only:
    /// no lock, nothing created. The key material is never returned and is
    /// zeroized when dropped.
    pub fn key_arns_in(path: &Path) -> Result<Vec<String>, KmsError> {
        let file = Self {
            dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            path: path.to_path_buf(),
            region: String::new(),
            cache: std::sync::Mutex::new(None),
        }
        .load()?;
        Ok(file.keys.iter().map(|k| k.arn.clone()).collect())
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

    /// Removes a key this process has just created and nothing has used
    /// (a `tenant create` that failed after making its key), so a failed
    /// attempt leaves no orphan key behind. Never call it for a key that
    /// may have wrapped anything: its material is gone for good.
    pub fn discard_unused_key(&self, arn: &str) -> Result<(), KmsError> {
        let _lock = self.lock()?;
        let mut file = self.load()?;
        let before = file.keys.len();
        file.keys.retain(|k| k.arn != arn);
        if file.keys.len() == before {
            return Err(KmsError::NotFound {
                arn: arn.to_owned(),
            });
        }
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
