//! What symphonia says about a stream: the format reader, the audio track's
//! codec, rate and channels, and timestamps in milliseconds.

use std::io::{Cursor, Read, Seek, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind};

use symphonia::core::codecs::{CODEC_TYPE_NULL, CODEC_TYPE_OPUS, CodecParameters, CodecType};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader, Track};
use symphonia::core::io::{MediaSource, MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;
use symphonia::core::units::TimeBase;

use super::Detected;
use crate::error::{Error, Result};

/// Bytes already in memory seen as a stream, like the upload itself: readers
/// must not seek to an end they cannot know yet.
pub(super) struct Memory(Cursor<Vec<u8>>);

impl Memory {
    pub(super) fn new(bytes: Vec<u8>) -> Self {
        Self(Cursor::new(bytes))
    }
}

impl Read for Memory {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Seek for Memory {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.0.seek(pos)
    }
}

impl MediaSource for Memory {
    fn is_seekable(&self) -> bool {
        false
    }
    fn byte_len(&self) -> Option<u64> {
        None
    }
}

/// symphonia's probe and the reader it picks. A panic in the reader (a bug
/// on malformed input) is a read error like any other: it must not take the
/// upload's task down with it.
pub(super) fn open_reader(
    source: Box<dyn MediaSource>,
) -> std::result::Result<Box<dyn FormatReader>, SymError> {
    let mss = MediaSourceStream::new(source, MediaSourceStreamOptions::default());
    let fmt = FormatOptions {
        enable_gapless: false,
        ..Default::default()
    };
    let probe = || {
        symphonia::default::get_probe().format(&Hint::new(), mss, &fmt, &MetadataOptions::default())
    };
    match catch_unwind(AssertUnwindSafe(probe)) {
        Ok(probed) => Ok(probed?.format),
        Err(_) => Err(SymError::DecodeError(
            "the format reader failed on this input",
        )),
    }
}

/// The first track with a codec symphonia knows: the one every probe reports.
pub(super) fn audio_track(reader: &dyn FormatReader) -> Option<&Track> {
    reader
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
}

pub(super) fn describe_track<'r>(
    reader: &'r dyn FormatReader,
    container: &'static str,
) -> Result<(&'r Track, Detected)> {
    let track = audio_track(reader).ok_or_else(|| {
        Error::NotAudio(format!("{} container with no audio track", a(container)))
    })?;
    let p = &track.codec_params;
    // Opus always decodes at 48 kHz (RFC 7845 §5.1); containers may instead
    // carry the rate the encoder was fed (ffmpeg's Matroska does).
    let sample_rate = if p.codec == CODEC_TYPE_OPUS {
        Some(48_000)
    } else {
        p.sample_rate
    };
    Ok((
        track,
        Detected {
            container,
            codec: codec_name(p.codec),
            sample_rate_hz: sample_rate.unwrap_or(0),
            channels: channel_count(p),
            provisional: false,
        },
    ))
}

/// A container's name with its article, for messages: "an mp3", "a wav".
pub(super) fn a(container: &str) -> String {
    let article = if container.starts_with(['m', 'o']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {container}")
}

/// The duration of a stream measured to `end_ts`, and the truncation
/// warning when its header `declared` more than 100 ms beyond that.
pub(super) fn measured(
    time_base: Option<TimeBase>,
    sample_rate_hz: u32,
    end_ts: u64,
    declared: Option<u64>,
) -> (u64, Option<String>) {
    let ms = |ts| to_ms(time_base, sample_rate_hz, ts);
    let duration_ms = ms(end_ts);
    let warning = declared
        .filter(|&declared| declared > end_ts && ms(declared - end_ts) > 100)
        .map(|declared| {
            super::truncation_warning(&format!(
                "header declares {} ms, stream holds {duration_ms} ms",
                ms(declared)
            ))
        });
    (duration_ms, warning)
}

/// `ts` in `time_base` units (or frames at `sample_rate_hz` when the reader
/// gives no time base) as whole milliseconds.
pub(super) fn to_ms(time_base: Option<TimeBase>, sample_rate_hz: u32, ts: u64) -> u64 {
    match time_base {
        Some(tb) => {
            let t = tb.calc_time(ts);
            t.seconds * 1000 + (t.frac * 1000.0).round() as u64
        }
        None if sample_rate_hz > 0 => ts * 1000 / u64::from(sample_rate_hz),
        None => 0,
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

fn channel_count(p: &CodecParameters) -> u32 {
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
