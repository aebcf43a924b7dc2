//! Audio probing with symphonia, on plaintext that only ever lives in memory.
//!
//! Two passes, both streaming:
//! 1. [`detect`] runs on the head of the upload (the first chunk, held in memory
//!    anyway) before anything is stored. Not audio: [`Error::NotAudio`] naming
//!    what was found, and nothing is written.
//! 2. [`Analyzer`] demuxes the whole stream concurrently with the upload, fed
//!    through a bounded channel, and yields the duration by walking packets. A
//!    demux error part-way is "damaged but kept": the recording is stored and
//!    flagged with the probe's warning.

use std::io::{Cursor, Read, Seek, SeekFrom};
use std::sync::Mutex;

use bytes::Bytes;
use symphonia::core::codecs::{CODEC_TYPE_NULL, CODEC_TYPE_OPUS, CodecType};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSource, MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;
use tokio::sync::mpsc;

use crate::catalog::AudioInfo;
use crate::error::{Error, Result};

/// Names the container from its magic bytes: symphonia 0.5 does not report
/// which reader matched, and for non-audio we want to say what it *is*.
pub fn sniff(head: &[u8]) -> &'static str {
    let starts = |m: &[u8]| head.starts_with(m);
    if starts(b"RIFF") && head.get(8..12) == Some(b"WAVE") {
        "wav"
    } else if starts(b"RIFF") && head.get(8..12) == Some(b"AVI ") {
        "AVI video"
    } else if starts(b"RIFF") && head.get(8..12) == Some(b"WEBP") {
        "WebP image"
    } else if starts(b"fLaC") {
        "flac"
    } else if starts(b"OggS") {
        "ogg"
    } else if starts(&[0x1A, 0x45, 0xDF, 0xA3]) {
        if head.windows(4).take(64).any(|w| w == b"webm") {
            "webm"
        } else {
            "mkv"
        }
    } else if head.get(4..8) == Some(b"ftyp") {
        "mp4"
    } else if starts(b"ID3") || (head.len() > 1 && head[0] == 0xFF && head[1] & 0xE0 == 0xE0) {
        "mp3"
    } else if starts(b"%PDF") {
        "a PDF document"
    } else if starts(&[0x89, b'P', b'N', b'G']) {
        "a PNG image"
    } else if starts(&[0xFF, 0xD8, 0xFF]) {
        "a JPEG image"
    } else if starts(b"GIF8") {
        "a GIF image"
    } else if starts(b"PK\x03\x04") {
        "a ZIP archive"
    } else if starts(&[0x1F, 0x8B]) {
        "gzip data"
    } else if starts(b"\x7FELF") {
        "an ELF executable"
    } else if !head.is_empty()
        && std::str::from_utf8(head)
            .is_ok_and(|s| !s.chars().any(|c| c.is_control() && !c.is_whitespace()))
    {
        "text"
    } else {
        "unrecognised binary data"
    }
}

fn codec_name(codec: CodecType) -> String {
    if codec == CODEC_TYPE_OPUS {
        return "opus".into();
    }
    symphonia::default::get_codecs()
        .get_codec(codec)
        .map(|d| d.short_name.to_owned())
        .unwrap_or_else(|| format!("{codec}"))
}

/// Channel count from an Opus identification header ("OpusHead", RFC 7845
/// §5.1), which Matroska carries as codec private data: symphonia 0.5's MKV
/// reader leaves `channels` unset for Opus.
fn opus_head_channels(extra: Option<&[u8]>) -> u32 {
    match extra {
        Some(h) if h.len() >= 19 && h.starts_with(b"OpusHead") => u32::from(h[9]),
        _ => 0,
    }
}

/// AAC AudioSpecificConfig (ISO 14496-3 §1.6.2.1): 5 bits object type,
/// 4 bits sampling index, 4 bits channel configuration (1..=6 = that many
/// channels, 7 = 8 channels).
fn aac_config_channels(extra: Option<&[u8]>) -> u32 {
    match extra {
        Some([b0, b1, ..]) if b0 >> 3 != 31 && (((b0 & 7) << 1) | (b1 >> 7)) != 15 => {
            match (b1 >> 3) & 0x0F {
                7 => 8,
                c => u32::from(c),
            }
        }
        _ => 0,
    }
}

fn channel_count(p: &symphonia::core::codecs::CodecParameters) -> u32 {
    if let Some(c) = p.channels {
        return c.count() as u32;
    }
    if let Some(layout) = p.channel_layout {
        return layout.into_channels().count() as u32;
    }
    let extra = p.extra_data.as_deref();
    if p.codec == CODEC_TYPE_OPUS {
        opus_head_channels(extra)
    } else {
        aac_config_channels(extra)
    }
}

/// What the head probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub container: &'static str,
    pub codec: String,
    pub sample_rate_hz: u32,
    pub channels: u32,
    /// The head alone could not show the audio track (an MP4 whose `moov`
    /// atom follows the audio data); the streaming analyzer decides.
    pub provisional: bool,
}

/// The head of an upload seen as a stream, like the upload itself: readers
/// must not seek to an end they cannot know yet.
struct Head(Cursor<Vec<u8>>);

impl Read for Head {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Seek for Head {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.0.seek(pos)
    }
}

impl MediaSource for Head {
    fn is_seekable(&self) -> bool {
        false
    }
    fn byte_len(&self) -> Option<u64> {
        None
    }
}

/// Top-level MP4 atoms from the start of `head`: (type, size) until the head
/// ends or an atom is malformed.
fn mp4_atoms(head: &[u8]) -> Vec<([u8; 4], u64)> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while let Some(h) = head.get(pos..pos + 8) {
        let size = u64::from(u32::from_be_bytes([h[0], h[1], h[2], h[3]]));
        let kind = [h[4], h[5], h[6], h[7]];
        let size = match size {
            1 => match head.get(pos + 8..pos + 16) {
                Some(l) => u64::from_be_bytes(l.try_into().unwrap_or_default()),
                None => break,
            },
            0 => u64::MAX,
            s => s,
        };
        out.push((kind, size));
        if size < 8 {
            break;
        }
        match pos.checked_add(usize::try_from(size).unwrap_or(usize::MAX)) {
            Some(next) => pos = next,
            None => break,
        }
    }
    out
}

fn open_reader(
    source: Box<dyn MediaSource>,
) -> std::result::Result<Box<dyn FormatReader>, SymError> {
    let mss = MediaSourceStream::new(source, MediaSourceStreamOptions::default());
    let fmt = FormatOptions {
        enable_gapless: false,
        ..Default::default()
    };
    Ok(symphonia::default::get_probe()
        .format(&Hint::new(), mss, &fmt, &MetadataOptions::default())?
        .format)
}

fn describe_track(reader: &dyn FormatReader, container: &'static str) -> Result<(u32, Detected)> {
    let track = reader
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| Error::NotAudio(format!("a {container} container with no audio track")))?;
    let p = &track.codec_params;
    Ok((
        track.id,
        Detected {
            container,
            codec: codec_name(p.codec),
            sample_rate_hz: p.sample_rate.unwrap_or(0),
            channels: channel_count(p),
            provisional: false,
        },
    ))
}

/// Decides from the head of an upload whether it is audio.
pub fn detect(head: &[u8]) -> Result<Detected> {
    let container = sniff(head);
    let reader = match open_reader(Box::new(Head(Cursor::new(head.to_vec())))) {
        Ok(r) => r,
        Err(e) => {
            let atoms = mp4_atoms(head);
            let mdat_before_moov = container == "mp4"
                && atoms.iter().any(|(k, _)| k == b"mdat")
                && !atoms.iter().any(|(k, _)| k == b"moov");
            if mdat_before_moov {
                return Ok(Detected {
                    container,
                    codec: String::new(),
                    sample_rate_hz: 0,
                    channels: 0,
                    provisional: true,
                });
            }
            return Err(match container {
                "wav" | "flac" | "ogg" | "mkv" | "webm" | "mp4" | "mp3" => {
                    Error::NotAudio(format!("a {container} header that cannot be read ({e})"))
                }
                other => Error::NotAudio(other.to_owned()),
            });
        }
    };
    describe_track(reader.as_ref(), container).map(|(_, d)| d)
}

/// Blocking reader over the channel that ingest feeds. Not seekable: the
/// demuxer sees the upload exactly once, in order.
struct ChannelSource {
    rx: Mutex<mpsc::Receiver<Bytes>>,
    current: Bytes,
    position: u64,
}

impl Read for ChannelSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            let next = self
                .rx
                .get_mut()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .blocking_recv();
            match next {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        self.position += n as u64;
        Ok(n)
    }
}

impl Seek for ChannelSource {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        match pos {
            SeekFrom::Current(0) => Ok(self.position),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "stream is not seekable",
            )),
        }
    }
}

impl MediaSource for ChannelSource {
    fn is_seekable(&self) -> bool {
        false
    }
    fn byte_len(&self) -> Option<u64> {
        None
    }
}

/// The streaming second pass. Feed every plaintext byte with [`Analyzer::feed`]
/// in order, then [`Analyzer::finish`].
#[derive(Debug)]
pub struct Analyzer {
    tx: Option<mpsc::Sender<Bytes>>,
    handle: tokio::task::JoinHandle<Result<AudioInfo>>,
}

impl Analyzer {
    pub fn start(detected: Detected) -> Self {
        // A few messages of slack; the demuxer is far faster than the network.
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        // When the demuxer stops (end or damage) it drops the receiver; the
        // channel closes and further feeds return at once, so ingest never
        // waits on a stopped analyzer.
        let handle = tokio::task::spawn_blocking(move || {
            let source = ChannelSource {
                rx: Mutex::new(rx),
                current: Bytes::new(),
                position: 0,
            };
            analyze(source, detected)
        });
        Self {
            tx: Some(tx),
            handle,
        }
    }

    pub async fn feed(&self, data: Bytes) {
        if let Some(tx) = &self.tx {
            // A closed channel means the analyzer finished early; ignore.
            let _ = tx.send(data).await;
        }
    }

    pub async fn finish(mut self) -> Result<AudioInfo> {
        self.tx.take();
        self.handle
            .await
            .map_err(|e| Error::task("audio analysis", e))?
    }
}

/// For an MP4 whose `moov` follows `mdat`: read top-level atoms, skipping the
/// audio data, keep `ftyp` and `moov`, and probe those alone (the `moov`
/// describes every track and its length).
fn analyze_mp4_tail(mut source: ChannelSource, mut info: AudioInfo) -> Result<AudioInfo> {
    const MAX_MOOV: u64 = 64 << 20;
    let mut ftyp = Vec::new();
    let mut moov = Vec::new();
    let mut header = [0u8; 8];
    while source.read_exact(&mut header).is_ok() {
        let kind = [header[4], header[5], header[6], header[7]];
        let mut size = u64::from(u32::from_be_bytes([
            header[0], header[1], header[2], header[3],
        ]));
        let mut head_len = 8u64;
        if size == 1 {
            let mut large = [0u8; 8];
            if source.read_exact(&mut large).is_err() {
                break;
            }
            size = u64::from_be_bytes(large);
            head_len = 16;
        }
        if size != 0 && size < head_len {
            break;
        }
        let body = if size == 0 { u64::MAX } else { size - head_len };
        if (&kind == b"ftyp" || &kind == b"moov") && body <= MAX_MOOV {
            let mut buf = vec![0u8; body as usize];
            if source.read_exact(&mut buf).is_err() {
                break;
            }
            let target = if &kind == b"ftyp" {
                &mut ftyp
            } else {
                &mut moov
            };
            target.extend_from_slice(&header);
            target.extend_from_slice(&buf);
            if &kind == b"moov" {
                break;
            }
        } else if std::io::copy(&mut (&mut source).take(body), &mut std::io::sink())
            .map_or(true, |n| n < body)
        {
            break;
        }
    }
    if ftyp.is_empty() || moov.is_empty() {
        return Err(Error::NotAudio(
            "an mp4 container without a readable moov atom".into(),
        ));
    }
    let mut rebuilt = ftyp;
    rebuilt.extend_from_slice(&moov);
    rebuilt.extend_from_slice(&[0, 0, 0, 8, b'm', b'd', b'a', b't']);
    let reader = open_reader(Box::new(Head(Cursor::new(rebuilt))))
        .map_err(|e| Error::NotAudio(format!("an mp4 container that cannot be read ({e})")))?;
    let (_, d) = describe_track(reader.as_ref(), "mp4")?;
    let track = reader
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL);
    if let Some(p) = track.map(|t| &t.codec_params)
        && let (Some(tb), Some(n)) = (p.time_base, p.n_frames)
    {
        let t = tb.calc_time(n);
        info.duration_ms = t.seconds * 1000 + (t.frac * 1000.0).round() as u64;
    }
    info.codec = d.codec;
    info.sample_rate_hz = d.sample_rate_hz;
    info.channels = d.channels;
    Ok(info)
}

fn analyze(source: ChannelSource, detected: Detected) -> Result<AudioInfo> {
    if detected.provisional {
        let info = AudioInfo {
            container: detected.container.to_owned(),
            ..Default::default()
        };
        return analyze_mp4_tail(source, info);
    }
    Ok(analyze_stream(source, detected))
}

fn analyze_stream(source: ChannelSource, detected: Detected) -> AudioInfo {
    let mut info = AudioInfo {
        container: detected.container.to_owned(),
        codec: detected.codec.clone(),
        sample_rate_hz: detected.sample_rate_hz,
        channels: detected.channels,
        duration_ms: 0,
        warning: None,
    };
    let mut reader = match open_reader(Box::new(source)) {
        Ok(r) => r,
        Err(e) => {
            info.warning = Some(format!("could not demux the stream: {e}"));
            return info;
        }
    };
    let (track_id, time_base, declared_frames) = match reader
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
    {
        Some(t) => (t.id, t.codec_params.time_base, t.codec_params.n_frames),
        None => {
            info.warning = Some("no audio track found while demuxing".into());
            return info;
        }
    };
    let mut end_ts: u64 = 0;
    loop {
        match reader.next_packet() {
            Ok(p) if p.track_id() == track_id => end_ts = end_ts.max(p.ts + p.dur),
            Ok(_) => {}
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            Err(e) => {
                info.warning = Some(format!("damaged audio: {e}"));
                break;
            }
        }
    }
    let to_ms = |ts: u64| match time_base {
        Some(tb) => {
            let t = tb.calc_time(ts);
            t.seconds * 1000 + (t.frac * 1000.0).round() as u64
        }
        None if info.sample_rate_hz > 0 => ts * 1000 / u64::from(info.sample_rate_hz),
        None => 0,
    };
    info.duration_ms = to_ms(end_ts);
    if let Some(declared) = declared_frames {
        // A header that promises more audio than arrived: truncated upload.
        if info.warning.is_none() && declared > end_ts && to_ms(declared - end_ts) > 100 {
            info.warning = Some(format!(
                "incomplete audio (truncated or damaged): header declares {} ms, stream holds {} ms",
                to_ms(declared),
                info.duration_ms
            ));
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_names_common_non_audio() {
        assert_eq!(sniff(b"%PDF-1.7 ..."), "a PDF document");
        assert_eq!(sniff(b"hello world\n"), "text");
        assert_eq!(sniff(&[0x89, b'P', b'N', b'G', 0, 0]), "a PNG image");
        assert_eq!(sniff(&[0u8, 1, 2, 3, 200, 201]), "unrecognised binary data");
    }

    #[test]
    fn detect_rejects_text() {
        let err = detect(b"just some text, not a recording").unwrap_err();
        assert!(
            matches!(err, Error::NotAudio(ref s) if s == "text"),
            "{err}"
        );
    }
}
