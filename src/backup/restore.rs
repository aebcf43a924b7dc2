//! `backup restore`: verify, then write a new data directory, the catalog
//! last, each file checked against the manifest again as it is copied (the
//! backup may change between the two reads).

use std::path::{Path, PathBuf};

use super::files::{self, io};
use super::manifest::{CATALOG_FILE, KEYRING_FILE, Manifest, OBJECTS_DIR};
use super::{BackupError, Damage, blocking, bounded, verify};
use crate::catalog::Catalog;
use crate::catalog::snapshot::known_schema_version;
use crate::store::ChunkStore;

/// What `restore` wrote.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub data_dir: PathBuf,
    pub manifest: Manifest,
    pub files: u64,
    pub bytes: u64,
}

/// Restores the backup `backup` into `data_dir`, which must be empty or not
/// exist. Nothing is overwritten; on failure `data_dir` is left as it was
/// found (removed if this created it, emptied if it was empty).
pub async fn restore(backup: &Path, data_dir: &Path) -> Result<RestoreReport, BackupError> {
    let existed = check_empty(data_dir)?;
    let report = verify(backup).await?;
    let manifest = report.manifest;
    let known = known_schema_version();
    if manifest.catalog_schema_version > known {
        return Err(BackupError::SchemaTooNew {
            backup: manifest.catalog_schema_version,
            known,
            version: manifest.callvault_version.clone(),
        });
    }
    files::create_private_dir_all(data_dir)?;
    match write(backup, data_dir, &manifest).await {
        Ok(()) => Ok(RestoreReport {
            data_dir: data_dir.to_path_buf(),
            files: report.files,
            bytes: report.bytes,
            manifest,
        }),
        Err(e) => {
            undo(data_dir, existed);
            Err(e)
        }
    }
}

/// Refuses a data dir that holds anything. Returns whether it exists.
fn check_empty(data_dir: &Path) -> Result<bool, BackupError> {
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(true),
            Some(e) => Err(BackupError::DestinationNotEmpty {
                path: data_dir.to_path_buf(),
                entry: e
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .unwrap_or_else(|e| e.to_string()),
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io("cannot read", data_dir)(e)),
    }
}

/// Puts `data_dir` back as it was found: it was empty, or did not exist.
fn undo(data_dir: &Path, existed: bool) {
    if !existed {
        let _ = std::fs::remove_dir_all(data_dir);
        return;
    }
    if let Ok(entries) = std::fs::read_dir(data_dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// Objects through the store (its layout, its fsyncs), then the keyring,
/// then the catalog under a temporary name renamed into place: a server
/// started on a data dir whose restore failed finds no catalog.
async fn write(backup: &Path, data_dir: &Path, manifest: &Manifest) -> Result<(), BackupError> {
    let store = ChunkStore::local(&data_dir.join(OBJECTS_DIR))?;
    let damaged = |problem: Damage| BackupError::Damaged {
        dir: backup.to_path_buf(),
        problem,
    };
    bounded(manifest.objects(), 4, |(key, f)| {
        let (store, path) = (store.clone(), backup.join(&f.path));
        async move {
            let bytes = blocking("object read", move || {
                std::fs::read(&path).map_err(io("cannot read", &path))
            })
            .await?;
            if crate::crypto::sha256_hex(&bytes) != f.sha256 {
                return Err(damaged(Damage::Checksum(f.path.clone())));
            }
            store.put(key, bytes.into()).await?;
            Ok(())
        }
    })
    .await?;

    for (name, dest) in [
        (KEYRING_FILE, data_dir.join(KEYRING_FILE)),
        (CATALOG_FILE, data_dir.join(".catalog.db.restoring")),
    ] {
        let Some(f) = manifest.file(name) else {
            continue;
        };
        let (src, to) = (backup.join(name), dest.clone());
        let (_, sha256) = blocking("file copy", move || files::copy_hashing(&src, &to)).await?;
        if sha256 != f.sha256 {
            return Err(damaged(Damage::Checksum(name.to_owned())));
        }
    }
    let catalog = data_dir.join(CATALOG_FILE);
    std::fs::rename(data_dir.join(".catalog.db.restoring"), &catalog)
        .map_err(io("cannot rename into", &catalog))?;
    let dir = data_dir.to_path_buf();
    blocking("directory sync", move || {
        files::sync_dir(&dir)?;
        files::sync_dir(
            dir.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
    })
    .await?;
    // Opened once as a server opens it: the migrations of this release run
    // (a backup of an older schema is brought up to date) and WAL is set.
    let opened = Catalog::connect(&format!("sqlite://{}", catalog.display())).await?;
    opened.close().await;
    Ok(())
}
