//! The bundle as a byte stream: the bag's files framed as a POSIX ustar
//! archive, recordings decrypted chunk by chunk as the stream is pulled, and
//! optionally the whole tar sealed to age recipients. Nothing is buffered
//! beyond the chunks being read ahead and the piece being sent, whatever
//! the number and size of the recordings; nothing touches a disk.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};

use crate::archive::Archive;
use crate::catalog::{RecordingRow, recordings};
use crate::crypto::RecordingCipher;
use crate::error::{Error, Result};
use crate::playback::{self, MAX_PLAY_MESSAGE_BYTES};

const BLOCK: u64 = 512;

/// One file of the bag.
pub(crate) struct Entry {
    /// Relative to the bag's base directory.
    pub path: String,
    pub body: Body,
}

pub(crate) enum Body {
    /// A tag file, metadata or audit evidence, built before the stream starts.
    Bytes(Bytes),
    /// A recording's audio, decrypted while the stream is pulled.
    Recording {
        row: Box<RecordingRow>,
        cipher: Arc<RecordingCipher>,
    },
}

impl Entry {
    pub fn size(&self) -> u64 {
        match &self.body {
            Body::Bytes(b) => b.len() as u64,
            Body::Recording { row, .. } => row.size_bytes,
        }
    }
}

fn padding(size: u64) -> usize {
    ((BLOCK - size % BLOCK) % BLOCK) as usize
}

/// The size of the tar of `entries`: a header and padded data per file,
/// then two zero blocks.
pub(crate) fn tar_size(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .map(|e| BLOCK + e.size() + padding(e.size()) as u64)
        .sum::<u64>()
        + 2 * BLOCK
}

/// A ustar header (long paths split into prefix and name by the `tar`
/// crate), mode 0644, owned by nobody in particular.
fn header(root: &str, path: &str, size: u64, mtime: u64) -> Result<Bytes> {
    let mut h = tar::Header::new_ustar();
    h.set_path(format!("{root}/{path}"))
        .map_err(|e| Error::invalid("path", &format!("`{path}` cannot be a tar path: {e}")))?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(Bytes::copy_from_slice(h.as_bytes()))
}

/// The tar of `entries` under the directory `root`, as pieces of at most
/// `MAX_PLAY_MESSAGE_BYTES`.
pub(crate) fn tar_stream(
    archive: Arc<Archive>,
    root: String,
    mtime: u64,
    entries: Vec<Entry>,
) -> BoxStream<'static, Result<Bytes>> {
    let files = stream::iter(entries).flat_map(move |entry| {
        let size = entry.size();
        let head = stream::once(futures::future::ready(header(
            &root,
            &entry.path,
            size,
            mtime,
        )));
        let body = match entry.body {
            Body::Bytes(b) => stream::iter(pieces(b)).boxed(),
            Body::Recording { row, cipher } => audio(archive.clone(), *row, cipher),
        };
        let pad = padding(size);
        let tail = stream::iter((pad > 0).then(|| Ok(Bytes::from(vec![0; pad]))));
        head.chain(body).chain(tail)
    });
    let end = stream::once(futures::future::ready(Ok(Bytes::from(vec![
        0;
        2 * BLOCK
            as usize
    ]))));
    files.chain(end).boxed()
}

/// `b` as messages of at most `MAX_PLAY_MESSAGE_BYTES` (zero-copy slices):
/// a chunk may be 16 MiB and a manifest of many recordings several MiB,
/// while a gRPC message may not exceed 4 MiB.
fn pieces(b: Bytes) -> Vec<Result<Bytes>> {
    (0..b.len())
        .step_by(MAX_PLAY_MESSAGE_BYTES)
        .map(|at| Ok(b.slice(at..(at + MAX_PLAY_MESSAGE_BYTES).min(b.len()))))
        .collect()
}

/// A recording's plaintext, chunk by chunk (each released only after its
/// tag verified), checked at the end against the SHA-256 and size the
/// catalog recorded at ingest: the manifest already promised them.
fn audio(
    archive: Arc<Archive>,
    row: RecordingRow,
    cipher: Arc<RecordingCipher>,
) -> BoxStream<'static, Result<Bytes>> {
    let rec = row.id;
    let opened = stream::once(async move {
        let chunks =
            recordings::chunks(&mut *archive.catalog.conn().await?, &row.tenant, &row.id).await?;
        playback::check_chunk_list(&row, &chunks)?;
        let rows = playback::ChunkRows::new(row.clone(), 0..row.chunk_count, chunks);
        let pieces = playback::opened_chunks(archive, cipher, rows)
            .map_ok(|plain| stream::iter(pieces(Bytes::from(plain))))
            .try_flatten();
        Ok::<_, Error>((pieces, row.sha256, row.size_bytes))
    })
    .map_ok(move |(pieces, sha256, size)| checked(rec, sha256, size, pieces.boxed()))
    .try_flatten();
    opened.boxed()
}

/// `inner`, failing at its end unless it hashed to `sha256` over `size`
/// bytes.
fn checked(
    rec: crate::domain::RecordingId,
    sha256: String,
    size: u64,
    inner: BoxStream<'static, Result<Bytes>>,
) -> BoxStream<'static, Result<Bytes>> {
    let hasher = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    stream::try_unfold(
        (inner, hasher, 0u64),
        move |(mut inner, mut hasher, seen)| {
            let sha256 = sha256.clone();
            async move {
                match inner.try_next().await? {
                    Some(piece) => {
                        hasher.update(&piece);
                        let seen = seen + piece.len() as u64;
                        Ok(Some((piece, (inner, hasher, seen))))
                    }
                    None => {
                        let got = hex::encode(hasher.finish());
                        if got != sha256 || seen != size {
                            return Err(Error::IngestHashMismatch(rec));
                        }
                        Ok(None)
                    }
                }
            }
        },
    )
    .boxed()
}

/// A `Write` whose bytes the stream drains after each write.
#[derive(Clone, Default)]
struct Drain(Arc<Mutex<Vec<u8>>>);

impl Drain {
    fn take(&self) -> Bytes {
        Bytes::from(std::mem::take(
            &mut *self.0.lock().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

impl Write for Drain {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn sealing(e: std::io::Error) -> Error {
    Error::task("age encryption", e)
}

/// `inner` encrypted to `recipients` in the age format (age-encryption.org/v1:
/// ChaCha20-Poly1305 in 64 KiB chunks under a file key wrapped to each
/// X25519 recipient). Encryption runs on the blocking pool, one piece at a
/// time.
pub(crate) fn sealed(
    inner: BoxStream<'static, Result<Bytes>>,
    recipients: Vec<age::x25519::Recipient>,
) -> Result<BoxStream<'static, Result<Bytes>>> {
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| Error::task("age encryption", e))?;
    let drain = Drain::default();
    let writer = encryptor.wrap_output(drain.clone()).map_err(sealing)?;
    let header = drain.take();
    let body = stream::try_unfold(
        (inner, Some(writer), drain),
        |(mut inner, writer, drain)| async move {
            let Some(mut writer) = writer else {
                return Ok(None);
            };
            let writer = match inner.try_next().await? {
                Some(piece) => Some(
                    tokio::task::spawn_blocking(move || writer.write_all(&piece).map(|()| writer))
                        .await
                        .map_err(|e| Error::task("age encryption", e))?
                        .map_err(sealing)?,
                ),
                None => {
                    writer.finish().map_err(sealing)?;
                    None
                }
            };
            Ok(Some((drain.take(), (inner, writer, drain))))
        },
    )
    // age emits whole 64 KiB chunks: most small pieces produce nothing yet.
    .try_filter(|out| futures::future::ready(!out.is_empty()));
    Ok(stream::once(futures::future::ready(Ok(header)))
        .chain(body)
        .boxed())
}
