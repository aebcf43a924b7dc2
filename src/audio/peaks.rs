//! Waveform peaks: the loudest and quietest sample of every 100 ms of a
//! recording, all channels together, as signed 8-bit values: what a player
//! draws the whole call from without downloading it (about 1.2 KB per
//! minute).
//!
//! The encoding (`docs/FORMAT.md`, "Waveform peaks"): `CVPK`, version 1,
//! the window in ms (u16 BE), the sample rate (u32 BE), the window count
//! (u32 BE), then per window `min` and `max` (i8 each, −127..=127).
//! Decoding is symphonia's (`pcm`), on a blocking thread, from a reader
//! over the recording's chunks that opens them as it goes: nothing is held
//! but a chunk or two and one packet.

use symphonia::core::io::MediaSource;

pub use super::pcm::DecodeError;
use crate::domain::PcmLayout;

/// The window each pair of peaks covers.
pub const WINDOW_MS: u32 = 100;
const MAGIC: &[u8; 4] = b"CVPK";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 2 + 4 + 4;

/// A recording's peaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peaks {
    pub window_ms: u16,
    pub sample_rate_hz: u32,
    /// (min, max) per window, in order.
    pub windows: Vec<(i8, i8)>,
}

impl Peaks {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 2 * self.windows.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.window_ms.to_be_bytes());
        out.extend_from_slice(&self.sample_rate_hz.to_be_bytes());
        out.extend_from_slice(&(self.windows.len() as u32).to_be_bytes());
        for (lo, hi) in &self.windows {
            out.push(*lo as u8);
            out.push(*hi as u8);
        }
        out
    }

    /// The peaks of `bytes`, if they are an encoding of version 1.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (head, body) = (bytes.get(..HEADER_LEN)?, bytes.get(HEADER_LEN..)?);
        if &head[..4] != MAGIC || head[4] != VERSION {
            return None;
        }
        let window_ms = u16::from_be_bytes(head[5..7].try_into().ok()?);
        let sample_rate_hz = u32::from_be_bytes(head[7..11].try_into().ok()?);
        let count = u32::from_be_bytes(head[11..15].try_into().ok()?) as usize;
        if body.len() != 2 * count || window_ms == 0 {
            return None;
        }
        Some(Self {
            window_ms,
            sample_rate_hz,
            windows: body
                .chunks_exact(2)
                .map(|p| (p[0] as i8, p[1] as i8))
                .collect(),
        })
    }
}

/// Decodes the audio `source` yields into peaks; also returns the layout
/// of the full decode (what the WAV rendition of the recording holds).
pub fn compute(source: Box<dyn MediaSource>) -> Result<(Peaks, PcmLayout), DecodeError> {
    let mut acc: Option<Accumulator> = None;
    let layout = super::pcm::decode_all(source, &mut |samples, channels, rate| {
        let acc = acc.get_or_insert_with(|| {
            Accumulator::new((u64::from(rate) * u64::from(WINDOW_MS) / 1000).max(1))
        });
        for frame in samples.chunks_exact(channels) {
            acc.frame(frame);
        }
    })?;
    let acc = acc.unwrap_or_else(|| Accumulator::new(1));
    Ok((acc.finish(layout.rate_hz), layout))
}

/// Min and max per window of frames.
struct Accumulator {
    per_window: u64,
    in_window: u64,
    lo: f32,
    hi: f32,
    windows: Vec<(i8, i8)>,
}

impl Accumulator {
    fn new(per_window: u64) -> Self {
        Self {
            per_window,
            in_window: 0,
            lo: 0.0,
            hi: 0.0,
            windows: Vec::new(),
        }
    }

    fn frame(&mut self, frame: &[f32]) {
        for &s in frame {
            self.lo = self.lo.min(s);
            self.hi = self.hi.max(s);
        }
        self.in_window += 1;
        if self.in_window == self.per_window {
            self.close();
        }
    }

    fn close(&mut self) {
        let q = |v: f32| (v.clamp(-1.0, 1.0) * 127.0).round() as i8;
        self.windows.push((q(self.lo), q(self.hi)));
        self.in_window = 0;
        self.lo = 0.0;
        self.hi = 0.0;
    }

    fn finish(mut self, rate: u32) -> Peaks {
        if self.in_window > 0 {
            self.close();
        }
        Peaks {
            window_ms: WINDOW_MS as u16,
            sample_rate_hz: rate,
            windows: self.windows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_of_a_known_wav() {
        // 2.05 s of 8 kHz mono: silence, then full scale, then half.
        let mut pcm = Vec::new();
        for i in 0..16_400u32 {
            let v: i16 = match i {
                0..8_000 => 0,
                8_000..12_000 => {
                    if i % 2 == 0 {
                        i16::MAX
                    } else {
                        -i16::MAX
                    }
                }
                _ => {
                    if i % 2 == 0 {
                        16_384
                    } else {
                        -16_384
                    }
                }
            };
            pcm.extend_from_slice(&v.to_le_bytes());
        }
        let wav = crate::synth::wav_with_samples(8000, 1, &pcm);
        let (peaks, layout) = compute(Box::new(std::io::Cursor::new(wav))).expect("peaks");
        assert_eq!(layout.frames, 16_400);
        assert_eq!((layout.rate_hz, layout.channels), (8000, 1));
        assert_eq!(peaks.window_ms, 100);
        assert_eq!(peaks.sample_rate_hz, 8000);
        // 20 full windows and one of 400 frames.
        assert_eq!(peaks.windows.len(), 21);
        assert_eq!(peaks.windows[0], (0, 0));
        assert_eq!(peaks.windows[12], (-127, 127));
        assert_eq!(peaks.windows[18], (-64, 64));
        assert_eq!(Peaks::decode(&peaks.encode()), Some(peaks));
    }

    #[test]
    fn what_is_not_an_encoding_is_refused() {
        let good = Peaks {
            window_ms: 100,
            sample_rate_hz: 8000,
            windows: vec![(-1, 1), (-2, 2)],
        }
        .encode();
        assert!(Peaks::decode(&good).is_some());
        assert!(Peaks::decode(&good[..good.len() - 1]).is_none());
        let mut bad = good.clone();
        bad[4] = 2;
        assert!(Peaks::decode(&bad).is_none());
        assert!(Peaks::decode(b"{\"agent\":\"a\"}").is_none());
        assert!(Peaks::decode(b"").is_none());
    }

    #[test]
    fn opus_and_garbage_have_no_peaks() {
        let garbage = vec![0x5au8; 4096];
        assert!(matches!(
            compute(Box::new(std::io::Cursor::new(garbage))),
            Err(DecodeError::Unsupported(_))
        ));
    }
}
