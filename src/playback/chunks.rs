//! Reading a recording's chunks: their catalog rows checked against the
//! recording (listed a page at a time as a stream reaches them), each
//! chunk fetched from the store and opened (authenticated and decrypted)
//! under the recording's cipher, with read-ahead.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::ramp;
use crate::archive::Archive;
use crate::catalog::{ChunkRow, RecordingRow, recordings};
use crate::compliance::erase;
use crate::crypto::{self, CryptoError, RecordingCipher};
use crate::domain::{RecordingId, TenantId};
use crate::error::{Error, Result};

/// The catalog's chunk list must describe exactly the recording: contiguous
/// indices, full non-final chunks, sizes that add up.
pub(crate) fn check_chunk_list(row: &RecordingRow, chunks: &[ChunkRow]) -> Result<()> {
    check_chunk_range(row, 0..row.chunk_count, chunks)
}

/// The rows of chunks `which` must be exactly those chunks of the
/// recording: contiguous indices from `which.start`, each of the size the
/// recording's chunk size, chunk count and size make it (full ones before
/// the final one, which holds the rest).
pub(crate) fn check_chunk_range(
    row: &RecordingRow,
    which: std::ops::Range<u32>,
    chunks: &[ChunkRow],
) -> Result<()> {
    let bad = |index: u32, reason| {
        Err(Error::integrity(
            row.id,
            CryptoError::ChunkMalformed { index, reason },
        ))
    };
    let full = u64::from(row.chunk_size);
    let before_final = u64::from(row.chunk_count.saturating_sub(1)) * full;
    let final_size = match row.size_bytes.checked_sub(before_final) {
        Some(n) if row.chunk_count > 0 && (1..=full).contains(&n) => n,
        _ => {
            return bad(
                row.chunk_count,
                "chunk sizes do not add up to the recording size",
            );
        }
    };
    if which.is_empty()
        || which.end > row.chunk_count
        || chunks.len() != (which.end - which.start) as usize
    {
        return bad(
            which.start + chunks.len() as u32,
            "chunk list does not match the chunk count",
        );
    }
    for (c, index) in chunks.iter().zip(which) {
        if c.index != index {
            return bad(c.index, "chunk indices are not contiguous");
        }
        let want = if index + 1 == row.chunk_count {
            final_size
        } else {
            full
        };
        if u64::from(c.plaintext_size) != want {
            return bad(
                c.index,
                "chunk size does not match the recording's chunk size",
            );
        }
        if c.sealed_size as usize != c.plaintext_size as usize + crypto::TAG_LEN {
            return bad(c.index, "sealed size does not match plaintext size");
        }
    }
    Ok(())
}

pub(super) async fn fetch_and_open(
    archive: Arc<Archive>,
    cipher: Arc<RecordingCipher>,
    tenant: TenantId,
    rec: RecordingId,
    chunk: ChunkRow,
    is_final: bool,
    prefetched: Option<Bytes>,
) -> Result<Vec<u8>> {
    let sealed = match prefetched {
        Some(b) => b,
        None => fetch(&archive, &tenant, &rec, &chunk).await?,
    };
    let index = chunk.index;
    if sealed.len() != chunk.sealed_size as usize {
        return Err(Error::integrity(
            rec,
            CryptoError::ChunkMalformed {
                index,
                reason: "object size differs from the catalog",
            },
        ));
    }
    let plain =
        tokio::task::spawn_blocking(move || cipher.open_chunk(index, is_final, Vec::from(sealed)))
            .await
            .map_err(|e| Error::task("chunk open", e))?
            .map_err(|e| Error::integrity(rec, e))?;
    if plain.len() != chunk.plaintext_size as usize {
        return Err(Error::integrity(
            rec,
            CryptoError::ChunkMalformed {
                index,
                reason: "plaintext size differs from the catalog",
            },
        ));
    }
    Ok(plain)
}

/// A chunk's sealed object. A missing object is the recording's erasure
/// when it was erased since the caller read its rows (a play or export
/// still running when an erasure commits ends with the erasure's date and
/// certificate), and an integrity failure otherwise.
pub(super) async fn fetch(
    archive: &Archive,
    tenant: &TenantId,
    rec: &RecordingId,
    chunk: &ChunkRow,
) -> Result<Bytes> {
    match archive.store.get(&chunk.object_key).await {
        Err(Error::ObjectMissing(_)) => {
            let lost = Error::integrity(
                rec,
                CryptoError::ChunkMalformed {
                    index: chunk.index,
                    reason: "object is missing",
                },
            );
            // Without the catalog the loss is what is known: it stays an
            // integrity failure.
            Err(match archive.catalog.conn().await {
                Ok(mut conn) => erase::erased(&mut conn, tenant, rec).await.unwrap_or(lost),
                Err(_) => lost,
            })
        }
        other => other,
    }
}

/// The opened chunks of `rows`, in order.
///
/// Read-ahead opens as the consumer takes chunks ([`ramp::Ramp`]): the first
/// chunk alone, then one ahead, growing by one per chunk taken up to
/// `limits.read_ahead`. A play that is cancelled after its first message
/// (a player seeking, a scrub along the timeline) leaves at most one chunk
/// being read and opened behind it, not `read_ahead`: that leftover work
/// competed with the next seek for the cores. Under many concurrent
/// plays, a new play's first chunk does not queue behind its own
/// read-ahead for the blocking pool and the store.
pub(crate) fn opened_chunks(
    archive: Arc<Archive>,
    cipher: Arc<RecordingCipher>,
    rows: ChunkRows,
) -> BoxStream<'static, Result<Vec<u8>>> {
    let most = archive.limits.read_ahead.max(1);
    let final_index = rows.row.chunk_count.saturating_sub(1);
    let (tenant, rec) = (rows.row.tenant.clone(), rows.row.id);
    let indices = rows.indices.clone();
    let rows = Arc::new(tokio::sync::Mutex::new(rows));
    let open = move |index: u32| {
        let (archive, cipher, tenant, rows) = (
            archive.clone(),
            cipher.clone(),
            tenant.clone(),
            rows.clone(),
        );
        async move {
            let chunk = rows.lock().await.take(&archive, index).await?;
            fetch_and_open(
                archive,
                cipher,
                tenant,
                rec,
                chunk,
                index == final_index,
                None,
            )
            .await
        }
    };
    ramp::Ramp::new(indices.map(open), most).boxed()
}

/// Chunk rows a read-out stream lists at a time.
const ROW_PAGE: u32 = 64;

/// Chunk rows a play lists before its first byte: the first chunk's, and
/// enough for the read-ahead to start on before the next page is listed.
pub(super) const FIRST_ROWS: u32 = 8;

/// The rows of a recording's chunks `indices`, for [`opened_chunks`]: those
/// already listed (and checked), then the rest listed a page at a time
/// ([`ROW_PAGE`], each page passing [`check_chunk_range`]) as the stream
/// reaches them.
#[derive(Debug)]
pub(crate) struct ChunkRows {
    row: RecordingRow,
    indices: std::ops::Range<u32>,
    listed: std::collections::VecDeque<ChunkRow>,
}

impl ChunkRows {
    /// `listed` are the rows of the first of `indices` on, as many as were
    /// listed, checked by the caller.
    pub(crate) fn new(
        row: RecordingRow,
        indices: std::ops::Range<u32>,
        listed: Vec<ChunkRow>,
    ) -> Self {
        Self {
            row,
            indices,
            listed: listed.into(),
        }
    }

    /// The row of chunk `index`, listing its page if it is not listed yet.
    /// Indices are taken in order, so the rows before `index` are dropped.
    async fn take(&mut self, archive: &Archive, index: u32) -> Result<ChunkRow> {
        while self.listed.front().is_some_and(|c| c.index < index) {
            self.listed.pop_front();
        }
        if self.listed.front().is_none_or(|c| c.index != index) {
            let page = index..self.indices.end.min(index.saturating_add(ROW_PAGE));
            let rows = recordings::chunk_range(
                &mut *archive.catalog.conn().await?,
                &self.row.tenant,
                &self.row.id,
                page.clone(),
            )
            .await?;
            check_chunk_range(&self.row, page, &rows)?;
            self.listed = rows.into();
        }
        self.listed.pop_front().ok_or_else(|| {
            Error::integrity(
                self.row.id,
                CryptoError::ChunkMalformed {
                    index,
                    reason: "chunk list does not match the chunk count",
                },
            )
        })
    }
}
