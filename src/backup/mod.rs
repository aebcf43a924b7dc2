//! Backups of the embedded default's data directory (SQLite `catalog.db`,
//! the local keyring `keyring.json`, chunk objects under `objects/`), taken
//! while a server serves on it. A PostgreSQL catalog and an S3 bucket are
//! backed up with their own tools (README, "Backups").
//!
//! A copy of `catalog.db` made with `cp` misses what is still in its WAL
//! (on a fresh catalog: every table), and objects copied before or after
//! it need not match it. So a backup is taken in this order:
//!
//! 1. **The catalog**, with `VACUUM INTO` over a read-only connection: one
//!    read transaction, the catalog as of one commit, beside the server's
//!    writers. `created_at` is read just before it, so a backup never
//!    claims to be newer than what it holds (retention counts from there).
//! 2. **The keyring**, under its writer lock. Keys are only ever added to
//!    the file, so the copy holds every key the catalog snapshot names.
//! 3. **The objects the catalog snapshot names** (its `chunks` rows), each
//!    checked against the checksum its row recorded at ingest. Objects
//!    written after the snapshot belong to uploads the snapshot does not
//!    hold and are not copied. An object of a *committed* recording that is
//!    gone was deleted after the snapshot (an erasure) or lost: the backup
//!    starts over with a fresh snapshot, at most [`MAX_SNAPSHOTS`] times, then
//!    fails naming the object. An object of an upload still in flight that
//!    is gone or not whole is skipped and counted: nothing can play it, and
//!    a restored server's sweeper removes the upload when its lease runs out.
//!
//! Everything is written under `DIR.partial` (files 0600, directories
//! 0700, all fsynced), the manifest last, then renamed to `DIR`. A backup
//! never overwrites anything; one interrupted leaves `DIR.partial`, which
//! is refused until removed.
//!
//! `verify` recomputes every checksum and cross-checks the catalog copy: its
//! tables, its schema version, every object of a committed recording present
//! with the size and SHA-256 its chunk row names, every local key it names
//! in the keyring copy. `restore` verifies, then writes into an empty data
//! directory, the catalog last. `prune` removes backups older than the
//! retention that deletion certificates quote.

mod create;
mod files;
pub mod manifest;
mod prune;
mod restore;
mod verify;

use std::path::PathBuf;

pub use create::{CreateReport, MAX_SNAPSHOTS, create};
pub use manifest::Manifest;
pub use prune::{PruneReport, PrunedBackup, prune};
pub use restore::{RestoreReport, restore};
pub use verify::{VerifyReport, verify};

/// How long backups are kept (`--backup-retention-days`) unless configured:
/// five weeks, so that weekly backups keep a month of history. Deletion
/// certificates quote the setting: an erased recording's wrapped data key
/// survives in catalog backups until it has passed.
pub const DEFAULT_RETENTION_DAYS: u32 = 35;

/// What went wrong with a backup, for the caller to report or act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The source is not an embedded data directory (or not one this
    /// command can back up).
    #[error("{} is not a callvault data directory: {reason}", path.display())]
    NotADataDir { path: PathBuf, reason: String },
    #[error("{} already exists; a backup never overwrites anything", .0.display())]
    OutputExists(PathBuf),
    #[error(
        "{} exists: an earlier backup was interrupted there; remove it and run again",
        .0.display()
    )]
    PartialExists(PathBuf),
    /// An object of a committed recording was missing from the store in
    /// every snapshot tried: the store lost it.
    #[error(
        "object {key} of recording {recording} is missing from the store, although the catalog \
         holds the recording as committed ({attempts} snapshots tried); nothing was kept"
    )]
    ObjectLost {
        key: String,
        recording: String,
        attempts: u32,
    },
    /// An object of a committed recording does not match the checksum its
    /// chunk row recorded at ingest: the live store is damaged.
    #[error(
        "object {key} of recording {recording} does not match the size and checksum recorded \
         at ingest: the store is damaged; nothing was kept"
    )]
    StoreDamaged { key: String, recording: String },
    /// The backup fails verification; `problem` is the first one found.
    #[error("backup {} is damaged: {problem}", dir.display())]
    Damaged { dir: PathBuf, problem: Damage },
    #[error(
        "{} is not empty (it holds {entry}); restore only into an empty or new directory",
        path.display()
    )]
    DestinationNotEmpty { path: PathBuf, entry: String },
    #[error(
        "the backup's catalog schema version {backup} is newer than this callvault's ({known}); \
         restore it with the callvault release that took it ({version}) or a later one"
    )]
    SchemaTooNew {
        backup: i64,
        known: i64,
        version: String,
    },
    #[error("backup retention must be at least 1 day (0 would remove every backup)")]
    InvalidRetention,
    #[error("{} is not a regular file or directory; a backup holds only those", .0.display())]
    NotRegularFile(PathBuf),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] crate::error::Error),
    #[error("local keyring: {0}")]
    Keyring(#[from] crate::kms::KmsError),
    #[error("{what} task failed: {detail}")]
    TaskFailed { what: &'static str, detail: String },
}

/// The first thing found wrong with a backup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Damage {
    #[error("it has no manifest.json")]
    NoManifest,
    #[error("manifest.json: {0}")]
    Manifest(String),
    #[error("{0} is listed in the manifest but missing")]
    Missing(String),
    #[error("{path} has {found} bytes, the manifest lists {listed}")]
    Size {
        path: String,
        listed: u64,
        found: u64,
    },
    #[error("{0} does not match its SHA-256 in the manifest")]
    Checksum(String),
    #[error("{0} is not in the manifest")]
    Unlisted(String),
    #[error("catalog.db cannot be read as a catalog: {0}")]
    CatalogUnreadable(String),
    #[error("catalog.db lacks the tables {}", .0.join(", "))]
    CatalogTables(Vec<String>),
    #[error("catalog.db has schema version {catalog}, the manifest says {manifest}")]
    SchemaVersion { catalog: i64, manifest: i64 },
    #[error("catalog.db holds {catalog} committed recordings, the manifest says {manifest}")]
    Recordings { catalog: u64, manifest: u64 },
    #[error("object {key} of recording {recording} is in the catalog but not in the backup")]
    ChunkMissing { key: String, recording: String },
    #[error(
        "object {key} of recording {recording} in the backup is not the one its catalog row \
         recorded at ingest (size or checksum)"
    )]
    ChunkDiffers { key: String, recording: String },
    #[error("keyring.json cannot be read as a keyring: {0}")]
    KeyringUnreadable(String),
    #[error("the catalog names KMS key {0}, which the keyring copy does not hold")]
    KeyMissing(String),
}

/// Runs blocking file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, BackupError> + Send + 'static,
) -> Result<T, BackupError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackupError::TaskFailed {
            what,
            detail: e.to_string(),
        })?
}

/// Runs `f` over `items`, `n` at a time, in order. Every one started runs
/// to completion, even after another failed: dropping its future would not
/// stop the blocking task it waits on, which would go on writing after the
/// caller cleaned up. None starts after a failure. Returns the results in
/// `items`' order, or the first error.
async fn bounded<T, R, E, Fut>(
    items: impl IntoIterator<Item = T>,
    n: usize,
    f: impl Fn(T) -> Fut,
) -> Result<Vec<R>, E>
where
    Fut: std::future::Future<Output = Result<R, E>>,
{
    use futures::StreamExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    let failed = AtomicBool::new(false);
    let (failed, f) = (&failed, &f);
    let results: Vec<Option<Result<R, E>>> = futures::stream::iter(items)
        .map(|item| async move {
            if failed.load(Ordering::Relaxed) {
                return None;
            }
            let r = f(item).await;
            if r.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            Some(r)
        })
        .buffered(n)
        .collect()
        .await;
    results.into_iter().flatten().collect()
}

/// Keys of the local keyring have ARNs of this form; other keys (AWS KMS)
/// are not in any file a backup could hold.
fn is_local_key(arn: &str) -> bool {
    arn.starts_with("arn:callvault:kms:")
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::bounded;

    /// After a failure nothing new starts, what started finishes, and the
    /// first error in order is returned.
    #[tokio::test]
    async fn bounded_finishes_what_it_started_and_starts_nothing_after_a_failure() {
        let (started, finished) = (Mutex::new(Vec::new()), Mutex::new(Vec::new()));
        let r: Result<Vec<u32>, u32> = bounded(0..20u32, 4, |i| {
            let (started, finished) = (&started, &finished);
            async move {
                started.lock().unwrap().push(i);
                if i == 2 {
                    return Err(i);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                finished.lock().unwrap().push(i);
                Ok(i)
            }
        })
        .await;
        assert_eq!(r, Err(2));
        let mut started = started.into_inner().unwrap();
        let mut finished = finished.into_inner().unwrap();
        started.sort();
        finished.sort();
        // 0, 1 and 2 started before 2 failed; 3 perhaps (as it is polled).
        assert!(
            started.starts_with(&[0, 1, 2]) && started.len() <= 4,
            "{started:?}"
        );
        started.retain(|&i| i != 2);
        assert_eq!(finished, started);
        let all: Result<Vec<u32>, u32> = bounded(0..6u32, 4, |i| async move { Ok(i) }).await;
        assert_eq!(all, Ok(vec![0, 1, 2, 3, 4, 5]));
    }
}
