//! Synthetic audio for the demo, the tests and the benches: a generated
//! signal, not a recording of anyone. Real speech fixtures live in
//! `tests/fixtures/`; this is for when the size, rate or channel count must
//! be chosen freely (throughput, limits, many distinct uploads).

/// A 16-bit PCM WAV of `seconds` at `sample_rate` with `channels`
/// interleaved channels: two tones (440 Hz and 1 kHz) plus a little noise
/// from a fixed-seed generator, so the same arguments always give the same
/// bytes. `seconds == 0` gives the 44-byte header alone (its data length 0).
pub fn synth_wav(seconds: u32, sample_rate: u32, channels: u16) -> Vec<u8> {
    let frames = seconds as usize * sample_rate as usize;
    let data_len = frames * channels as usize * 2;
    let mut out = Vec::with_capacity(44 + data_len);
    wav_header(&mut out, sample_rate, channels, data_len);
    let mut noise: u32 = 0x1234_5678;
    for i in 0..frames {
        let t = i as f32 / sample_rate as f32;
        noise ^= noise << 13;
        noise ^= noise >> 17;
        noise ^= noise << 5;
        let n = (noise as f32 / u32::MAX as f32 - 0.5) * 0.05;
        let s = 0.3 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()
            + 0.2 * (2.0 * std::f32::consts::PI * 1000.0 * t).sin()
            + n;
        let v = (s.clamp(-1.0, 1.0) * i16::MAX as f32) as i16;
        for _ in 0..channels {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// The 44-byte header of a 16-bit PCM WAV with `data_len` bytes of data.
pub(crate) fn wav_header(out: &mut Vec<u8>, sample_rate: u32, channels: u16, data_len: usize) {
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&((36 + data_len) as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * u32::from(channels) * 2).to_le_bytes());
    out.extend_from_slice(&(channels * 2).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data_len as u32).to_le_bytes());
}

/// A 16-bit PCM WAV around `pcm` (little-endian interleaved samples).
pub fn wav_with_samples(sample_rate: u32, channels: u16, pcm: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(44 + pcm.len());
    wav_header(&mut out, sample_rate, channels, pcm.len());
    out.extend_from_slice(pcm);
    out
}
