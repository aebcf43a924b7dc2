//! Ingest: cut an incoming byte stream into chunks, seal them, store them, and
//! commit the recording atomically.
//!
//! Memory is bounded whatever the file size: one chunk being filled, at most
//! `Limits::max_uploads_in_flight` chunks of this upload (and
//! `Limits::max_chunk_writes` of the node) being sealed and written, and the
//! audio analyzer's bounded buffer. Nothing is written before the head of
//! the upload has been recognised as audio.
//!
//! An upload holds a catalog lease, renewed on a timer while its client is
//! connected. On a failure everything it wrote is removed, but only after
//! the catalog confirmed, in the same transaction that removes the rows,
//! that the recording is not committed: an error after the commit (a lost
//! reply, a failed read) can never delete an acknowledged recording. The
//! sweeper removes uploads whose lease ran out (their node crashed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::time::Instant;

use crate::archive::Archive;
use crate::audit::event::{Action as AuditAction, log_of};
use crate::audit::trail;
use crate::catalog::{AbortOutcome, CommitOutcome, Completion, RecordingRow, recordings};
use crate::crypto;
use crate::domain::{ExternalCallId, Principal};
use crate::error::{Error, Result};

mod filling;
mod upload;

use filling::Filling;

use upload::{Upload, begin, remove_upload, renew_lease, spawn_chunk, write_final};

pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_KEY: usize = 128;
pub const MAX_LABEL_VALUE: usize = 1024;

/// Labels as a recording may carry them (and a search may name them): at
/// most 64, keys 1..=128 bytes, values at most 1024.
pub fn validate_labels(field: &str, labels: &BTreeMap<String, String>) -> Result<()> {
    if labels.len() > MAX_LABELS {
        return Err(Error::invalid(field, "at most 64 labels"));
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > MAX_LABEL_KEY {
            return Err(Error::invalid(field, "keys must be 1..=128 bytes"));
        }
        if v.len() > MAX_LABEL_VALUE {
            return Err(Error::invalid(field, "values must be at most 1024 bytes"));
        }
    }
    Ok(())
}

/// The validated first message of an upload.
#[derive(Debug, Clone)]
pub struct IngestHeader {
    pub external_call_id: ExternalCallId,
    pub start_time_ms: Option<i64>,
    pub labels: BTreeMap<String, String>,
    pub chunk_size: u32,
    /// role -> identifier, as given (validated).
    pub participants: crate::domain::Participants,
}

impl IngestHeader {
    pub fn parse(
        external_call_id: &str,
        start_time_ms: Option<i64>,
        labels: BTreeMap<String, String>,
        chunk_size: u32,
        participants: crate::domain::Participants,
    ) -> Result<Self> {
        let external_call_id = ExternalCallId::parse(external_call_id)?;
        let participants = crate::domain::parse_participants("header.participants", participants)?;
        validate_labels("header.labels", &labels)?;
        let chunk_size = if chunk_size == 0 {
            crypto::DEFAULT_CHUNK_SIZE
        } else {
            chunk_size
        };
        crypto::validate_chunk_size(chunk_size)
            .map_err(|e| Error::invalid("header.chunk_size_bytes", &e.to_string()))?;
        Ok(Self {
            external_call_id,
            start_time_ms,
            labels,
            chunk_size,
            participants,
        })
    }
}

/// One message of an upload after its header.
#[derive(Debug, Clone)]
pub enum Part {
    Data(Bytes),
    /// The client's SHA-256 of every data byte; the last message if sent.
    Trailer {
        sha256: [u8; 32],
    },
}

#[derive(Debug, Clone)]
pub struct IngestOutcome {
    pub recording: RecordingRow,
    pub deduplicated: bool,
}

/// Runs one upload. `body` yields the messages after the header.
pub async fn ingest<S>(
    archive: Arc<Archive>,
    principal: Principal,
    header: IngestHeader,
    body: S,
) -> Result<IngestOutcome>
where
    S: Stream<Item = Result<Part>> + Unpin + Send,
{
    crate::access::require(&archive, &principal, crate::access::Action::Ingest).await?;
    let _slot = archive
        .uploads
        .acquire(&principal.tenant, archive.limits.max_uploads_per_tenant)?;
    let _in_flight = archive.metrics.upload_in_flight();
    let existing = {
        let mut conn = archive.catalog.conn_bulk().await?;
        recordings::find_by_call_id(&mut conn, &principal.tenant, &header.external_call_id).await?
    };
    if let Some(existing) = existing {
        tracing::info!(recording = %existing.id, "ingest deduplicated by external call id");
        return deduplicated(&archive, &principal, existing).await;
    }
    let mut upload: Option<Upload> = None;
    match run(&archive, &principal, &header, body, &mut upload).await {
        Ok(outcome) => Ok(outcome),
        Err(err) => match upload {
            None => Err(err),
            Some(up) => settle_failed(&archive, &principal, up, err).await,
        },
    }
}

/// An upload whose catalog row exists failed with `err`. Ask the catalog
/// what became of it: if the commit went through after all (its reply was
/// lost), the recording is durable and the caller gets it; otherwise remove
/// what the upload wrote. Committed recordings are never touched: the
/// status check and the row removal are one transaction, and objects go
/// only after it committed.
async fn settle_failed(
    archive: &Archive,
    principal: &Principal,
    up: Upload,
    err: Error,
) -> Result<IngestOutcome> {
    let id = up.id();
    match remove_upload(archive, principal, up, "upload failed").await {
        Ok(AbortOutcome::Committed) => {
            let row = match archive.catalog.conn_bulk().await {
                Ok(mut conn) => recordings::get(&mut conn, &principal.tenant, &id).await,
                Err(e) => Err(e),
            };
            match row {
                Ok(recording) => {
                    tracing::warn!(recording = %id, error = %err, "ingest saw an error after its commit went through; answering with the committed recording");
                    Ok(IngestOutcome {
                        recording,
                        deduplicated: false,
                    })
                }
                Err(_) => Err(err),
            }
        }
        Ok(_) => Err(err),
        Err(e) => {
            tracing::warn!(recording = %id, error = %e, "cleanup of failed upload deferred to sweeper");
            Err(err)
        }
    }
}

async fn run<S>(
    archive: &Arc<Archive>,
    principal: &Principal,
    header: &IngestHeader,
    mut body: S,
    upload: &mut Option<Upload>,
) -> Result<IngestOutcome>
where
    S: Stream<Item = Result<Part>> + Unpin + Send,
{
    let chunk_size = header.chunk_size as usize;
    let mut buf = Filling::new(chunk_size);
    let mut total: u64 = 0;
    let mut trailer: Option<[u8; 32]> = None;
    let idle_timeout = archive.limits.upload_idle_timeout;
    let renew_every = (archive.limits.upload_lease / 3).max(Duration::from_millis(10));
    let mut renew = tokio::time::interval_at(Instant::now() + renew_every, renew_every);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_message = Instant::now();
    let ingested = archive.metrics.ingested_bytes(principal.tenant.as_str());

    loop {
        // The lease is renewed on a timer while the client is connected,
        // whether or not it sends anything (a call on hold); a client that
        // sends nothing at all for the idle timeout is given up on.
        let msg = tokio::select! {
            msg = body.next() => msg,
            _ = renew.tick() => {
                if let Some(up) = upload.as_ref() {
                    renew_lease(archive, principal, up).await?;
                }
                continue;
            }
            () = tokio::time::sleep_until(last_message + idle_timeout) => {
                return Err(Error::UploadIdle { secs: idle_timeout.as_secs() });
            }
        };
        let Some(msg) = msg else { break };
        last_message = Instant::now();
        if trailer.is_some() {
            return Err(Error::invalid(
                "trailer",
                "the trailer must be the last message",
            ));
        }
        let mut data = match msg? {
            Part::Data(data) => data,
            Part::Trailer { sha256 } => {
                trailer = Some(sha256);
                continue;
            }
        };
        total += data.len() as u64;
        ingested.inc_by(data.len() as u64);
        if total > archive.limits.max_recording_bytes {
            return Err(Error::RecordingTooLarge {
                limit: archive.limits.max_recording_bytes,
            });
        }
        if let Some(a) = upload.as_ref().and_then(|up| up.analyzer.as_ref()) {
            a.feed(&data).await;
        }
        while !data.is_empty() {
            if buf.is_full() {
                // More data follows, so the full buffer is not the final chunk.
                if upload.is_none() {
                    let up = begin(archive, principal, header, buf.as_slice()).await?;
                    if let Some(a) = &up.analyzer {
                        a.feed(&data).await;
                    }
                    *upload = Some(up);
                }
                let plain = buf.take();
                if let Some(up) = upload.as_mut() {
                    spawn_chunk(archive, principal, up, plain).await?;
                }
            }
            let take = buf.room().min(data.len());
            buf.extend(&data.split_to(take));
        }
    }

    if total == 0 {
        return Err(Error::invalid(
            "data",
            "the stream ended without any audio bytes",
        ));
    }
    let up = match upload {
        Some(up) => up,
        None => upload.insert(begin(archive, principal, header, buf.as_slice()).await?),
    };
    let final_index = up.next_index;
    let (rows, sha256) = write_final(archive, principal, up, buf.take()).await?;
    // The client's digest, when it sent one, before anything commits.
    if let Some(sent) = trailer
        && hex::encode(sent) != sha256
    {
        return Err(Error::TrailerMismatch {
            sent: hex::encode(sent),
            computed: sha256,
        });
    }
    let analyzer = up
        .analyzer
        .take()
        .ok_or_else(|| Error::task("audio analysis", "already finished"))?;
    let (audio, noise) = analyzer.finish().await?;
    if let Some(w) = &audio.warning {
        tracing::warn!(recording = %up.id(), warning = %w, "audio kept with probe warning");
    }
    // One line for however many packets the demuxer skipped.
    if let Some(reports) = noise.summary() {
        tracing::warn!(recording = %up.id(), reports = noise.records, "the audio demuxer reported damage: {reports}");
    }
    let completion = Completion {
        chunk_count: final_index + 1,
        size_bytes: total,
        sha256,
        audio,
    };
    let new = up.new.clone();
    let mut tx = archive.catalog.begin_bulk().await?;
    let outcome =
        recordings::commit_upload(&mut tx, &principal.tenant, &up.id(), &rows, &completion).await?;
    if outcome == CommitOutcome::Committed {
        // The ingest's audit event commits with the recording or not at all.
        trail::append(
            archive,
            &mut tx,
            log_of(&principal.tenant),
            trail::by(principal, AuditAction::RecordingIngested)
                .recording(new.id)
                .detail("external_call_id", new.external_call_id.as_str())
                .detail("size_bytes", completion.size_bytes)
                .detail("sha256", completion.sha256.as_str())
                .detail("chunk_count", completion.chunk_count)
                .detail("duration_ms", completion.audio.duration_ms)
                .detail("key_arn", new.key_arn.as_str())
                .detail("kms_region", new.kms_region.as_str()),
        )
        .await?;
    }
    match outcome {
        CommitOutcome::Committed => {
            // If the commit's reply is lost this fails, and `settle_failed`
            // asks the catalog whether it happened.
            tx.commit().await?;
            // Committed: from here on nothing may clean this upload up.
            *upload = None;
            // Its waveform and decoded layout now, not at the next poll
            // (when this node runs the peaks job).
            if archive.schedule.peaks_on_commit {
                archive.peaks_wake.notify_one();
            }
            tracing::info!(
                recording = %new.id,
                size_bytes = total,
                chunks = completion.chunk_count,
                "recording committed"
            );
            Ok(IngestOutcome {
                recording: RecordingRow::committed(&new, &completion),
                deduplicated: false,
            })
        }
        CommitOutcome::DuplicateCallId => {
            // A concurrent attempt with the same call id won; drop ours.
            tx.rollback().await?;
            let winner = recordings::find_by_call_id(
                &mut *archive.catalog.conn_bulk().await?,
                &principal.tenant,
                &header.external_call_id,
            )
            .await?
            .ok_or_else(|| {
                Error::CatalogCorrupt("a duplicate call id without its committed recording".into())
            })?;
            if let Some(up) = upload.take() {
                let id = up.id();
                if let Err(e) = remove_upload(archive, principal, up, "duplicate call id").await {
                    tracing::warn!(recording = %id, error = %e, "cleanup of duplicate upload deferred to sweeper");
                }
            }
            deduplicated(archive, principal, winner).await
        }
    }
}

/// Answers a retry with the recording its call id already has. The answer
/// shows that recording's metadata, so it is an audited read.
async fn deduplicated(
    archive: &Archive,
    principal: &Principal,
    recording: RecordingRow,
) -> Result<IngestOutcome> {
    trail::record(
        archive,
        principal,
        trail::by(principal, AuditAction::RecordingDeduplicated)
            .recording(recording.id)
            .detail("external_call_id", recording.external_call_id.as_str()),
    )
    .await?;
    Ok(IngestOutcome {
        recording,
        deduplicated: true,
    })
}
