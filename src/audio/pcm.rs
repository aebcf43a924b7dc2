//! Decoding a recording to PCM with symphonia, for the waveform peaks
//! (`peaks`) and the decoded rendition a browser plays when it cannot play
//! the original (`wav_range`): 16-bit little-endian PCM WAV, produced on
//! the fly for any byte range.
//!
//! A byte range of the rendition is a frame range: the reader seeks
//! (accurately) to the range's first frame and the decoder runs from there,
//! so a seek into a two-hour call costs one seek and a few packets, not the
//! hour before it. The rendition's length is the frame count a full decode
//! found (`Layout`, recorded by the peaks job), so every range agrees on
//! it; a decode that ends early is padded with silence, one that runs long
//! is cut.

use symphonia::core::audio::{AudioBufferRef, SampleBuffer};
use symphonia::core::codecs::{CODEC_TYPE_NULL, DecoderOptions};
use symphonia::core::conv::ConvertibleSample;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatReader, SeekMode, SeekTo};
use symphonia::core::io::MediaSource;
use symphonia::core::units::TimeBase;

use crate::domain::PcmLayout;

/// Bytes of the rendition's header (a canonical 44-byte WAV header).
pub const WAV_HEADER_LEN: u64 = 44;

/// Why a recording cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No decoder for the codec here (Opus): no waveform, no rendition.
    #[error("no decoder for this format: {0}")]
    Unsupported(String),
    /// The stream could not be read (the reader failed).
    #[error("the audio could not be read: {0}")]
    Failed(String),
}

/// A format reader and the decoder of its audio track.
pub struct Decoder {
    reader: Box<dyn FormatReader>,
    decoder: Box<dyn symphonia::core::codecs::Decoder>,
    track: u32,
    rate: u32,
    time_base: Option<TimeBase>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("track", &self.track)
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// Probes `source` and opens the decoder of its first audio track.
    pub fn open(source: Box<dyn MediaSource>) -> Result<Self, DecodeError> {
        let reader = super::probe::open_reader(source).map_err(|e| {
            DecodeError::Unsupported(format!("the container could not be read ({e})"))
        })?;
        let track = reader
            .tracks()
            .iter()
            .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            .ok_or_else(|| DecodeError::Unsupported("no audio track".into()))?
            .clone();
        let decoder = symphonia::default::get_codecs()
            .make(&track.codec_params, &DecoderOptions::default())
            .map_err(|e| DecodeError::Unsupported(e.to_string()))?;
        let rate = track
            .codec_params
            .sample_rate
            .filter(|r| *r > 0)
            .ok_or_else(|| DecodeError::Unsupported("no sample rate".into()))?;
        Ok(Self {
            reader,
            decoder,
            track: track.id,
            rate,
            time_base: track.codec_params.time_base,
        })
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// A timestamp of the track as a frame index.
    fn frame_of(&self, ts: u64) -> u64 {
        match self.time_base {
            Some(tb) if !(tb.numer == 1 && tb.denom == self.rate) => {
                let f = u128::from(ts) * u128::from(tb.numer) * u128::from(self.rate)
                    / u128::from(tb.denom.max(1));
                u64::try_from(f).unwrap_or(u64::MAX)
            }
            _ => ts,
        }
    }

    /// A frame index as a timestamp of the track.
    fn ts_of(&self, frame: u64) -> u64 {
        match self.time_base {
            Some(tb) if !(tb.numer == 1 && tb.denom == self.rate) => {
                let t = u128::from(frame) * u128::from(tb.denom)
                    / (u128::from(tb.numer.max(1)) * u128::from(self.rate));
                u64::try_from(t).unwrap_or(u64::MAX)
            }
            _ => frame,
        }
    }

    /// Positions the reader so that the packets that follow cover `frame`
    /// (they may start before it). An error means the reader cannot seek.
    pub fn seek(&mut self, frame: u64) -> Result<(), DecodeError> {
        let to = SeekTo::TimeStamp {
            ts: self.ts_of(frame),
            track_id: self.track,
        };
        self.reader
            .seek(SeekMode::Accurate, to)
            .map_err(|e| DecodeError::Failed(format!("seek: {e}")))?;
        self.decoder.reset();
        Ok(())
    }

    /// The next decoded packet of the track and the frame its timestamp
    /// names; `None` at the end. A damaged packet is skipped.
    pub fn next_decoded(&mut self) -> Result<Option<(u64, AudioBufferRef<'_>)>, DecodeError> {
        loop {
            let packet = match self.reader.next_packet() {
                Ok(p) => p,
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(None);
                }
                Err(SymError::ResetRequired) => return Ok(None),
                Err(e) => return Err(DecodeError::Failed(e.to_string())),
            };
            if packet.track_id() != self.track {
                continue;
            }
            let at = self.frame_of(packet.ts());
            match self.decoder.decode(&packet) {
                // `decode` borrows the decoder for the buffer's lifetime:
                // decode again below, outside the loop, to return it.
                Ok(_) => {}
                Err(SymError::DecodeError(_)) => continue,
                Err(e) => return Err(DecodeError::Failed(e.to_string())),
            }
            return Ok(Some((at, self.decoder.last_decoded())));
        }
    }
}

/// Copies a decoded buffer into `buf` (resized as needed) as interleaved
/// samples; returns the channel count.
pub fn interleave<S: symphonia::core::sample::Sample + ConvertibleSample>(
    decoded: AudioBufferRef<'_>,
    buf: &mut Option<SampleBuffer<S>>,
) -> usize {
    let spec = *decoded.spec();
    let channels = spec.channels.count().max(1);
    let frames = decoded.frames();
    if buf
        .as_ref()
        .is_none_or(|b| b.capacity() < decoded.capacity() * channels)
    {
        *buf = Some(SampleBuffer::new(decoded.capacity() as u64, spec));
    }
    let b = buf.as_mut().expect("just set");
    b.copy_interleaved_ref(decoded);
    debug_assert_eq!(b.samples().len(), frames * channels);
    channels
}

/// The 44-byte header of the rendition of `layout`.
pub fn wav_header(layout: &PcmLayout) -> Vec<u8> {
    let mut out = Vec::with_capacity(WAV_HEADER_LEN as usize);
    crate::synth::wav_header(
        &mut out,
        layout.rate_hz,
        layout.channels,
        usize::try_from(layout.data_bytes()).unwrap_or(usize::MAX),
    );
    out
}

/// Frames decoded (and dropped) before a range's first, at least: two
/// AAC packets, more than three MP3 frames.
const PREROLL_FRAMES: u64 = 4096;

/// How much of the rendition one `emit` call carries at most.
const PIECE: usize = 64 << 10;

/// Writes bytes `start..end` of the WAV rendition of `layout` to `emit`,
/// in pieces of at most 64 KiB, decoding from `open()`'s source; `emit`
/// returns false to stop (the client went away). `open` is called again,
/// to decode from the start, when the reader cannot seek.
pub fn wav_range(
    open: &mut dyn FnMut() -> Box<dyn MediaSource>,
    layout: &PcmLayout,
    start: u64,
    end: u64,
    emit: &mut dyn FnMut(Vec<u8>) -> bool,
) -> Result<(), DecodeError> {
    let end = end.min(layout.wav_bytes());
    if start >= end {
        return Ok(());
    }
    if start < WAV_HEADER_LEN {
        let header = wav_header(layout);
        let piece = header[start as usize..end.min(WAV_HEADER_LEN) as usize].to_vec();
        if !emit(piece) {
            return Ok(());
        }
        if end <= WAV_HEADER_LEN {
            return Ok(());
        }
    }
    let frame_bytes = u64::from(layout.channels) * 2;
    let data_from = start.max(WAV_HEADER_LEN) - WAV_HEADER_LEN;
    let data_to = end - WAV_HEADER_LEN;
    let first = data_from / frame_bytes;
    let mut out = Writer {
        skip: data_from - first * frame_bytes,
        remaining: data_to - data_from,
        piece: Vec::with_capacity(PIECE),
        emit,
        stopped: false,
    };
    let mut decoder = Decoder::open(open())?;
    // The frame the next decoded packet starts at: taken from the packet's
    // timestamp after a seek, counted from 0 otherwise (as the full decode
    // that measured `layout` counted).
    let mut pos: Option<u64> = Some(0);
    // Seek a little before the range: a lossy decoder's first packet after
    // a reset lacks the overlap of the one before it (AAC, MP3), so the
    // frames the range starts with come out as a decode from the start
    // makes them only once it has run a packet or two.
    let preroll = u64::from(layout.rate_hz / 8).max(PREROLL_FRAMES);
    let seek_to = first.saturating_sub(preroll);
    if seek_to > 0 {
        if decoder.seek(seek_to).is_ok() {
            pos = None;
        } else {
            decoder = Decoder::open(open())?;
        }
    }
    let channels = usize::from(layout.channels);
    let mut buf: Option<SampleBuffer<i16>> = None;
    while out.remaining > 0 && !out.stopped {
        let Some((at, decoded)) = decoder.next_decoded()? else {
            break;
        };
        let here = *pos.get_or_insert(at);
        let have = interleave(decoded, &mut buf);
        let samples = buf.as_ref().map(|b| b.samples()).unwrap_or(&[]);
        let frames = (samples.len() / have) as u64;
        pos = Some(here + frames);
        if here + frames <= first {
            continue;
        }
        let skip_frames = first.saturating_sub(here) as usize;
        let mut bytes = Vec::with_capacity(samples.len() / have * channels * 2);
        for frame in samples.chunks_exact(have).skip(skip_frames) {
            for c in 0..channels {
                bytes.extend_from_slice(&frame.get(c).copied().unwrap_or(0).to_le_bytes());
            }
        }
        out.push(&bytes);
    }
    // Shorter than the full decode found (a seek that landed late): silence.
    while out.remaining > 0 && !out.stopped {
        let n = (out.remaining + out.skip).min(PIECE as u64) as usize;
        out.push(&vec![0; n]);
    }
    out.flush();
    Ok(())
}

/// The rendition's data bytes on their way out: `skip` leading bytes (the
/// range starts inside a frame) dropped, at most `remaining` sent.
struct Writer<'e> {
    skip: u64,
    remaining: u64,
    piece: Vec<u8>,
    emit: &'e mut dyn FnMut(Vec<u8>) -> bool,
    stopped: bool,
}

impl Writer<'_> {
    fn push(&mut self, mut bytes: &[u8]) {
        let skipped = self.skip.min(bytes.len() as u64);
        self.skip -= skipped;
        bytes = &bytes[skipped as usize..];
        while !bytes.is_empty() && self.remaining > 0 && !self.stopped {
            let room = PIECE - self.piece.len();
            let n = bytes
                .len()
                .min(room)
                .min(self.remaining.min(PIECE as u64) as usize);
            self.piece.extend_from_slice(&bytes[..n]);
            self.remaining -= n as u64;
            bytes = &bytes[n..];
            if self.piece.len() >= PIECE || self.remaining == 0 {
                self.flush();
            }
        }
    }

    fn flush(&mut self) {
        if !self.piece.is_empty() && !self.stopped {
            let piece = std::mem::replace(&mut self.piece, Vec::with_capacity(PIECE));
            self.stopped = !(self.emit)(piece);
        }
    }
}

/// Decodes all of `source`, handing each packet's interleaved samples (as
/// f32), its channel count and the rate to `each`, and returns the layout of the whole: what the rendition
/// of the recording will be.
pub fn decode_all(
    source: Box<dyn MediaSource>,
    each: &mut dyn FnMut(&[f32], usize, u32),
) -> Result<PcmLayout, DecodeError> {
    let mut decoder = Decoder::open(source)?;
    let rate = decoder.rate();
    let mut buf: Option<SampleBuffer<f32>> = None;
    let mut frames = 0u64;
    let mut channels: Option<usize> = None;
    while let Some((_, decoded)) = decoder.next_decoded()? {
        let have = interleave(decoded, &mut buf);
        let samples = buf.as_ref().map(|b| b.samples()).unwrap_or(&[]);
        channels.get_or_insert(have);
        frames += (samples.len() / have) as u64;
        each(samples, have, rate);
    }
    Ok(PcmLayout {
        frames,
        rate_hz: rate,
        channels: u16::try_from(channels.unwrap_or(1)).unwrap_or(u16::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn source(bytes: &[u8]) -> impl FnMut() -> Box<dyn MediaSource> + '_ {
        move || Box::new(Cursor::new(bytes.to_vec()))
    }

    fn range(wav: &[u8], layout: &PcmLayout, start: u64, end: u64) -> Vec<u8> {
        let mut got = Vec::new();
        wav_range(&mut source(wav), layout, start, end, &mut |p| {
            got.extend_from_slice(&p);
            true
        })
        .expect("range");
        got
    }

    #[test]
    fn a_pcm_wav_renders_as_itself_at_every_range() {
        // 3 s of 8 kHz stereo: a ramp, so every frame is distinct.
        let mut pcm = Vec::new();
        for i in 0..24_000i32 {
            pcm.extend_from_slice(&((i % 30_000) as i16).to_le_bytes());
            pcm.extend_from_slice(&(-(i % 30_000) as i16).to_le_bytes());
        }
        let wav = crate::synth::wav_with_samples(8000, 2, &pcm);
        let layout = decode_all(Box::new(Cursor::new(wav.clone())), &mut |_, _, _| {}).unwrap();
        assert_eq!(
            layout,
            PcmLayout {
                frames: 24_000,
                rate_hz: 8000,
                channels: 2
            }
        );
        assert_eq!(layout.wav_bytes(), wav.len() as u64);
        assert_eq!(range(&wav, &layout, 0, layout.wav_bytes()), wav);
        for (a, b) in [
            (0, 10),
            (10, 44),
            (40, 50),
            (44, 48),
            (45, 47),
            (20_001, 40_003),
            (70_001, 90_002),
        ] {
            assert_eq!(
                range(&wav, &layout, a, b),
                wav[a as usize..b as usize],
                "{a}-{b}"
            );
        }
        let n = wav.len() as u64;
        assert_eq!(range(&wav, &layout, n - 3, n + 10), wav[n as usize - 3..]);
    }

    #[test]
    fn a_client_that_goes_away_stops_the_decode() {
        let wav = crate::synth::wav_with_samples(8000, 1, &vec![7u8; 400_000]);
        let layout = decode_all(Box::new(Cursor::new(wav.clone())), &mut |_, _, _| {}).unwrap();
        let mut pieces = 0;
        wav_range(
            &mut source(&wav),
            &layout,
            0,
            layout.wav_bytes(),
            &mut |_| {
                pieces += 1;
                pieces < 2
            },
        )
        .unwrap();
        assert_eq!(pieces, 2);
    }

    #[test]
    fn a_short_decode_is_padded_with_silence() {
        let wav = crate::synth::wav_with_samples(8000, 1, &[1, 0, 2, 0]);
        let layout = PcmLayout {
            frames: 4,
            rate_hz: 8000,
            channels: 1,
        };
        let got = range(&wav, &layout, 44, 52);
        assert_eq!(got, [1, 0, 2, 0, 0, 0, 0, 0]);
    }
}
