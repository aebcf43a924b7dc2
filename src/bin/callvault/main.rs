//! The `callvault` command line: the server, operator commands that work
//! directly on the catalog or the local keyring, client commands and the
//! end-to-end demo. Everything it runs is in the library (`config`,
//! `client`); this binary parses, prints and sets the exit code.

mod commands;
mod demo;
mod output;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = commands::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("CALLVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    match commands::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
