//! Audio probing with symphonia, on plaintext that only ever lives in memory.
//!
//! Two passes, both streaming:
//! 1. [`detect`] runs on the head of the upload (the first chunk, held in memory
//!    anyway) before anything is stored. Not audio: [`Error::NotAudio`] naming
//!    what was found, and nothing is written.
//! 2. [`Analyzer`] follows the whole stream as ingest feeds it and yields the
//!    duration. Damage part-way is "damaged but kept": the recording is stored
//!    and flagged with the probe's warning.
//!
//! The analyzer holds no thread while it waits for bytes: an upload that
//! trickles in for an hour costs memory, not a parked thread, so slow uploads
//! cannot fill the blocking pool that chunk sealing also needs (with one
//! parked thread per upload, 512 slow uploads deadlocked the server).
//! - MP4 (`mp4`): top-level atoms are followed as bytes arrive, on the
//!   caller's task; `mdat` is skipped without being kept, and `ftyp` + `moov`
//!   are probed once at the end (one short blocking task), wherever `moov`
//!   sits.
//! - PCM in WAV (integer, float, A-law, µ-law; `wav::Counted`): every
//!   frame has the header's block size, so the duration is the byte count
//!   after the header (up to the `data` size) over the block size. No byte
//!   is kept and no thread is used: most call recordings are this.
//! - Every other container (`demux`): bytes are queued, and symphonia's
//!   reader runs in short blocking-pool batches over bytes already queued,
//!   never reading past them (see `demux` for the read-ahead window that
//!   guarantees this), then is parked as a value until more bytes arrive.
//!
//! Why batches: symphonia 0.5 only pulls through a blocking `Read` and has no
//! push or async interface. A dedicated, bounded pool for analyzers would only
//! move the limit (uploads past its size would wait behind parked ones);
//! a batch holds a thread only while it has bytes to demux, so progress never
//! depends on the network. The price is the read-ahead window: the duration
//! trails the upload by the window (256 KiB, about 60 KiB for ADPCM WAV) until
//! the stream ends.
//!
//! Memory per upload, beyond the chunk ingest is filling: for PCM in WAV, a
//! counter; for MP4, `ftyp` +
//! `moov` (at most 16 MiB, typically a few KiB per minute of audio); for the
//! rest, at most 1 MiB queued until the header is read and two windows
//! (at most 512 KiB) after it,
//! plus the piece being fed (one gRPC message of at most 4 MiB, or the first
//! chunk), plus symphonia's 64 KiB buffer and one packet. Matroska/WebM
//! passes through `ebml`'s guard, which may hold one block (at most 16 MiB,
//! kilobytes in practice) to check its lacing.
//!
//! WAV headers symphonia 0.5 cannot read as written (RF64, sizes left unknown
//! by a writer on a pipe) are rewritten in memory first (`wav`).

mod demux;
mod ebml;
mod mp4;
pub mod noise;
pub mod pcm;
pub mod peaks;
mod probe;
mod queue;
mod sniff;
mod wav;

use bytes::Bytes;

pub use sniff::sniff;

/// The head of a WAV rewritten, if needed, so that symphonia can read it
/// (RF64, sizes a writer on a pipe left unknown); any other head as is.
pub fn readable_head<'a>(container: &str, head: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
    if container == "wav" {
        wav::readable_head(head)
    } else {
        head.into()
    }
}

/// The media type of a recording by the container its probe found (what a
/// browser is told it is fetching).
pub fn media_type(container: &str) -> &'static str {
    match container {
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "flac" => "audio/flac",
        "ogg" => "audio/ogg",
        "webm" => "audio/webm",
        "mkv" => "audio/x-matroska",
        "mp4" => "audio/mp4",
        _ => "application/octet-stream",
    }
}

use crate::domain::AudioInfo;
use crate::error::{Error, Result};

/// What the head probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub container: &'static str,
    pub codec: String,
    pub sample_rate_hz: u32,
    pub channels: u32,
    /// The head alone could not show the audio track (an MP4 whose `moov`
    /// atom is not complete in the head); the streaming analyzer decides.
    pub provisional: bool,
}

impl Detected {
    /// What the head says, before anything is measured.
    fn unmeasured(&self) -> AudioInfo {
        AudioInfo {
            container: self.container.to_owned(),
            codec: self.codec.clone(),
            sample_rate_hz: self.sample_rate_hz,
            channels: self.channels,
            duration_ms: 0,
            warning: None,
        }
    }
}

/// Decides from the head of an upload whether it is audio.
pub fn detect(head: &[u8]) -> Result<Detected> {
    let container = sniff(head);
    if container == "mp4" {
        return mp4::detect(head);
    }
    // Only the containers of SPEC §7 are probed: symphonia scans arbitrary
    // bytes for an MP3 or ADTS sync word and, in random data, sometimes
    // finds one that parses (seen: 300 kB of random bytes "probed" as AAC
    // at 7350 Hz with 0 channels).
    if !matches!(container, "wav" | "flac" | "ogg" | "mkv" | "webm" | "mp3") {
        return Err(Error::NotAudio(container.to_owned()));
    }
    let head = if container == "wav" {
        wav::readable_head(head)
    } else {
        head.into()
    };
    let reader =
        probe::open_reader(Box::new(probe::Memory::new(head.into_owned()))).map_err(|e| {
            match container {
                "wav" | "flac" | "ogg" | "mkv" | "webm" | "mp3" => Error::NotAudio(format!(
                    "{} header that cannot be read ({e})",
                    probe::a(container)
                )),
                other => Error::NotAudio(other.to_owned()),
            }
        })?;
    probe::describe_track(reader.as_ref(), container).map(|(_, d)| d)
}

/// The streaming second pass. Feed every plaintext byte with [`Analyzer::feed`]
/// in order, then [`Analyzer::finish`].
#[derive(Debug)]
pub struct Analyzer(Pass);

#[derive(Debug)]
enum Pass {
    Mp4(std::sync::Mutex<mp4::AtomWalk>),
    /// PCM in WAV: measured from its byte count (`wav::Counted`).
    Counted(wav::Counted),
    Demux(demux::Stream),
}

impl Analyzer {
    /// The pass for what `detect` found in `head`, the stream's first bytes
    /// (which are then fed like the rest).
    pub fn start(detected: Detected, head: &[u8]) -> Self {
        if detected.container == "mp4" {
            return Self(Pass::Mp4(Default::default()));
        }
        match wav::Counted::start(&detected, head) {
            Some(counted) => Self(Pass::Counted(counted)),
            None => Self::demuxing(detected),
        }
    }

    /// symphonia's demuxer, whatever the stream (the only pass for most).
    fn demuxing(detected: Detected) -> Self {
        Self(Pass::Demux(demux::Stream::start(detected)))
    }

    /// Takes the next bytes of the upload. Returns at once unless the
    /// analyzer is more than its bound behind; then it waits (without
    /// holding a thread) for the demuxer to catch up.
    pub async fn feed(&self, data: &Bytes) {
        self.take(data, || data.clone()).await;
    }

    /// [`Analyzer::feed`] for bytes the caller keeps: copied only by a pass
    /// that queues them.
    pub async fn feed_slice(&self, data: &[u8]) {
        self.take(data, || Bytes::copy_from_slice(data)).await;
    }

    async fn take(&self, data: &[u8], owned: impl FnOnce() -> Bytes) {
        match &self.0 {
            Pass::Mp4(walk) => lock(walk).push(data),
            Pass::Counted(counted) => counted.feed(data.len()),
            Pass::Demux(stream) => stream.feed(owned()).await,
        }
    }

    /// The probe's verdict on the whole upload, and what the demuxer
    /// reported on the way (to be logged once, not per packet). An MP4
    /// whose `moov` never arrived, or describes no audio track, is
    /// [`Error::NotAudio`].
    pub async fn finish(self) -> Result<(AudioInfo, noise::Noise)> {
        match self.0 {
            Pass::Mp4(walk) => {
                let walk = walk.into_inner().unwrap_or_else(|e| e.into_inner());
                // One short parse of `moov` (up to 16 MiB) off the runtime's workers.
                let info = tokio::task::spawn_blocking(move || walk.finish())
                    .await
                    .map_err(|e| Error::task("audio analysis", e))??;
                Ok((info, noise::Noise::default()))
            }
            Pass::Counted(counted) => Ok((counted.finish(), noise::Noise::default())),
            Pass::Demux(stream) => Ok(stream.finish().await),
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The warning for a stream that ends before its header says it should.
fn truncation_warning(detail: &str) -> String {
    format!("incomplete audio (truncated or damaged): {detail}")
}

#[cfg(test)]
mod tests;
