//! Files as a backup writes them: private (files 0600, directories 0700,
//! whatever the umask), new (never overwriting), and durable (each file
//! fsynced before it counts as written, each directory fsynced after its
//! entries changed). Blocking: callers run these on the blocking pool.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::BackupError;

/// An I/O failure on `path`, named for the step that failed.
pub(super) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.to_path_buf();
    move |source| BackupError::Io { what, path, source }
}

/// Creates `dir` (mode 0700) and any missing parents, also 0700.
pub(super) fn create_private_dir_all(dir: &Path) -> Result<(), BackupError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(io("cannot create directory", dir))
}

/// Opens a new file for writing, mode 0600; fails if it exists.
pub(super) fn create_private(path: &Path) -> Result<File, BackupError> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path).map_err(io("cannot create file", path))
}

/// Writes `bytes` to a new private file and fsyncs it.
pub(super) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let mut f = create_private(path)?;
    f.write_all(bytes).map_err(io("cannot write", path))?;
    f.sync_all().map_err(io("cannot sync", path))
}

/// Size and hex SHA-256 of a file, read in 1 MiB pieces.
pub(super) fn hash_file(path: &Path) -> Result<(u64, String), BackupError> {
    let mut f = File::open(path).map_err(io("cannot open", path))?;
    hash_reader(&mut f, None).map_err(io("cannot read", path))
}

/// Copies `src` to a new private file `dest`, fsynced, hashing what passes.
pub(super) fn copy_hashing(src: &Path, dest: &Path) -> Result<(u64, String), BackupError> {
    let mut from = File::open(src).map_err(io("cannot open", src))?;
    let mut to = create_private(dest)?;
    let got = hash_reader(&mut from, Some(&mut to)).map_err(io("cannot copy", src))?;
    to.sync_all().map_err(io("cannot sync", dest))?;
    Ok(got)
}

fn hash_reader(r: &mut impl Read, mut copy: Option<&mut File>) -> std::io::Result<(u64, String)> {
    let mut sha = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        if let Some(w) = copy.as_deref_mut() {
            w.write_all(&buf[..n])?;
        }
        size += n as u64;
    }
    Ok((size, hex::encode(sha.finish())))
}

/// A directory's entries (creations, renames, removals) are durable only
/// once the directory itself is fsynced. Only Unix can open one to sync it.
pub(super) fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if cfg!(unix) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("cannot sync directory", dir))
    } else {
        Ok(())
    }
}

/// Fsyncs every directory under `root` and `root` itself, deepest first.
pub(super) fn sync_tree(root: &Path) -> Result<(), BackupError> {
    for d in dirs_under(root)?.iter().rev() {
        sync_dir(d)?;
    }
    sync_dir(root)
}

/// Every directory under `root` (not `root`), parents before children.
fn dirs_under(root: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let mut out = Vec::new();
    let mut next = vec![root.to_path_buf()];
    while let Some(d) = next.pop() {
        for e in std::fs::read_dir(&d).map_err(io("cannot list", &d))? {
            let e = e.map_err(io("cannot list", &d))?;
            if e.file_type().map_err(io("cannot list", &d))?.is_dir() {
                out.push(e.path());
                next.push(e.path());
            }
        }
    }
    Ok(out)
}

/// Every regular file under `root`, as `/`-separated paths relative to it;
/// anything else (a symlink, a device) is named as an error.
pub(super) fn files_under(root: &Path) -> Result<Vec<String>, BackupError> {
    let mut out = Vec::new();
    let mut next = vec![root.to_path_buf()];
    while let Some(d) = next.pop() {
        for e in std::fs::read_dir(&d).map_err(io("cannot list", &d))? {
            let e = e.map_err(io("cannot list", &d))?;
            let t = e.file_type().map_err(io("cannot list", &d))?;
            let path = e.path();
            if t.is_dir() {
                next.push(path);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .map(|p| p.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/"))
                    .unwrap_or_default();
                if !t.is_file() {
                    return Err(BackupError::NotRegularFile(path));
                }
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}
