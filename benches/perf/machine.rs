//! The lines every figure needs beside it: the machine, the code, the day.

use std::process::Command;

/// `CPU model, N cores, vaes yes, sha_ni yes, avx512f no, 23.4 GiB`.
pub fn machine_line() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let model = field("model name");
    let flags = field("flags");
    let has = |flag: &str| {
        if flags.split_whitespace().any(|f| f == flag) {
            "yes"
        } else {
            "no"
        }
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / (1024.0 * 1024.0));
    format!(
        "machine: {model}, {cores} cores, vaes {}, sha_ni {}, avx512f {}, {mem_gib:.1} GiB RAM",
        has("vaes"),
        has("sha_ni"),
        has("avx512f"),
    )
}

/// `commit: 1a2b3c4 (branch perf)`, with a mark when the tree has changes
/// the commit does not hold.
pub fn commit_line() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let branch = git(&["rev-parse", "--abbrev-ref", "HEAD"]).unwrap_or_default();
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    format!(
        "commit: {commit} (branch {branch}){}",
        if dirty { " + uncommitted changes" } else { "" }
    )
}

/// `date: 2026-11-27, rustc 1.95.0, release profile (cargo bench)`.
pub fn run_line() -> String {
    let date = time::OffsetDateTime::now_utc().date();
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "rustc ?".into());
    let profile = if cfg!(debug_assertions) {
        "debug assertions on (not a release build)"
    } else {
        "release profile (cargo bench)"
    };
    format!("date: {date}, {rustc}, {profile}")
}
