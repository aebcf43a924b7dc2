//! The `callvault` command line: the server, operator commands that work
//! directly on the catalog or the local keyring, client commands and the
//! end-to-end demo. Everything it runs is in the library (`config`,
//! `client`); this binary parses, prints and sets the exit code.

mod commands;
mod config_file;
mod conventions;
mod demo;
mod output;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::fmt;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

// The global allocator: jemalloc by default, because it gives a burst's
// memory back (glibc kept 280–550 MiB resident after 100 concurrent
// ingests, jemalloc 46–69 MiB; BENCHMARKS.md). `--no-default-features`
// builds with the system's, `--no-default-features --features mimalloc`
// with mimalloc. Both at once is refused rather than one chosen.
#[cfg(all(feature = "mimalloc", feature = "jemalloc"))]
compile_error!("choose one allocator: `--no-default-features --features mimalloc` for mimalloc");
#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A failed command: its error on stderr (JSON with `--json`), and its
/// exit code by what kind of failure it was (`output::exit_code_of`).
fn fail(e: &anyhow::Error, json: bool) -> ExitCode {
    output::print_error(e, json);
    ExitCode::from(output::exit_code_of(output::code_of(e)))
}

/// Whether the command line asked for JSON (`--json` on the subcommand).
fn wants_json(matches: &clap::ArgMatches) -> bool {
    let mut m = Some(matches);
    while let Some(now) = m {
        if let Ok(Some(true)) = now.try_get_one::<bool>("json") {
            return true;
        }
        m = now.subcommand().map(|(_, sub)| sub);
    }
    false
}

#[tokio::main]
async fn main() -> ExitCode {
    // A config file supplies the flags' defaults, so it is read before clap
    // parses: file < environment < flags.
    let tree = || conventions::apply(commands::Cli::command());
    let mut cmd = tree();
    let args = conventions::hoist_leading_flags(std::env::args_os().collect(), &cmd);
    let file = match config_file::path_from(&args) {
        Some(path) => match config_file::ConfigFile::load(&path, &cmd) {
            Ok(f) => Some(f),
            Err(e) => return fail(&e, false),
        },
        None => None,
    };
    if let Some(f) = &file {
        cmd = f.apply(cmd);
    }
    // Built, so that subcommands carry the global flags (`config check`
    // shows them too).
    cmd.build();
    let matches = cmd.clone().get_matches_from(&args);
    let cli = commands::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let json = wants_json(&matches);
    // The demo reports every step itself (and fails loudly): its server's
    // log would only interleave with that. CALLVAULT_LOG=info shows it.
    let default_level = match cli.command {
        commands::Command::Demo(_) => "off",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CALLVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colour only for a person at a terminal: not in files, pipes and
    // journald.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (plain_log, json_log) = if cli.log_json {
        (None, Some(fmt::layer().json().with_writer(std::io::stderr)))
    } else {
        let layer = fmt::layer().with_ansi(ansi).with_writer(std::io::stderr);
        (Some(layer), None)
    };
    // `init` also routes the `log` crate's records (symphonia's) here;
    // DecoderNoise turns a damaged upload's thousands of them into one line.
    tracing_subscriber::registry()
        .with(filter)
        .with(callvault::audio::noise::DecoderNoise)
        .with(plain_log)
        .with(json_log)
        .init();
    let result = match cli.command {
        commands::Command::Config(commands::ConfigCmd::Check(args)) => {
            // The flags in their declared order (the file's defaults moved
            // the ones it set to the end of `cmd`).
            let mut fresh = commands::Cli::command();
            fresh.build();
            let (Some(check_matches), Some(check_cmd)) = (
                matches
                    .subcommand_matches("config")
                    .and_then(|m| m.subcommand_matches("check")),
                fresh
                    .find_subcommand("config")
                    .and_then(|c| c.find_subcommand("check")),
            ) else {
                unreachable!("clap parsed `config check`")
            };
            print!(
                "{}",
                config_file::effective(check_matches, check_cmd, file.as_ref())
            );
            commands::check_serve_settings(*args)
        }
        commands::Command::Completions { shell } => {
            conventions::completions(shell, &mut tree());
            Ok(())
        }
        commands::Command::Man { dir } => conventions::man(tree(), dir.as_deref()),
        command => commands::run(command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, json),
    }
}
