//! The analyzer's scheduling properties, on audio built in memory (no tools
//! needed). Real encoders' output is tested in `tests/api/formats.rs`.

use std::time::Duration;

use super::*;

/// A 16-bit mono PCM WAV of a 440 Hz tone.
pub(super) fn pcm_wav(sample_rate: u32, frames: u32, rf64: bool) -> Vec<u8> {
    let data_len = frames * 2;
    let mut out = Vec::new();
    if rf64 {
        out.extend_from_slice(b"RF64\xff\xff\xff\xffWAVEds64");
        out.extend_from_slice(&28u32.to_le_bytes());
        out.extend_from_slice(&u64::from(data_len + 36 + 36).to_le_bytes());
        out.extend_from_slice(&u64::from(data_len).to_le_bytes());
        out.extend_from_slice(&u64::from(frames).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
    } else {
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(data_len + 36).to_le_bytes());
        out.extend_from_slice(b"WAVE");
    }
    out.extend_from_slice(b"fmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    let size_field = if rf64 { u32::MAX } else { data_len };
    out.extend_from_slice(&size_field.to_le_bytes());
    for i in 0..frames {
        let t = f64::from(i) / f64::from(sample_rate);
        let s = ((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16;
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

async fn analyze(audio: &Bytes, piece: usize) -> AudioInfo {
    run(Analyzer::start(detect(audio).unwrap(), audio), audio, piece).await
}

/// [`analyze`] through symphonia's demuxer, whatever the stream.
async fn analyze_demuxed(audio: &Bytes, piece: usize) -> AudioInfo {
    run(Analyzer::demuxing(detect(audio).unwrap()), audio, piece).await
}

async fn run(analyzer: Analyzer, audio: &Bytes, piece: usize) -> AudioInfo {
    for p in (0..audio.len()).step_by(piece) {
        analyzer
            .feed(&audio.slice(p..audio.len().min(p + piece)))
            .await;
    }
    analyzer.finish().await.unwrap().0
}

/// Random bytes are "unrecognised binary data", never a stream that a
/// sync word somewhere inside made look like MP3 or AAC.
#[test]
fn random_bytes_are_never_audio() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..40 {
        let random: Vec<u8> = (0..300_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        match detect(&random) {
            Err(Error::NotAudio(what)) => assert_eq!(what, "unrecognised binary data"),
            other => panic!("random bytes detected as {other:?}"),
        }
    }
}

#[test]
fn detect_rejects_text() {
    let err = detect(b"just some text, not a recording").unwrap_err();
    assert!(
        matches!(err, Error::NotAudio(ref s) if s == "text"),
        "{err}"
    );
}

#[tokio::test]
async fn rf64_is_read_as_the_wav_it_is() {
    // 5 s at 8 kHz, fed in pieces that split the header.
    let wav = Bytes::from(pcm_wav(8000, 40_000, true));
    let d = detect(&wav).unwrap();
    assert_eq!(
        (d.container, d.codec.as_str(), d.sample_rate_hz, d.channels),
        ("wav", "pcm_s16le", 8000, 1)
    );
    for piece in [7, 4096, wav.len()] {
        for info in [
            analyze(&wav, piece).await,
            analyze_demuxed(&wav, piece).await,
        ] {
            assert_eq!((info.duration_ms, info.warning.as_deref()), (5000, None));
        }
    }
}

/// A WAV with any PCM encoding: `frames` frames of `block` bytes declared,
/// `sent` of them (and `tail` bytes of a frame) present, and `after`
/// appended past the `data` chunk. `size` overrides the `data` size field.
struct Wav {
    tag: u16,
    channels: u16,
    rate: u32,
    bits: u16,
    extensible: bool,
    frames: u32,
    sent: u32,
    tail: u32,
    size: Option<u32>,
    after: &'static [u8],
}

impl Wav {
    const PHONE: Self = Self {
        tag: 7,
        channels: 1,
        rate: 8000,
        bits: 8,
        extensible: false,
        frames: 80_000,
        sent: 80_000,
        tail: 0,
        size: None,
        after: b"",
    };

    fn block(&self) -> u32 {
        u32::from(self.channels * self.bits / 8)
    }

    fn bytes(&self) -> Bytes {
        let block = self.block();
        let data_len = self.size.unwrap_or(self.frames * block);
        let mut fmt = Vec::new();
        let tag = if self.extensible { 0xFFFE } else { self.tag };
        for field in [tag, self.channels] {
            fmt.extend_from_slice(&field.to_le_bytes());
        }
        fmt.extend_from_slice(&self.rate.to_le_bytes());
        fmt.extend_from_slice(&(self.rate * block).to_le_bytes());
        for field in [block as u16, self.bits] {
            fmt.extend_from_slice(&field.to_le_bytes());
        }
        if !self.extensible {
            // cbSize: WAVEFORMATEX, which A-law and µ-law require.
            fmt.extend_from_slice(&0u16.to_le_bytes());
        } else {
            // cbSize, valid bits, channel mask, then the subformat GUID
            // (the format tag, then KSDATAFORMAT_SUBTYPE's fixed tail).
            fmt.extend_from_slice(&22u16.to_le_bytes());
            fmt.extend_from_slice(&self.bits.to_le_bytes());
            fmt.extend_from_slice(&((1u32 << self.channels) - 1).to_le_bytes());
            fmt.extend_from_slice(&u32::from(self.tag).to_le_bytes());
            fmt.extend_from_slice(&[
                0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
            ]);
        }
        let mut out = b"RIFF".to_vec();
        let riff = 4 + 8 + fmt.len() as u64 + 8 + u64::from(data_len) + self.after.len() as u64;
        // A pipe's unknown size leaves both fields at 0xFFFFFFFF.
        let riff = u32::try_from(riff).unwrap_or(u32::MAX);
        out.extend_from_slice(&riff.to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
        out.extend_from_slice(&fmt);
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data_len.to_le_bytes());
        let samples = (self.sent * block + self.tail) as usize;
        out.extend((0..samples).map(|i| (i % 253) as u8));
        out.extend_from_slice(self.after);
        Bytes::from(out)
    }

    /// What the stream holds, in whole milliseconds as the analyzer rounds.
    fn held_ms(&self) -> u64 {
        let frames = u64::from(self.sent.min(self.frames));
        let rate = u64::from(self.rate);
        (frames * 1000 + rate / 2) / rate
    }
}

/// PCM in WAV is measured from its byte count, without symphonia, and
/// says what symphonia's demuxer says: every PCM encoding, 1 to 6
/// channels, streams cut mid-frame, chunks after `data`, sizes a pipe left
/// unknown, and headers that promise more than arrived.
#[tokio::test]
async fn pcm_is_measured_from_its_bytes_as_the_demuxer_measures_it() {
    let encodings = [
        (1, 8, false),
        (1, 16, false),
        (1, 24, false),
        (1, 32, false),
        (3, 32, false),
        (3, 64, false),
        (6, 8, false),
        (7, 8, false),
        (1, 16, true),
        (3, 32, true),
    ];
    let mut cases = Vec::new();
    for (tag, bits, extensible) in encodings {
        for channels in [1, 2, 6] {
            cases.push(Wav {
                tag,
                bits,
                extensible,
                channels,
                rate: 16_000,
                frames: 33_333,
                sent: 33_333,
                ..Wav::PHONE
            });
        }
    }
    cases.extend([
        // Cut mid-frame, 2.5 s short of what the header declares.
        Wav {
            sent: 60_000,
            tail: 1,
            ..Wav::PHONE
        },
        // 50 ms short: within what is not called truncated.
        Wav {
            sent: 79_600,
            ..Wav::PHONE
        },
        // A LIST chunk after the samples, which are not counted with them.
        Wav {
            after: b"LIST\x04\0\0\0INFO",
            ..Wav::PHONE
        },
        // A pipe's unknown size: everything after the header is samples.
        Wav {
            size: Some(u32::MAX),
            tail: 0,
            ..Wav::PHONE
        },
        Wav {
            tag: 1,
            bits: 16,
            channels: 2,
            rate: 48_000,
            frames: 1_440_000,
            sent: 1_440_000,
            ..Wav::PHONE
        },
    ]);
    for (i, wav) in cases.iter().enumerate() {
        let bytes = wav.bytes();
        let counted = analyze(&bytes, 4096).await;
        let demuxed = analyze_demuxed(&bytes, 4096).await;
        let label = format!(
            "case {i}: tag {} {} bits x{}{}",
            wav.tag,
            wav.bits,
            wav.channels,
            if wav.extensible { " (extensible)" } else { "" }
        );
        assert!(
            matches!(
                Analyzer::start(detect(&bytes).unwrap(), &bytes).0,
                Pass::Counted(_)
            ),
            "{label}: not counted"
        );
        assert_eq!(counted, demuxed, "{label}");
        assert_eq!(counted.duration_ms, wav.held_ms(), "{label}");
        let short_ms =
            u64::from(wav.frames - wav.sent.min(wav.frames)) * 1000 / u64::from(wav.rate);
        assert_eq!(
            counted.warning.is_some(),
            wav.size.is_none() && short_ms > 100,
            "{label}: {:?}",
            counted.warning
        );
    }
}

/// A stream shorter than one of symphonia's packets, cut short: the
/// demuxer takes the header's word for the first packet's frames, the
/// count takes the bytes'.
#[tokio::test]
async fn a_short_pcm_stream_cut_short_is_measured_by_what_arrived() {
    let wav = Wav {
        frames: 1_200,
        sent: 200,
        ..Wav::PHONE
    };
    let info = analyze(&wav.bytes(), 7).await;
    assert_eq!(info.duration_ms, 25);
    let warning = info.warning.unwrap_or_default();
    assert!(
        warning.contains("header declares 150 ms, stream holds 25 ms"),
        "{warning}"
    );
}

/// What the count cannot measure goes to the demuxer: ADPCM, a block size
/// of zero, a header past the scan's reach.
#[test]
fn what_is_not_plain_pcm_is_demuxed() {
    let zero_block = {
        let mut wav = pcm_wav(8000, 8000, false).to_vec();
        // fmt's nBlockAlign (RIFF header 12, chunk header 8, then 12 in).
        wav[32..34].copy_from_slice(&0u16.to_le_bytes());
        wav
    };
    let long_header = wav_with_junk(300 << 10, 1);
    for (what, wav) in [("zero block", zero_block), ("long header", long_header)] {
        let detected = detect(&wav).unwrap();
        assert!(
            matches!(Analyzer::start(detected, &wav).0, Pass::Demux(_)),
            "{what}"
        );
    }
    // symphonia's ADPCM packets are blocks of many frames, not one.
    let pcm = Bytes::from(pcm_wav(8000, 8000, false));
    let mut adpcm = detect(&pcm).unwrap();
    adpcm.codec = "adpcm_ima_wav".into();
    assert!(matches!(Analyzer::start(adpcm, &pcm).0, Pass::Demux(_)));
}

/// Many uploads trickling in at once, on a runtime whose blocking pool is far
/// smaller than their number: the analyzers must not hold a pool thread while
/// they wait for bytes (they used to, and this deadlocked).
#[test]
fn slow_uploads_hold_no_thread_while_waiting() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // 100 s at 16 kHz: 3.2 MB, so batches also run mid-stream.
    let wav = Bytes::from(pcm_wav(16_000, 1_600_000, false));
    let piece = 4096;
    rt.block_on(async {
        let run = async {
            let analyzers: Vec<_> = (0..64)
                .map(|_| Analyzer::demuxing(detect(&wav).unwrap()))
                .collect();
            for p in (0..wav.len()).step_by(piece) {
                for a in &analyzers {
                    a.feed(&wav.slice(p..wav.len().min(p + piece))).await;
                }
            }
            let mut infos = Vec::new();
            for a in analyzers {
                infos.push(a.finish().await.unwrap().0);
            }
            infos
        };
        let infos = tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .expect("the analyzers deadlocked");
        for info in infos {
            assert_eq!((info.duration_ms, info.warning.as_deref()), (100_000, None));
        }
    });
}

/// EBML element: ID, 8-byte size, body.
fn ebml(id: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = id.to_vec();
    out.push(0x01);
    out.extend_from_slice(&(body.len() as u64).to_be_bytes()[1..]);
    out.extend_from_slice(body);
    out
}

/// A Matroska stream of 16-bit PCM: blocks at 0, 500, 1000 and 2000 ms, the
/// third one `big` bytes long. (The reader gives PCM blocks no duration, so
/// the measured length ends where the last block starts.)
fn mkv_with_block(big: usize) -> Vec<u8> {
    let mut header = ebml(&[0x42, 0x82], b"matroska");
    header.extend(ebml(&[0x42, 0x87], &[4]));
    header.extend(ebml(&[0x42, 0x85], &[2]));
    let mut out = ebml(&[0x1A, 0x45, 0xDF, 0xA3], &header);
    let mut audio = ebml(&[0xB5], &8000f64.to_be_bytes());
    audio.extend(ebml(&[0x9F], &[1]));
    audio.extend(ebml(&[0x62, 0x64], &[16]));
    let mut track = ebml(&[0xD7], &[1]);
    track.extend(ebml(&[0x73, 0xC5], &[1]));
    track.extend(ebml(&[0x83], &[2]));
    track.extend(ebml(&[0x86], b"A_PCM/INT/LIT"));
    track.extend(ebml(&[0xE1], &audio));
    let mut segment = ebml(
        &[0x15, 0x49, 0xA9, 0x66],
        &ebml(&[0x2A, 0xD7, 0xB1], &[0x0F, 0x42, 0x40]),
    );
    segment.extend(ebml(&[0x16, 0x54, 0xAE, 0x6B], &ebml(&[0xAE], &track)));
    let block = |ms: u16, len: usize| {
        let mut b = vec![0x81];
        b.extend_from_slice(&ms.to_be_bytes());
        b.push(0x80);
        b.resize(4 + len, 0x11);
        ebml(&[0xA3], &b)
    };
    let mut cluster = ebml(&[0xE7], &[0]);
    cluster.extend(block(0, 8000));
    cluster.extend(block(500, 8000));
    cluster.extend(block(1000, big));
    cluster.extend(block(2000, 8000));
    segment.extend(ebml(&[0x1F, 0x43, 0xB6, 0x75], &cluster));
    // A Segment of unknown size, as live writers leave it.
    out.extend_from_slice(&[
        0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    out.extend(segment);
    out
}

/// A PCM WAV (8 kHz mono 16-bit, `seconds` long) with a `JUNK` chunk of
/// `junk` bytes between its `fmt ` and `data` chunks.
fn wav_with_junk(junk: usize, seconds: usize) -> Vec<u8> {
    let data = seconds * 16_000;
    let mut out = Vec::with_capacity(44 + junk + 8 + data);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&((4 + 24 + 8 + junk + 8 + data) as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&8_000u32.to_le_bytes());
    out.extend_from_slice(&16_000u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"JUNK");
    out.extend_from_slice(&(junk as u32).to_le_bytes());
    out.resize(out.len() + junk, 0);
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data as u32).to_le_bytes());
    out.extend((0..data).map(|i| (i % 251) as u8));
    out
}

/// The reader is opened over bytes it does not take until it succeeds: a
/// header longer than the first attempt's 64 KiB, fed as a live call feeds
/// it (640-byte pieces), is read on a later attempt, and the audio after it
/// is measured to the last frame. A header past 1 MiB is still refused
/// with its warning.
#[tokio::test]
async fn a_header_longer_than_the_first_open_is_read_on_a_later_one() {
    for junk in [100 << 10, 300 << 10, 900 << 10] {
        let wav = Bytes::from(wav_with_junk(junk, 60));
        for info in [analyze(&wav, 640).await, analyze_demuxed(&wav, 640).await] {
            assert_eq!(
                (info.duration_ms, info.warning.as_deref()),
                (60_000, None),
                "a {junk}-byte JUNK chunk"
            );
        }
    }
    let wav = Bytes::from(wav_with_junk(1_100 << 10, 60));
    let info = analyze_demuxed(&wav, 640).await;
    let warning = info.warning.unwrap_or_default();
    assert!(
        warning.contains("header is larger than the 1 MiB"),
        "{warning}"
    );
}

/// One damaged size field asked symphonia for terabytes, and the failed
/// allocation aborted the process. The guard stops the stream before the
/// element: the recording is measured up to there, with a warning, however
/// the bytes arrive.
#[tokio::test]
async fn a_damaged_matroska_size_stops_the_stream_before_the_element() {
    let mut mkv = mkv_with_block(12_345);
    // The third block's 8-byte size field (12,349: the block's 4 header
    // bytes and its data), made to say 17.6 TB.
    let field = [0xA3, 0x01, 0, 0, 0, 0, 0, 0x30, 0x3D];
    let at = mkv
        .windows(field.len())
        .position(|w| w == field)
        .expect("the block's size field");
    mkv[at + 2..at + 9].copy_from_slice(&[0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00]);
    let mkv = Bytes::from(mkv);
    for piece in [1, 7, 640, 64 << 10, mkv.len()] {
        let info = analyze(&mkv, piece).await;
        let warning = info.warning.unwrap_or_default();
        assert!(
            warning.starts_with("damaged Matroska stream: an element at byte"),
            "pieces of {piece}: {warning}"
        );
        assert_eq!(info.duration_ms, 500, "pieces of {piece}");
    }
}

#[tokio::test]
async fn a_packet_larger_than_the_window_is_kept_with_a_warning() {
    let small = Bytes::from(mkv_with_block(16_000));
    let info = analyze(&small, 64 << 10).await;
    assert_eq!((info.duration_ms, info.warning.as_deref()), (2000, None));
    // 200 KiB in one block, three times any packet of the supported
    // formats, still fits the analyzer's 256 KiB window.
    let large = Bytes::from(mkv_with_block(200 << 10));
    let info = analyze(&large, 64 << 10).await;
    assert_eq!((info.duration_ms, info.warning.as_deref()), (2000, None));
    // 3 MiB in one block: more than the analyzer ever queues while it runs.
    let big = Bytes::from(mkv_with_block(3 << 20));
    let info = tokio::time::timeout(Duration::from_secs(30), analyze(&big, 64 << 10))
        .await
        .expect("the analyzer waited for bytes instead of giving up");
    let warning = info.warning.unwrap_or_default();
    assert!(
        warning.contains("more than 256 KiB ahead at 500 ms"),
        "{warning}"
    );
    assert_eq!(info.duration_ms, 500);
    // Fed whole (the stream has ended), the same block is read.
    let info = analyze(&big, big.len()).await;
    assert_eq!((info.duration_ms, info.warning.as_deref()), (2000, None));
}
