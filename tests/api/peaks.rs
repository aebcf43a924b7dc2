//! Waveform peaks through the HTTP listener: computed by the job, stored
//! sealed, served under the audio's signed URL.

use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;

use crate::helpers::*;
use crate::http_playback::{get, header, stream_url};

/// Waveform peaks: computed by the job from the decrypted audio (a
/// synthetic WAV and ffmpeg's FLAC and MP3), stored sealed beside the
/// chunks, served under the audio's signed URL; none for Opus; pending
/// until the job ran.
#[tokio::test]
async fn waveform_peaks_are_computed_sealed_and_served() {
    use callvault::audio::peaks::Peaks;
    let app = spawn_app_opts(AppOptions {
        http: true,
        // The test runs the job itself, so it sees "pending" first.
        tune: Some(Box::new(|a| {
            a.schedule.peaks_poll = Duration::from_secs(3600);
        })),
        ..AppOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (flac, mp3, opus) = tokio::join!(
        ffmpeg_noise(dir.path(), "p.flac", 20, 8000, 1, &["-c:a", "flac"]),
        ffmpeg_noise(dir.path(), "p.mp3", 20, 16000, 1, &["-c:a", "libmp3lame"]),
        ffmpeg_noise(dir.path(), "p.webm", 20, 16000, 1, &["-c:a", "libopus"]),
    );
    let wav = Bytes::from(callvault::synth::synth_wav(30, 8000, 2));
    let mut ids = Vec::new();
    for (call, audio) in [
        ("pk-wav", wav),
        ("pk-flac", flac),
        ("pk-mp3", mp3),
        ("pk-opus", opus),
    ] {
        let id = app
            .ingest(call, audio)
            .await
            .unwrap()
            .recording
            .unwrap()
            .recording_id;
        ids.push(id);
    }
    let peaks_url = |audio: &str| audio.replace("/audio?", "/peaks?");
    let wav_url = stream_url(&app, &ids[0]).await;
    let res = get(&peaks_url(&wav_url), None).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&res, "retry-after"), "5");
    assert!(res.text().await.unwrap().contains("not computed yet"));

    let settled = callvault::playback::peaks::run_pending(&app.archive)
        .await
        .unwrap();
    assert_eq!(settled, 4);
    let fetch = |id: String| {
        let app = &app;
        async move {
            let url = stream_url(app, &id).await;
            get(&peaks_url(&url), None).await
        }
    };
    // The synthetic WAV: two tones at 0.5 of full scale plus a little noise.
    let res = get(&peaks_url(&wav_url), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "content-type"), "application/octet-stream");
    let peaks = Peaks::decode(&res.bytes().await.unwrap()).expect("peaks");
    assert_eq!((peaks.window_ms, peaks.sample_rate_hz), (100, 8000));
    assert_eq!(peaks.windows.len(), 300);
    for (lo, hi) in &peaks.windows {
        assert!(
            (55..=75).contains(hi) && (-75..=-55).contains(lo),
            "{lo} {hi}"
        );
    }
    // ffmpeg's FLAC and MP3: one window per 100 ms of the 20 s.
    for id in [&ids[1], &ids[2]] {
        let res = fetch(id.clone()).await;
        assert_eq!(res.status(), StatusCode::OK);
        let p = Peaks::decode(&res.bytes().await.unwrap()).expect("peaks");
        assert!(
            (199..=203).contains(&p.windows.len()),
            "{}",
            p.windows.len()
        );
        assert!(p.windows.iter().any(|(lo, hi)| *hi > 10 && *lo < -10));
    }
    // Opus has no decoder here: no waveform, said so.
    let res = fetch(ids[3].clone()).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("no waveform for this format")
    );
    // A wrong signature gets nothing, as for the audio.
    let forged = peaks_url(&wav_url).replace("sig=", "sig=x");
    assert_eq!(get(&forged, None).await.status(), StatusCode::FORBIDDEN);

    // Stored sealed, beside the chunks: no plaintext header in the object.
    let objects = app.dir.path().join("objects");
    let stored: Vec<_> = walk(&objects)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "peaks"))
        .collect();
    assert_eq!(stored.len(), 3);
    for p in &stored {
        let bytes = std::fs::read(p).unwrap();
        assert!(
            !contains_window(&bytes, b"CVPK"),
            "peaks stored in the clear"
        );
    }
    // Nothing left to do: a second pass settles nothing.
    assert_eq!(
        callvault::playback::peaks::run_pending(&app.archive)
            .await
            .unwrap(),
        0
    );
    app.shutdown().await;
}
