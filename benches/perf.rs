//! Issue 14's figures in one command: one big stream through the real CLI
//! and server against Google Tink and `age` (roundtrip), time to first
//! byte (ttfb), a burst of concurrent ingests and the server's RSS
//! (memory), many concurrent readers and the KMS calls they cost
//! (readers), and a load generator of live G.711 calls (live). Each on the
//! embedded SQLite catalog and on PostgreSQL (127.0.0.1:5432, a fresh
//! database; skipped with a note when none answers).
//!
//! `cargo bench --bench perf [-- SECTION… --quick …]` (see `args::USAGE`).
//! The lines on stdout are BENCHMARKS.md's; progress goes to stderr.
//! Benches report, they do not time-out on slowness; a wrong result (a
//! SHA-256 mismatch, a refused ingest, more than one KMS call for
//! concurrent cold plays) fails the run.

#[path = "perf/args.rs"]
mod args;
#[path = "perf/inputs.rs"]
mod inputs;
#[path = "perf/live.rs"]
mod live;
#[path = "perf/livecall.rs"]
mod livecall;
#[path = "perf/machine.rs"]
mod machine;
#[path = "perf/memory.rs"]
mod memory;
#[path = "perf/node.rs"]
mod node;
#[path = "perf/peers.rs"]
mod peers;
#[path = "perf/pg.rs"]
mod pg;
#[path = "perf/procfs.rs"]
mod procfs;
#[path = "perf/readers.rs"]
mod readers;
#[path = "perf/roundtrip.rs"]
mod roundtrip;
#[path = "perf/stats.rs"]
mod stats;
// Shared with the other benches, which allow unwrap in it.
#[allow(clippy::unwrap_used)]
mod support;
#[path = "perf/ttfb.rs"]
mod ttfb;

use std::process::ExitCode;
use std::time::Instant;

use args::{Options, Section};
use node::CatalogKind;

/// What the sections share: the options, a scratch directory for inputs
/// and peers' files, the catalogs to run on, and the big WAV (made once).
#[derive(Debug)]
pub struct Ctx {
    pub opts: Options,
    pub work: tempfile::TempDir,
    pub catalogs: Vec<CatalogKind>,
    big: tokio::sync::OnceCell<inputs::AudioFile>,
}

impl Ctx {
    /// The roundtrip's PCM WAV (`--size-mib`, 512 by default).
    pub async fn big_wav(&self) -> anyhow::Result<&inputs::AudioFile> {
        self.big
            .get_or_try_init(|| {
                eprintln!("  making the {} MiB WAV…", self.opts.big_mib);
                inputs::pcm_wav(self.work.path(), "big.wav", self.opts.big_mib << 20)
            })
            .await
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let opts = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // Ctrl-C drops the run, and with it every child server, database and
    // temporary directory.
    let outcome = tokio::select! {
        res = run(opts) => res,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("perf: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(opts: Options) -> anyhow::Result<()> {
    println!("{}", machine::machine_line());
    println!("{}", machine::commit_line());
    println!("{}", machine::run_line());
    let mut catalogs = vec![CatalogKind::Sqlite];
    if pg::PgDatabase::reachable().await {
        catalogs.push(CatalogKind::Postgres);
    } else {
        println!(
            "note: no PostgreSQL at 127.0.0.1:5432 (nor CALLVAULT_BENCH_DATABASE_URL): SQLite only"
        );
    }
    println!(
        "server: the `callvault serve` binary, --roles {}, local keyring and object store{}",
        opts.roles,
        if opts.quick { "; --quick sizes" } else { "" }
    );
    let ctx = Ctx {
        work: tempfile::Builder::new()
            .prefix("callvault-perf-")
            .tempdir()?,
        catalogs,
        big: tokio::sync::OnceCell::new(),
        opts,
    };
    for section in ctx.opts.sections.clone() {
        println!();
        let t = Instant::now();
        match section {
            Section::Roundtrip => roundtrip::run(&ctx).await?,
            Section::Ttfb => ttfb::run(&ctx).await?,
            Section::Memory => memory::run(&ctx).await?,
            Section::Readers => readers::run(&ctx).await?,
            Section::Live => live::run(&ctx).await?,
        }
        eprintln!(
            "  ({} took {:.0} s)",
            section.name(),
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
