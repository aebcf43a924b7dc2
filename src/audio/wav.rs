//! WAV headers as writers that cannot seek back leave them, made readable for
//! symphonia 0.5.
//!
//! - RF64 (EBU Tech 3306, `ffmpeg -rf64`): the sizes live in a `ds64` chunk
//!   and the RIFF fields hold 0xFFFFFFFF. symphonia knows only `RIFF`, so the
//!   header is rewritten in memory: `RF64` becomes `RIFF`, `ds64` becomes
//!   `JUNK` (skipped like any unknown chunk) and the real sizes move into the
//!   32-bit fields when they fit.
//! - A size nobody could know yet (0xFFFFFFFF, what ffmpeg writes to a pipe):
//!   the data runs to the end of the stream, so nothing can be called
//!   truncated by comparing against it. RF64's real size past 4 GiB does not
//!   fit the rewritten header either, so symphonia is told "unknown"; the
//!   count ([`Counted`]) uses `ds64`'s size and does call such a stream
//!   truncated.
//!
//! PCM in any of its WAV forms (integer, float, A-law, µ-law) is not
//! demuxed at all: its frames all have the header's block size, so
//! [`Counted`] measures the duration from the bytes that arrive and keeps
//! none of them.

use std::sync::atomic::{AtomicU64, Ordering};

use symphonia::core::units::TimeBase;

use super::{Detected, probe};
use crate::domain::AudioInfo;

/// How far the header (everything before the `data` chunk's samples) may
/// reach; past this the stream is handed to symphonia untouched.
pub(super) const MAX_HEADER: usize = 256 << 10;

const UNKNOWN: u32 = u32::MAX;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Scan {
    /// The `data` chunk header is not in these bytes yet.
    NeedMore,
    /// Not a WAV header this module understands; pass the bytes through.
    Untouched,
    Found(Header),
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Header {
    /// Replacement for the first `rewrite.len()` bytes (up to and including
    /// the `data` chunk header), when symphonia cannot read them as written.
    pub rewrite: Option<Vec<u8>>,
    /// The `data` size is real: a stream that ends before it is truncated.
    pub length_known: bool,
    /// Where the samples start: the end of the `data` chunk's header.
    pub data_start: usize,
    /// The `data` chunk's size, when the header says it (for RF64, the
    /// `ds64` chunk's, past 4 GiB too).
    pub data_len: Option<u64>,
    /// The last `fmt ` chunk's block size (bytes per frame, for PCM).
    pub block_align: Option<u16>,
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Reads the chunk headers of `prefix` (the start of a stream) up to the
/// `data` chunk.
pub(super) fn scan(prefix: &[u8]) -> Scan {
    if prefix.len() < 12 {
        return Scan::NeedMore;
    }
    let rf64 = prefix.starts_with(b"RF64");
    if !(rf64 || prefix.starts_with(b"RIFF")) || &prefix[8..12] != b"WAVE" {
        return Scan::Untouched;
    }
    // (position of the ds64 chunk, RIFF size, data size)
    let mut ds64: Option<(usize, u64, u64)> = None;
    let mut block_align = None;
    let mut pos = 12usize;
    loop {
        let (Some(id), Some(size)) = (prefix.get(pos..pos + 4), le32(prefix, pos + 4)) else {
            return Scan::NeedMore;
        };
        if id == b"ds64" {
            let (Some(riff), Some(data)) = (le64(prefix, pos + 8), le64(prefix, pos + 16)) else {
                return Scan::NeedMore;
            };
            ds64 = Some((pos, riff, data));
        }
        if id == b"fmt " && size >= 16 {
            // wFormatTag, nChannels, nSamplesPerSec, nAvgBytesPerSec, nBlockAlign
            let Some(align) = prefix.get(pos + 20..pos + 22) else {
                return Scan::NeedMore;
            };
            block_align = Some(u16::from_le_bytes([align[0], align[1]]));
        }
        if id == b"data" {
            let mut header = data_header(prefix, pos, size, rf64, ds64);
            header.block_align = block_align;
            return Scan::Found(header);
        }
        let next = usize::try_from(size)
            .ok()
            .and_then(|s| pos.checked_add(8)?.checked_add(s)?.checked_add(s & 1));
        match next {
            Some(next) if size != UNKNOWN && next <= MAX_HEADER => pos = next,
            _ => return Scan::Untouched,
        }
    }
}

fn data_header(
    prefix: &[u8],
    data_pos: usize,
    data_size: u32,
    rf64: bool,
    ds64: Option<(usize, u64, u64)>,
) -> Header {
    let data_start = data_pos + 8;
    if !rf64 {
        let length_known = data_size != UNKNOWN;
        return Header {
            rewrite: None,
            length_known,
            data_start,
            data_len: length_known.then_some(u64::from(data_size)),
            block_align: None,
        };
    }
    // Zero is what a writer that could not seek back leaves in `ds64`.
    let fits = |n: u64| u32::try_from(n).ok().filter(|&n| n != UNKNOWN && n != 0);
    let data_len = ds64
        .map(|(.., data)| data)
        .filter(|&n| n != 0 && n != u64::MAX);
    let sizes = ds64.and_then(|(_, riff, data)| Some((fits(riff)?, fits(data)?)));
    // Unknown sizes stay 0xFFFFFFFF in both fields: symphonia reads such a
    // data chunk to the end of the stream.
    let (riff, data) = sizes.unwrap_or((UNKNOWN, UNKNOWN));
    let mut out = prefix[..data_pos + 8].to_vec();
    out[..4].copy_from_slice(b"RIFF");
    out[4..8].copy_from_slice(&riff.to_le_bytes());
    if let Some((at, ..)) = ds64 {
        out[at..at + 4].copy_from_slice(b"JUNK");
    }
    out[data_pos + 4..data_pos + 8].copy_from_slice(&data.to_le_bytes());
    Header {
        rewrite: Some(out),
        length_known: sizes.is_some(),
        data_start,
        data_len,
        block_align: None,
    }
}

/// `head` with its header rewritten where [`scan`] says so.
pub(super) fn readable_head(head: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    match scan(head) {
        Scan::Found(Header {
            rewrite: Some(header),
            ..
        }) => {
            let mut out = header;
            out.extend_from_slice(&head[out.len()..]);
            out.into()
        }
        _ => head.into(),
    }
}

/// The second pass for PCM in WAV: the duration from the bytes that arrive,
/// none of them kept.
///
/// symphonia's WAV reader cuts PCM into packets of whole blocks and stops at
/// the end of the `data` chunk, so what it measures is the bytes after the
/// header, up to the chunk's size, divided by the block size; the same
/// sum is made here without queueing a byte. Nothing in PCM can be
/// damaged: every block is samples. The demuxer's queue held a window of
/// each upload and, through it, the network's receive buffers it was
/// sliced from.
#[derive(Debug)]
pub(super) struct Counted {
    info: AudioInfo,
    data_start: u64,
    data_len: Option<u64>,
    block_align: u64,
    fed: AtomicU64,
}

impl Counted {
    /// For a stream whose `head` `detect` read as PCM in WAV, with its
    /// header in the head; `None` for anything else (which is demuxed).
    pub(super) fn start(detected: &Detected, head: &[u8]) -> Option<Self> {
        if detected.container != "wav"
            || !detected.codec.starts_with("pcm_")
            || detected.sample_rate_hz == 0
        {
            return None;
        }
        let Scan::Found(header) = scan(head) else {
            return None;
        };
        Some(Self {
            info: detected.unmeasured(),
            data_start: header.data_start as u64,
            data_len: header.data_len,
            block_align: u64::from(header.block_align.filter(|&b| b > 0)?),
            fed: AtomicU64::new(0),
        })
    }

    /// Counts the next `len` bytes of the stream.
    pub(super) fn feed(&self, len: usize) {
        self.fed.fetch_add(len as u64, Ordering::Relaxed);
    }

    pub(super) fn finish(self) -> AudioInfo {
        let arrived = self.fed.into_inner().saturating_sub(self.data_start);
        let data = self.data_len.map_or(arrived, |len| len.min(arrived));
        let rate = self.info.sample_rate_hz;
        let (duration_ms, warning) = probe::measured(
            Some(TimeBase::new(1, rate)),
            rate,
            data / self.block_align,
            self.data_len.map(|len| len / self.block_align),
        );
        AudioInfo {
            duration_ms,
            warning,
            ..self.info
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = id.to_vec();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    fn rf64(riff: u64, data: u64) -> Vec<u8> {
        let mut ds64 = riff.to_le_bytes().to_vec();
        ds64.extend_from_slice(&data.to_le_bytes());
        ds64.extend_from_slice(&[0; 12]);
        let mut out = b"RF64\xff\xff\xff\xffWAVE".to_vec();
        out.extend(chunk(b"ds64", &ds64));
        out.extend(chunk(b"fmt ", &[0; 16]));
        out.extend_from_slice(b"data\xff\xff\xff\xff");
        out
    }

    #[test]
    fn rf64_becomes_riff_with_its_real_sizes() {
        let head = rf64(1000, 900);
        for end in 0..head.len() {
            assert_eq!(scan(&head[..end]), Scan::NeedMore, "{end}");
        }
        let Scan::Found(Header {
            rewrite: Some(out),
            length_known: true,
            data_start,
            data_len: Some(900),
            block_align: Some(0),
        }) = scan(&head)
        else {
            panic!("{:?}", scan(&head));
        };
        assert_eq!(&out[..8], b"RIFF\xe8\x03\0\0");
        assert_eq!(&out[12..16], b"JUNK");
        assert_eq!(&out[out.len() - 8..], b"data\x84\x03\0\0");
        assert_eq!(data_start, head.len());
    }

    #[test]
    fn sizes_past_4_gib_or_unknown_run_to_the_end() {
        // What symphonia is told runs to the end; what `Counted` is told is
        // the real size when there is one.
        for (head, len) in [
            (rf64(5 << 30, (5 << 30) - 100), Some((5 << 30) - 100)),
            (rf64(0, 0), None),
        ] {
            let Scan::Found(Header {
                rewrite: Some(out),
                length_known: false,
                data_len,
                ..
            }) = scan(&head)
            else {
                panic!("{:?}", scan(&head));
            };
            assert_eq!(data_len, len);
            assert_eq!(&out[4..8], b"\xff\xff\xff\xff");
            assert_eq!(&out[out.len() - 4..], b"\xff\xff\xff\xff");
        }
        let mut piped = b"RIFF\xff\xff\xff\xffWAVE".to_vec();
        piped.extend(chunk(b"fmt ", &[0; 16]));
        piped.extend_from_slice(b"data\xff\xff\xff\xff");
        assert_eq!(
            scan(&piped),
            Scan::Found(Header {
                rewrite: None,
                length_known: false,
                data_start: piped.len(),
                data_len: None,
                block_align: Some(0),
            })
        );
    }

    #[test]
    fn other_data_passes_through() {
        assert_eq!(scan(b"OggS\0\x02\0\0\0\0\0\0\0\0"), Scan::Untouched);
        let mut huge = b"RIFF\0\0\0\0WAVE".to_vec();
        huge.extend_from_slice(b"LIST\xff\xff\xff\x7f");
        assert_eq!(scan(&huge), Scan::Untouched);
    }
}
