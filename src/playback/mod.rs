//! Playback: stream a recording's authenticated plaintext from an offset.
//!
//! The key unwrap (through the regional cache) and the first object read start
//! together, so a cold play costs about one KMS round trip, not two. Later
//! chunks are read ahead concurrently. Every chunk is opened whole and only
//! released after its tag verifies; a failure ends the stream with an
//! integrity error before any byte of the failing chunk leaves.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt, future};

mod audited;
mod chunks;
pub mod listening;
pub mod peaks;
mod ramp;
pub mod rendition;
pub mod search;
mod source;
pub mod urls;

pub(crate) use chunks::{ChunkRows, check_chunk_list, check_chunk_range, opened_chunks};
use chunks::{FIRST_ROWS, fetch, fetch_and_open};

use crate::access::{self, Action};
use crate::archive::Archive;
use crate::audit::ending::Ending;
use crate::audit::event::{Action as AuditAction, Outcome};
use crate::audit::trail;
use crate::catalog::{RecordingRow, recordings};
use crate::crypto::{self, CryptoError, RecordingCipher, RecordingParams};
use crate::domain::{ExternalCallId, Principal, RecordingId};
use crate::error::{Error, Result};
use crate::kms::{EncryptionContext, KmsError};
use crate::revocation::{self, KeyInUse, is_refusal};

/// The most plaintext one Play message carries, whatever the chunk size
/// (up to 16 MiB): stock gRPC clients refuse messages over 4 MiB.
pub const MAX_PLAY_MESSAGE_BYTES: usize = 1024 * 1024;
/// The most the first Play message carries: a player has its first audio
/// as soon as the first chunk is authenticated, without waiting for a whole
/// slice to cross the wire.
pub const FIRST_PLAY_MESSAGE_BYTES: usize = 32 * 1024;

/// A piece of plaintext and where it sits in the recording.
#[derive(Debug, Clone)]
pub struct PlayChunk {
    pub offset: u64,
    pub data: Bytes,
}

async fn require_reader(archive: &Archive, principal: &Principal) -> Result<()> {
    access::require(archive, principal, Action::ReadRecordings).await
}

fn params_of(row: &RecordingRow) -> Result<RecordingParams> {
    let malformed =
        |reason| Error::integrity(row.id, CryptoError::ChunkMalformed { index: 0, reason });
    if row.format_version != crypto::FORMAT_VERSION {
        return Err(malformed("unsupported format version"));
    }
    Ok(RecordingParams {
        salt: row
            .salt
            .as_slice()
            .try_into()
            .map_err(|_| malformed("salt has the wrong length"))?,
        nonce_prefix: row
            .nonce_prefix
            .as_slice()
            .try_into()
            .map_err(|_| malformed("nonce prefix has the wrong length"))?,
    })
}

/// The data key a recording is read with, as this node asks KMS for it.
pub(crate) async fn key_in_use(archive: &Archive, row: &RecordingRow) -> Result<KeyInUse> {
    // A node outside the key's region unwraps with the multi-Region replica
    // in its own region.
    let arn = archive.kms_arn(&row.tenant, &row.key_arn).await?;
    Ok(KeyInUse {
        kms_arn: arn.as_str().to_owned(),
        algorithm: row.wrap_algorithm,
        wrapped: row.wrapped_key.clone(),
        ctx: EncryptionContext {
            tenant: row.tenant.to_string(),
            recording: row.id.to_string(),
        },
    })
}

/// Unwraps the data key (cached) and derives the cipher, checking the key
/// commitment before anything is decrypted.
pub(crate) async fn cipher_for(archive: &Archive, row: &RecordingRow) -> Result<RecordingCipher> {
    let key = key_in_use(archive, row).await?;
    cipher_with(archive, row, &key).await
}

/// [`cipher_for`] with the key already found ([`key_in_use`]).
pub(crate) async fn cipher_with(
    archive: &Archive,
    row: &RecordingRow,
    key: &KeyInUse,
) -> Result<RecordingCipher> {
    let key = match key.unwrap(archive).await {
        Ok(k) => k,
        Err(KmsError::InvalidCiphertext { .. }) => {
            return Err(Error::integrity(row.id, CryptoError::CommitmentMismatch));
        }
        Err(e) if is_refusal(&e) => {
            archive.key_revoked(&key.kms_arn).await;
            return Err(Error::Kms(e));
        }
        Err(e) => return Err(Error::Kms(e)),
    };
    let params = params_of(row)?;
    RecordingCipher::new_checked(
        &key.key,
        &params,
        row.tenant.as_str(),
        &row.id.to_string(),
        &row.commitment,
    )
    .map_err(|e| Error::integrity(row.id, e))
}

/// Why audio leaves the server: a listen or a file kept elsewhere. The
/// audit trail records which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Stream,
    Download,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Stream => "stream",
            Purpose::Download => "download",
        }
    }
}

/// A committed recording of the caller's tenant. A miss (an id of another
/// tenant, or none) is a refusal in the caller's audit trail, naming the
/// id, and NOT_FOUND to the caller either way.
pub(crate) async fn find(
    archive: &Archive,
    principal: &Principal,
    rec: RecordingId,
    attempted: AuditAction,
) -> Result<RecordingRow> {
    match recordings::get(&mut *archive.catalog.conn().await?, &principal.tenant, &rec).await {
        Err(e @ Error::RecordingNotFound(_)) => {
            let event = trail::by(principal, AuditAction::AccessRefused)
                .outcome(Outcome::Refused)
                .recording(rec)
                .detail("attempted", attempted.as_str())
                .detail("reason", "not found");
            if let Err(err) = trail::record(archive, principal, event).await {
                tracing::warn!(error = %err, "refusal not recorded in the audit trail");
            }
            Err(e)
        }
        res => res,
    }
}

/// Starts playback of `rec` from `offset`. Errors that can be known before the
/// first byte (not found, offset out of range, KMS refusal, wrong key) are
/// returned here; later ones end the stream.
///
/// The audit event of the play is committed before this returns, so before
/// the first byte can leave; if it cannot be written the play is refused.
/// When the stream ends (finished, failed or dropped by the client) a second
/// event records what was actually sent.
pub async fn play(
    archive: Arc<Archive>,
    principal: &Principal,
    rec: RecordingId,
    offset: u64,
    purpose: Purpose,
) -> Result<Playing> {
    require_reader(&archive, principal).await?;
    // Listen for revocations before the key is first unwrapped.
    let revocations = archive.revocations.subscribe();
    let row = find(&archive, principal, rec, AuditAction::PlaybackStarted).await?;
    if offset >= row.size_bytes {
        return Err(Error::OffsetPastEnd {
            offset,
            size: row.size_bytes,
        });
    }
    // Write-ahead: the start event commits while the key unwraps and the
    // first chunk is read and opened; nothing is sent until both are done.
    let started = trail::record(
        &archive,
        principal,
        trail::by(principal, AuditAction::PlaybackStarted)
            .recording(rec)
            .detail("purpose", purpose.as_str())
            .detail("offset_bytes", offset)
            .detail("size_bytes", row.size_bytes),
    );
    let (opened, started) =
        tokio::join!(open_range(&archive, &row, offset, row.size_bytes), started);
    started?;
    let mut finish = Ending::new(
        archive.clone(),
        principal,
        audited::play_finished(
            principal,
            rec,
            purpose,
            offset,
            row.size_bytes,
            row.audio.duration_ms,
        ),
    );
    let (key, stream) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            finish.fail(e.to_string());
            return Err(e);
        }
    };
    let played = archive.metrics.played_bytes(principal.tenant.as_str());
    // A revoked token or key ends the stream (with an error the audit
    // finish event records).
    let stream = revocation::guard(archive, principal, vec![key], revocations, stream)
        .inspect(move |c| {
            if let Ok(c) = c {
                played.inc_by(c.data.len() as u64);
            }
        })
        .boxed();
    Ok(Playing {
        size_bytes: row.size_bytes,
        stream: finish.watch(stream, |c: &PlayChunk| c.data.len() as u64),
    })
}

/// A play that has started: the recording's whole size (for a client's
/// progress) and its authenticated plaintext from the requested offset.
pub struct Playing {
    pub size_bytes: u64,
    pub stream: BoxStream<'static, Result<PlayChunk>>,
}

impl std::fmt::Debug for Playing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Playing")
            .field("size_bytes", &self.size_bytes)
            .finish_non_exhaustive()
    }
}

/// The plaintext of bytes `start..end` of `row` (`start < end <= size`),
/// reading and opening only the chunks that overlap it: the key unwraps
/// while the first of them is read, and that one is opened before this
/// returns (an error in it is this call's error); later ones are read
/// ahead as the stream is consumed. Neither
/// audited nor guarded: the caller does both. Also returns the key in use,
/// for [`revocation::guard`].
pub(crate) async fn open_range(
    archive: &Arc<Archive>,
    row: &RecordingRow,
    start: u64,
    end: u64,
) -> Result<(KeyInUse, BoxStream<'static, Result<PlayChunk>>)> {
    debug_assert!(start < end && end <= row.size_bytes);
    let rec = row.id;
    let chunk_size = u64::from(row.chunk_size);
    let first = (start / chunk_size) as usize;
    let last = ((end - 1) / chunk_size) as usize;
    // Only the rows of the chunks the range needs, and of those the first
    // few: a seek into the middle of a long recording lists a few rows,
    // not all of them to its end (256 rows took 0.6-0.8 ms of a seek's
    // 2 ms, 64 rows still 0.2-0.35 ms); the stream lists the rest a page
    // at a time as it reaches them.
    let which = first as u32..last as u32 + 1;
    let listed = which.start..which.end.min(which.start.saturating_add(FIRST_ROWS));
    let listing = async {
        let chunks = recordings::chunk_range(
            &mut *archive.catalog.conn().await?,
            &row.tenant,
            &rec,
            listed.clone(),
        )
        .await?;
        check_chunk_range(row, listed, &chunks)?;
        let head = fetch(archive, &row.tenant, &rec, &chunks[0]).await?;
        Ok::<_, Error>((chunks, head))
    };
    let cipher = async {
        let key = key_in_use(archive, row).await?;
        let cipher = cipher_with(archive, row, &key).await?;
        Ok::<_, Error>((key, cipher))
    };
    let (cipher, listing) = tokio::join!(cipher, listing);
    let ((key, cipher), (mut chunks, head)) = (cipher?, listing?);
    let cipher = Arc::new(cipher);
    let final_index = row.chunk_count.saturating_sub(1);
    let rest = ChunkRows::new(row.clone(), which.start + 1..which.end, chunks.split_off(1));
    // The first chunk is opened here, so that a play's caller has it
    // authenticated while its start event commits (nothing is sent before
    // that): the open is off the path to the first byte.
    let head_row = chunks.remove(0);
    let is_final = head_row.index == final_index;
    let opened = fetch_and_open(
        archive.clone(),
        cipher.clone(),
        row.tenant.clone(),
        rec,
        head_row,
        is_final,
        Some(head),
    )
    .await?;
    let stream = stream::once(future::ready(Ok(opened)))
        .chain(opened_chunks(archive.clone(), cipher, rest))
        .enumerate()
        .flat_map(move |(i, res)| {
            let pieces = match res {
                Ok(plain) => {
                    let chunk_start = (first + i) as u64 * chunk_size;
                    let from = start.saturating_sub(chunk_start) as usize;
                    let to = (end - chunk_start).min(plain.len() as u64) as usize;
                    // The first message is small, so that it reaches the player
                    // without waiting for a whole slice to cross the wire.
                    let first_max = if i == 0 {
                        FIRST_PLAY_MESSAGE_BYTES
                    } else {
                        MAX_PLAY_MESSAGE_BYTES
                    };
                    slices(Bytes::from(plain), from..to, chunk_start, first_max)
                }
                Err(e) => vec![Err(e)],
            };
            stream::iter(pieces)
        })
        .boxed();
    Ok((key, stream))
}

/// Bytes `within` of an opened chunk, as messages of at most `first_max`
/// bytes for the first and `MAX_PLAY_MESSAGE_BYTES` after it (zero-copy
/// slices of one buffer).
fn slices(
    plain: Bytes,
    within: std::ops::Range<usize>,
    chunk_start: u64,
    first_max: usize,
) -> Vec<Result<PlayChunk>> {
    let mut out = Vec::new();
    let mut at = within.start;
    let mut most = first_max;
    while at < within.end {
        let to = (at + most).min(within.end);
        out.push(Ok(PlayChunk {
            offset: chunk_start + at as u64,
            data: plain.slice(at..to),
        }));
        at = to;
        most = MAX_PLAY_MESSAGE_BYTES;
    }
    out
}

/// A committed recording with its decrypted labels.
#[derive(Debug, Clone)]
pub struct RecordingView {
    pub row: RecordingRow,
    pub labels: BTreeMap<String, String>,
    pub participants: crate::domain::Participants,
}

/// Which recording a read names.
#[derive(Debug, Clone)]
pub enum Lookup {
    Id(RecordingId),
    /// The platform's call id, as given at ingest.
    CallId(ExternalCallId),
}

/// Metadata of one recording; in the full view its labels and participants
/// are decrypted (one cached unwrap).
pub async fn get(
    archive: &Archive,
    principal: &Principal,
    which: Lookup,
    view: search::View,
) -> Result<RecordingView> {
    require_reader(archive, principal).await?;
    let row = match which {
        Lookup::Id(rec) => find(archive, principal, rec, AuditAction::RecordingRead).await?,
        Lookup::CallId(call) => {
            let found = recordings::find_by_call_id(
                &mut *archive.catalog.conn().await?,
                &principal.tenant,
                &call,
            )
            .await?;
            match found {
                Some(row) => row,
                None => {
                    let event = trail::by(principal, AuditAction::AccessRefused)
                        .outcome(Outcome::Refused)
                        .detail("attempted", AuditAction::RecordingRead.as_str())
                        .detail("reason", "not found")
                        .detail("external_call_id", call.as_str());
                    if let Err(err) = trail::record(archive, principal, event).await {
                        tracing::warn!(error = %err, "refusal not recorded in the audit trail");
                    }
                    return Err(Error::CallNotFound(call.as_str().to_owned()));
                }
            }
        }
    };
    let sealed = row.labels_sealed.is_some() || row.participants_sealed.is_some();
    let cipher = if sealed && view == search::View::Full {
        Some(cipher_for(archive, &row).await?)
    } else {
        None
    };
    let labels = match &cipher {
        Some(cipher) => open_labels(cipher, &row)?,
        None => BTreeMap::new(),
    };
    let participants = match (&row.participants_sealed, &cipher) {
        (Some(sealed), Some(cipher)) => {
            crate::compliance::subjects::open_participants(cipher, row.id, sealed)?
        }
        _ => crate::domain::Participants::new(),
    };
    trail::record(
        archive,
        principal,
        trail::by(principal, AuditAction::RecordingRead).recording(row.id),
    )
    .await?;
    Ok(RecordingView {
        row,
        labels,
        participants,
    })
}

/// A recording's labels, opened with its cipher (none sealed: none).
pub(crate) fn open_labels(
    cipher: &RecordingCipher,
    row: &RecordingRow,
) -> Result<BTreeMap<String, String>> {
    let Some(sealed) = &row.labels_sealed else {
        return Ok(BTreeMap::new());
    };
    let json = cipher
        .open_metadata(sealed)
        .map_err(|e| Error::integrity(row.id, e))?;
    serde_json::from_slice(&json)
        .map_err(|_| Error::integrity(row.id, CryptoError::MetadataAuthentication))
}

/// Collects a whole recording into memory (CLI and tests; the server streams).
pub async fn read_all(stream: BoxStream<'static, Result<PlayChunk>>) -> Result<Vec<u8>> {
    stream
        .try_fold(Vec::new(), |mut acc, c| async move {
            acc.extend_from_slice(&c.data);
            Ok(acc)
        })
        .await
}
