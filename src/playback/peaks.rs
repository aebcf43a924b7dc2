//! Waveform peaks as a sidecar of each recording: computed by the admin
//! nodes' peaks job shortly after ingest (and, by the same job, for every
//! recording that predates them: the backfill), sealed under the
//! recording's metadata key like its labels, stored beside its chunks, and
//! served through the recording's signed URLs.
//!
//! The job reads a recording as playback does (through the key cache,
//! authenticated chunk by chunk) and feeds the plaintext to the decoder on
//! a blocking thread through a two-chunk channel: one recording costs the
//! chunks read ahead (`limits.read_ahead`), two in the channel and one
//! decoded packet, whatever its length.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use super::{check_chunk_list, cipher_for, opened_chunks};
use crate::archive::Archive;
use crate::audio::peaks::{Peaks, PeaksError};
use crate::catalog::RecordingRow;
use crate::catalog::recordings::{self, PeaksState};
use crate::crypto::CryptoError;
use crate::domain::{RecordingId, TenantId};
use crate::error::{Error, Result};
use crate::store::ChunkStore;

/// Recordings one pass of the job takes on.
const PER_PASS: usize = 20;
/// How long a recording whose peaks failed waits before this node tries it
/// again.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// Computes and stores the peaks of recordings that have none yet. Returns
/// how many were settled (stored or found to have none). A recording that
/// fails (a key KMS refuses now, a store outage) waits `RETRY_AFTER` on
/// this node, and the pass reads past the waiting ones, so they cannot
/// stall the queue.
pub async fn run_pending(archive: &Arc<Archive>) -> Result<usize> {
    let now = std::time::Instant::now();
    let waiting = {
        let mut retry = archive
            .peaks_retry
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        retry.retain(|_, at| *at > now);
        retry.len()
    };
    let limit = u32::try_from((PER_PASS + waiting).min(1000)).unwrap_or(1000);
    let pending = recordings::peaks_pending(&mut *archive.catalog.conn().await?, limit).await?;
    let mut settled = 0;
    for (tenant, rec) in pending {
        if settled >= PER_PASS {
            break;
        }
        let waits = archive
            .peaks_retry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&rec);
        if waits {
            continue;
        }
        match settle(archive, &tenant, &rec).await {
            Ok(()) => settled += 1,
            Err(e) => {
                tracing::warn!(tenant = %tenant, recording = %rec, error = %e, "waveform peaks not computed");
                archive
                    .peaks_retry
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(rec, now + RETRY_AFTER);
            }
        }
    }
    Ok(settled)
}

async fn settle(archive: &Arc<Archive>, tenant: &TenantId, rec: &RecordingId) -> Result<()> {
    let row = match recordings::get(&mut *archive.catalog.conn().await?, tenant, rec).await {
        Ok(row) => row,
        // Erased meanwhile: nothing to do.
        Err(Error::RecordingNotFound(_) | Error::RecordingErased { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let cipher = Arc::new(cipher_for(archive, &row).await?);
    let outcome = compute(archive, &row, cipher.clone()).await?;
    let key = ChunkStore::peaks_key(tenant, rec);
    let to = match outcome {
        Ok(peaks) => {
            let sealed = cipher
                .seal_metadata(&peaks.encode())
                .map_err(|e| Error::integrity(rec, e))?;
            archive.store.put(&key, Bytes::from(sealed)).await?;
            PeaksState::Stored
        }
        Err(why) => {
            tracing::info!(tenant = %tenant, recording = %rec, reason = %why, "no waveform peaks for this recording");
            PeaksState::Unavailable
        }
    };
    let moved = recordings::set_peaks_state(
        &mut *archive.catalog.conn().await?,
        tenant,
        rec,
        PeaksState::Pending,
        to,
    )
    .await?;
    if !moved && to == PeaksState::Stored {
        // Erased (or settled by another node) while we worked: never leave
        // an object that no row names.
        if recordings::peaks_state(&mut *archive.catalog.conn().await?, tenant, rec)
            .await?
            .is_none()
        {
            archive.store.delete_object(&key).await?;
        }
    }
    Ok(())
}

/// Decodes the recording's plaintext into peaks on a blocking thread.
async fn compute(
    archive: &Arc<Archive>,
    row: &RecordingRow,
    cipher: Arc<crate::crypto::RecordingCipher>,
) -> Result<std::result::Result<Peaks, PeaksError>> {
    let chunks =
        recordings::chunks(&mut *archive.catalog.conn().await?, &row.tenant, &row.id).await?;
    check_chunk_list(row, &chunks)?;
    let all = 0..chunks.len();
    let mut plain = opened_chunks(archive.clone(), cipher, row.id, chunks, all, None);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let decoding = tokio::task::spawn_blocking(move || {
        crate::audio::peaks::compute(Box::new(ChannelReader {
            rx,
            current: Bytes::new(),
        }))
    });
    let container = row.audio.container.clone();
    let mut first = true;
    let mut failed = None;
    while let Some(chunk) = plain.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                failed = Some(e);
                break;
            }
        };
        let bytes = if first {
            first = false;
            Bytes::from(crate::audio::readable_head(&container, &chunk).into_owned())
        } else {
            Bytes::from(chunk)
        };
        if tx.send(bytes).await.is_err() {
            // The decoder is done (or gave up): the rest is not needed.
            break;
        }
    }
    drop(tx);
    let result = decoding
        .await
        .map_err(|e| Error::task("waveform peaks", e))?;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(result)
}

/// The plaintext as a blocking `Read` for symphonia.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// A recording's stored peaks, opened; `None` while they are not computed
/// yet; an error naming why there are none.
pub async fn open(archive: &Archive, row: &RecordingRow) -> Result<PeaksAnswer> {
    let state =
        recordings::peaks_state(&mut *archive.catalog.conn().await?, &row.tenant, &row.id).await?;
    match state {
        None => Err(Error::RecordingNotFound(row.id)),
        Some(PeaksState::Pending) => Ok(PeaksAnswer::Pending),
        Some(PeaksState::Unavailable) => Ok(PeaksAnswer::Unavailable),
        Some(PeaksState::Stored) => {
            let key = ChunkStore::peaks_key(&row.tenant, &row.id);
            let sealed = match archive.store.get(&key).await {
                Ok(b) => b,
                Err(Error::ObjectMissing(_)) => {
                    // Not in a restored backup, say: compute them again.
                    recordings::set_peaks_state(
                        &mut *archive.catalog.conn().await?,
                        &row.tenant,
                        &row.id,
                        PeaksState::Stored,
                        PeaksState::Pending,
                    )
                    .await?;
                    return Ok(PeaksAnswer::Pending);
                }
                Err(e) => return Err(e),
            };
            let cipher = cipher_for(archive, row).await?;
            let plain = cipher
                .open_metadata(&sealed)
                .map_err(|e| Error::integrity(row.id, e))?;
            if Peaks::decode(&plain).is_none() {
                return Err(Error::integrity(
                    row.id,
                    CryptoError::MetadataAuthentication,
                ));
            }
            Ok(PeaksAnswer::Stored(Bytes::from(plain)))
        }
    }
}

/// What a request for a recording's peaks gets.
#[derive(Debug)]
pub enum PeaksAnswer {
    /// The encoded peaks (`audio::peaks`).
    Stored(Bytes),
    /// Not computed yet: ask again shortly.
    Pending,
    /// None for this format.
    Unavailable,
}
