//! One upload's state once it is accepted as audio: its data key and
//! cipher, its catalog row and lease, its chunk writes in flight, and its
//! removal when it fails.

use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinSet;

use super::IngestHeader;
use crate::archive::Archive;
use crate::audio::{self, Analyzer};
use crate::catalog::{AbortOutcome, ChunkRow, NewRecording, keys, recordings};
use crate::checksum::SealedChecksum;
use crate::crypto::{self, RecordingCipher, RecordingParams};
use crate::domain::{Principal, RecordingId, now_ms};
use crate::error::{Error, Result};
use crate::kms::{EncryptionContext, PublicWrapKey, WrapAlgorithm};
use crate::store::ChunkStore;

/// State that exists once the upload has been accepted as audio and its
/// catalog row written.
pub(super) struct Upload {
    pub(super) new: NewRecording,
    pub(super) cipher: Arc<RecordingCipher>,
    pub(super) analyzer: Option<Analyzer>,
    pub(super) tasks: JoinSet<Result<ChunkRow>>,
    /// Chunks written to the store and not yet recorded in the catalog:
    /// recorded [`ROW_BATCH`] at a time, the rest with the commit.
    pub(super) rows: Vec<ChunkRow>,
    pub(super) next_index: u32,
    /// The plaintext SHA-256 so far, handed from each chunk's hashing to
    /// the next's (see [`Digest`]).
    pub(super) digest: Digest,
}

impl Upload {
    pub(super) fn id(&self) -> RecordingId {
        self.new.id
    }

    /// The next chunk to write: its index and its place in the digest
    /// chain.
    fn next_chunk(&mut self, is_final: bool) -> Result<ChunkWrite> {
        let index = self.next_index;
        if !is_final {
            self.next_index = index.checked_add(1).ok_or(Error::TooManyChunks)?;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        Ok(ChunkWrite {
            id: self.id(),
            cipher: self.cipher.clone(),
            index,
            is_final,
            link: Link {
                prev: std::mem::replace(&mut self.digest, rx),
                next: tx,
            },
        })
    }
}

/// Written chunks an upload records in the catalog with one statement.
/// Recording each chunk alone was a write transaction per chunk (on
/// SQLite, a sync of its single writer's log per MiB of every upload; 511
/// of them for 512 MiB); the commit records whatever is left. An upload
/// interrupted before its commit is removed by its lease and its objects'
/// prefix, not by its chunk rows.
pub(super) const ROW_BATCH: usize = 64;

/// One chunk of an upload on its way to the store.
struct ChunkWrite {
    id: RecordingId,
    cipher: Arc<RecordingCipher>,
    index: u32,
    is_final: bool,
    link: Link,
}

/// The recording's plaintext SHA-256 is evidence, so every byte is hashed
/// once and in order; but not on the receive loop, where it made receiving,
/// cutting and sealing serial. Each chunk's write task takes the digest
/// context from the chunk before (awaiting it, holding no thread), hashes
/// its plaintext on the blocking pool just before sealing it, and hands the
/// context on at once, so chunk N+1 hashes while chunk N seals and writes.
pub(super) type Digest = tokio::sync::oneshot::Receiver<aws_lc_rs::digest::Context>;

/// One chunk's place in the digest chain.
struct Link {
    prev: Digest,
    next: tokio::sync::oneshot::Sender<aws_lc_rs::digest::Context>,
}

fn new_digest() -> Digest {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let _ = tx.send(aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256));
    rx
}

/// The SHA-256 of everything the chain hashed, once its last link is done.
pub(super) async fn digest_of(digest: Digest) -> Result<String> {
    let ctx = digest
        .await
        .map_err(|_| Error::task("upload digest", "a chunk failed before hashing"))?;
    Ok(hex::encode(ctx.finish()))
}

/// Seals and writes one chunk; its row is for the caller to record.
async fn write_chunk(
    archive: Arc<Archive>,
    principal: Principal,
    chunk: ChunkWrite,
    plain: Vec<u8>,
) -> Result<ChunkRow> {
    let ChunkWrite {
        id,
        cipher,
        index,
        is_final,
        link,
    } = chunk;
    // Chunks are at most 16 MiB (`crypto::validate_chunk_size`).
    let too_large = |_| Error::invalid("header.chunk_size_bytes", "chunk too large");
    let plaintext_size = u32::try_from(plain.len()).map_err(too_large)?;
    // An earlier chunk that failed dropped the chain: so does this one.
    let mut sha = link
        .prev
        .await
        .map_err(|_| Error::task("upload digest", "an earlier chunk failed"))?;
    let next = link.next;
    let sealed = tokio::task::spawn_blocking(move || {
        sha.update(&plain);
        let _ = next.send(sha);
        cipher.seal_chunk(index, is_final, plain)
    })
    .await
    .map_err(|e| Error::task("chunk seal", e))?;
    let row = ChunkRow {
        index,
        plaintext_size,
        sealed_size: u32::try_from(sealed.len()).map_err(too_large)?,
        sealed_checksum: SealedChecksum::of(&sealed),
        object_key: ChunkStore::chunk_key(&principal.tenant, &id, index),
    };
    archive
        .store
        .put(&row.object_key, Bytes::from(sealed))
        .await?;
    Ok(row)
}

/// Stops the upload's chunk writes and removes it: catalog rows first (only
/// if not committed), then its objects. Whatever fails midway is left for
/// the sweeper: an `uploading` row with its lease, or a queued deletion.
pub(super) async fn remove_upload(
    archive: &Archive,
    principal: &Principal,
    mut up: Upload,
    reason: &str,
) -> Result<AbortOutcome> {
    // Let the chunk writes in flight finish rather than abort them: an
    // aborted task stops waiting for its store write, but a write already
    // on a blocking thread (the local store's) still creates its file,
    // after the objects below were deleted: an object no row names. The
    // writes are bounded (`max_uploads_in_flight`) and short.
    while up.tasks.join_next().await.is_some() {}
    let id = up.id();
    let mut tx = archive.catalog.begin_bulk().await?;
    let outcome = recordings::abort_upload(&mut tx, &principal.tenant, &id, reason, None).await?;
    tx.commit().await?;
    if matches!(outcome, AbortOutcome::Removed | AbortOutcome::Absent) {
        archive.delete_objects(&principal.tenant, &id).await?;
    }
    Ok(outcome)
}

pub(super) async fn begin(
    archive: &Arc<Archive>,
    principal: &Principal,
    header: &IngestHeader,
    head: &[u8],
) -> Result<Upload> {
    let detected = audio::detect(head)?;
    let id = RecordingId::new();
    let key = keys::active(&mut *archive.catalog.conn_bulk().await?, &principal.tenant).await?;
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
            let generated = archive
                .kms
                .generate_data_key(call_arn.as_str(), &ctx)
                .await?;
            if generated.key_arn != call_arn.as_str() {
                return Err(Error::KmsContract(format!(
                    "GenerateDataKey wrapped under {}, not {call_arn}",
                    generated.key_arn
                )));
            }
            let region = call_arn.region().to_owned();
            (generated, region)
        }
        WrapAlgorithm::RsaesOaepSha256 => {
            let spki = key.public_key.as_deref().ok_or_else(|| {
                Error::CatalogCorrupt("asymmetric key without its pinned public key".into())
            })?;
            let wrap_key = PublicWrapKey::from_spki(key.key_arn.as_str(), spki)?;
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
        let json = serde_json::to_vec(&header.labels)
            .map_err(|e| Error::invalid("header.labels", &e.to_string()))?;
        Some(cipher.seal_metadata(&json)?)
    };
    let participants_sealed = if header.participants.is_empty() {
        None
    } else {
        Some(
            cipher.seal_metadata(&crate::compliance::subjects::participants_json(
                &header.participants,
            ))?,
        )
    };
    // The search index: computed here when this node can unwrap the
    // tenant's index key; a write-only node leaves it to the indexer.
    let index = if header.labels.is_empty() && header.participants.is_empty() {
        Some(Vec::new())
    } else if key.algorithm == WrapAlgorithm::SymmetricDefault {
        match crate::compliance::subjects::tenant_index(archive, &principal.tenant).await {
            Ok(ix) => Some(ix.digests(&header.labels, &header.participants)?),
            Err(e) => {
                tracing::warn!(tenant = %principal.tenant, error = %e, "search index key unavailable; the indexer will index this recording");
                None
            }
        }
    } else {
        None
    };
    let now = now_ms();
    let retention = crate::compliance::retention::policy_for_ingest(archive, principal)
        .await?
        .evaluate(&header.labels);
    let new = NewRecording {
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
        created_at_ms: now,
        lease_until_ms: now.saturating_add(lease_ms(archive)),
        retain_until_ms: retention
            .as_ref()
            .map(|(_, days)| crate::catalog::compliance::retain_until(now, *days)),
        retention_rule: retention.map(|(code, _)| code),
        participants_sealed,
        index,
    };
    recordings::begin_upload(&mut *archive.catalog.conn_bulk().await?, &new).await?;
    let analyzer = Analyzer::start(detected, head);
    analyzer.feed_slice(head).await;
    Ok(Upload {
        new,
        cipher: Arc::new(cipher),
        analyzer: Some(analyzer),
        tasks: JoinSet::new(),
        rows: Vec::new(),
        next_index: 0,
        digest: new_digest(),
    })
}

pub(super) fn lease_ms(archive: &Archive) -> i64 {
    i64::try_from(archive.limits.upload_lease.as_millis()).unwrap_or(i64::MAX)
}

/// Extends the upload's lease. A catalog hiccup is not fatal (the lease has
/// two thirds left and the next tick tries again); a swept upload is.
pub(super) async fn renew_lease(
    archive: &Archive,
    principal: &Principal,
    up: &Upload,
) -> Result<()> {
    let until = now_ms().saturating_add(lease_ms(archive));
    let renewed = match archive.catalog.conn_bulk().await {
        Ok(mut conn) => {
            recordings::renew_lease(&mut conn, &principal.tenant, &up.id(), until).await
        }
        Err(e) => Err(e),
    };
    match renewed {
        Ok(()) => Ok(()),
        Err(e @ Error::UploadSwept(_)) => Err(e),
        Err(e) => {
            tracing::warn!(recording = %up.id(), error = %e, "upload lease renewal failed; retrying at the next tick");
            Ok(())
        }
    }
}

pub(super) async fn spawn_chunk(
    archive: &Arc<Archive>,
    principal: &Principal,
    up: &mut Upload,
    plain: Vec<u8>,
) -> Result<()> {
    // Backpressure: wait for a slot of this upload, surfacing the first
    // failure at once, then for one of the node's.
    while up.tasks.len() >= archive.limits.max_uploads_in_flight {
        join_one(up).await?;
    }
    while let Some(done) = up.tasks.try_join_next() {
        up.rows
            .push(done.map_err(|e| Error::task("chunk write", e))??);
    }
    if up.rows.len() >= ROW_BATCH {
        let rows = std::mem::take(&mut up.rows);
        let mut conn = archive.catalog.conn_bulk().await?;
        recordings::add_chunks(&mut conn, &principal.tenant, &up.id(), &rows).await?;
    }
    let permit = archive
        .chunk_writes
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| Error::task("chunk write limiter", e))?;
    let chunk = up.next_chunk(false)?;
    let fut = write_chunk(archive.clone(), principal.clone(), chunk, plain);
    up.tasks.spawn(async move {
        let _permit = permit;
        fut.await
    });
    Ok(())
}

/// Seals and writes the final chunk (under a node write slot) once the
/// others are done; returns the rows the commit records (the final
/// chunk's last) and the recording's plaintext SHA-256.
pub(super) async fn write_final(
    archive: &Arc<Archive>,
    principal: &Principal,
    up: &mut Upload,
    plain: Vec<u8>,
) -> Result<(Vec<ChunkRow>, String)> {
    while !up.tasks.is_empty() {
        join_one(up).await?;
    }
    let _permit = archive
        .chunk_writes
        .acquire()
        .await
        .map_err(|e| Error::task("chunk write limiter", e))?;
    let chunk = up.next_chunk(true)?;
    let row = write_chunk(archive.clone(), principal.clone(), chunk, plain).await?;
    let (_, done) = tokio::sync::oneshot::channel();
    let sha256 = digest_of(std::mem::replace(&mut up.digest, done)).await?;
    let mut rows = std::mem::take(&mut up.rows);
    rows.push(row);
    Ok((rows, sha256))
}

pub(super) async fn join_one(up: &mut Upload) -> Result<()> {
    if let Some(done) = up.tasks.join_next().await {
        up.rows
            .push(done.map_err(|e| Error::task("chunk write", e))??);
    }
    Ok(())
}
