//! A recording's plaintext as a seekable, blocking reader for symphonia
//! (the waveform peaks job, the decoded rendition): the chunk under the
//! read position is read and opened on demand, through the key cache and
//! authenticated like any play, and the next one is read ahead while the
//! decoder works on this one.
//!
//! symphonia pulls through `Read + Seek` on a blocking thread; the chunks
//! come from the async store, so each fetch runs on the runtime (the
//! handle captured at `open`) and the reader waits for it. Use it only off
//! the runtime's workers (`spawn_blocking`). Two opened chunks are kept, so
//! a reader that looks at the end (an MP4 index after the audio) and comes
//! back does not read everything twice. The first real failure (a store
//! outage, a chunk that fails authentication) is kept for the caller:
//! symphonia only sees an I/O error.

use std::io::{Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::{check_chunk_list, fetch_and_open};
use crate::archive::Archive;
use crate::catalog::RecordingRow;
use crate::catalog::recordings::{self, ChunkRow};
use crate::crypto::RecordingCipher;
use crate::error::{Error, Result};

/// Opened chunks a reader keeps.
const KEPT: usize = 2;

type Opened = Arc<Vec<u8>>;

struct Shared {
    archive: Arc<Archive>,
    cipher: Arc<RecordingCipher>,
    row: RecordingRow,
    chunks: Vec<ChunkRow>,
    handle: Handle,
    failure: Failure,
}

/// Where a [`ChunkSource`] leaves the first error it met.
#[derive(Clone, Default)]
pub(crate) struct Failure(Arc<Mutex<Option<Error>>>);

impl Failure {
    /// The error the reader met, if any (taken: asked once).
    pub(crate) fn take(&self) -> Option<Error> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn set(&self, e: Error) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(e);
    }
}

/// A seekable reader over a recording's opened chunks.
pub(crate) struct ChunkSource {
    shared: Arc<Shared>,
    pos: u64,
    kept: Vec<(usize, Opened)>,
    ahead: Option<(usize, JoinHandle<Result<Vec<u8>>>)>,
}

impl std::fmt::Debug for ChunkSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkSource")
            .field("recording", &self.shared.row.id)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl ChunkSource {
    /// Lists (and checks) the chunks of `row`; reads nothing yet. Call on
    /// the runtime.
    pub(crate) async fn open(
        archive: &Arc<Archive>,
        row: &RecordingRow,
        cipher: Arc<RecordingCipher>,
    ) -> Result<Self> {
        let chunks =
            recordings::chunks(&mut *archive.catalog.conn().await?, &row.tenant, &row.id).await?;
        check_chunk_list(row, &chunks)?;
        Ok(Self {
            shared: Arc::new(Shared {
                archive: archive.clone(),
                cipher,
                row: row.clone(),
                chunks,
                handle: Handle::current(),
                failure: Failure::default(),
            }),
            pos: 0,
            kept: Vec::with_capacity(KEPT),
            ahead: None,
        })
    }

    /// Where the first error this reader (or a clone) met is left.
    pub(crate) fn failure(&self) -> Failure {
        self.shared.failure.clone()
    }

    /// Another reader of the same recording, at the start, with nothing
    /// read.
    pub(crate) fn again(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            pos: 0,
            kept: Vec::with_capacity(KEPT),
            ahead: None,
        }
    }

    fn size(&self) -> u64 {
        self.shared.row.size_bytes
    }

    fn spawn_open(&self, index: usize) -> JoinHandle<Result<Vec<u8>>> {
        let s = &self.shared;
        let is_final = index + 1 == s.chunks.len();
        let head = index == 0;
        let container = s.row.audio.container.clone();
        let open = fetch_and_open(
            s.archive.clone(),
            s.cipher.clone(),
            s.row.tenant.clone(),
            s.row.id,
            s.chunks[index].clone(),
            is_final,
            None,
        );
        s.handle.spawn(async move {
            let plain = open.await?;
            // A WAV header symphonia cannot read as written is rewritten
            // in place (same length: offsets stay true).
            Ok(if head {
                crate::audio::readable_head(&container, &plain).into_owned()
            } else {
                plain
            })
        })
    }

    /// The opened chunk `index`, from those kept, the one read ahead, or
    /// the store; starts reading the next one ahead.
    fn chunk(&mut self, index: usize) -> std::io::Result<Opened> {
        if let Some((_, c)) = self.kept.iter().find(|(i, _)| *i == index) {
            return Ok(c.clone());
        }
        let task = match self.ahead.take() {
            Some((i, task)) if i == index => task,
            other => {
                if let Some((_, stale)) = other {
                    stale.abort();
                }
                self.spawn_open(index)
            }
        };
        let opened = match self.shared.handle.block_on(task) {
            Ok(Ok(plain)) => Arc::new(plain),
            Ok(Err(e)) => return Err(self.failed(e)),
            Err(e) => return Err(self.failed(Error::task("chunk read", e))),
        };
        if self.kept.len() == KEPT {
            self.kept.remove(0);
        }
        self.kept.push((index, opened.clone()));
        let next = index + 1;
        if next < self.shared.chunks.len() && !self.kept.iter().any(|(i, _)| *i == next) {
            self.ahead = Some((next, self.spawn_open(next)));
        }
        Ok(opened)
    }

    fn failed(&self, e: Error) -> std::io::Error {
        let io = std::io::Error::other(e.to_string());
        self.shared.failure.set(e);
        io
    }
}

impl Drop for ChunkSource {
    fn drop(&mut self) {
        if let Some((_, task)) = self.ahead.take() {
            task.abort();
        }
    }
}

impl Read for ChunkSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.size() || buf.is_empty() {
            return Ok(0);
        }
        let chunk_size = u64::from(self.shared.row.chunk_size);
        let index = (self.pos / chunk_size) as usize;
        let chunk = self.chunk(index)?;
        let at = (self.pos - index as u64 * chunk_size) as usize;
        let n = buf.len().min(chunk.len().saturating_sub(at));
        buf[..n].copy_from_slice(&chunk[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ChunkSource {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.size().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start of the recording",
            )
        })?;
        Ok(self.pos)
    }
}

impl symphonia::core::io::MediaSource for ChunkSource {
    fn is_seekable(&self) -> bool {
        true
    }

    fn byte_len(&self) -> Option<u64> {
        Some(self.size())
    }
}
