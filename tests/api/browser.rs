//! The supervisor page in real Chromium (Debian's `chromium`, headless,
//! driven through `chromedriver` with fantoccini): sign in, search, open a
//! 30-minute G.711 call and FLAC, MP3 and Opus/WebM recordings made by
//! ffmpeg at its default settings, play, seek to minute 20, and check both
//! that playback goes on from there and that the server was asked for a
//! range starting near minute 20's byte. An expired link makes the page say
//! so.

use std::time::{Duration, Instant};

use callvault::audit::event::Action;
use callvault::playback::listening::Listening;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::audit::{events, of};
use crate::helpers::*;

/// chromedriver on a free loopback port, and a headless Chromium session.
struct Browser {
    driver: tokio::process::Child,
    client: Client,
}

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--autoplay-policy=no-user-gesture-required",
                    "--window-size=1280,900",
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("chromedriver did not start a session: {e}"),
            }
        };
        Browser { driver, client }
    }

    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Polls `script` (which returns a boolean) until true, or fails after
    /// `limit` saying `what`.
    async fn until(&self, what: &str, limit: Duration, script: &str) {
        let deadline = Instant::now() + limit;
        loop {
            if self.js(script).await == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let state = self
                    .js("const a = document.getElementById('audio'); return {t: a.currentTime, paused: a.paused, err: a.error && a.error.code, state: a.readyState, net: a.networkState, msg: document.getElementById('p-error').textContent};")
                    .await;
                panic!("timed out waiting for {what}; page state: {state}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill().await;
    }
}

struct Call {
    call_id: &'static str,
    id: String,
    size: u64,
    duration_s: f64,
    /// Where minute 20 starts, in bytes, as the container lays it out
    /// (exact for PCM; proportional, within the tolerance, for the others).
    minute_20_byte: u64,
}

#[tokio::test]
async fn the_supervisor_page_plays_and_seeks_in_chromium() {
    require!(Chromium);
    let app = spawn_app_opts(AppOptions {
        http: true,
        tune: Some(Box::new(|a| {
            a.listening = std::sync::Arc::new(Listening::new(
                Duration::from_secs(1),
                Duration::from_secs(600),
            ))
        })),
        ..AppOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (wav, flac, mp3, webm) = tokio::join!(
        // Agent and customer on their own channels, as contact centers record.
        ffmpeg_noise(
            dir.path(),
            "g711.wav",
            30 * 60,
            8000,
            2,
            &["-c:a", "pcm_mulaw"]
        ),
        ffmpeg_noise(dir.path(), "call.flac", 21 * 60, 8000, 1, &["-c:a", "flac"]),
        ffmpeg_noise(
            dir.path(),
            "call.mp3",
            21 * 60,
            16000,
            1,
            &["-c:a", "libmp3lame"]
        ),
        ffmpeg_noise(
            dir.path(),
            "call.webm",
            21 * 60,
            16000,
            1,
            &["-c:a", "libopus"]
        ),
    );
    let mut calls = Vec::new();
    for (call_id, audio, minutes) in [
        ("g711-30min", wav, 30.0),
        ("flac-21min", flac, 21.0),
        ("mp3-21min", mp3, 21.0),
        ("opus-21min", webm, 21.0),
    ] {
        let size = audio.len() as u64;
        let res = app
            .client(&app.ingest_token)
            .await
            .ingest_stream(
                header(call_id),
                callvault::client::pieces(audio.clone(), 256 * 1024),
            )
            .await
            .unwrap();
        let duration_s: f64 = minutes * 60.0;
        let minute_20_byte = if call_id.starts_with("g711") {
            // μ-law stereo: 16,000 bytes a second after the header.
            let data = contains_at(&audio, b"data").unwrap() as u64 + 8;
            data + 1200 * 16_000
        } else {
            (size as f64 * 1200.0 / duration_s) as u64
        };
        calls.push(Call {
            call_id,
            id: res.recording.unwrap().recording_id,
            size,
            duration_s,
            minute_20_byte,
        });
    }

    let browser = Browser::start().await;
    let c = &browser.client;
    let base = app.http_addr.clone().unwrap();
    c.goto(&format!("{base}/")).await.unwrap();
    // The page runs under its CSP with no inline script: it must work.
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(&app.supervisor_token)
        .await
        .unwrap();
    click(c, Locator::Css("#signin-form button")).await;
    browser
        .until(
            "the search results",
            Duration::from_secs(15),
            "return document.querySelectorAll('#results tbody tr').length === 4;",
        )
        .await;
    // The token is nowhere but in the page's memory.
    let stored = browser
        .js("return [localStorage.length, sessionStorage.length, document.cookie, location.href, document.getElementById('token').value];")
        .await;
    assert_eq!(stored, json!([0, 0, "", format!("{base}/"), ""]));

    for call in &calls {
        // Open it from the results list, as a supervisor would.
        c.find(Locator::Css(&format!(
            "#results tbody tr[data-id='{}']",
            call.id
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
        browser
            .until(
                &format!("{} to load", call.call_id),
                Duration::from_secs(20),
                "const a = document.getElementById('audio'); return !document.getElementById('player').hidden && a.readyState >= 1;",
            )
            .await;
        let msg = browser
            .js("return document.getElementById('p-error').textContent;")
            .await;
        assert_eq!(msg, json!(""), "{}: {msg}", call.call_id);
        click(c, Locator::Id("play")).await;
        browser
            .until(
                &format!("{} to play", call.call_id),
                Duration::from_secs(20),
                "const a = document.getElementById('audio'); return !a.paused && a.currentTime > 0.3;",
            )
            .await;
        // Seek to minute 20 by clicking the bar where minute 20 is.
        let frac = 1200.0 / call.duration_s;
        browser
            .js(&format!(
                "const w = document.getElementById('wave'); const r = w.getBoundingClientRect(); \
                 window.__seekX = Math.round(r.left + r.width * {frac}); window.__seekY = Math.round(r.top + r.height / 2); return true;"
            ))
            .await;
        let xy = browser.js("return [window.__seekX, window.__seekY];").await;
        let (x, y) = (xy[0].as_i64().unwrap(), xy[1].as_i64().unwrap());
        click_at(c, x, y).await;
        browser
            .until(
                &format!("{} to play on from minute 20", call.call_id),
                Duration::from_secs(30),
                "const a = document.getElementById('audio'); return a.currentTime > 1200.5 && a.currentTime < 1230 && !a.paused;",
            )
            .await;
        let t = browser
            .js("return document.getElementById('audio').currentTime;")
            .await;
        assert!(t.as_f64().unwrap() >= 1199.0, "{}: {t}", call.call_id);
        if call.call_id.starts_with("g711") {
            // The waveform: 30 minutes of 100 ms windows, drawn from the
            // peaks the server computed after ingest.
            browser
                .until(
                    "the waveform",
                    Duration::from_secs(30),
                    "return document.getElementById('wave').dataset.windows === '18000';",
                )
                .await;
            // The keys: → is 5 s on, > and < change the speed.
            let before = t.as_f64().unwrap();
            let body = c.find(Locator::Css("body")).await.unwrap();
            body.send_keys("\u{E014}").await.unwrap();
            let after = browser
                .js("return document.getElementById('audio').currentTime;")
                .await
                .as_f64()
                .unwrap();
            assert!(after >= before + 4.5, "→ moved from {before} to {after}");
            body.send_keys(">").await.unwrap();
            assert_eq!(
                browser
                    .js("return document.getElementById('audio').playbackRate;")
                    .await,
                json!(1.25)
            );
            body.send_keys("<").await.unwrap();
            assert_eq!(
                browser
                    .js("return document.getElementById('audio').playbackRate;")
                    .await,
                json!(1)
            );
            let clock = browser
                .js("return [document.getElementById('time').textContent, document.getElementById('duration').textContent];")
                .await;
            assert_eq!(clock[1], json!("30:00"), "{clock}");
            assert!(clock[0].as_str().unwrap().starts_with("20:"), "{clock}");
        }
        click(c, Locator::Id("back-to-list")).await;
    }

    // The decoded rendition, as the page plays it where the browser
    // cannot play the original: forced here (this Chromium plays them all).
    // Dragging on the waveform from minute 5 to minute 20 seeks there.
    let g711 = &calls[0];
    browser
        .js(&format!(
            "window.callvault.open('{}', {{rendition: 'wav'}}); return true;",
            g711.id
        ))
        .await;
    browser
        .until(
            "the decoded rendition to load",
            Duration::from_secs(60),
            "const a = document.getElementById('audio'); return a.readyState >= 1 && a.src.includes('rendition=wav');",
        )
        .await;
    assert!(
        browser
            .js("return document.getElementById('p-meta').textContent;")
            .await
            .as_str()
            .unwrap()
            .contains("decoded WAV")
    );
    assert_eq!(
        browser
            .js("return Math.round(document.getElementById('audio').duration);")
            .await,
        json!(1800)
    );
    click(c, Locator::Id("play")).await;
    browser
        .until(
            "the rendition to play",
            Duration::from_secs(20),
            "const a = document.getElementById('audio'); return !a.paused && a.currentTime > 0.3;",
        )
        .await;
    let at = |minute: f64| {
        format!(
            "const r = document.getElementById('wave').getBoundingClientRect(); \
             return [Math.round(r.left + r.width * {}), Math.round(r.top + r.height / 2)];",
            minute / 30.0
        )
    };
    let from = browser.js(&at(5.0)).await;
    let to = browser.js(&at(20.0)).await;
    drag(
        c,
        (from[0].as_i64().unwrap(), from[1].as_i64().unwrap()),
        (to[0].as_i64().unwrap(), to[1].as_i64().unwrap()),
    )
    .await;
    browser
        .until(
            "the rendition to play on from minute 20",
            Duration::from_secs(30),
            "const a = document.getElementById('audio'); return a.currentTime > 1200.5 && a.currentTime < 1230 && !a.paused;",
        )
        .await;

    // Download asks why; the reason is in the audit trail with the link.
    click(c, Locator::Id("download")).await;
    c.send_alert_text("complaint 4711 review").await.unwrap();
    c.accept_alert().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = events(&app).await;
        let issued = of(&all, Action::PlaybackUrlIssued).into_iter().any(|e| {
            e.recordings == vec![g711.id.clone()]
                && e.details.get("purpose").is_some_and(|v| v == "download")
                && e.details
                    .get("reason")
                    .is_some_and(|v| v == "complaint 4711 review")
        });
        if issued {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no download link issued with the reason"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // An expired link: the page says so instead of failing silently.
    browser
        .js(&format!(
            "window.callvault.open('{}', {{ttl: 10}}); return true;",
            g711.id
        ))
        .await;
    browser
        .until(
            "the short-lived link to load",
            Duration::from_secs(20),
            "return document.getElementById('audio').readyState >= 1;",
        )
        .await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    browser
        .js("const a = document.getElementById('audio'); a.currentTime = 1500; a.play().catch(() => {}); return true;")
        .await;
    browser
        .until(
            "the expiry message",
            Duration::from_secs(30),
            "return document.getElementById('p-error').textContent.includes('expired');",
        )
        .await;
    let msg = browser
        .js("return document.getElementById('p-error').textContent;")
        .await;
    assert!(
        msg.as_str()
            .unwrap()
            .starts_with("Playback stopped: the link expired at 20"),
        "{msg}"
    );
    assert_eq!(
        browser
            .js("return !document.getElementById('renew').hidden;")
            .await,
        json!(true)
    );

    // Leave the page: its connections close and the listening sessions
    // with them; their finish events say which ranges the server sent.
    c.goto("about:blank").await.unwrap();
    browser.stop().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    // The rendition's session: a request started near minute 20 of the
    // decoded WAV (44 header bytes, 32,000 bytes a second).
    let rendition_starts = loop {
        let all = events(&app).await;
        let done: Vec<String> = of(&all, Action::PlaybackFinished)
            .into_iter()
            .filter(|e| e.details.get("rendition").is_some_and(|v| v == "wav"))
            .filter_map(|e| e.details.get("request_starts")?.as_str().map(str::to_owned))
            .collect();
        if !done.is_empty() || Instant::now() > deadline {
            break done.join(",");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let minute_20 = 44 + 1200 * 32_000u64;
    assert!(
        rendition_starts
            .split(',')
            .filter_map(|r| r.parse::<u64>().ok())
            .any(|s| s.abs_diff(minute_20) <= 128 * 1024),
        "no rendition request started near byte {minute_20}: {rendition_starts}"
    );
    for call in &calls {
        let ranges = loop {
            let all = events(&app).await;
            let done: Vec<String> = of(&all, Action::PlaybackFinished)
                .into_iter()
                .filter(|e| e.recordings == vec![call.id.clone()])
                .filter_map(|e| e.details.get("request_starts")?.as_str().map(str::to_owned))
                .collect();
            if !done.is_empty() || Instant::now() > deadline {
                break done.join(",");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let starts: Vec<u64> = ranges.split(',').filter_map(|r| r.parse().ok()).collect();
        eprintln!(
            "{}: {} bytes, minute 20 at byte {}, requests started at {ranges}",
            call.call_id, call.size, call.minute_20_byte
        );
        let tolerance = if call.call_id.starts_with("g711") {
            // Chromium asks for the byte it computed; allow a block.
            64 * 1024
        } else {
            call.size / 20
        };
        assert!(
            starts
                .iter()
                .any(|s| s.abs_diff(call.minute_20_byte) <= tolerance),
            "{}: no request started near byte {} (minute 20) of {}; requests started at: {ranges}",
            call.call_id,
            call.minute_20_byte,
            call.size
        );
    }
    app.shutdown().await;
}

/// Clicks the element `at`.
async fn click(c: &Client, at: Locator<'_>) {
    c.find(at).await.unwrap().click().await.unwrap();
}

/// A real pointer click at viewport coordinates (WebDriver actions).
async fn click_at(c: &Client, x: i64, y: i64) {
    use fantoccini::actions::{InputSource, MouseActions, PointerAction};
    let mouse = MouseActions::new("mouse".into())
        .then(PointerAction::MoveTo {
            duration: None,
            x: x as _,
            y: y as _,
        })
        .then(PointerAction::Down {
            button: fantoccini::actions::MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Up {
            button: fantoccini::actions::MOUSE_BUTTON_LEFT,
        });
    c.perform_actions(mouse).await.unwrap();
}

/// A real pointer drag between viewport coordinates.
async fn drag(c: &Client, from: (i64, i64), to: (i64, i64)) {
    use fantoccini::actions::{InputSource, MouseActions, PointerAction};
    let step = |(x, y): (i64, i64)| PointerAction::MoveTo {
        duration: Some(Duration::from_millis(100)),
        x: x as _,
        y: y as _,
    };
    let mid = ((from.0 + to.0) / 2, (from.1 + to.1) / 2);
    let mouse = MouseActions::new("mouse".into())
        .then(step(from))
        .then(PointerAction::Down {
            button: fantoccini::actions::MOUSE_BUTTON_LEFT,
        })
        .then(step(mid))
        .then(step(to))
        .then(PointerAction::Up {
            button: fantoccini::actions::MOUSE_BUTTON_LEFT,
        });
    c.perform_actions(mouse).await.unwrap();
}

fn contains_at(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
