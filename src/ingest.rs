//! Ingest: cut an incoming byte stream into chunks, seal them, store them, and
//! commit the recording atomically.
//!
//! Memory is bounded whatever the file size: one chunk being filled, at most
//! `Limits::max_uploads_in_flight` chunks being sealed and written, and a few
//! messages queued for the audio analyzer. Nothing is written before the head
//! of the upload has been recognised as audio, and on any failure everything
//! written so far is removed (the sweeper catches what a crash leaves).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::task::JoinSet;

use crate::archive::Archive;
use crate::audio::{self, Analyzer};
use crate::catalog::{ChunkRow, CommitOutcome, Completion, NewRecording, RecordingRow};
use crate::crypto::{self, RecordingCipher, RecordingParams};
use crate::domain::{ExternalCallId, Principal, RecordingId, Role};
use crate::error::{Error, Result};
use crate::kms::{EncryptionContext, PublicWrapKey, WrapAlgorithm};
use crate::store::ChunkStore;

pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_KEY: usize = 128;
pub const MAX_LABEL_VALUE: usize = 1024;

/// The validated first message of an upload.
#[derive(Debug, Clone)]
pub struct IngestHeader {
    pub external_call_id: ExternalCallId,
    pub start_time_ms: Option<i64>,
    pub labels: BTreeMap<String, String>,
    pub chunk_size: u32,
}

impl IngestHeader {
    pub fn parse(
        external_call_id: &str,
        start_time_ms: Option<i64>,
        labels: BTreeMap<String, String>,
        chunk_size: u32,
    ) -> Result<Self> {
        let external_call_id = ExternalCallId::parse(external_call_id)?;
        if labels.len() > MAX_LABELS {
            return Err(Error::invalid("header.labels", "at most 64 labels"));
        }
        for (k, v) in &labels {
            if k.is_empty() || k.len() > MAX_LABEL_KEY {
                return Err(Error::invalid(
                    "header.labels",
                    "keys must be 1..=128 bytes",
                ));
            }
            if v.len() > MAX_LABEL_VALUE {
                return Err(Error::invalid(
                    "header.labels",
                    "values must be at most 1024 bytes",
                ));
            }
        }
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
        })
    }
}

#[derive(Debug, Clone)]
pub struct IngestOutcome {
    pub recording: RecordingRow,
    pub deduplicated: bool,
}

/// State that exists once the upload has been accepted as audio.
struct Upload {
    id: RecordingId,
    cipher: Arc<RecordingCipher>,
    analyzer: Option<Analyzer>,
    tasks: JoinSet<Result<()>>,
    next_index: u32,
}

/// Seals, writes and records one non-final chunk.
async fn write_chunk(
    archive: Arc<Archive>,
    principal: Principal,
    id: RecordingId,
    cipher: Arc<RecordingCipher>,
    index: u32,
    plain: Vec<u8>,
    is_final: bool,
) -> Result<ChunkRow> {
    let plaintext_size =
        u32::try_from(plain.len()).map_err(|_| Error::Internal("chunk too large".into()))?;
    let sealed = tokio::task::spawn_blocking(move || cipher.seal_chunk(index, is_final, plain))
        .await
        .map_err(|e| Error::Internal(format!("seal task failed: {e}")))?;
    let row = ChunkRow {
        index,
        plaintext_size,
        sealed_size: u32::try_from(sealed.len())
            .map_err(|_| Error::Internal("chunk too large".into()))?,
        sealed_sha256: crypto::sha256_hex(&sealed),
        object_key: ChunkStore::chunk_key(&principal.tenant, &id, index),
    };
    archive
        .store
        .put(&row.object_key, Bytes::from(sealed))
        .await?;
    if !is_final {
        archive
            .catalog
            .add_chunk(&principal.tenant, &id, &row)
            .await?;
    }
    Ok(row)
}

/// Runs one upload. `body` yields the data messages after the header.
pub async fn ingest<S>(
    archive: Arc<Archive>,
    principal: Principal,
    header: IngestHeader,
    body: S,
) -> Result<IngestOutcome>
where
    S: Stream<Item = Result<Bytes>> + Unpin + Send,
{
    if principal.role != Role::Ingest {
        return Err(Error::PermissionDenied(
            "this token's role may not ingest".into(),
        ));
    }
    if let Some(existing) = archive
        .catalog
        .find_by_call_id(&principal.tenant, &header.external_call_id)
        .await?
    {
        tracing::info!(recording = %existing.id, "ingest deduplicated by external call id");
        return Ok(IngestOutcome {
            recording: existing,
            deduplicated: true,
        });
    }
    let mut upload: Option<Upload> = None;
    let result = run(&archive, &principal, &header, body, &mut upload).await;
    match result {
        Ok(outcome) => Ok(outcome),
        Err(err) => {
            if let Some(mut up) = upload {
                up.tasks.abort_all();
                while up.tasks.join_next().await.is_some() {}
                // Objects first, then the row: a crash in between leaves a row
                // for the sweeper, never an untracked object.
                if let Err(e) = archive
                    .store
                    .delete_recording(&principal.tenant, &up.id)
                    .await
                {
                    tracing::warn!(recording = %up.id, error = %e, "cleanup of failed upload deferred to sweeper");
                } else if let Err(e) = archive
                    .catalog
                    .abort_upload(&principal.tenant, &up.id)
                    .await
                {
                    tracing::warn!(recording = %up.id, error = %e, "cleanup of failed upload deferred to sweeper");
                }
            }
            Err(err)
        }
    }
}

async fn begin(
    archive: &Arc<Archive>,
    principal: &Principal,
    header: &IngestHeader,
    head: &[u8],
) -> Result<Upload> {
    let detected = audio::detect(head)?;
    let id = RecordingId::new();
    let key = archive.catalog.active_key(&principal.tenant).await?;
    let ctx = EncryptionContext {
        tenant: principal.tenant.to_string(),
        recording: id.to_string(),
    };
    // A symmetric key asks KMS for the data key. An RSA key (write-only
    // mode) wraps a locally generated data key with its pinned public key:
    // no KMS call, and nothing this node holds could unwrap it again.
    let (generated, kms_region) = match key.algorithm {
        WrapAlgorithm::SymmetricDefault => {
            // Outside the key's region, the multi-Region replica here wraps.
            let node = archive.kms.region();
            let call_arn = key
                .arn_in(node)
                .ok_or_else(|| crate::archive::no_replica(&key.key_arn, node))?;
            let generated = archive.kms.generate_data_key(call_arn, &ctx).await?;
            if generated.key_arn != call_arn {
                return Err(Error::Internal(format!(
                    "KMS wrapped the data key under {}, not {call_arn}",
                    generated.key_arn
                )));
            }
            let region = crate::kms::arn_region(call_arn).unwrap_or(node).to_owned();
            (generated, region)
        }
        WrapAlgorithm::RsaesOaepSha256 => {
            let spki = key.public_key.as_deref().ok_or_else(|| {
                Error::Internal("asymmetric tenant key has no pinned public key".into())
            })?;
            let wrap_key = PublicWrapKey::from_spki(&key.key_arn, spki)?;
            (wrap_key.generate_data_key()?, key.region.clone())
        }
    };
    let params = RecordingParams::generate()?;
    let cipher = RecordingCipher::new(
        &generated.plaintext,
        &params,
        principal.tenant.as_str(),
        &id.to_string(),
    )?;
    let labels_sealed = if header.labels.is_empty() {
        None
    } else {
        let json =
            serde_json::to_vec(&header.labels).map_err(|e| Error::Internal(e.to_string()))?;
        Some(cipher.seal_metadata(&json)?)
    };
    archive
        .catalog
        .begin_upload(&NewRecording {
            tenant: principal.tenant.clone(),
            id,
            external_call_id: header.external_call_id.clone(),
            format_version: crypto::FORMAT_VERSION,
            // The key of the tenant's history; `kms_region` says where it
            // (or its replica) wrapped.
            key_arn: key.key_arn.clone(),
            kms_region,
            wrap_algorithm: key.algorithm,
            wrapped_key: generated.wrapped.clone(),
            encryption_context: ctx.to_json(),
            salt: params.salt.to_vec(),
            nonce_prefix: params.nonce_prefix.to_vec(),
            commitment: cipher.commitment().to_vec(),
            chunk_size: header.chunk_size,
            labels_sealed,
            start_time_ms: header.start_time_ms,
        })
        .await?;
    let analyzer = Analyzer::start(detected);
    analyzer.feed(Bytes::copy_from_slice(head)).await;
    Ok(Upload {
        id,
        cipher: Arc::new(cipher),
        analyzer: Some(analyzer),
        tasks: JoinSet::new(),
        next_index: 0,
    })
}

async fn spawn_chunk(
    archive: &Arc<Archive>,
    principal: &Principal,
    up: &mut Upload,
    plain: Vec<u8>,
) -> Result<()> {
    // Backpressure: wait for a slot, surfacing the first failure at once.
    while up.tasks.len() >= archive.limits.max_uploads_in_flight {
        join_one(up).await?;
    }
    while let Some(done) = up.tasks.try_join_next() {
        done.map_err(|e| Error::Internal(format!("chunk task failed: {e}")))??;
    }
    let index = up.next_index;
    up.next_index = index
        .checked_add(1)
        .ok_or_else(|| Error::ResourceExhausted("too many chunks".into()))?;
    let fut = write_chunk(
        archive.clone(),
        principal.clone(),
        up.id,
        up.cipher.clone(),
        index,
        plain,
        false,
    );
    up.tasks.spawn(async move { fut.await.map(|_| ()) });
    Ok(())
}

async fn join_one(up: &mut Upload) -> Result<()> {
    if let Some(done) = up.tasks.join_next().await {
        done.map_err(|e| Error::Internal(format!("chunk task failed: {e}")))??;
    }
    Ok(())
}

async fn run<S>(
    archive: &Arc<Archive>,
    principal: &Principal,
    header: &IngestHeader,
    mut body: S,
    upload: &mut Option<Upload>,
) -> Result<IngestOutcome>
where
    S: Stream<Item = Result<Bytes>> + Unpin + Send,
{
    let chunk_size = header.chunk_size as usize;
    let mut buf: Vec<u8> = Vec::with_capacity(chunk_size);
    let mut sha = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut total: u64 = 0;

    while let Some(msg) = body.next().await {
        let mut data = msg?;
        total += data.len() as u64;
        if total > archive.limits.max_recording_bytes {
            return Err(Error::ResourceExhausted(format!(
                "recording exceeds the {} byte limit",
                archive.limits.max_recording_bytes
            )));
        }
        sha.update(&data);
        if let Some(a) = upload.as_ref().and_then(|up| up.analyzer.as_ref()) {
            a.feed(data.clone()).await;
        }
        while !data.is_empty() {
            if buf.len() == chunk_size {
                // More data follows, so the full buffer is not the final chunk.
                if upload.is_none() {
                    let up = begin(archive, principal, header, &buf).await?;
                    if let Some(a) = &up.analyzer {
                        a.feed(data.clone()).await;
                    }
                    *upload = Some(up);
                }
                let plain = std::mem::replace(&mut buf, Vec::with_capacity(chunk_size));
                if let Some(up) = upload.as_mut() {
                    spawn_chunk(archive, principal, up, plain).await?;
                }
            }
            let take = (chunk_size - buf.len()).min(data.len());
            buf.extend_from_slice(&data.split_to(take));
        }
    }

    if total == 0 {
        return Err(Error::invalid(
            "data",
            "the stream ended without any audio bytes",
        ));
    }
    if upload.is_none() {
        *upload = Some(begin(archive, principal, header, &buf).await?);
    }
    let Some(up) = upload.as_mut() else {
        return Err(Error::Internal("upload state missing".into()));
    };
    while !up.tasks.is_empty() {
        join_one(up).await?;
    }
    let final_index = up.next_index;
    let final_row = write_chunk(
        archive.clone(),
        principal.clone(),
        up.id,
        up.cipher.clone(),
        final_index,
        buf,
        true,
    )
    .await?;
    let analyzer = up
        .analyzer
        .take()
        .ok_or_else(|| Error::Internal("analyzer already finished".into()))?;
    let audio = analyzer.finish().await?;
    if let Some(w) = &audio.warning {
        tracing::warn!(recording = %up.id, warning = %w, "audio kept with probe warning");
    }
    let completion = Completion {
        chunk_count: final_index + 1,
        size_bytes: total,
        sha256: hex::encode(sha.finish()),
        audio,
    };
    let outcome = archive
        .catalog
        .commit_upload(
            &principal.tenant,
            &up.id,
            &header.external_call_id,
            &final_row,
            &completion,
        )
        .await?;
    match outcome {
        CommitOutcome::Committed => {
            let recording = archive
                .catalog
                .get_recording(&principal.tenant, &up.id)
                .await?;
            tracing::info!(
                recording = %up.id,
                size_bytes = total,
                chunks = completion.chunk_count,
                "recording committed"
            );
            *upload = None;
            Ok(IngestOutcome {
                recording,
                deduplicated: false,
            })
        }
        CommitOutcome::Duplicate(winner) => {
            // A concurrent attempt with the same call id won; drop ours.
            let id = up.id;
            archive
                .store
                .delete_recording(&principal.tenant, &id)
                .await?;
            archive.catalog.abort_upload(&principal.tenant, &id).await?;
            *upload = None;
            let recording = archive
                .catalog
                .get_recording(&principal.tenant, &winner)
                .await?;
            Ok(IngestOutcome {
                recording,
                deduplicated: true,
            })
        }
    }
}
