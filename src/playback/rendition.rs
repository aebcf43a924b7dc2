//! The decoded rendition of a recording (`?rendition=wav`): 16-bit PCM
//! WAV, decoded on the fly with symphonia, for a browser that cannot play
//! the original (AAC missing from a Chromium build, G.711 WAV unsupported).
//!
//! Its length is known before any of it is decoded: the peaks job decodes
//! every recording once and records the frame count, rate and channels
//! (`PcmLayout`, in the catalog beside the peaks state). Until then there
//! is no rendition (ask again shortly); a format nothing here decodes
//! (Opus) never has one. A byte range is a frame range: the reader seeks to
//! its first frame (`audio::pcm::wav_range`) over a reader that opens only
//! the chunks the decoder reads (`source::ChunkSource`), so a seek into a
//! two-hour call reads a chunk or two, not the hour before it.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::source::ChunkSource;
use super::{PlayChunk, cipher_with, key_in_use};
use crate::archive::Archive;
use crate::audio::noise::{self, Noise};
use crate::catalog::RecordingRow;
use crate::catalog::recordings::{self, PeaksState};
use crate::domain::PcmLayout;
use crate::error::{Error, Result};
use crate::revocation::KeyInUse;

/// Which bytes a signed URL serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The recording as it was ingested.
    Original,
    /// The decoded WAV rendition of this layout.
    Wav(PcmLayout),
}

impl View {
    /// The size of the bytes this view serves.
    pub fn size(&self, row: &RecordingRow) -> u64 {
        match self {
            View::Original => row.size_bytes,
            View::Wav(layout) => layout.wav_bytes(),
        }
    }

    pub fn duration_ms(&self, row: &RecordingRow) -> u64 {
        match self {
            View::Original => row.audio.duration_ms,
            View::Wav(layout) => layout.duration_ms(),
        }
    }

    /// The name the audit trail and the query string use; `None` for the
    /// original.
    pub fn rendition(&self) -> Option<&'static str> {
        match self {
            View::Original => None,
            View::Wav(_) => Some("wav"),
        }
    }
}

/// Whether the recording has a WAV rendition now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WavAnswer {
    Ready(PcmLayout),
    /// Not decoded yet: ask again shortly.
    Pending,
    /// Nothing here decodes this format, or it is too long for WAV.
    Unavailable,
}

/// Whether `row` has a WAV rendition, and its layout.
pub async fn wav_layout(archive: &Archive, row: &RecordingRow) -> Result<WavAnswer> {
    let state =
        recordings::peaks_state(&mut *archive.catalog.conn().await?, &row.tenant, &row.id).await?;
    Ok(match state {
        None => return Err(Error::RecordingNotFound(row.id)),
        Some((PeaksState::Pending, _)) => WavAnswer::Pending,
        Some((PeaksState::Stored, Some(layout))) if layout.fits_wav() => WavAnswer::Ready(layout),
        Some(_) => WavAnswer::Unavailable,
    })
}

/// Bytes `start..end` of the WAV rendition of `row` (`start < end <=
/// layout.wav_bytes()`). Errors that can be known before the first byte
/// (the key refused, the chunk list wrong) are returned here; later ones
/// end the stream. Neither audited nor guarded: the caller does both.
pub(crate) async fn open_wav_range(
    archive: &Arc<Archive>,
    row: &RecordingRow,
    layout: PcmLayout,
    start: u64,
    end: u64,
) -> Result<(KeyInUse, BoxStream<'static, Result<PlayChunk>>)> {
    debug_assert!(start < end && end <= layout.wav_bytes());
    let key = key_in_use(archive, row).await?;
    let cipher = Arc::new(cipher_with(archive, row, &key).await?);
    let source = ChunkSource::open(archive, row, cipher).await?;
    let failure = source.failure();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<PlayChunk>>(2);
    let id = row.id;
    tokio::task::spawn_blocking(move || {
        let template = source.again();
        let mut first = Some(source);
        let mut open = || -> Box<dyn symphonia::core::io::MediaSource> {
            Box::new(first.take().unwrap_or_else(|| template.again()))
        };
        let mut offset = start;
        let mut noise = Noise::default();
        let decoded = noise::collect(&mut noise, || {
            crate::audio::pcm::wav_range(&mut open, &layout, start, end, &mut |piece| {
                let len = piece.len() as u64;
                let chunk = PlayChunk {
                    offset,
                    data: Bytes::from(piece),
                };
                offset += len;
                // False once the response is gone: the decode stops.
                tx.blocking_send(Ok(chunk)).is_ok()
            })
        });
        // One line per play for however many packets the decoder skipped.
        if let Some(reports) = noise.summary() {
            tracing::warn!(recording = %id, reports = noise.records, "the audio decoder reported damage in the WAV rendition: {reports}");
        }
        let error = failure
            .take()
            .or_else(|| decoded.err().map(|e| Error::task("decoded rendition", e)));
        if let Some(e) = error {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Ok((key, stream_of(rx)))
}

fn stream_of(
    rx: tokio::sync::mpsc::Receiver<Result<PlayChunk>>,
) -> BoxStream<'static, Result<PlayChunk>> {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}
