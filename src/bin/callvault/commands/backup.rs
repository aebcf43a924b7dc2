//! `callvault backup`: backups of the embedded default's data directory
//! (SQLite catalog, local keyring, objects), taken while a server serves on
//! it. The work is `callvault::backup`'s; this parses and prints.

use std::path::PathBuf;

use anyhow::{Result, bail};
use callvault::backup::{self, Manifest};
use clap::Subcommand;
use serde_json::{Value, json};

use super::BackendArgs;

#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// Take a consistent backup of the data dir (also while a server serves
    /// on it): the catalog as of one commit, the keyring, every object that
    /// catalog names, and a manifest with each file's size and SHA-256.
    /// Written to DIR.partial and renamed to DIR when complete.
    Create {
        /// The backup directory to create; it must not exist.
        #[arg(short, long)]
        output: PathBuf,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Check a backup: every checksum, no file missing or unlisted, the
    /// catalog copy's tables, every object of its committed recordings and
    /// every local key it names. Prints OK, or the first problem (and exits
    /// non-zero).
    Verify {
        /// The backup's directory.
        dir: PathBuf,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
    },
    /// Verify a backup, then restore it into --data-dir, which must be
    /// empty or not exist.
    Restore {
        /// The backup's directory.
        dir: PathBuf,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Remove the backups directly under --backups-dir whose manifest was
    /// created more than --backup-retention-days ago (even the newest: the
    /// deletion certificates promise it). Other directories are not touched.
    Prune {
        /// The directory holding the backups.
        #[arg(long, env = "CALLVAULT_BACKUPS_DIR")]
        backups_dir: PathBuf,
        /// How long backups are kept. Deletion certificates quote this: an
        /// erased recording's wrapped data key survives in backups until
        /// it has passed.
        #[arg(
            long,
            env = "CALLVAULT_BACKUP_RETENTION_DAYS",
            default_value_t = backup::DEFAULT_RETENTION_DAYS
        )]
        backup_retention_days: u32,
        /// List what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead of text (errors too, on stderr).
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: BackupCmd) -> Result<()> {
    match cmd {
        BackupCmd::Create {
            output,
            json,
            backend,
        } => create(output, &backend, json).await,
        BackupCmd::Verify { dir, json } => verify(dir, json).await,
        BackupCmd::Restore { dir, json, backend } => restore(dir, &backend, json).await,
        BackupCmd::Prune {
            backups_dir,
            backup_retention_days,
            dry_run,
            json,
        } => prune(backups_dir, backup_retention_days, dry_run, json),
    }
}

/// The data dir, if the settings are the embedded default's: a catalog or
/// store elsewhere is backed up with its own tools.
fn data_dir(b: &BackendArgs) -> Result<PathBuf> {
    if b.database_url.is_some() || b.store.is_some() {
        bail!(
            "`backup` copies the embedded default (catalog.db and objects/ in --data-dir); with \
             --database-url or --store, back up PostgreSQL and the object store with their own \
             tools (README, \"Backups\")"
        );
    }
    Ok(b.data_dir.clone())
}

fn summary(m: &Manifest) -> Value {
    json!({
        "created_at": m.created_at,
        "callvault_version": m.callvault_version,
        "catalog_schema_version": m.catalog_schema_version,
        "counts": m.counts,
        "keyring": m.file(backup::manifest::KEYRING_FILE).is_some(),
    })
}

/// `n thing` or `n things`.
fn count(n: u64, thing: &str) -> String {
    format!("{n} {thing}{}", if n == 1 { "" } else { "s" })
}

fn describe(m: &Manifest) -> String {
    let c = &m.counts;
    format!(
        "created {}, callvault {}, catalog schema {}: {}, {}{}, {} ({} bytes){}",
        m.created_at,
        m.callvault_version,
        m.catalog_schema_version,
        count(c.tenants, "tenant"),
        count(c.recordings, "recording"),
        if c.uploads_in_flight > 0 {
            format!(
                " (and {} in flight, not playable)",
                count(c.uploads_in_flight, "upload")
            )
        } else {
            String::new()
        },
        count(c.objects, "object"),
        c.object_bytes,
        if m.file(backup::manifest::KEYRING_FILE).is_some() {
            ", local keyring"
        } else {
            ""
        },
    )
}

async fn create(output: PathBuf, backend: &BackendArgs, json: bool) -> Result<()> {
    let data_dir = data_dir(backend)?;
    let r = backup::create(&data_dir, &output).await?;
    if json {
        let mut v = summary(&r.manifest);
        v["backup"] = r.dir.display().to_string().into();
        v["snapshots"] = r.snapshots.into();
        println!("{v}");
    } else {
        println!("backup {}: {}", r.dir.display(), describe(&r.manifest));
        if r.snapshots > 1 {
            eprintln!(
                "note: took {} catalog snapshots: objects of the earlier ones were deleted (erased) while they were copied",
                r.snapshots
            );
        }
    }
    Ok(())
}

async fn verify(dir: PathBuf, json: bool) -> Result<()> {
    let r = backup::verify(&dir).await?;
    if json {
        let mut v = summary(&r.manifest);
        v["ok"] = true.into();
        v["backup"] = r.dir.display().to_string().into();
        v["files"] = r.files.into();
        v["bytes"] = r.bytes.into();
        println!("{v}");
    } else {
        println!(
            "OK: backup {}: {} files ({} bytes) match the manifest; every object of the catalog's \
             committed recordings and every local key it names is in the backup\n{}",
            r.dir.display(),
            r.files,
            r.bytes,
            describe(&r.manifest)
        );
    }
    Ok(())
}

async fn restore(dir: PathBuf, backend: &BackendArgs, json: bool) -> Result<()> {
    let data_dir = data_dir(backend)?;
    let r = backup::restore(&dir, &data_dir).await?;
    if json {
        let mut v = summary(&r.manifest);
        v["backup"] = dir.display().to_string().into();
        v["data_dir"] = r.data_dir.display().to_string().into();
        v["files"] = r.files.into();
        v["bytes"] = r.bytes.into();
        println!("{v}");
    } else {
        println!(
            "restored backup {} into {} ({} files, {} bytes)\n{}\nstart it with: callvault serve --data-dir {}",
            dir.display(),
            r.data_dir.display(),
            r.files,
            r.bytes,
            describe(&r.manifest),
            r.data_dir.display()
        );
    }
    Ok(())
}

fn prune(root: PathBuf, days: u32, dry_run: bool, json: bool) -> Result<()> {
    let r = backup::prune(&root, days, callvault::domain::now_ms(), dry_run)?;
    let list = |v: &[backup::PrunedBackup]| -> Value {
        v.iter()
            .map(|b| json!({"backup": b.dir.display().to_string(), "created_at": b.created_at}))
            .collect()
    };
    if json {
        println!(
            "{}",
            json!({
                "dry_run": r.dry_run,
                "backup_retention_days": days,
                "removed": list(&r.removed),
                "kept": list(&r.kept),
                "incomplete": r.incomplete.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                "unreadable": r.unreadable.iter().map(|(p, why)| json!({"dir": p.display().to_string(), "reason": why})).collect::<Vec<_>>(),
            })
        );
    } else {
        let verb = if dry_run { "would remove" } else { "removed" };
        for b in &r.removed {
            println!("{verb} {} (created {})", b.dir.display(), b.created_at);
        }
        println!(
            "{} backups {verb}, {} kept (retention {days} days)",
            r.removed.len(),
            r.kept.len()
        );
    }
    for (p, why) in &r.unreadable {
        eprintln!(
            "note: {} has a manifest this callvault cannot read ({why}) and was not touched",
            p.display()
        );
    }
    for p in &r.incomplete {
        eprintln!(
            "note: {} is an interrupted backup (no manifest) and was not touched; remove it by hand",
            p.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::FromArgMatches;

    use super::*;

    /// The flag's default is the library's: two spellings of one fact.
    #[test]
    fn retention_default_is_the_library_default() {
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: BackupCmd,
        }
        let cmd = <Cli as clap::CommandFactory>::command()
            .mut_subcommand("prune", |s| s.mut_args(|a| a.env(None::<&'static str>)));
        let m = cmd
            .try_get_matches_from(["cli", "prune", "--backups-dir", "/b"])
            .unwrap();
        let Cli {
            cmd:
                BackupCmd::Prune {
                    backup_retention_days,
                    ..
                },
        } = Cli::from_arg_matches(&m).unwrap()
        else {
            panic!("parsed prune")
        };
        assert_eq!(backup_retention_days, backup::DEFAULT_RETENTION_DAYS);
        assert_eq!(backup_retention_days, 35);
    }
}
