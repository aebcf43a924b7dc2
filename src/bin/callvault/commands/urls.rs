//! `callvault play-url` and `urls revoke`: signed playback URLs for
//! browsers and `curl`.

use anyhow::Result;
use callvault::api::pb;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use super::ClientArgs;
use crate::output::{self, failed};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum UrlPurpose {
    /// Listened to in a browser (served inline).
    Stream,
    /// Kept as a file (served as an attachment).
    Download,
}

#[derive(Debug, Args)]
pub struct PlayUrlArgs {
    /// The recording's id.
    pub id: String,
    /// How long the URL works (10s to 12h; `15m`, `2h`, …).
    #[arg(long, default_value = "15m", value_parser = callvault::domain::parse_duration)]
    pub ttl: std::time::Duration,
    /// What the audit trail records the listening as.
    #[arg(long, value_enum, default_value = "stream")]
    pub purpose: UrlPurpose,
    /// Why (recorded in the audit trail with the URL).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Print JSON (`url`, `path`, `expire_time`, `purpose`).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum UrlsCmd {
    /// Print a new URL key line (`KEY_ID BASE64`) for --url-signing-keys;
    /// put it first in the file to rotate (works offline).
    Keygen {
        /// The key's id (1 to 32 of A-Z a-z 0-9 _ -); it travels in URLs.
        #[arg(long)]
        id: String,
        /// Print JSON (`line`: the line for the keys file, a secret).
        #[arg(long)]
        json: bool,
    },
    /// Stop every playback URL the tenant has issued, at once (admin or
    /// compliance token).
    Revoke {
        /// Print JSON (`epoch`).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn play_url(args: PlayUrlArgs) -> Result<()> {
    let mut c = args.client.connect().await?;
    let res = c
        .playback
        .create_playback_url(pb::CreatePlaybackUrlRequest {
            recording_id: args.id,
            ttl_seconds: args.ttl.as_secs(),
            purpose: match args.purpose {
                UrlPurpose::Stream => pb::PlaybackPurpose::Stream,
                UrlPurpose::Download => pb::PlaybackPurpose::Download,
            }
            .into(),
            reason: args.reason,
        })
        .await
        .map_err(failed("play-url"))?
        .into_inner();
    if args.json {
        let purpose = match res.purpose() {
            pb::PlaybackPurpose::Download => "download",
            _ => "stream",
        };
        println!(
            "{}",
            json!({
                "url": res.url,
                "path": res.path,
                "expire_time": output::time_json(res.expire_time.as_ref()),
                "purpose": purpose,
            })
        );
    } else {
        println!("{}", res.url);
        if let Some(t) = &res.expire_time {
            eprintln!("expires {}", output::format_ts(t));
        }
    }
    Ok(())
}

pub async fn urls(cmd: UrlsCmd) -> Result<()> {
    match cmd {
        UrlsCmd::Keygen { id, json } => {
            let line = callvault::playback::urls::UrlKeys::generate_line(&id)?;
            if json {
                println!("{}", json!({ "key_id": id, "line": *line }));
            } else {
                println!("{}", *line);
            }
        }
        UrlsCmd::Revoke { json, client } => {
            let mut c = client.connect().await?;
            let res = c
                .playback
                .revoke_playback_urls(pb::RevokePlaybackUrlsRequest {})
                .await
                .map_err(failed("urls revoke"))?
                .into_inner();
            if json {
                println!("{}", json!({ "epoch": res.epoch }));
            } else {
                println!(
                    "every playback URL issued before now is revoked (epoch {})",
                    res.epoch
                );
            }
        }
    }
    Ok(())
}
