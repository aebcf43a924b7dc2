//! Reading `strace -f -y` logs: system calls in completion order, with the
//! paths `-y` prints for fd arguments.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The calls the durability tests read: syncs, what they make durable, and
/// the writes that carry acknowledgements.
pub const TRACED: &str = "trace=fsync,fdatasync,rename,renameat,renameat2,openat,mkdir,mkdirat,\
                          unlink,unlinkat,rmdir,write,writev,pwrite64,sendto,sendmsg";

/// Whether strace can trace here (installed, and ptrace allowed). CI must
/// have it; elsewhere the test skips.
pub fn have_strace() -> bool {
    let works = Command::new("strace")
        .args(["-o", "/dev/null", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        assert!(
            std::env::var_os("CI").is_none(),
            "strace is required in CI (Debian package `strace`, and ptrace allowed)"
        );
        eprintln!("skipped: strace not installed");
    }
    works
}

/// One completed system call of a `strace -f -y` log, in completion order.
#[derive(Debug)]
pub struct Call {
    pub name: String,
    pub args: String,
    pub ret: String,
}

impl Call {
    pub fn ok(&self) -> bool {
        !self.ret.starts_with('-') && !self.ret.starts_with('?')
    }

    /// The path of the first fd argument (`-y` prints `7</path>`).
    pub fn fd_path(&self) -> Option<&Path> {
        let open = self.args.find('<')?;
        let close = open + self.args[open..].find('>')?;
        Some(Path::new(&self.args[open + 1..close]))
    }

    /// The string arguments (paths for openat, mkdir and the renames).
    pub fn strings(&self) -> Vec<&str> {
        self.args.split('"').skip(1).step_by(2).collect()
    }

    pub fn is_fsync_of(&self, path: &Path) -> bool {
        matches!(self.name.as_str(), "fsync" | "fdatasync")
            && self.ok()
            && self.fd_path() == Some(path)
    }
}

pub fn parse_trace(text: &str) -> Vec<Call> {
    let mut pending: HashMap<&str, String> = HashMap::new();
    let mut calls = Vec::new();
    for line in text.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        let full = if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((_, tail)) = resumed.split_once(" resumed>") else {
                continue;
            };
            match pending.remove(pid) {
                Some(start) => start + tail,
                None => continue,
            }
        } else if let Some(start) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(pid, start.to_owned());
            continue;
        } else if rest.starts_with("+++") || rest.starts_with("---") {
            continue;
        } else {
            rest.to_owned()
        };
        // `name(args)   = ret`: strace pads before the `=`.
        let (Some(open), Some(eq)) = (full.find('('), full.rfind(" = ")) else {
            continue;
        };
        let Some(args) = full[open + 1..eq].trim_end().strip_suffix(')') else {
            continue;
        };
        calls.push(Call {
            name: full[..open].to_owned(),
            args: args.to_owned(),
            ret: full[eq + 3..].to_owned(),
        });
    }
    calls
}

/// Index of the first write whose fd argument (as `-y` prints it, e.g.
/// `1</dev/pts/0>`) satisfies `fd` and whose buffer carries `marker`.
pub fn first_write_of(calls: &[Call], fd: impl Fn(&str) -> bool, marker: &str) -> usize {
    calls
        .iter()
        .position(|c| {
            matches!(c.name.as_str(), "write" | "writev" | "sendto" | "sendmsg")
                && c.args.split(", ").next().is_some_and(&fd)
                && c.args.contains(marker)
        })
        .unwrap_or_else(|| panic!("no such write carries {marker}"))
}

/// Index of the first successful fsync of `path` in `calls[range]`.
pub fn fsync_between(calls: &[Call], path: &Path, from: usize, to: usize) -> Option<usize> {
    (from..to).find(|&i| calls[i].is_fsync_of(path))
}

/// Successful renames (index, from, to) whose target satisfies `pred`.
pub fn renames(calls: &[Call], pred: impl Fn(&Path) -> bool) -> Vec<(usize, PathBuf, PathBuf)> {
    calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.name.starts_with("rename") && c.ok())
        .filter_map(|(i, c)| match c.strings()[..] {
            [from, to] if pred(Path::new(to)) => Some((i, from.into(), to.into())),
            _ => None,
        })
        .collect()
}

/// Successful directory creations (index, path) under `root`.
pub fn mkdirs(calls: &[Call], root: &Path) -> Vec<(usize, PathBuf)> {
    calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.name.starts_with("mkdir") && c.ok())
        .filter_map(|(i, c)| {
            let path = PathBuf::from(c.strings().first()?);
            path.starts_with(root).then_some((i, path))
        })
        .collect()
}
