//! The decoded WAV rendition (`?rendition=wav`): what a browser that
//! cannot play the original gets, decoded on the fly, with ranges.

use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;

use crate::helpers::*;
use crate::http_playback::{
    chunks_of, get, header, http, range_plays, remove_chunk_objects, stream_url, wait_for_finish,
};

/// The app of these tests: the test runs the peaks job itself (it records
/// the decoded layout), and listening sessions close quickly.
async fn app() -> TestApp {
    spawn_app_opts(AppOptions {
        http: true,
        tune: Some(Box::new(|a| {
            a.schedule.peaks_poll = Duration::from_secs(3600);
            a.listening = std::sync::Arc::new(callvault::playback::listening::Listening::new(
                Duration::from_millis(300),
                Duration::from_secs(600),
            ));
        })),
        ..AppOptions::default()
    })
    .await
}

async fn ingest(app: &TestApp, call: &str, audio: Bytes) -> String {
    app.ingest(call, audio)
        .await
        .unwrap()
        .recording
        .unwrap()
        .recording_id
}

/// ffmpeg's decode of `file` to 16-bit little-endian PCM: the reference.
async fn ffmpeg_pcm(file: &std::path::Path) -> Vec<u8> {
    let out = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(file)
        .args(["-f", "s16le", "-acodec", "pcm_s16le", "-"])
        .output()
        .await
        .expect("ffmpeg is installed");
    assert!(out.status.success());
    out.stdout
}

/// The signal-to-difference ratio of `got` (bytes `from..` of a
/// rendition) against the same bytes of `whole`, over the whole frames in
/// both, in dB; a range one frame early or late scores far lower.
fn snr_db(got: &[u8], whole: &[u8], from: usize, channels: usize) -> f64 {
    let frame = 2 * channels;
    let first = (from - 44).div_ceil(frame) * frame + 44;
    let skip = first - from;
    let frames = (got.len().saturating_sub(skip)) / frame;
    assert!(frames > 64, "too few whole frames in the range to compare");
    let sample = |b: &[u8], at: usize| f64::from(i16::from_le_bytes([b[at], b[at + 1]]));
    let score = |shift: isize| {
        let (mut signal, mut diff) = (1e-9f64, 1e-9f64);
        for i in 0..frames * channels {
            let w = first as isize + 2 * i as isize + shift * frame as isize;
            if w < 44 || w as usize + 1 >= whole.len() {
                continue;
            }
            let (g, w) = (sample(got, skip + 2 * i), sample(whole, w as usize));
            signal += w * w;
            diff += (g - w) * (g - w);
        }
        10.0 * (signal / diff).log10()
    };
    let here = score(0);
    // Aligned: a shift by one frame is worse.
    assert!(score(1) < here && score(-1) < here, "misaligned");
    here
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// ffmpeg's G.711 (μ-law and A-law) and FLAC decode to exactly the samples
/// ffmpeg decodes; MP3 and AAC (an `.m4a` as ffmpeg writes it, its index
/// after the audio) to the right length; every range form of every one of
/// them is the same bytes as the whole; pending before the job, 404 for
/// Opus, 400 for a rendition that does not exist; audited as such.
#[tokio::test]
async fn the_wav_rendition_is_the_decoded_audio_at_every_range() {
    let app = app().await;
    let dir = tempfile::tempdir().unwrap();
    let formats: [(&str, u32, u32, &[&str]); 6] = [
        ("r.wav", 8000, 2, &["-c:a", "pcm_mulaw"]),
        ("a.wav", 8000, 1, &["-c:a", "pcm_alaw"]),
        ("r.flac", 16000, 1, &["-c:a", "flac"]),
        ("r.mp3", 16000, 1, &["-c:a", "libmp3lame"]),
        ("r.m4a", 16000, 2, &["-c:a", "aac"]),
        ("r.webm", 48000, 1, &["-c:a", "libopus"]),
    ];
    let mut ids = Vec::new();
    for (name, rate, channels, args) in formats {
        let audio = ffmpeg_noise(dir.path(), name, 40, rate, channels, args).await;
        ids.push(ingest(&app, name, audio).await);
    }
    let url = |i: usize| {
        let (app, id) = (&app, ids[i].clone());
        async move {
            let u = stream_url(app, &id).await;
            format!("{u}&rendition=wav")
        }
    };

    // Before the recording was decoded once: ask again shortly.
    let res = get(&url(0).await, None).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&res, "retry-after"), "5");
    assert!(res.text().await.unwrap().contains("being prepared"));
    assert_eq!(
        callvault::playback::peaks::run_pending(&app.archive)
            .await
            .unwrap(),
        6
    );

    for (i, (name, rate, channels, _)) in formats.iter().enumerate().take(5) {
        let u = url(i).await;
        let res = get(&u, None).await;
        assert_eq!(res.status(), StatusCode::OK, "{name}");
        assert_eq!(header(&res, "content-type"), "audio/wav");
        assert_eq!(header(&res, "accept-ranges"), "bytes");
        let etag = header(&res, "etag").to_owned();
        assert!(etag.ends_with(".wav\""), "{etag}");
        let size: usize = header(&res, "content-length").parse().unwrap();
        let whole = res.bytes().await.unwrap();
        assert_eq!(whole.len(), size, "{name}");
        // A canonical 16-bit PCM header that says what follows.
        assert_eq!(&whole[..4], b"RIFF");
        assert_eq!(&whole[8..16], b"WAVEfmt ");
        assert_eq!(le16(&whole, 20), 1, "PCM");
        assert_eq!(u32::from(le16(&whole, 22)), *channels, "{name}");
        assert_eq!(le32(&whole, 24), *rate, "{name}");
        assert_eq!(le16(&whole, 34), 16);
        assert_eq!(&whole[36..40], b"data");
        assert_eq!(le32(&whole, 40) as usize, size - 44);
        assert_eq!(le32(&whole, 4) as usize, size - 8);
        let frames = (size - 44) / (2 * *channels as usize);
        let seconds = frames as f64 / f64::from(*rate);
        assert!((39.9..40.2).contains(&seconds), "{name}: {seconds} s");

        let reference = ffmpeg_pcm(&dir.path().join(name)).await;
        if i < 3 {
            // Lossless: the very samples ffmpeg decodes.
            assert_eq!(reference.len(), size - 44, "{name}");
            assert!(whole[44..] == reference[..], "{name}: samples differ");
        }

        // Every range form is the same bytes as the whole.
        let n = size as u64;
        let mid = n * 7 / 10 + 1;
        for (range, from, to) in [
            ("bytes=0-43".to_owned(), 0, 44),
            ("bytes=40-49".to_owned(), 40, 50),
            (format!("bytes={mid}-{}", mid + 10_000), mid, mid + 10_001),
            (format!("bytes={}-", n - 5_001), n - 5_001, n),
            ("bytes=-777".to_owned(), n - 777, n),
            (format!("bytes={}-{}", n / 3, n / 3 + 3), n / 3, n / 3 + 4),
        ] {
            let res = get(&u, Some(&range)).await;
            assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT, "{name} {range}");
            assert_eq!(
                header(&res, "content-range"),
                format!("bytes {from}-{}/{n}", to - 1)
            );
            let got = res.bytes().await.unwrap();
            assert_eq!(got.len() as u64, to - from);
            // (A range in the first 4,096 frames decodes from the start.)
            // A range too short to compare noise with (a few bytes) has
            // its length checked only.
            if *name == "r.m4a" && from > 44 + 4096 * 4 && to - from < 64 * 4 {
                continue;
            }
            if *name == "r.m4a" && from > 44 + 4096 * 4 {
                // AAC fills some bands with noise from the decoder's own
                // random generator (perceptual noise substitution, ISO/IEC
                // 14496-3 4.6.13): after a seek its noise is other noise.
                // The rest is the same samples at the same instants.
                let snr = snr_db(&got, &whole, from as usize, *channels as usize);
                assert!(snr >= 15.0, "{name} {range}: {snr:.1} dB");
            } else {
                assert!(
                    got[..] == whole[from as usize..to as usize],
                    "{name} {range}: differs from the whole"
                );
            }
        }
        let res = get(&u, Some(&format!("bytes={n}-"))).await;
        assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(header(&res, "content-range"), format!("bytes */{n}"));
        let res = http().head(&u).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "content-length"), n.to_string());
        // If-Range with the rendition's ETag honours the range; with the
        // original's, the whole is sent.
        let res = http()
            .get(&u)
            .header("Range", "bytes=0-3")
            .header("If-Range", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
        let original_etag = etag.replace(".wav", "");
        let res = http()
            .get(&u)
            .header("Range", "bytes=0-3")
            .header("If-Range", &original_etag)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    // Opus: nothing here decodes it (every browser plays it as it is).
    let res = get(&url(5).await, None).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(res.text().await.unwrap().contains("no decoded rendition"));
    // A rendition that does not exist.
    let u = url(0).await.replace("rendition=wav", "rendition=flac");
    let res = get(&u, None).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    // The listening sessions say they read the rendition.
    let finished = wait_for_finish(&app, 5).await;
    assert!(
        finished
            .iter()
            .all(|e| e.details.get("rendition").is_some_and(|v| v == "wav")),
        "{finished:?}"
    );
    app.shutdown().await;
}

/// A seek into the rendition of a 30-minute G.711 call reads the head of
/// the recording and the chunks under the seek, nothing else: with every
/// other chunk object gone, minute 20 still plays, and is what it was.
#[tokio::test]
async fn a_rendition_seek_reads_only_the_chunks_under_it() {
    let app = app().await;
    let dir = tempfile::tempdir().unwrap();
    let audio = ffmpeg_noise(
        dir.path(),
        "long.wav",
        30 * 60,
        8000,
        2,
        &["-c:a", "pcm_mulaw"],
    )
    .await;
    let id = ingest(&app, "long-call", audio.clone()).await;
    callvault::playback::peaks::run_pending(&app.archive)
        .await
        .unwrap();
    let u = format!("{}&rendition=wav", stream_url(&app, &id).await);
    // Minute 20 of the rendition: 44 header bytes, 4 bytes per frame.
    let at = 44 + 20 * 60 * 8000 * 4 + 2;
    let range = format!("bytes={at}-{}", at + 40_000 - 1);
    let before = get(&u, Some(&range)).await.bytes().await.unwrap();
    assert_eq!(before.len(), 40_000);

    // The original bytes under it: 1 byte per μ-law sample, after the
    // original's own header.
    let header_len = audio.windows(4).position(|w| w == b"data").unwrap() as u64 + 8;
    let from = header_len + (at - 44 - 2) / 2;
    let to = from + 20_000;
    let chunks = chunks_of(&app, &id).await;
    let size = u64::from(chunks[0].plaintext_size);
    let needed = [0, from / size, to / size];
    assert!(chunks.len() > 100, "{}", chunks.len());
    remove_chunk_objects(&app, &chunks, |i| !needed.contains(&u64::from(i)));
    let res = get(&u, Some(&range)).await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.bytes().await.unwrap(), before);
    // Minute 25 needs a chunk that is gone: it fails.
    let at = 44 + 25 * 60 * 8000 * 4;
    assert!(
        !range_plays(&u, &format!("bytes={at}-{}", at + 1000)).await,
        "a rendition range over a missing chunk played"
    );
    app.shutdown().await;
}

/// An ingest that commits on a node running the peaks job wakes it: the
/// waveform and the rendition are there in moments, not at the next poll
/// (an hour away here).
#[tokio::test]
async fn a_new_recording_is_decoded_as_soon_as_it_commits() {
    let app = spawn_app_opts(AppOptions {
        http: true,
        tune: Some(Box::new(|a| {
            a.schedule.peaks_poll = Duration::from_secs(3600);
            a.schedule.peaks_on_commit = true;
        })),
        ..AppOptions::default()
    })
    .await;
    // Let the job's first pass (at start-up) go by.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let audio = Bytes::from(callvault::synth::synth_wav(20, 8000, 1));
    let id = ingest(&app, "fresh-call", audio).await;
    let u = stream_url(&app, &id).await;
    let wav = format!("{u}&rendition=wav");
    let mut ready = false;
    for _ in 0..50 {
        if http().head(&wav).send().await.unwrap().status() == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ready,
        "the rendition was not ready within 5 s of the commit"
    );
    let peaks = get(&u.replace("/audio?", "/peaks?"), None).await;
    assert_eq!(peaks.status(), StatusCode::OK);
    app.shutdown().await;
}
