//! The analyzer's queue of received bytes: pieces as they were fed, small
//! ones copied together, read in order, or peeked at without taking them.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

/// Pieces smaller than this are copied into one buffer rather than queued
/// as they came: a live call's messages of a few hundred bytes are each a
/// slice of a larger receive buffer, which queuing them would keep alive
/// (minutes of audio per call, on every live call).
pub(super) const COALESCE_BELOW: usize = 16 << 10;
/// The most the copy buffer holds before it is queued as one piece.
pub(super) const TAIL_MAX: usize = 64 << 10;

#[derive(Debug, Default)]
pub(super) struct Pieces {
    pieces: VecDeque<Bytes>,
    /// Small pieces copied together, after `pieces` in stream order (see
    /// [`COALESCE_BELOW`]); counted in `len`.
    tail: BytesMut,
    len: usize,
}

impl Pieces {
    /// Bytes queued and not yet taken.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn push(&mut self, data: Bytes) {
        self.len += data.len();
        if data.len() < COALESCE_BELOW {
            self.tail.extend_from_slice(&data);
            if self.tail.len() >= TAIL_MAX {
                self.flush_tail();
            }
            return;
        }
        self.flush_tail();
        self.pieces.push_back(data);
    }

    /// Takes bytes from the front into `buf` (at most one piece's worth);
    /// 0 when nothing is queued.
    pub(super) fn read(&mut self, buf: &mut [u8]) -> usize {
        let Some(front) = self.front() else {
            return 0;
        };
        let n = buf.len().min(front.len());
        buf[..n].copy_from_slice(&front[..n]);
        front.advance(n);
        self.len -= n;
        n
    }

    /// Takes the first `n` queued bytes (those an open read).
    pub(super) fn consume(&mut self, mut n: usize) {
        // A stream dropped meanwhile has cleared its queue.
        self.len = self.len.saturating_sub(n);
        while n > 0 {
            let Some(front) = self.front() else { break };
            let k = n.min(front.len());
            front.advance(k);
            n -= k;
        }
    }

    /// Copies queued bytes from `at` into `buf`, taking none of them.
    pub(super) fn peek(&self, at: usize, buf: &mut [u8]) -> usize {
        let mut skip = at;
        let parts = self.pieces.iter().map(|p| &p[..]).chain([&self.tail[..]]);
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            let n = buf.len().min(part.len() - skip);
            buf[..n].copy_from_slice(&part[skip..skip + n]);
            return n;
        }
        0
    }

    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }

    fn flush_tail(&mut self) {
        if !self.tail.is_empty() {
            self.pieces.push_back(self.tail.split().freeze());
        }
    }

    /// The first piece with bytes left to read: consumed pieces are
    /// dropped, and the copied tail is queued once nothing is before it.
    fn front(&mut self) -> Option<&mut Bytes> {
        while self.pieces.front().is_some_and(Bytes::is_empty) {
            self.pieces.pop_front();
        }
        if self.pieces.is_empty() {
            self.flush_tail();
        }
        self.pieces.front_mut()
    }
}
