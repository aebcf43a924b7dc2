//! The audio the sections send, made by the tool users have (`sox`) when it
//! is on PATH, else by `callvault::synth` (said in the output either way).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;

/// A WAV file on disk and what the server must report for it.
#[derive(Debug, Clone)]
pub struct AudioFile {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
    /// `sox` or `callvault::synth`, and what it is.
    pub made_by: String,
}

impl AudioFile {
    async fn describe(path: PathBuf, made_by: String) -> anyhow::Result<Self> {
        let bytes = std::fs::metadata(&path)?.len();
        let sha256 = sha256_file(&path).await?;
        Ok(Self {
            path,
            bytes,
            sha256,
            made_by,
        })
    }

    pub async fn read(&self) -> anyhow::Result<Bytes> {
        Ok(Bytes::from(tokio::fs::read(&self.path).await?))
    }
}

pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

pub fn sha256(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data))
}

/// SHA-256 of a file, on the blocking pool.
pub async fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        use std::io::Read;
        let mut f =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
        }
        Ok(hex::encode(ctx.finish()))
    })
    .await?
}

async fn sox(args: &[&str]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new("sox")
        .arg("-V1")
        .args(args)
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "sox {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A 48 kHz stereo 16-bit PCM WAV of `total` bytes (a 440 Hz sine):
/// `sox -n -r 48000 -c 2 -b 16 FILE synth Ns sine 440`.
pub async fn pcm_wav(dir: &Path, name: &str, total: u64) -> anyhow::Result<AudioFile> {
    let path = dir.join(name);
    if on_path("sox") {
        // A 44-byte header, then 4 bytes a frame.
        let frames = format!("{}s", total.saturating_sub(44) / 4);
        sox(&[
            "-n",
            "-r",
            "48000",
            "-c",
            "2",
            "-b",
            "16",
            path.to_str().context("path")?,
            "synth",
            &frames,
            "sine",
            "440",
        ])
        .await?;
        AudioFile::describe(
            path,
            "sox, 48 kHz stereo 16-bit PCM WAV, 440 Hz sine".into(),
        )
        .await
    } else {
        let secs = (total / 192_000).max(1) as u32;
        let wav = tokio::task::spawn_blocking(move || callvault::synth::synth_wav(secs, 48_000, 2))
            .await?;
        tokio::fs::write(&path, wav).await?;
        AudioFile::describe(
            path,
            "callvault::synth (no sox on PATH), 48 kHz stereo 16-bit PCM WAV".into(),
        )
        .await
    }
}

/// `secs` of 8 kHz mono G.711 μ-law WAV (pink noise), as a contact center
/// records a call: `sox -n -r 8000 -c 1 -e u-law FILE synth SECS pinknoise`.
/// Without sox: 4 kHz mono 16-bit PCM, the same 8,000 bytes a second.
pub async fn mulaw_wav(dir: &Path, name: &str, secs: u64) -> anyhow::Result<AudioFile> {
    let path = dir.join(name);
    if on_path("sox") {
        sox(&[
            "-n",
            "-r",
            "8000",
            "-c",
            "1",
            "-e",
            "u-law",
            path.to_str().context("path")?,
            "synth",
            &secs.to_string(),
            "pinknoise",
            "vol",
            "0.5",
        ])
        .await?;
        AudioFile::describe(path, "sox, 8 kHz mono G.711 μ-law WAV, pink noise".into()).await
    } else {
        let wav = callvault::synth::synth_wav(secs as u32, 4_000, 1);
        tokio::fs::write(&path, wav).await?;
        AudioFile::describe(
            path,
            "callvault::synth (no sox on PATH), 4 kHz mono 16-bit PCM WAV, 8,000 B/s".into(),
        )
        .await
    }
}

/// Where a WAV's `data` chunk starts: everything before it is the header.
pub fn wav_data_offset(wav: &[u8]) -> anyhow::Result<usize> {
    if wav.len() < 12 || &wav[..4] != b"RIFF" || &wav[8..12] != b"WAVE" {
        bail!("not a RIFF/WAVE file");
    }
    let mut at = 12;
    while at + 8 <= wav.len() {
        let size = u32::from_le_bytes(wav[at + 4..at + 8].try_into()?) as usize;
        if &wav[at..at + 4] == b"data" {
            return Ok(at + 8);
        }
        at += 8 + size + (size & 1);
    }
    bail!("no data chunk")
}
