//! MP4/M4A without a demux thread.
//!
//! Everything the probe reports about an MP4 lives in two small top-level
//! atoms: `ftyp` and `moov` (tracks, codec configuration, sample tables and
//! the edit list that gives the playable length). The audio itself is `mdat`,
//! which may come before `moov` (how a recorder writes while the call runs,
//! and ffmpeg's default) or after it (`-movflags +faststart`). [`AtomWalk`]
//! follows the top-level atoms as bytes arrive, skips everything else without
//! keeping it, and keeps `ftyp` and `moov` (at most [`MAX_MOOV`] bytes); at
//! the end symphonia reads those two alone. Both layouts take the same path.

use symphonia::core::units::TimeBase;

use super::probe::{self, Memory};
use super::{Detected, truncation_warning};
use crate::domain::AudioInfo;
use crate::error::{Error, Result};

/// The largest `moov` the analyzer keeps: about a day of 48 kHz AAC.
pub(super) const MAX_MOOV: u64 = 16 << 20;

/// One top-level atom being read.
struct Atom {
    kind: [u8; 4],
    size: Option<u64>,
    /// Body bytes still to come (`None`: the atom runs to the end of the file).
    left: Option<u64>,
    /// The whole atom, header included, for the atoms the probe reads.
    kept: Option<Vec<u8>>,
}

/// The top-level atoms of an MP4 stream, followed incrementally.
#[derive(Default)]
pub(super) struct AtomWalk {
    /// An atom header being assembled (8 bytes, or 16 with a 64-bit size).
    header: Vec<u8>,
    current: Option<Atom>,
    ftyp: Option<Vec<u8>>,
    moov: Option<Vec<u8>>,
    fragmented: bool,
    /// Why the walk stopped early (a malformed or oversized atom).
    stopped: Option<String>,
}

/// Sizes only: `moov` is part of the recording and may carry its metadata.
impl std::fmt::Debug for AtomWalk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtomWalk")
            .field("ftyp_bytes", &self.ftyp.as_ref().map(Vec::len))
            .field("moov_bytes", &self.moov.as_ref().map(Vec::len))
            .field("current", &self.current.as_ref().map(|a| name(&a.kind)))
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl AtomWalk {
    pub(super) fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.stopped.is_none() {
            match &mut self.current {
                Some(atom) => {
                    let n = atom
                        .left
                        .map_or(data.len(), |left| data.len().min(clamp(left)));
                    if let Some(kept) = &mut atom.kept {
                        kept.extend_from_slice(&data[..n]);
                    }
                    data = &data[n..];
                    if let Some(left) = &mut atom.left {
                        *left -= n as u64;
                        if *left == 0 {
                            self.close_atom();
                        }
                    }
                }
                None => {
                    let want = if self.header.len() >= 8 && self.header[..4] == [0, 0, 0, 1] {
                        16
                    } else {
                        8
                    };
                    let n = (want - self.header.len()).min(data.len());
                    self.header.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.header.len() == want && (want == 16 || self.header[..4] != [0, 0, 0, 1])
                    {
                        self.open_atom();
                    }
                }
            }
        }
    }

    fn open_atom(&mut self) {
        let h = std::mem::take(&mut self.header);
        let kind = [h[4], h[5], h[6], h[7]];
        let size = match u32::from_be_bytes([h[0], h[1], h[2], h[3]]) {
            0 => None,
            1 => Some(u64::from_be_bytes(h[8..16].try_into().unwrap_or_default())),
            s => Some(u64::from(s)),
        };
        let header_len = h.len() as u64;
        if size.is_some_and(|s| s < header_len) {
            self.stopped = Some(format!("a `{}` atom of impossible size", name(&kind)));
            return;
        }
        let wanted =
            (&kind == b"ftyp" && self.ftyp.is_none()) || (&kind == b"moov" && self.moov.is_none());
        let kept = match size {
            Some(s) if wanted && s <= MAX_MOOV => {
                let mut v = Vec::with_capacity(clamp(s));
                v.extend_from_slice(&h);
                Some(v)
            }
            _ if wanted => {
                self.stopped = Some(format!(
                    "a `{}` atom larger than the {} MiB the probe reads",
                    name(&kind),
                    MAX_MOOV >> 20
                ));
                return;
            }
            _ => None,
        };
        self.fragmented |= &kind == b"moof";
        self.current = Some(Atom {
            kind,
            size,
            left: size.map(|s| s - header_len),
            kept,
        });
        if size == Some(header_len) {
            self.close_atom();
        }
    }

    fn close_atom(&mut self) {
        if let Some(Atom {
            kind,
            kept: Some(bytes),
            ..
        }) = self.current.take()
        {
            if &kind == b"ftyp" {
                self.ftyp = Some(bytes);
            } else {
                self.moov = Some(bytes);
            }
        }
    }

    /// How the stream ended mid-atom, if it did.
    fn cut_short(&self) -> Option<String> {
        if !self.header.is_empty() {
            return Some(format!(
                "the stream ends with {} stray bytes after the last atom",
                self.header.len()
            ));
        }
        let atom = self.current.as_ref()?;
        let (size, left) = (atom.size?, atom.left?);
        Some(format!(
            "the stream ends {} bytes into a {size}-byte `{}` atom",
            size - left,
            name(&atom.kind)
        ))
    }

    /// The probe's verdict once the stream has ended.
    pub(super) fn finish(self) -> Result<AudioInfo> {
        let (Some(ftyp), Some(moov)) = (&self.ftyp, &self.moov) else {
            return Err(Error::NotAudio(match &self.stopped {
                Some(why) => format!("an mp4 container with {why}"),
                None => "an mp4 container without a moov atom".into(),
            }));
        };
        let (detected, track_index) = probe_moov(ftyp, moov)?;
        let duration_ms = track_duration_ms(&moov[8..], track_index).unwrap_or(0);
        let warning = if let Some(why) = &self.stopped {
            Some(format!("damaged mp4: {why}"))
        } else if let Some(cut) = self.cut_short() {
            Some(truncation_warning(&cut))
        } else if self.fragmented && duration_ms == 0 {
            Some("a fragmented mp4: its duration is not measured".into())
        } else {
            None
        };
        Ok(AudioInfo {
            container: detected.container.to_owned(),
            codec: detected.codec,
            sample_rate_hz: detected.sample_rate_hz,
            channels: detected.channels,
            duration_ms,
            warning,
        })
    }
}

/// Accepts or refuses an MP4 from its head. Without the whole `moov` in the
/// head, a well-formed run of atoms is accepted provisionally and the
/// analyzer decides at the end.
pub(super) fn detect(head: &[u8]) -> Result<Detected> {
    let mut walk = AtomWalk::default();
    walk.push(head);
    if let (Some(ftyp), Some(moov)) = (&walk.ftyp, &walk.moov) {
        return probe_moov(ftyp, moov).map(|(d, _)| d);
    }
    if let Some(why) = walk.stopped {
        return Err(Error::NotAudio(format!("an mp4 container with {why}")));
    }
    Ok(Detected {
        container: "mp4",
        codec: String::new(),
        sample_rate_hz: 0,
        channels: 0,
        provisional: true,
    })
}

/// symphonia on `ftyp` + `moov` followed by an empty `mdat`: the audio track
/// and its index among the `trak` atoms.
fn probe_moov(ftyp: &[u8], moov: &[u8]) -> Result<(Detected, usize)> {
    let body = moov.get(8..).unwrap_or_default();
    sound(body, 0).map_err(|why| Error::NotAudio(format!("a damaged mp4 container ({why})")))?;
    let mut file = Vec::with_capacity(ftyp.len() + moov.len() + 8);
    file.extend_from_slice(ftyp);
    file.extend_from_slice(moov);
    file.extend_from_slice(&[0, 0, 0, 8, b'm', b'd', b'a', b't']);
    let reader = probe::open_reader(Box::new(Memory::new(file)))
        .map_err(|e| Error::NotAudio(format!("an mp4 container that cannot be read ({e})")))?;
    let (track, detected) = probe::describe_track(reader.as_ref(), "mp4")?;
    // symphonia numbers MP4 tracks by their position in `moov`.
    Ok((detected, track.id as usize))
}

/// Whether symphonia may read `moov`. It reserves a sample table's
/// declared entries, and an atom's declared size, before it reads them: a
/// damaged count (33 GB for one fuzzed `stsc`) made the allocation fail,
/// which aborts the process with every upload and play of the node. Every
/// atom must fit its parent, and every table its atom.
fn sound(body: &[u8], depth: usize) -> std::result::Result<(), String> {
    let mut rest = body;
    while rest.len() >= 8 {
        let size = be32(rest, 0).unwrap_or(0);
        let kind: [u8; 4] = rest[4..8].try_into().unwrap_or_default();
        let (header, size) = match size {
            0 => (8, rest.len() as u64),
            1 => (16, be64(rest, 8).ok_or("a cut 64-bit atom size")?),
            s => (8, s),
        };
        if size < header || size > rest.len() as u64 {
            return Err(format!(
                "the {} atom declares {size} bytes in {}",
                name(&kind),
                rest.len()
            ));
        }
        let atom = &rest[header as usize..size as usize];
        rest = &rest[size as usize..];
        let table = |each: u64, at: usize| -> std::result::Result<(), String> {
            let count = be32(atom, at).unwrap_or(0);
            let room = (atom.len().saturating_sub(at + 4)) as u64;
            if count.saturating_mul(each) > room {
                return Err(format!(
                    "the {} atom claims {count} entries in {room} bytes",
                    name(&kind)
                ));
            }
            Ok(())
        };
        match &kind {
            b"trak" | b"mdia" | b"minf" | b"stbl" | b"edts" | b"dinf" | b"mvex" if depth < 16 => {
                sound(atom, depth + 1)?
            }
            b"stts" | b"ctts" | b"co64" => table(8, 4)?,
            b"stsc" => table(12, 4)?,
            b"stco" | b"stss" => table(4, 4)?,
            b"stsz" if be32(atom, 4) == Some(0) => table(4, 8)?,
            b"elst" => table(if atom.first() == Some(&1) { 20 } else { 12 }, 4)?,
            _ => {}
        }
    }
    Ok(())
}

fn name(kind: &[u8; 4]) -> String {
    kind.iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect()
}

fn clamp(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The child atoms of an atom body: (type, body).
fn children(body: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut rest = body;
    std::iter::from_fn(move || {
        let size = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        let kind = rest.get(4..8)?;
        let (header, size) = match size {
            0 => (8, rest.len()),
            1 => (
                16,
                clamp(u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?)),
            ),
            s => (8, clamp(u64::from(s))),
        };
        let body = rest.get(header..size)?;
        rest = &rest[size..];
        Some((kind, body))
    })
}

fn child<'a>(body: &'a [u8], kind: &[u8]) -> Option<&'a [u8]> {
    children(body).find(|(k, _)| *k == kind).map(|(_, b)| b)
}

fn be32(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from(u32::from_be_bytes(
        b.get(at..at + 4)?.try_into().ok()?,
    )))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// (timescale, duration) of an `mvhd` or `mdhd` body (ISO 14496-12 §8.2.2,
/// §8.4.2): version 1 widens the times to 64 bits.
fn timescale_and_duration(body: &[u8]) -> Option<(u64, u64)> {
    match body.first()? {
        0 => Some((be32(body, 12)?, be32(body, 16)?)),
        1 => Some((be32(body, 20)?, be64(body, 24)?)),
        _ => None,
    }
}

/// The playable length of track `index` (ISO 14496-12 §8.6.6): the sum of its
/// edit list's segments, in the movie's timescale. Encoders list an edit that
/// skips the codec's priming samples (1024 for AAC, 128 ms at 8 kHz), so
/// `mdhd` alone overstates the length; without an edit list, `mdhd` is it.
fn track_duration_ms(moov_body: &[u8], index: usize) -> Option<u64> {
    let (movie_scale, _) = timescale_and_duration(child(moov_body, b"mvhd")?)?;
    let trak = children(moov_body)
        .filter(|(k, _)| *k == b"trak")
        .nth(index)?
        .1;
    let edited = child(trak, b"edts")
        .and_then(|edts| child(edts, b"elst"))
        .and_then(edit_list_duration)
        .filter(|&d| d > 0);
    let (scale, duration) = match edited {
        Some(d) => (movie_scale, d),
        None => timescale_and_duration(child(child(trak, b"mdia")?, b"mdhd")?)?,
    };
    let scale = u32::try_from(scale).ok().filter(|&s| s > 0)?;
    Some(probe::to_ms(Some(TimeBase::new(1, scale)), 0, duration))
}

fn edit_list_duration(elst: &[u8]) -> Option<u64> {
    let version = *elst.first()?;
    let count = clamp(be32(elst, 4)?);
    let entry = if version == 1 { 20 } else { 12 };
    (0..count).try_fold(0u64, |sum, i| {
        let at = 8 + i * entry;
        let segment = if version == 1 {
            be64(elst, at)?
        } else {
            be32(elst, at)?
        };
        sum.checked_add(segment)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn atom(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// The `moov` of an ffmpeg-made file, and the offset of its `stsc`.
    fn moov_of(name: &str) -> (Vec<u8>, usize) {
        let file = fixture(name);
        let mut walk = AtomWalk::default();
        walk.push(&file);
        let moov = walk.moov.expect("a moov atom");
        let stsc = moov.windows(4).position(|w| w == b"stsc").unwrap() - 4;
        (moov, stsc)
    }

    /// symphonia reserves what a table claims before reading it, and a
    /// failed allocation aborts the process: a count its atom cannot hold
    /// is refused before symphonia sees it. Real files pass.
    #[test]
    fn a_table_that_claims_more_than_its_atom_is_refused() {
        for name in ["speech_aac.m4a", "speech_aac_moov_end.m4a"] {
            let (moov, stsc) = moov_of(name);
            assert_eq!(sound(&moov[8..], 0), Ok(()), "{name}");
            let mut damaged = moov.clone();
            // stsc: size, type, version and flags, then the entry count.
            damaged[stsc + 12..stsc + 16].copy_from_slice(&0x0AC0_0000u32.to_be_bytes());
            let why = sound(&damaged[8..], 0).unwrap_err();
            assert!(
                why.starts_with("the stsc atom claims 180355072 entries"),
                "{why}"
            );
            let ftyp = atom(b"ftyp", b"M4A \0\0\0\0");
            let err = probe_moov(&ftyp, &damaged).unwrap_err().to_string();
            assert!(err.contains("a damaged mp4 container"), "{err}");
            // An atom larger than its parent.
            let mut past = moov.clone();
            past[stsc..stsc + 4].copy_from_slice(&0x7FFF_FFFFu32.to_be_bytes());
            let why = sound(&past[8..], 0).unwrap_err();
            assert!(
                why.starts_with("the stsc atom declares 2147483647 bytes"),
                "{why}"
            );
        }
    }

    #[test]
    fn the_walk_keeps_ftyp_and_moov_whatever_the_split() {
        let mut file = atom(b"ftyp", b"M4A \0\0\0\0");
        file.extend(atom(b"free", b""));
        // A 64-bit mdat header.
        file.extend_from_slice(&[0, 0, 0, 1]);
        file.extend_from_slice(b"mdat");
        file.extend_from_slice(&(16u64 + 5000).to_be_bytes());
        file.extend_from_slice(&[7u8; 5000]);
        let moov = atom(b"moov", &atom(b"mvhd", &[0; 100]));
        file.extend_from_slice(&moov);
        for piece in [1, 3, 7, 16, 4096, file.len()] {
            let mut walk = AtomWalk::default();
            for p in file.chunks(piece) {
                walk.push(p);
            }
            assert_eq!(walk.ftyp.as_deref(), Some(&file[..16]), "{piece}");
            assert_eq!(walk.moov.as_deref(), Some(&moov[..]), "{piece}");
            assert!(walk.cut_short().is_none() && walk.stopped.is_none());
        }
        let mut walk = AtomWalk::default();
        walk.push(&file[..100]);
        assert_eq!(
            walk.cut_short().as_deref(),
            Some("the stream ends 76 bytes into a 5016-byte `mdat` atom")
        );
    }

    #[test]
    fn an_edit_list_gives_the_playable_length() {
        let mut mvhd = vec![0u8; 100];
        mvhd[12..16].copy_from_slice(&1000u32.to_be_bytes());
        let mut mdhd = vec![0u8; 24];
        mdhd[12..16].copy_from_slice(&8000u32.to_be_bytes());
        mdhd[16..20].copy_from_slice(&69_421u32.to_be_bytes());
        let mut elst = vec![0, 0, 0, 0, 0, 0, 0, 1];
        elst.extend_from_slice(&8550u32.to_be_bytes());
        elst.extend_from_slice(&1024u32.to_be_bytes());
        elst.extend_from_slice(&[0, 1, 0, 0]);
        let mdia = atom(b"mdia", &atom(b"mdhd", &mdhd));
        let mut trak = atom(b"edts", &atom(b"elst", &elst));
        trak.extend(&mdia);
        let mut moov = atom(b"mvhd", &mvhd);
        moov.extend(atom(b"trak", &trak));
        assert_eq!(track_duration_ms(&moov, 0), Some(8550));
        // Without the edit list, the media header's length (priming included).
        let mut bare = atom(b"mvhd", &mvhd);
        bare.extend(atom(b"trak", &mdia));
        assert_eq!(track_duration_ms(&bare, 0), Some(8678));
        assert_eq!(track_duration_ms(&bare, 1), None);
    }
}
