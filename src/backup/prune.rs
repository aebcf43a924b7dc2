//! `backup prune`: removes the backups under a root whose manifest's
//! `created_at` is more than the retention ago. Only directories directly
//! under the root that hold a manifest this release can read count as
//! backups; nothing else is touched, and symbolic links are not followed.
//!
//! The newest backup is removed too once it is too old: deletion
//! certificates promise that no backup outlives the retention, so backups
//! must be taken more often than that. A backup is first renamed
//! (`.NAME.pruning`), then deleted: one interrupted halfway never sits
//! under its own name, and the next prune finishes it (its manifest says it
//! is old).

use std::path::{Path, PathBuf};

use super::BackupError;
use super::files::{self, io};
use super::manifest::{MANIFEST_FILE, Manifest};

const DAY_MS: i64 = 86_400_000;

/// What `prune` found.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Removed (or, in a dry run, to be removed), oldest first.
    pub removed: Vec<PrunedBackup>,
    /// Backups young enough to keep.
    pub kept: Vec<PrunedBackup>,
    /// `*.partial` directories: backups that were interrupted, without a
    /// manifest. Not touched; they may hold a catalog copy all the same.
    pub incomplete: Vec<PathBuf>,
    /// Directories with a `manifest.json` this release cannot read (damaged,
    /// or a newer format), and why. Not touched.
    pub unreadable: Vec<(PathBuf, String)>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunedBackup {
    pub dir: PathBuf,
    pub created_at: String,
    pub created_at_ms: i64,
}

/// Removes the backups under `root` created more than `retention_days`
/// before `now_ms` (or only lists them, with `dry_run`).
pub fn prune(
    root: &Path,
    retention_days: u32,
    now_ms: i64,
    dry_run: bool,
) -> Result<PruneReport, BackupError> {
    if retention_days == 0 {
        return Err(BackupError::InvalidRetention);
    }
    let cutoff = now_ms - i64::from(retention_days) * DAY_MS;
    let mut report = PruneReport {
        dry_run,
        ..PruneReport::default()
    };
    let mut entries: Vec<_> = std::fs::read_dir(root)
        .map_err(io("cannot list", root))?
        .collect::<Result<_, _>>()
        .map_err(io("cannot list", root))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        // `file_type` does not follow a symbolic link.
        if !e.file_type().map_err(io("cannot list", root))?.is_dir() {
            continue;
        }
        let dir = e.path();
        let backup = match read_backup(&dir) {
            Some(Ok(b)) => b,
            Some(Err(why)) => {
                report.unreadable.push((dir, why));
                continue;
            }
            None => {
                if e.file_name().to_string_lossy().ends_with(".partial") {
                    report.incomplete.push(dir);
                }
                continue;
            }
        };
        if backup.created_at_ms < cutoff {
            report.removed.push(backup);
        } else {
            report.kept.push(backup);
        }
    }
    report.removed.sort_by_key(|b| b.created_at_ms);
    if !dry_run {
        for b in &report.removed {
            remove(root, &b.dir)?;
        }
    }
    Ok(report)
}

/// The backup in `dir`: `None` without a manifest, else the backup or why
/// its manifest cannot be read.
fn read_backup(dir: &Path) -> Option<Result<PrunedBackup, String>> {
    let text = match std::fs::read(dir.join(MANIFEST_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(e.to_string())),
    };
    Some(Manifest::parse(&text).and_then(|m| {
        Ok(PrunedBackup {
            dir: dir.to_path_buf(),
            created_at_ms: m.created_at_ms()?,
            created_at: m.created_at,
        })
    }))
}

fn remove(root: &Path, dir: &Path) -> Result<(), BackupError> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let doomed = if name.starts_with('.') && name.ends_with(".pruning") {
        dir.to_path_buf()
    } else {
        let doomed = root.join(format!(".{name}.pruning"));
        std::fs::rename(dir, &doomed).map_err(io("cannot rename", dir))?;
        files::sync_dir(root)?;
        doomed
    };
    std::fs::remove_dir_all(&doomed).map_err(io("cannot remove", &doomed))?;
    files::sync_dir(root)
}

#[cfg(test)]
mod tests {
    use super::super::manifest::{Counts, FORMAT, FileEntry, format_time};
    use super::*;

    fn backup(root: &Path, name: &str, created_at_ms: i64) {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("objects/t/a/r/b")).unwrap();
        std::fs::write(dir.join("catalog.db"), b"db").unwrap();
        std::fs::write(dir.join("objects/t/a/r/b/0000000000"), b"o").unwrap();
        let m = Manifest {
            format: FORMAT.into(),
            created_at: format_time(created_at_ms),
            callvault_version: "0.1.0".into(),
            catalog_schema_version: 5,
            counts: Counts::default(),
            files: vec![FileEntry {
                path: "catalog.db".into(),
                size: 2,
                sha256: "00".repeat(32),
            }],
        };
        std::fs::write(dir.join(MANIFEST_FILE), m.to_json()).unwrap();
    }

    /// Old backups go (oldest first), young ones stay; directories without
    /// a readable manifest (reported), files and symbolic links are not
    /// touched.
    #[test]
    fn removes_only_old_backups() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let now = 100 * DAY_MS;
        backup(r, "b-old", now - 40 * DAY_MS);
        backup(r, "a-older", now - 50 * DAY_MS);
        backup(r, "c-young", now - 34 * DAY_MS);
        backup(r, "d-edge", now - 35 * DAY_MS);
        std::fs::create_dir(r.join("not-a-backup")).unwrap();
        std::fs::write(r.join("not-a-backup/manifest.json"), b"{}").unwrap();
        std::fs::create_dir(r.join("e.partial")).unwrap();
        std::fs::write(r.join("stray-file"), b"x").unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        backup(elsewhere.path(), "linked", 0);
        std::os::unix::fs::symlink(elsewhere.path().join("linked"), r.join("f-link")).unwrap();

        let dry = prune(r, 35, now, true).unwrap();
        let names = |v: &[PrunedBackup]| -> Vec<String> {
            v.iter()
                .map(|b| b.dir.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names(&dry.removed), ["a-older", "b-old"]);
        assert_eq!(names(&dry.kept), ["c-young", "d-edge"]);
        assert_eq!(dry.incomplete, [r.join("e.partial")]);
        assert_eq!(dry.unreadable.len(), 1);
        assert_eq!(dry.unreadable[0].0, r.join("not-a-backup"));
        assert!(r.join("a-older").exists() && r.join("b-old").exists());

        let done = prune(r, 35, now, false).unwrap();
        assert_eq!(names(&done.removed), ["a-older", "b-old"]);
        let mut left: Vec<String> = std::fs::read_dir(r)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "c-young",
                "d-edge",
                "e.partial",
                "f-link",
                "not-a-backup",
                "stray-file"
            ]
        );
        assert!(elsewhere.path().join("linked/manifest.json").exists());
    }

    /// A prune interrupted after the rename is finished by the next one.
    #[test]
    fn finishes_an_interrupted_prune() {
        let root = tempfile::tempdir().unwrap();
        backup(root.path(), ".b.pruning", 0);
        let done = prune(root.path(), 1, 10 * DAY_MS, false).unwrap();
        assert_eq!(done.removed.len(), 1);
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn zero_days_is_refused() {
        let root = tempfile::tempdir().unwrap();
        assert!(matches!(
            prune(root.path(), 0, 0, true),
            Err(BackupError::InvalidRetention)
        ));
    }
}
