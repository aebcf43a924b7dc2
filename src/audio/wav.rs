//! WAV headers as writers that cannot seek back leave them, made readable for
//! symphonia 0.5.
//!
//! - RF64 (EBU Tech 3306, `ffmpeg -rf64`): the sizes live in a `ds64` chunk
//!   and the RIFF fields hold 0xFFFFFFFF. symphonia knows only `RIFF`, so the
//!   header is rewritten in memory: `RF64` becomes `RIFF`, `ds64` becomes
//!   `JUNK` (skipped like any unknown chunk) and the real sizes move into the
//!   32-bit fields when they fit.
//! - A size nobody could know yet (0xFFFFFFFF, what ffmpeg writes to a pipe,
//!   or RF64 past 4 GiB): the data runs to the end of the stream, so nothing
//!   can be called truncated by comparing against it.

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
        if id == b"data" {
            return Scan::Found(data_header(prefix, pos, size, rf64, ds64));
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
    if !rf64 {
        return Header {
            rewrite: None,
            length_known: data_size != UNKNOWN,
        };
    }
    // Zero is what a writer that could not seek back leaves in `ds64`.
    let fits = |n: u64| u32::try_from(n).ok().filter(|&n| n != UNKNOWN && n != 0);
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
        }) = scan(&head)
        else {
            panic!("{:?}", scan(&head));
        };
        assert_eq!(&out[..8], b"RIFF\xe8\x03\0\0");
        assert_eq!(&out[12..16], b"JUNK");
        assert_eq!(&out[out.len() - 8..], b"data\x84\x03\0\0");
    }

    #[test]
    fn sizes_past_4_gib_or_unknown_run_to_the_end() {
        for head in [rf64(5 << 30, (5 << 30) - 100), rf64(0, 0)] {
            let Scan::Found(Header {
                rewrite: Some(out),
                length_known: false,
            }) = scan(&head)
            else {
                panic!("{:?}", scan(&head));
            };
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
                length_known: false
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
