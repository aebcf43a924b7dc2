//! The chunk an upload is filling.
//!
//! A fast upload sends large messages and fills a chunk in milliseconds:
//! its buffer is allocated whole at the first message, with room for the
//! tag that sealing appends in place (without that room, sealing a full
//! chunk reallocated it: a second buffer of twice the size and a copy of
//! every byte). A live call sends a few hundred bytes every 20–100 ms and
//! takes two minutes to fill 1 MiB: its buffer starts small and doubles, so
//! a thousand live calls hold what they sent rather than a thousand chunk
//! buffers (an allocator that reuses freed memory hands back pages that are
//! already resident, so a whole-chunk buffer costs its full size at once).

use crate::crypto::TAG_LEN;

/// Where a buffer fed small pieces starts; a first piece at least this
/// large gets the whole chunk at once.
pub(super) const SMALL_START: usize = 64 << 10;

#[derive(Debug)]
pub(super) struct Filling {
    buf: Vec<u8>,
    chunk_size: usize,
}

impl Filling {
    pub(super) fn new(chunk_size: usize) -> Self {
        Self {
            buf: Vec::new(),
            chunk_size,
        }
    }

    pub(super) fn is_full(&self) -> bool {
        self.buf.len() == self.chunk_size
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// Room left in the chunk.
    pub(super) fn room(&self) -> usize {
        self.chunk_size - self.buf.len()
    }

    /// Appends `bytes` (at most [`Filling::room`]).
    pub(super) fn extend(&mut self, bytes: &[u8]) {
        debug_assert!(bytes.len() <= self.room());
        let need = self.buf.len() + bytes.len();
        if need > self.buf.capacity() {
            let mut cap = need.max(2 * self.buf.capacity()).max(SMALL_START);
            // A large first piece is a fast upload: the whole chunk now.
            // Once the buffer would hold the chunk, it holds the tag too.
            let fast = self.buf.capacity() == 0 && bytes.len() >= SMALL_START;
            if fast || cap >= self.chunk_size {
                cap = self.chunk_size + TAG_LEN;
            }
            self.buf.reserve_exact(cap - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The filled chunk; the next one starts empty.
    pub(super) fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: usize = 1 << 20;

    fn fill(pieces: usize) -> (Vec<u8>, Vec<usize>) {
        let mut f = Filling::new(CHUNK);
        let mut caps = Vec::new();
        let piece = vec![3u8; pieces];
        while !f.is_full() {
            let n = f.room().min(piece.len());
            f.extend(&piece[..n]);
            if caps.last() != Some(&f.buf.capacity()) {
                caps.push(f.buf.capacity());
            }
        }
        (f.take(), caps)
    }

    #[test]
    fn large_messages_get_the_whole_chunk_and_its_tag_at_once() {
        let (chunk, caps) = fill(256 << 10);
        assert_eq!(caps, vec![CHUNK + TAG_LEN]);
        assert_eq!((chunk.len(), chunk.capacity()), (CHUNK, CHUNK + TAG_LEN));
    }

    #[test]
    fn small_messages_grow_the_buffer_and_it_ends_with_room_for_the_tag() {
        let (chunk, caps) = fill(640);
        assert_eq!(
            caps,
            vec![
                SMALL_START,
                2 * SMALL_START,
                4 * SMALL_START,
                8 * SMALL_START,
                CHUNK + TAG_LEN
            ]
        );
        assert_eq!((chunk.len(), chunk.capacity()), (CHUNK, CHUNK + TAG_LEN));
        assert!(chunk.iter().all(|&b| b == 3));
    }

    #[test]
    fn the_next_chunk_starts_empty() {
        let mut f = Filling::new(CHUNK);
        f.extend(&[1; 100]);
        assert_eq!(f.take(), vec![1; 100]);
        assert_eq!((f.buf.len(), f.buf.capacity()), (0, 0));
        f.extend(&[2; 10]);
        assert_eq!(
            (f.as_slice(), f.buf.capacity()),
            (&[2u8; 10][..], SMALL_START)
        );
    }
}
