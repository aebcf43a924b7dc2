//! Ciphertext object storage over `object_store`.
//!
//! The key layout lives here and nowhere else:
//! `t/<tenant id>/r/<recording id>/<chunk index, 10 digits>`. Keys are opaque
//! (ids only, no names or call metadata) and tenant-scoped. Objects hold sealed
//! chunks only; plaintext never reaches this module.
//!
//! Durability: a `put` that returns has reached stable storage on every
//! backend, because ingest acknowledges a recording once its puts returned.
//! S3 promises this itself. The local directory (the embedded default) gets it
//! from `LocalFileSystem::with_fsync`: the chunk file is fsynced before its
//! rename, its directory after, and directories created for it (a recording's
//! `t/<tenant>/r/<recording>/` on its first chunk) up to the first one that
//! already existed. That is object_store's own code on its own blocking
//! threads, which is why there is no wrapper store here. (A put racing the
//! one that creates those directories may return before their parents are
//! synced; ingest joins every put before it commits, so the acknowledgement
//! still waits for them.) It does not cover deletes, so `delete_recording`
//! syncs the directory itself.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::domain::{RecordingId, TenantId};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct ChunkStore {
    inner: Arc<dyn ObjectStore>,
    /// Prefix inside the bucket or directory (from the store URL).
    prefix: Path,
    /// The root directory of a local store, whose deletes need a directory
    /// fsync that `LocalFileSystem` does not do.
    local_root: Option<PathBuf>,
}

/// What the store keeps of deleted objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Versioning {
    /// Deleted objects are gone (why we know).
    Off(&'static str),
    /// The bucket keeps noncurrent versions until its lifecycle rules
    /// expire them.
    On,
    /// The probe failed (the error).
    Unknown(String),
}

/// Options for S3-compatible stores.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

impl ChunkStore {
    /// `file:///abs/dir`, a plain directory path, or `s3://bucket[/prefix]`.
    pub fn from_url(url: &str, s3: &S3Options) -> Result<Self> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::invalid("store", "s3:// URL needs a bucket name"));
            }
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(ep) = &s3.endpoint {
                b = b
                    .with_endpoint(ep)
                    .with_allow_http(ep.starts_with("http://"));
            }
            if let Some(r) = &s3.region {
                b = b.with_region(r);
            }
            let store = b.build()?;
            return Ok(Self {
                inner: Arc::new(store),
                prefix: Path::from(prefix),
                local_root: None,
            });
        }
        let dir = url.strip_prefix("file://").unwrap_or(url);
        Self::local(FsPath::new(dir))
    }

    pub fn local(dir: &FsPath) -> Result<Self> {
        create_dir_all_synced(dir).map_err(|source| Error::Io {
            what: "cannot create the store directory",
            source,
        })?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)?
            .with_automatic_cleanup(true)
            .with_fsync(true);
        Ok(Self {
            inner: Arc::new(store),
            prefix: Path::default(),
            local_root: Some(dir.to_path_buf()),
        })
    }

    pub fn in_memory() -> Self {
        Self {
            inner: Arc::new(object_store::memory::InMemory::new()),
            prefix: Path::default(),
            local_root: None,
        }
    }

    fn join(&self, rel: &str) -> Path {
        if self.prefix.as_ref().is_empty() {
            Path::from(rel)
        } else {
            Path::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// The relative key recorded in the catalog for a chunk.
    /// The recording's waveform peaks, beside its chunks (so that erasing
    /// the recording's prefix erases them too).
    pub fn peaks_key(tenant: &TenantId, recording: &RecordingId) -> String {
        format!("t/{tenant}/r/{recording}/peaks")
    }

    pub fn chunk_key(tenant: &TenantId, recording: &RecordingId, index: u32) -> String {
        format!("t/{tenant}/r/{recording}/{index:010}")
    }

    fn recording_prefix(&self, tenant: &TenantId, recording: &RecordingId) -> Path {
        self.join(&format!("t/{tenant}/r/{recording}"))
    }

    pub async fn put(&self, key: &str, sealed: Bytes) -> Result<()> {
        self.inner
            .put(&self.join(key), PutPayload::from(sealed))
            .await?;
        Ok(())
    }

    /// Reads a whole object. A missing object is reported as `ObjectMissing` so the
    /// caller can treat it as an integrity failure of the recording.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        let res = self.inner.get(&self.join(key)).await;
        match res {
            Ok(r) => Ok(r.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => Err(Error::ObjectMissing(key.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes one object (a missing one is not an error).
    pub async fn delete_object(&self, key: &str) -> Result<()> {
        match self.inner.delete(&self.join(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes every object of a recording (cleanup of failed uploads and,
    /// later, crypto-shredding).
    pub async fn delete_recording(
        &self,
        tenant: &TenantId,
        recording: &RecordingId,
    ) -> Result<usize> {
        let prefix = self.recording_prefix(tenant, recording);
        let locations = self
            .inner
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .boxed();
        let deleted: Vec<Path> = self.inner.delete_stream(locations).try_collect().await?;
        let mut staged = 0;
        if let Some(root) = &self.local_root {
            // A server killed mid-upload leaves the chunk it was writing as
            // `LocalFileSystem`'s staging file (`<index>#<n>`), which listing
            // skips: removed here, or it would outlive its recording.
            // The sweeper deletes objects, then the row: the deletes must be
            // durable first, or a power loss brings back objects no row names.
            let dir = root.join(format!("t/{tenant}/r/{recording}"));
            staged = tokio::task::spawn_blocking(move || {
                let staged = remove_staging_files(&dir)?;
                sync_deepest_existing(&dir)?;
                Ok::<_, std::io::Error>(staged)
            })
            .await
            .map_err(|e| Error::task("directory sync", e))?
            .map_err(|source| Error::Io {
                what: "cannot clean up or sync the store directory",
                source,
            })?;
        }
        Ok(deleted.len() + staged)
    }

    /// Whether the store keeps old versions of what is deleted: a local
    /// directory does not; for S3, a probe object is written and S3's answer
    /// says (a version id comes back only from a bucket with versioning
    /// enabled or suspended), then deleted.
    pub async fn versioning(&self) -> Versioning {
        if self.local_root.is_some() {
            return Versioning::Off("a local directory keeps no old versions");
        }
        let probe = self.join(".callvault/versioning-probe");
        match self
            .inner
            .put(&probe, PutPayload::from_static(b"probe"))
            .await
        {
            Ok(put) => {
                let _ = self.inner.delete(&probe).await;
                if put.version.is_some() {
                    Versioning::On
                } else {
                    Versioning::Off(
                        "the bucket answered without a version id: versioning is not enabled",
                    )
                }
            }
            Err(e) => Versioning::Unknown(e.to_string()),
        }
    }

    /// Every object key under a recording, relative to the store root.
    pub async fn list_recording(
        &self,
        tenant: &TenantId,
        recording: &RecordingId,
    ) -> Result<Vec<String>> {
        let prefix = self.recording_prefix(tenant, recording);
        let strip = if self.prefix.as_ref().is_empty() {
            0
        } else {
            self.prefix.as_ref().len() + 1
        };
        let mut keys: Vec<String> = self
            .inner
            .list(Some(&prefix))
            .map_ok(|m| m.location.as_ref()[strip..].to_owned())
            .try_collect()
            .await?;
        keys.sort();
        Ok(keys)
    }
}

/// Creates `dir` and its missing parents, readable by the owner only
/// (0700): the data directory holds the catalog, the keyring and the
/// objects, and nobody else on the host needs to list them.
pub fn create_private_dir_all(dir: &FsPath) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates `dir` and its missing parents (0700), then fsyncs each directory created
/// and the first one that existed (its entries changed), so the new tree
/// survives a power loss.
fn create_dir_all_synced(dir: &FsPath) -> std::io::Result<()> {
    let existing = dir
        .ancestors()
        .find(|d| d.is_dir())
        .map(FsPath::to_path_buf);
    create_private_dir_all(dir)?;
    for d in dir.ancestors() {
        sync_dir(d)?;
        if Some(d) == existing.as_deref() {
            break;
        }
    }
    Ok(())
}

/// Fsyncs the deepest existing directory of `dir` and its ancestors. After a
/// recording's objects are deleted that is the recording directory or, when
/// automatic cleanup removed it (and emptied parents), the first ancestor
/// left: the one whose entries changed last.
/// Removes the staging files `LocalFileSystem` leaves in `dir` when a put
/// is interrupted (a name ending in `#` and digits); how many. A missing
/// directory has none.
fn remove_staging_files(dir: &FsPath) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let staging = name
            .to_str()
            .and_then(|n| n.rsplit_once('#'))
            .is_some_and(|(_, suffix)| {
                !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())
            });
        if !staging {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

fn sync_deepest_existing(dir: &FsPath) -> std::io::Result<()> {
    match dir.ancestors().find(|d| d.is_dir()) {
        Some(d) => sync_dir(d),
        None => Ok(()),
    }
}

/// A directory's entries (creations, renames, removals) are durable only once
/// the directory itself is fsynced. Only Unix can open a directory to sync it.
fn sync_dir(dir: &FsPath) -> std::io::Result<()> {
    // `Path::parent` of a relative path ends in "", which is the current directory.
    let dir = if dir.as_os_str().is_empty() {
        FsPath::new(".")
    } else {
        dir
    };
    if cfg!(unix) {
        std::fs::File::open(dir)?.sync_all()
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn layout_put_get_delete() {
        let store = ChunkStore::in_memory();
        let (t, r) = (TenantId::new_random(), RecordingId::new());
        let k0 = ChunkStore::chunk_key(&t, &r, 0);
        assert_eq!(k0, format!("t/{t}/r/{r}/0000000000"));
        store.put(&k0, Bytes::from_static(b"sealed")).await.unwrap();
        store
            .put(&ChunkStore::chunk_key(&t, &r, 1), Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(store.get(&k0).await.unwrap(), Bytes::from_static(b"sealed"));
        assert_eq!(store.list_recording(&t, &r).await.unwrap().len(), 2);
        assert_eq!(store.delete_recording(&t, &r).await.unwrap(), 2);
        assert!(matches!(store.get(&k0).await, Err(Error::ObjectMissing(_))));
    }

    /// A chunk a killed server was writing is left as a staging file that
    /// listing skips; deleting the recording removes it too.
    #[tokio::test]
    async fn deleting_a_local_recording_removes_interrupted_puts() {
        let root = tempfile::tempdir().unwrap();
        let store = ChunkStore::local(root.path()).unwrap();
        let (t, r) = (TenantId::new_random(), RecordingId::new());
        for i in 0..2 {
            let key = ChunkStore::chunk_key(&t, &r, i);
            store
                .put(&key, Bytes::from_static(b"sealed"))
                .await
                .unwrap();
        }
        let dir = root.path().join(format!("t/{t}/r/{r}"));
        std::fs::write(dir.join("0000000002#3"), b"half a chunk").unwrap();
        assert_eq!(store.list_recording(&t, &r).await.unwrap().len(), 2);

        assert_eq!(store.delete_recording(&t, &r).await.unwrap(), 3);
        let left: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?}");
        // Nothing to do the second time, and no error.
        assert_eq!(store.delete_recording(&t, &r).await.unwrap(), 0);
    }
}
