//! `backup create`: catalog snapshot, keyring, the objects the snapshot
//! names, manifest; under `DIR.partial`, renamed when complete.

use std::path::{Path, PathBuf};

use sqlx::Connection as _;

use super::files::{self, io};
use super::manifest::{
    CATALOG_FILE, Counts, FORMAT, FileEntry, KEYRING_FILE, MANIFEST_FILE, Manifest, OBJECTS_DIR,
    check_path, format_time, object_path,
};
use super::{BackupError, Damage, blocking, bounded, is_local_key};
use crate::catalog::snapshot::{self, ChunkObject};
use crate::domain::now_ms;
use crate::error::Error;
use crate::kms::local::LocalKeyring;
use crate::store::ChunkStore;

/// How many catalog snapshots a backup takes before it gives up on an
/// object of a committed recording that keeps missing from the store.
pub const MAX_SNAPSHOTS: u32 = 3;

/// Objects read and written at once.
const PARALLEL_OBJECTS: usize = 4;

/// What `create` wrote.
#[derive(Debug, Clone)]
pub struct CreateReport {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// Catalog snapshots taken (more than one when an object of a
    /// committed recording vanished after a snapshot).
    pub snapshots: u32,
}

/// Backs up the data directory `data_dir` into `out`, which must not exist.
pub async fn create(data_dir: &Path, out: &Path) -> Result<CreateReport, BackupError> {
    let not_data_dir = |reason: &str| BackupError::NotADataDir {
        path: data_dir.to_path_buf(),
        reason: reason.to_owned(),
    };
    if !data_dir.join(CATALOG_FILE).is_file() {
        return Err(not_data_dir("it has no catalog.db"));
    }
    if out.exists() {
        return Err(BackupError::OutputExists(out.to_path_buf()));
    }
    let partial = partial_path(out);
    if partial.exists() {
        return Err(BackupError::PartialExists(partial));
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    files::create_private_dir_all(&parent)?;
    let mut snapshots = 0;
    let manifest = loop {
        snapshots += 1;
        files::create_private_dir_all(&partial)?;
        let taken = take(data_dir, &partial).await;
        if taken.is_err() {
            // Only what this run created: `partial` did not exist before.
            let _ = std::fs::remove_dir_all(&partial);
        }
        match taken {
            Ok(m) => break m,
            Err(Taken::Vanished { key, recording }) => {
                if snapshots >= MAX_SNAPSHOTS {
                    return Err(BackupError::ObjectLost {
                        key,
                        recording,
                        attempts: snapshots,
                    });
                }
                tracing::warn!(
                    object = %key,
                    recording = %recording,
                    "an object of the catalog snapshot vanished (erased since?); taking a new snapshot"
                );
            }
            Err(Taken::Failed(e)) => return Err(e),
        }
    };
    std::fs::rename(&partial, out).map_err(io("cannot rename the backup to", out))?;
    files::sync_dir(&parent)?;
    Ok(CreateReport {
        dir: out.to_path_buf(),
        manifest,
        snapshots,
    })
}

/// `DIR.partial` beside `DIR`.
fn partial_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    dir.with_file_name(name)
}

/// One attempt's outcome other than a manifest.
enum Taken {
    /// An object of a committed recording was not in the store: a new
    /// snapshot may no longer hold the recording.
    Vanished {
        key: String,
        recording: String,
    },
    Failed(BackupError),
}

impl From<BackupError> for Taken {
    fn from(e: BackupError) -> Self {
        Taken::Failed(e)
    }
}

impl From<Error> for Taken {
    fn from(e: Error) -> Self {
        Taken::Failed(e.into())
    }
}

/// One snapshot into `partial`: catalog, keyring, objects, manifest.
async fn take(data_dir: &Path, partial: &Path) -> Result<Manifest, Taken> {
    let created_at_ms = now_ms();
    let catalog_copy = partial.join(CATALOG_FILE);
    // Created empty first, so the copy has this file's mode (0600).
    drop(files::create_private(&catalog_copy)?);
    let mut live = snapshot::open_live(&data_dir.join(CATALOG_FILE)).await?;
    let copied = snapshot::vacuum_into(&mut live, &catalog_copy).await;
    let _ = live.close().await;
    copied?;
    let catalog_entry = {
        let path = catalog_copy.clone();
        blocking("catalog sync", move || {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io("cannot sync", &path))?;
            files::hash_file(&path)
        })
        .await?
    };

    let mut copy = snapshot::open_copy(&catalog_copy).await?;
    let missing = snapshot::missing_tables(&mut copy).await?;
    if !missing.is_empty() {
        return Err(BackupError::NotADataDir {
            path: data_dir.to_path_buf(),
            reason: format!("its catalog.db lacks the tables {}", missing.join(", ")),
        }
        .into());
    }
    let schema = snapshot::schema_version(&mut copy).await?;
    let catalog_counts = snapshot::counts(&mut copy).await?;
    let chunks = snapshot::chunk_objects(&mut copy).await?;
    let key_arns = snapshot::key_arns(&mut copy).await?;
    let _ = copy.close().await;

    let keyring_entry = copy_keyring(data_dir, partial, &key_arns).await?;

    let (objects, skipped) = copy_objects(data_dir, partial, chunks).await?;

    let mut files = vec![FileEntry {
        path: CATALOG_FILE.into(),
        size: catalog_entry.0,
        sha256: catalog_entry.1,
    }];
    files.extend(keyring_entry);
    let counts = Counts {
        tenants: catalog_counts.tenants,
        recordings: catalog_counts.recordings,
        uploads_in_flight: catalog_counts.uploads_in_flight,
        chunks: catalog_counts.chunks,
        objects: objects.len() as u64,
        object_bytes: objects.iter().map(|f| f.size).sum(),
        in_flight_objects_skipped: skipped,
    };
    files.extend(objects);
    let manifest = Manifest {
        format: FORMAT.into(),
        created_at: format_time(created_at_ms),
        callvault_version: env!("CARGO_PKG_VERSION").into(),
        catalog_schema_version: schema,
        counts,
        files,
    };
    let partial = partial.to_path_buf();
    let json = manifest.to_json();
    blocking("manifest write", move || {
        files::write_private(&partial.join(MANIFEST_FILE), &json)?;
        files::sync_tree(&partial)
    })
    .await?;
    Ok(manifest)
}

/// Copies the keyring under its lock and checks it holds every local key
/// the catalog snapshot names. `None` when the data dir has no keyring
/// (a catalog whose keys are all in AWS KMS).
async fn copy_keyring(
    data_dir: &Path,
    partial: &Path,
    key_arns: &[String],
) -> Result<Option<FileEntry>, BackupError> {
    let local: Vec<String> = key_arns
        .iter()
        .filter(|a| is_local_key(a))
        .cloned()
        .collect();
    let source = data_dir.join(KEYRING_FILE);
    if !source.is_file() {
        return match local.first() {
            Some(arn) => Err(BackupError::NotADataDir {
                path: data_dir.to_path_buf(),
                reason: format!("it has no keyring.json, and its catalog names local key {arn}"),
            }),
            None => Ok(None),
        };
    }
    let (data_dir, dest) = (data_dir.to_path_buf(), partial.join(KEYRING_FILE));
    blocking("keyring copy", move || {
        LocalKeyring::open(&data_dir, "local")?.copy_to(&dest)?;
        let held = LocalKeyring::key_arns_in(&dest)?;
        if let Some(arn) = local.iter().find(|a| !held.contains(a)) {
            return Err(BackupError::NotADataDir {
                path: data_dir,
                reason: Damage::KeyMissing(arn.clone()).to_string(),
            });
        }
        let (size, sha256) = files::hash_file(&dest)?;
        Ok(Some(FileEntry {
            path: KEYRING_FILE.into(),
            size,
            sha256,
        }))
    })
    .await
}

/// Copies the objects `chunks` name into `partial/objects/`. Returns their
/// entries in key order and how many objects of uploads in flight were
/// skipped.
async fn copy_objects(
    data_dir: &Path,
    partial: &Path,
    chunks: Vec<ChunkObject>,
) -> Result<(Vec<FileEntry>, u64), Taken> {
    if chunks.is_empty() {
        return Ok((Vec::new(), 0));
    }
    // The server made this directory when it first started; a data dir
    // without it gets the empty directory any node would make.
    let store_dir = data_dir.join(OBJECTS_DIR);
    let store = ChunkStore::local(&store_dir)?;
    let results: Vec<Option<FileEntry>> = bounded(chunks, PARALLEL_OBJECTS, |c| {
        copy_object(&store, partial, c)
    })
    .await?;
    let total = results.len() as u64;
    let entries: Vec<FileEntry> = results.into_iter().flatten().collect();
    let skipped = total - entries.len() as u64;
    Ok((entries, skipped))
}

/// Copies one object, checked against its chunk row. `None`: an object of
/// an upload in flight that is gone or not the one its row names.
async fn copy_object(
    store: &ChunkStore,
    partial: &Path,
    c: ChunkObject,
) -> Result<Option<FileEntry>, Taken> {
    let path = object_path(&c.object_key);
    check_path(&path).map_err(|_| {
        BackupError::Catalog(Error::CatalogCorrupt(format!(
            "object key `{}` of recording {}",
            c.object_key, c.recording_id
        )))
    })?;
    let bytes = match store.get(&c.object_key).await {
        Ok(b) => b,
        Err(Error::ObjectMissing(_)) if c.committed => {
            return Err(Taken::Vanished {
                key: c.object_key,
                recording: c.recording_id,
            });
        }
        Err(Error::ObjectMissing(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if bytes.len() as u64 != c.sealed_size || !c.sealed_checksum.matches(&bytes) {
        if !c.committed {
            return Ok(None);
        }
        return Err(BackupError::StoreDamaged {
            key: c.object_key,
            recording: c.recording_id,
        }
        .into());
    }
    let sha256 = crate::crypto::sha256_hex(&bytes);
    let dest = partial.join(&path);
    let size = bytes.len() as u64;
    blocking("object copy", move || {
        if let Some(dir) = dest.parent() {
            files::create_private_dir_all(dir)?;
        }
        files::write_private(&dest, &bytes)
    })
    .await?;
    Ok(Some(FileEntry { path, size, sha256 }))
}
