//! `backup verify`: every checksum recomputed, nothing unlisted, and the
//! catalog copy checked against the manifest and the keyring copy. Reads
//! only: the catalog copy is opened immutable.

use std::path::{Path, PathBuf};

use sqlx::Connection as _;

use super::files;
use super::manifest::{
    CATALOG_FILE, KEYRING_FILE, MANIFEST_FILE, Manifest, check_path, object_path,
};
use super::{BackupError, Damage, blocking, is_local_key};
use crate::catalog::snapshot;
use crate::kms::local::LocalKeyring;

/// What a backup that verified holds.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// Files checked (the manifest's entries).
    pub files: u64,
    pub bytes: u64,
}

/// Verifies the backup in `dir`; the error names the first problem.
pub async fn verify(dir: &Path) -> Result<VerifyReport, BackupError> {
    let damaged = |problem: Damage| BackupError::Damaged {
        dir: dir.to_path_buf(),
        problem,
    };
    let manifest = {
        let dir = dir.to_path_buf();
        blocking("backup verify", move || check_files(&dir)).await?
    }
    .map_err(damaged)?;
    check_catalog(dir, &manifest).await?.map_err(damaged)?;
    Ok(VerifyReport {
        dir: dir.to_path_buf(),
        files: manifest.files.len() as u64,
        bytes: manifest.files.iter().map(|f| f.size).sum(),
        manifest,
    })
}

/// The manifest, then every listed file in its order (present, its size,
/// its SHA-256), then files the manifest does not list.
fn check_files(dir: &Path) -> Result<Result<Manifest, Damage>, BackupError> {
    let text = match std::fs::read(dir.join(MANIFEST_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Err(Damage::NoManifest));
        }
        Err(e) => return Err(files::io("cannot read", &dir.join(MANIFEST_FILE))(e)),
    };
    let manifest = match Manifest::parse(&text) {
        Ok(m) => m,
        Err(e) => return Ok(Err(Damage::Manifest(e))),
    };
    for f in &manifest.files {
        let path = dir.join(&f.path);
        if !path.is_file() {
            return Ok(Err(Damage::Missing(f.path.clone())));
        }
        let (size, sha256) = files::hash_file(&path)?;
        if size != f.size {
            return Ok(Err(Damage::Size {
                path: f.path.clone(),
                listed: f.size,
                found: size,
            }));
        }
        if sha256 != f.sha256 {
            return Ok(Err(Damage::Checksum(f.path.clone())));
        }
    }
    let listed = manifest.by_path();
    for rel in files::files_under(dir)? {
        if rel != MANIFEST_FILE && (check_path(&rel).is_err() || !listed.contains_key(rel.as_str()))
        {
            return Ok(Err(Damage::Unlisted(rel)));
        }
    }
    Ok(Ok(manifest))
}

/// The catalog copy: its tables, its schema version and recording count as
/// the manifest says, every object of a committed recording in the backup
/// as its chunk row recorded it, every local key it names in the keyring.
/// Whether the backup's copy of a chunk (`f`, whose SHA-256 and size
/// `check_files` verified) has the checksum its catalog row recorded. An
/// older chunk's SHA-256 compares with the manifest's; a CRC-64/NVME is
/// computed from the file.
async fn same_chunk(
    dir: &Path,
    f: &super::manifest::FileEntry,
    c: &snapshot::ChunkObject,
) -> Result<bool, BackupError> {
    if let Some(sha256) = c.sealed_checksum.sha256_hex() {
        return Ok(sha256 == f.sha256);
    }
    let path = dir.join(&f.path);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(files::io("cannot read", &path))?;
    Ok(c.sealed_checksum.matches(&bytes))
}

async fn check_catalog(dir: &Path, manifest: &Manifest) -> Result<Result<(), Damage>, BackupError> {
    let unreadable = |e: crate::error::Error| Damage::CatalogUnreadable(e.to_string());
    let mut conn = match snapshot::open_copy(&dir.join(CATALOG_FILE)).await {
        Ok(c) => c,
        Err(e) => return Ok(Err(unreadable(e))),
    };
    let missing = match snapshot::missing_tables(&mut conn).await {
        Ok(m) => m,
        Err(e) => return Ok(Err(unreadable(e))),
    };
    if !missing.is_empty() {
        return Ok(Err(Damage::CatalogTables(
            missing.iter().map(|t| t.to_string()).collect(),
        )));
    }
    let read = async {
        Ok::<_, crate::error::Error>((
            snapshot::schema_version(&mut conn).await?,
            snapshot::counts(&mut conn).await?,
            snapshot::chunk_objects(&mut conn).await?,
            snapshot::key_arns(&mut conn).await?,
        ))
    };
    let (schema, counts, chunks, key_arns) = match read.await {
        Ok(r) => r,
        Err(e) => return Ok(Err(unreadable(e))),
    };
    let _ = conn.close().await;
    if schema != manifest.catalog_schema_version {
        return Ok(Err(Damage::SchemaVersion {
            catalog: schema,
            manifest: manifest.catalog_schema_version,
        }));
    }
    if counts.recordings != manifest.counts.recordings {
        return Ok(Err(Damage::Recordings {
            catalog: counts.recordings,
            manifest: manifest.counts.recordings,
        }));
    }
    let listed = manifest.by_path();
    for c in &chunks {
        let path = object_path(&c.object_key);
        match listed.get(path.as_str()) {
            Some(f) if f.size == c.sealed_size && same_chunk(dir, f, c).await? => {}
            Some(_) => {
                return Ok(Err(Damage::ChunkDiffers {
                    key: c.object_key.clone(),
                    recording: c.recording_id.clone(),
                }));
            }
            // Uploads in flight need not have their objects.
            None if !c.committed => {}
            None => {
                return Ok(Err(Damage::ChunkMissing {
                    key: c.object_key.clone(),
                    recording: c.recording_id.clone(),
                }));
            }
        }
    }
    let local: Vec<String> = key_arns.into_iter().filter(|a| is_local_key(a)).collect();
    if local.is_empty() {
        return Ok(Ok(()));
    }
    let held = match manifest.file(KEYRING_FILE) {
        Some(_) => {
            let path = dir.join(KEYRING_FILE);
            let read =
                blocking("keyring read", move || Ok(LocalKeyring::key_arns_in(&path))).await?;
            match read {
                Ok(arns) => arns,
                Err(e) => return Ok(Err(Damage::KeyringUnreadable(e.to_string()))),
            }
        }
        None => Vec::new(),
    };
    Ok(match local.into_iter().find(|a| !held.contains(a)) {
        Some(arn) => Err(Damage::KeyMissing(arn)),
        None => Ok(()),
    })
}
