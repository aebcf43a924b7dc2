//! A guard in front of symphonia's Matroska/WebM reader.
//!
//! symphonia allocates an element's declared size before it reads the
//! element (`read_boxed_slice_exact`): one damaged size field in a WebM
//! upload asked for terabytes, and an allocation that fails aborts the
//! process, with every upload and play of the node. The guard walks the
//! element headers as bytes are queued for the analyzer, and stops the
//! stream before an element that cannot be: a data element larger than
//! [`MAX_DATA`] or of unknown size, a header that is not EBML, or a child
//! that runs past its parent's end. The reader then sees the stream end
//! there, and the recording is kept with a warning (the audio itself is
//! stored whatever the analyzer finds).

/// The largest data element let through: a block of audio is kilobytes.
pub(super) const MAX_DATA: u64 = 16 << 20;

const UNKNOWN: u64 = u64::MAX;

/// Elements whose content is more elements (those symphonia descends into,
/// and the other masters of the Matroska schema an audio file may carry).
const MASTERS: &[u32] = &[
    0x1A45_DFA3, // EBML
    0x1853_8067, // Segment
    0x114D_9B74, // SeekHead
    0x4DBB,      // Seek
    0x1549_A966, // Info
    0x1654_AE6B, // Tracks
    0xAE,        // TrackEntry
    0xE0,        // Video
    0xE1,        // Audio
    0x6D80,      // ContentEncodings
    0x6240,      // ContentEncoding
    0x5034,      // ContentCompression
    0x5035,      // ContentEncryption
    0x1F43_B675, // Cluster
    0xA0,        // BlockGroup
    0x75A1,      // BlockAdditions
    0xA6,        // BlockMore
    0x8E,        // Slices
    0xE8,        // TimeSlice
    0x1C53_BB6B, // Cues
    0xBB,        // CuePoint
    0xB7,        // CueTrackPositions
    0x1254_C367, // Tags
    0x7373,      // Tag
    0x63C0,      // Targets
    0x67C8,      // SimpleTag
    0x1043_A770, // Chapters
    0x45B9,      // EditionEntry
    0xB6,        // ChapterAtom
    0x80,        // ChapterDisplay
    0x1941_A469, // Attachments
    0x61A7,      // AttachedFile
];

const CLUSTER: u32 = 0x1F43_B675;

/// SimpleBlock and Block: symphonia cuts their laced frames by sizes read
/// from the block, reserving each before reading it.
const BLOCKS: &[u32] = &[0xA3, 0xA1];

/// The Segment's own children: one of them ends a Cluster of unknown size
/// (as live writers leave it).
const SEGMENT_LEVEL: &[u32] = &[
    0x114D_9B74,
    0x1549_A966,
    0x1654_AE6B,
    CLUSTER,
    0x1C53_BB6B,
    0x1254_C367,
    0x1043_A770,
    0x1941_A469,
];

#[derive(Debug, Default)]
pub(super) struct Guard {
    /// Stream offset of the next byte to look at.
    at: u64,
    /// Bytes of the current data element still to pass over.
    skip: u64,
    /// An element header split across pieces.
    head: Vec<u8>,
    /// The masters the next element is inside: (id, end offset).
    open: Vec<(u32, u64)>,
    /// A block being gathered to check its lacing before the reader may
    /// have all of it.
    block: Option<Vec<u8>>,
}

/// Where the stream must stop (bytes of the piece that may pass) and why.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Stop {
    pub(super) pass: usize,
    pub(super) why: String,
}

impl Guard {
    /// Looks at the next piece of the stream; `Some` says how much of it
    /// the reader may have, and why not the rest.
    pub(super) fn feed(&mut self, data: &[u8]) -> Option<Stop> {
        let mut i = 0;
        while i < data.len() {
            if self.skip > 0 {
                let k = self.skip.min((data.len() - i) as u64);
                if let Some(block) = self.block.as_mut() {
                    block.extend_from_slice(&data[i..i + k as usize]);
                }
                self.skip -= k;
                self.at += k;
                i += k as usize;
                if self.skip == 0
                    && let Some(block) = self.block.take()
                    && let Err(why) = frames_fit(&block)
                {
                    // The reader never gets the whole block: not its last byte.
                    let why = format!("a block ending at byte {}: {why}", self.at);
                    return Some(stop(i as isize - 1, why));
                }
                continue;
            }
            // The header's first byte in this piece, or before it.
            let start = i as isize - self.head.len() as isize;
            let element_at = self.at - self.head.len() as u64;
            let take = (12 - self.head.len()).min(data.len() - i);
            let mut bytes = std::mem::take(&mut self.head);
            bytes.extend_from_slice(&data[i..i + take]);
            let header = match parse_header(&bytes) {
                Header::Incomplete => {
                    self.at += take as u64;
                    self.head = bytes;
                    return None;
                }
                Header::Invalid => {
                    return Some(stop(start, format!("no EBML element at byte {element_at}")));
                }
                Header::Element { id, size, len } => (id, size, len),
            };
            let (id, size, len) = header;
            // The header's bytes from this piece.
            let used = len - (bytes.len() - take);
            self.at = element_at + len as u64;
            i += used;
            self.close_ended(id, element_at);
            if let Some(&(_, end)) = self.open.last()
                && end != UNKNOWN
                && (size == UNKNOWN || self.at + size > end)
            {
                return Some(stop(
                    start,
                    format!("an element at byte {element_at} runs past its parent's end"),
                ));
            }
            if MASTERS.contains(&id) {
                let end = if size == UNKNOWN {
                    UNKNOWN
                } else {
                    self.at + size
                };
                self.open.push((id, end));
            } else if size == UNKNOWN || size > MAX_DATA {
                let said = if size == UNKNOWN {
                    "an unknown size".to_owned()
                } else {
                    format!("{size} bytes")
                };
                return Some(stop(
                    start,
                    format!("an element at byte {element_at} declares {said}"),
                ));
            } else {
                self.skip = size;
                if BLOCKS.contains(&id) && size > 0 {
                    self.block = Some(Vec::with_capacity(size as usize));
                }
            }
        }
        None
    }

    /// Closes the masters that ended where element `id` starts (`at`).
    fn close_ended(&mut self, id: u32, at: u64) {
        while let Some(&(open, end)) = self.open.last() {
            let ended = if end == UNKNOWN {
                // A Cluster of unknown size ends where a sibling of it starts.
                open == CLUSTER && SEGMENT_LEVEL.contains(&id)
            } else {
                end <= at
            };
            if !ended {
                break;
            }
            self.open.pop();
        }
    }
}

/// Stops before the element whose header starts at `start` in this piece
/// (negative: in an earlier piece, already passed on).
fn stop(start: isize, why: String) -> Stop {
    Stop {
        pass: usize::try_from(start).unwrap_or(0),
        why,
    }
}

/// Whether the frames a block's lacing declares fit in the block, read
/// as symphonia reads them (`lacing::extract_frames`): a damaged lace size
/// made it reserve tens of GB.
fn frames_fit(block: &[u8]) -> Result<(), String> {
    let (_, track_len) = vint(block, 0).ok_or("no track number")?;
    let mut at = track_len + 3;
    let flags = *block.get(at - 1).ok_or("shorter than its header")?;
    let lacing = (flags >> 1) & 0b11;
    if lacing == 0b00 {
        return Ok(());
    }
    let stored = *block.get(at).ok_or("no frame count")? as usize;
    at += 1;
    if lacing == 0b10 {
        return Ok(());
    }
    let mut total: i128 = 0;
    let mut last: i128 = 0;
    for k in 0..stored {
        let size = if lacing == 0b01 {
            // Xiph: 255s and the byte that ends them.
            let mut size: i128 = 0;
            loop {
                let b = *block.get(at).ok_or("cut lace sizes")?;
                at += 1;
                size += i128::from(b);
                if b != 255 {
                    break;
                }
            }
            size
        } else {
            let (value, len) = vint(block, at).ok_or("cut lace sizes")?;
            at += len;
            if k == 0 {
                i128::from(value)
            } else {
                // A signed difference from the previous size.
                let bias = (1i128 << (7 * len - 1)) - 1;
                last + i128::from(value) - bias
            }
        };
        if size < 0 {
            return Err("a negative lace size".into());
        }
        last = size;
        total += size;
    }
    let room = (block.len() - at.min(block.len())) as i128;
    if total > room {
        return Err(format!("lace sizes of {total} bytes in {room}"));
    }
    Ok(())
}

/// An EBML variable-length integer at `at` (marker removed): value and
/// length.
fn vint(b: &[u8], at: usize) -> Option<(u64, usize)> {
    let first = *b.get(at)?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return None;
    }
    let mut value = u64::from(first) & (0xFF >> len);
    for &x in b.get(at + 1..at + len)? {
        value = (value << 8) | u64::from(x);
    }
    Some((value, len))
}

enum Header {
    Incomplete,
    Invalid,
    Element { id: u32, size: u64, len: usize },
}

/// An EBML element header: its ID (1–4 bytes, marker kept) and data size
/// (1–8 bytes, marker removed; all ones is "unknown").
fn parse_header(b: &[u8]) -> Header {
    let Some(&first) = b.first() else {
        return Header::Incomplete;
    };
    let id_len = first.leading_zeros() as usize + 1;
    if id_len > 4 {
        return Header::Invalid;
    }
    let Some(&size_first) = b.get(id_len) else {
        return Header::Incomplete;
    };
    let size_len = size_first.leading_zeros() as usize + 1;
    if size_len > 8 {
        return Header::Invalid;
    }
    let len = id_len + size_len;
    if b.len() < len {
        return Header::Incomplete;
    }
    let id = b[..id_len]
        .iter()
        .fold(0u32, |acc, &x| (acc << 8) | u32::from(x));
    let mut size = u64::from(size_first) & (0xFF >> size_len);
    let mut all_ones = size == 0xFF >> size_len;
    for &x in &b[id_len + 1..len] {
        size = (size << 8) | u64::from(x);
        all_ones &= x == 0xFF;
    }
    Header::Element {
        id,
        size: if all_ones { UNKNOWN } else { size },
        len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element(id: &[u8], body: &[u8]) -> Vec<u8> {
        let mut out = id.to_vec();
        out.push(0x80 | body.len() as u8);
        out.extend_from_slice(body);
        out
    }

    /// EBML header, a Segment and a Cluster of unknown size (as live
    /// writers leave them), blocks, then a second Cluster.
    fn live_webm() -> Vec<u8> {
        let mut out = element(&[0x1A, 0x45, 0xDF, 0xA3], &element(&[0x42, 0x82], b"webm"));
        out.extend([
            0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        for _ in 0..2 {
            out.extend([0x1F, 0x43, 0xB6, 0x75, 0xFF]);
            out.extend(element(&[0xE7], &[0]));
            for _ in 0..3 {
                out.extend(element(&[0xA3], &[0x81, 0, 0, 0x80, 1, 2, 3]));
            }
        }
        out
    }

    fn walk(data: &[u8], piece: usize) -> Option<(usize, String)> {
        let mut guard = Guard::default();
        let mut passed = 0;
        for p in data.chunks(piece) {
            if let Some(stop) = guard.feed(p) {
                return Some((passed + stop.pass, stop.why));
            }
            passed += p.len();
        }
        None
    }

    #[test]
    fn a_sound_stream_passes_whole_in_any_pieces() {
        let webm = live_webm();
        for piece in [1, 2, 3, 5, 12, 13, webm.len()] {
            assert_eq!(walk(&webm, piece), None, "pieces of {piece}");
        }
    }

    #[test]
    fn it_stops_before_an_element_that_cannot_be() {
        let webm = live_webm();
        let last_block = webm.len() - 9;
        let mut cases: Vec<(&str, Vec<u8>, usize)> = Vec::new();
        // A block of 17.6 TB (an 8-byte size).
        let mut huge = webm[..last_block].to_vec();
        huge.extend([0xA3, 0x01, 0x00, 0x10, 0, 0, 0, 0, 0]);
        cases.push(("declares 17592186044416 bytes", huge, last_block));
        // A block of unknown size.
        let mut unknown = webm[..last_block].to_vec();
        unknown.extend([0xA3, 0xFF, 0, 0]);
        cases.push(("declares an unknown size", unknown, last_block));
        // Not an element header (an ID longer than 4 bytes).
        let mut garbage = webm[..last_block].to_vec();
        garbage.extend([0x00, 0x00, 0x00]);
        cases.push(("no EBML element", garbage, last_block));
        // A block whose Xiph lacing claims a frame of 2,550 bytes in 2.
        let mut laced = webm[..last_block].to_vec();
        laced.extend(element(
            &[0xA3],
            &[
                0x81, 0, 0, 0x82, 1, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0, 1, 2,
            ],
        ));
        let block_end = laced.len() - 1;
        cases.push(("lace sizes of 2550 bytes in 2", laced, block_end));
        // A child longer than its known-size parent.
        let mut group = element(&[0xA0], &element(&[0xA1], &[0; 4]));
        group[3] = 0x90;
        let mut past = webm.clone();
        let at = past.len();
        past.extend(group);
        cases.push(("runs past its parent's end", past, at + 2));
        for (why, data, at) in cases {
            for piece in [1, 4, data.len()] {
                let (pass, said) = walk(&data, piece).unwrap_or_else(|| panic!("{why}: passed"));
                assert!(said.contains(why), "{said}");
                // In pieces, the bytes of the header before the piece that
                // completes it have passed: never the whole header.
                assert!(
                    pass >= at && pass - at < 12,
                    "{why}, pieces of {piece}: {pass}"
                );
                if piece == data.len() {
                    assert_eq!(pass, at, "{why}");
                }
            }
        }
    }
}
