//! Waveform peaks as a sidecar of each recording: computed by the admin
//! nodes' peaks job shortly after ingest (and, by the same job, for every
//! recording that predates them: the backfill), sealed under the
//! recording's metadata key like its labels, stored beside its chunks, and
//! served through the recording's signed URLs.
//!
//! The job reads a recording as playback does (through the key cache,
//! authenticated chunk by chunk), through a seekable reader that opens the
//! chunks as the decoder on a blocking thread asks for them
//! (`source::ChunkSource`): one recording costs two opened chunks, one
//! read ahead and one decoded packet, whatever its length. The same decode
//! records the recording's decoded layout (frames, rate, channels): what
//! its WAV rendition holds (`rendition`).

use std::sync::Arc;

use bytes::Bytes;

use super::cipher_for;
use super::source::ChunkSource;
use crate::archive::Archive;
use crate::audio::noise::{self, Noise};
use crate::audio::peaks::{DecodeError, Peaks};
use crate::catalog::RecordingRow;
use crate::catalog::recordings::{self, PeaksState};
use crate::crypto::CryptoError;
use crate::domain::{PcmLayout, RecordingId, TenantId};
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
    match outcome {
        Ok((peaks, layout)) => {
            let sealed = cipher
                .seal_metadata(&peaks.encode())
                .map_err(|e| Error::integrity(rec, e))?;
            archive.store.put(&key, Bytes::from(sealed)).await?;
            let stored =
                recordings::store_peaks(&mut *archive.catalog.conn().await?, tenant, rec, &layout)
                    .await?;
            if !stored {
                // Erased (or settled by another node) while we worked:
                // never leave an object that no row names.
                forget_orphan(archive, tenant, rec, key).await?;
            }
        }
        Err(why) => {
            tracing::info!(tenant = %tenant, recording = %rec, reason = %why, "no waveform peaks for this recording");
            recordings::set_peaks_state(
                &mut *archive.catalog.conn().await?,
                tenant,
                rec,
                PeaksState::Pending,
                PeaksState::Unavailable,
            )
            .await?;
        }
    }
    Ok(())
}

/// Deletes the peaks object of a recording the catalog no longer has.
async fn forget_orphan(
    archive: &Arc<Archive>,
    tenant: &TenantId,
    rec: &RecordingId,
    key: String,
) -> Result<()> {
    let state = recordings::peaks_state(&mut *archive.catalog.conn().await?, tenant, rec).await?;
    if state.is_none() {
        archive.store.delete_object(&key).await?;
    }
    Ok(())
}

/// Decodes the recording's plaintext into peaks (and its decoded layout)
/// on a blocking thread, reading its chunks as the decoder asks for them.
async fn compute(
    archive: &Arc<Archive>,
    row: &RecordingRow,
    cipher: Arc<crate::crypto::RecordingCipher>,
) -> Result<std::result::Result<(Peaks, PcmLayout), DecodeError>> {
    let source = ChunkSource::open(archive, row, cipher).await?;
    let failure = source.failure();
    let (result, noise) = tokio::task::spawn_blocking(move || {
        let mut noise = Noise::default();
        let result = noise::collect(&mut noise, || {
            crate::audio::peaks::compute(Box::new(source))
        });
        (result, noise)
    })
    .await
    .map_err(|e| Error::task("waveform peaks", e))?;
    // One line for however many packets the decoder skipped.
    if let Some(reports) = noise.summary() {
        tracing::warn!(recording = %row.id, reports = noise.records, "the audio decoder reported damage while computing peaks: {reports}");
    }
    // A chunk that could not be read is the store's or the key's failure,
    // tried again later, not a format without peaks.
    if let Some(e) = failure.take() {
        return Err(e);
    }
    Ok(result)
}

/// A recording's stored peaks, opened; `None` while they are not computed
/// yet; an error naming why there are none.
pub async fn open(archive: &Archive, row: &RecordingRow) -> Result<PeaksAnswer> {
    let state =
        recordings::peaks_state(&mut *archive.catalog.conn().await?, &row.tenant, &row.id).await?;
    match state.map(|(s, _)| s) {
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
