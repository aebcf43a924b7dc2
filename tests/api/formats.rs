//! The probe against what real encoders write with their default settings,
//! generated during the run into a temporary directory (nothing generated is
//! committed): every container and codec of SPEC §7, phone-call speech
//! (8 kHz mono) plus wideband and 48 kHz stereo, compared with `ffprobe`.
//!
//! Needs ffmpeg (with ffprobe, libopus), sox, lame, flac, vorbis-tools,
//! opus-tools and espeak-ng. Without them the tests print `skipped: <tool> not
//! installed` and pass, unless `CI` is set, where a missing tool fails.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use callvault::audio::{self, Analyzer};
use callvault::catalog::AudioInfo;
use futures::StreamExt;
use tonic::Code;

use crate::helpers::*;

/// The source a file is encoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// espeak-ng speech at 8 kHz mono, 8.5 s: a phone call.
    Phone,
    /// The same at 16 kHz stereo.
    Wide,
    /// Three times the speech at 48 kHz stereo, 25.6 s (4.9 MB as PCM).
    Studio,
}

impl Source {
    fn file(self) -> &'static str {
        match self {
            Source::Phone => "phone.wav",
            Source::Wide => "wide.wav",
            Source::Studio => "studio.wav",
        }
    }
}

const IN: &str = "{in}";
const OUT: &str = "{out}";
/// As the last argument: the tool writes to stdout, which becomes the file.
const STDOUT: &str = "pipe:1";

/// One file as a real encoder writes it.
#[derive(Debug)]
struct Encoding {
    file: &'static str,
    source: Source,
    tool: &'static str,
    args: &'static [&'static str],
    container: &'static str,
    codec: &'static str,
}

const fn enc(
    file: &'static str,
    source: Source,
    tool: &'static str,
    args: &'static [&'static str],
    (container, codec): (&'static str, &'static str),
) -> Encoding {
    Encoding {
        file,
        source,
        tool,
        args,
        container,
        codec,
    }
}

use Source::*;

#[rustfmt::skip]
const ENCODINGS: &[Encoding] = &[
    // ffmpeg's WAV carries a LIST/INFO chunk before `data`.
    enc("ffmpeg.wav", Phone, "ffmpeg", &["-i", IN, OUT], ("wav", "pcm_s16le")),
    enc("ffmpeg_mulaw.wav", Phone, "ffmpeg", &["-i", IN, "-c:a", "pcm_mulaw", OUT], ("wav", "pcm_mulaw")),
    enc("ffmpeg_alaw.wav", Phone, "ffmpeg", &["-i", IN, "-c:a", "pcm_alaw", OUT], ("wav", "pcm_alaw")),
    enc("sox_mulaw.wav", Phone, "sox", &[IN, "-e", "u-law", OUT], ("wav", "pcm_mulaw")),
    enc("sox_alaw.wav", Phone, "sox", &[IN, "-e", "a-law", OUT], ("wav", "pcm_alaw")),
    // JUNK (the RF64 reservation), bext (broadcast metadata) and LIST before `data`.
    enc("bext.wav", Phone, "ffmpeg", &["-i", IN, "-write_bext", "1", "-rf64", "auto", "-metadata", "comment=agent 7", OUT], ("wav", "pcm_s16le")),
    enc("rf64.wav", Phone, "ffmpeg", &["-i", IN, "-rf64", "always", OUT], ("wav", "pcm_s16le")),
    // Written to a pipe, the sizes stay 0xFFFFFFFF.
    enc("piped.wav", Phone, "ffmpeg", &["-i", IN, "-f", "wav", STDOUT], ("wav", "pcm_s16le")),
    enc("sox_48k.wav", Studio, "sox", &[IN, OUT], ("wav", "pcm_s16le")),
    enc("cbr.mp3", Phone, "lame", &[IN, OUT], ("mp3", "mp3")),
    enc("vbr_no_xing.mp3", Phone, "lame", &["-V2", "-t", IN, OUT], ("mp3", "mp3")),
    enc("48k.mp3", Studio, "lame", &[IN, OUT], ("mp3", "mp3")),
    enc("phone.flac", Phone, "flac", &[IN, "-o", OUT], ("flac", "flac")),
    enc("48k.flac", Studio, "flac", &[IN, "-o", OUT], ("flac", "flac")),
    enc("phone.ogg", Phone, "oggenc", &[IN, "-o", OUT], ("ogg", "vorbis")),
    enc("16k.ogg", Wide, "oggenc", &[IN, "-o", OUT], ("ogg", "vorbis")),
    enc("phone.opus", Phone, "opusenc", &[IN, OUT], ("ogg", "opus")),
    enc("48k.opus", Studio, "opusenc", &[IN, OUT], ("ogg", "opus")),
    // To a pipe, ffmpeg's WebM has no Cues and no duration.
    enc("piped.webm", Phone, "ffmpeg", &["-i", IN, "-c:a", "libopus", "-f", "webm", STDOUT], ("webm", "opus")),
    enc("16k.mkv", Wide, "ffmpeg", &["-i", IN, "-c:a", "libopus", OUT], ("mkv", "opus")),
    // ffmpeg's default: ftyp, free, mdat, then moov at the end.
    enc("moov_last.m4a", Phone, "ffmpeg", &["-i", IN, OUT], ("mp4", "aac")),
    enc("faststart.m4a", Phone, "ffmpeg", &["-i", IN, "-movflags", "+faststart", OUT], ("mp4", "aac")),
    enc("48k.m4a", Studio, "ffmpeg", &["-i", IN, OUT], ("mp4", "aac")),
];

const SPEECH: &str = "Thank you for calling. Your call may be recorded for quality and \
                      training purposes. Please hold while we connect you to the next \
                      available agent.";

/// Whether every tool runs here; see the module doc for what a missing one does.
fn tools_installed<'a>(tools: impl IntoIterator<Item = &'a str>) -> bool {
    for tool in tools {
        let found = Command::new(tool)
            .arg("-h")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            assert!(
                std::env::var_os("CI").is_none(),
                "{tool} is not installed (CI must install it)"
            );
            println!("skipped: {tool} not installed");
            return false;
        }
    }
    true
}

fn run(tool: &str, args: &[&str], dir: &Path) -> Vec<u8> {
    let mut cmd = Command::new(tool);
    if tool == "ffmpeg" {
        cmd.args(["-v", "error", "-nostdin", "-y"]);
    }
    let out = cmd
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Encoded files, generated in a temporary directory.
struct Corpus {
    dir: tempfile::TempDir,
    files: Vec<(&'static Encoding, Bytes)>,
}

impl Corpus {
    /// The files of `encodings`, or `None` when a tool is missing.
    fn generate(encodings: impl IntoIterator<Item = &'static Encoding>) -> Option<Self> {
        let encodings: Vec<_> = encodings.into_iter().collect();
        let tools = ["espeak-ng", "sox", "ffprobe"]
            .into_iter()
            .chain(encodings.iter().map(|e| e.tool));
        if !tools_installed(tools) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        run("espeak-ng", &["-w", "speech.wav", SPEECH], d);
        run(
            "sox",
            &["speech.wav", "-r", "8000", "-c", "1", "phone.wav"],
            d,
        );
        run(
            "sox",
            &["speech.wav", "-r", "16000", "-c", "2", "wide.wav"],
            d,
        );
        run(
            "sox",
            &[
                "speech.wav",
                "speech.wav",
                "speech.wav",
                "-r",
                "48000",
                "-c",
                "2",
                "studio.wav",
            ],
            d,
        );
        let files = encodings
            .into_iter()
            .map(|e| {
                let args: Vec<&str> = e
                    .args
                    .iter()
                    .map(|&a| match a {
                        IN => e.source.file(),
                        OUT => e.file,
                        a => a,
                    })
                    .collect();
                let stdout = run(e.tool, &args, d);
                if e.args.last() == Some(&STDOUT) {
                    std::fs::write(d.join(e.file), stdout).unwrap();
                }
                (e, Bytes::from(std::fs::read(d.join(e.file)).unwrap()))
            })
            .collect();
        Some(Self { dir, files })
    }

    fn path(&self, e: &Encoding) -> std::path::PathBuf {
        self.dir.path().join(e.file)
    }
}

/// What ffprobe reports for the first audio stream. The duration is where the
/// last packet ends (the format-level duration is an estimate from the
/// bitrate for a VBR MP3 without a Xing header).
#[derive(Debug)]
struct Reference {
    sample_rate_hz: u32,
    channels: u32,
    duration_ms: u64,
}

fn ffprobe(path: &Path) -> Reference {
    let path = path.to_str().unwrap();
    let ask = |entries: &str| {
        let out = run(
            "ffprobe",
            &[
                "-v",
                "error",
                "-select_streams",
                "a:0",
                "-show_entries",
                entries,
                "-of",
                "csv=p=0",
                path,
            ],
            Path::new("."),
        );
        String::from_utf8(out).unwrap()
    };
    let stream = ask("stream=sample_rate,channels");
    let mut fields = stream.trim().split(',').map(|f| f.parse::<u32>().unwrap());
    let (sample_rate_hz, channels) = (fields.next().unwrap(), fields.next().unwrap());
    let end = ask("packet=pts_time,duration_time")
        .lines()
        .filter_map(|l| {
            let (pts, dur) = l.split_once(',')?;
            Some(pts.parse::<f64>().ok()? + dur.parse::<f64>().unwrap_or(0.0))
        })
        .fold(0.0, f64::max);
    Reference {
        sample_rate_hz,
        channels,
        duration_ms: (end * 1000.0).round() as u64,
    }
}

fn check(e: &Encoding, how: &str, got: &AudioInfo, want: &Reference) {
    let name = format!("{} ({how})", e.file);
    assert_eq!(
        (got.container.as_str(), got.codec.as_str()),
        (e.container, e.codec),
        "{name}"
    );
    assert_eq!(
        (got.sample_rate_hz, got.channels),
        (want.sample_rate_hz, want.channels),
        "{name}"
    );
    assert!(
        got.duration_ms.abs_diff(want.duration_ms) <= 100,
        "{name}: {} ms, ffprobe says {} ms",
        got.duration_ms,
        want.duration_ms
    );
    assert_eq!(got.warning, None, "{name}");
    println!(
        "{name}: {} {} {} Hz x{} {} ms (ffprobe {} ms)",
        got.container,
        got.codec,
        got.sample_rate_hz,
        got.channels,
        got.duration_ms,
        want.duration_ms
    );
}

/// The analyzer as ingest drives it: the head probe on the first chunk, then
/// the whole stream in `piece`-byte pieces.
async fn analyze(audio: &Bytes, piece: usize) -> callvault::error::Result<AudioInfo> {
    let head = &audio[..audio.len().min(64 << 10)];
    let analyzer = Analyzer::start(audio::detect(head)?, head);
    for p in (0..audio.len()).step_by(piece) {
        analyzer
            .feed(&audio.slice(p..audio.len().min(p + piece)))
            .await;
    }
    analyzer.finish().await.map(|(info, _)| info)
}

#[tokio::test]
async fn real_encoder_output_is_probed_exactly_and_round_trips() {
    let Some(corpus) = Corpus::generate(ENCODINGS) else {
        return;
    };
    let app = spawn_app(CatalogKind::Sqlite).await;
    for (e, audio) in &corpus.files {
        let want = ffprobe(&corpus.path(e));
        let info = analyze(audio, 4096)
            .await
            .unwrap_or_else(|err| panic!("{}: refused: {err}", e.file));
        check(e, "analyzer, 4 KiB pieces", &info, &want);

        let rec = app
            .ingest(&format!("call-{}", e.file), audio.clone())
            .await
            .unwrap_or_else(|s| panic!("{}: {s:?}", e.file))
            .recording
            .unwrap();
        let meta = rec.audio.unwrap();
        let stored = AudioInfo {
            container: meta.container,
            codec: meta.codec,
            sample_rate_hz: meta.sample_rate_hz,
            channels: meta.channels,
            duration_ms: meta.duration_ms,
            warning: Some(meta.warning).filter(|w| !w.is_empty()),
        };
        check(e, "ingested", &stored, &want);
        assert!(
            app.play(&rec.recording_id).await.unwrap() == audio[..],
            "{}: played bytes differ from the input",
            e.file
        );
    }
    app.shutdown().await;
}

fn encoding(file: &str) -> &'static Encoding {
    ENCODINGS.iter().find(|e| e.file == file).unwrap()
}

/// What real tools write that is not audio, or audio cut short: refused
/// with INVALID_ARGUMENT naming what was found (and nothing left behind), or
/// kept with the probe's warning.
#[tokio::test]
async fn non_audio_is_refused_and_cut_audio_kept_with_a_warning() {
    let Some(corpus) = Corpus::generate(
        [
            "ffmpeg.wav",
            "48k.mp3",
            "phone.flac",
            "faststart.m4a",
            "moov_last.m4a",
        ]
        .map(encoding),
    ) else {
        return;
    };
    let d = corpus.dir.path();
    let ffmpeg = |line: &str| run("ffmpeg", &line.split(' ').collect::<Vec<_>>(), d);
    ffmpeg("-f lavfi -i color=c=red:s=16x16 -frames:v 1 red.png");
    // Video only, moov at the end. The short one fits in the head and is
    // refused there; the long one (175 KB) is accepted provisionally, its
    // chunks written, then refused at the end and cleaned up.
    ffmpeg("-f lavfi -i testsrc=d=3:s=64x64:r=10 -pix_fmt yuv420p short.mp4");
    ffmpeg("-f lavfi -i testsrc2=d=5:s=320x240:r=25 -pix_fmt yuv420p long.mp4");
    let read = |f: &str| Bytes::from(std::fs::read(d.join(f)).unwrap());
    let file = |f: &str| {
        corpus
            .files
            .iter()
            .find(|(e, _)| e.file == f)
            .unwrap()
            .1
            .clone()
    };
    let cut = |f: &str| {
        let b = file(f);
        b.slice(..b.len() * 2 / 3)
    };
    let app = spawn_app(CatalogKind::Sqlite).await;
    let refused = [
        ("png", read("red.png"), "a PNG image"),
        (
            "short-video",
            read("short.mp4"),
            "an mp4 container with no audio track",
        ),
        (
            "long-video",
            read("long.mp4"),
            "an mp4 container with no audio track",
        ),
        (
            "text",
            Bytes::from_static(b"agent notes: caller asked for a refund\n"),
            "text",
        ),
        // Cut before its moov: nothing says what the mdat holds.
        (
            "m4a-without-moov",
            cut("moov_last.m4a"),
            "an mp4 container without a moov atom",
        ),
    ];
    for (name, bytes, needle) in refused {
        let status = app.ingest(name, bytes).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(
            status.message().contains(needle),
            "{name}: `{}` lacks `{needle}`",
            status.message()
        );
    }
    // Each declares its length (the 48 kHz MP3 in its Info tag; lame leaves
    // the tag out of 8 kHz CBR frames, too small to hold it).
    let kept = ["ffmpeg.wav", "48k.mp3", "phone.flac", "faststart.m4a"];
    let mut chunks = 0;
    for f in kept {
        let audio = cut(f);
        let rec = app
            .ingest(&format!("cut-{f}"), audio.clone())
            .await
            .unwrap_or_else(|s| panic!("{f}: {s:?}"))
            .recording
            .unwrap();
        let meta = rec.audio.unwrap();
        assert!(meta.warning.contains("incomplete audio"), "{f}: {meta:?}");
        chunks += rec.chunk_count as usize;
        assert!(
            app.play(&rec.recording_id).await.unwrap() == audio[..],
            "{f}"
        );
    }
    // Checked through the API and the object store, as a client would see it.
    let listed = app
        .client(&app.supervisor_token)
        .await
        .playback
        .list_recordings(callvault::api::pb::ListRecordingsRequest {
            page_size: 100,
            page_token: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .recordings;
    assert_eq!(listed.len(), kept.len(), "only the kept recordings exist");
    assert_eq!(
        files_under(&app.dir.path().join("objects")),
        chunks,
        "only the kept recordings' objects exist"
    );
    app.shutdown().await;
}

fn files_under(dir: &Path) -> usize {
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    entries
        .map(|e| match e.path() {
            p if p.is_dir() => files_under(&p),
            _ => 1,
        })
        .sum()
}

/// A runtime whose blocking pool is far smaller than the number of uploads.
fn tiny_blocking_pool() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

/// One file per container, for the concurrency tests.
const MIXED: [&str; 8] = [
    "sox_48k.wav",
    "sox_mulaw.wav",
    "48k.mp3",
    "48k.flac",
    "16k.ogg",
    "48k.opus",
    "piped.webm",
    "48k.m4a",
];

/// 96 analyzers fed in turn, 4 KiB at a time: none may keep a blocking-pool
/// thread while it waits for its next bytes (they did: `spawn_blocking` for
/// the whole upload, and with the pool full every analyzer waited for bytes
/// that only a queued one would have asked for).
#[test]
fn interleaved_analyzers_hold_no_thread_while_waiting() {
    let Some(corpus) = Corpus::generate(MIXED.map(encoding)) else {
        return;
    };
    let want: Vec<_> = corpus
        .files
        .iter()
        .map(|(e, _)| ffprobe(&corpus.path(e)))
        .collect();
    let rt = tiny_blocking_pool();
    let started = std::time::Instant::now();
    rt.block_on(async {
        let run = async {
            let n = 96;
            let jobs: Vec<_> = (0..n).map(|i| i % corpus.files.len()).collect();
            let analyzers: Vec<_> = jobs
                .iter()
                .map(|&f| {
                    let head = &corpus.files[f].1[..];
                    let head = &head[..head.len().min(64 << 10)];
                    Analyzer::start(audio::detect(head).unwrap(), head)
                })
                .collect();
            let longest = corpus.files.iter().map(|(_, a)| a.len()).max().unwrap();
            for p in (0..longest).step_by(4096) {
                for (a, &f) in analyzers.iter().zip(&jobs) {
                    let audio = &corpus.files[f].1;
                    if p < audio.len() {
                        a.feed(&audio.slice(p..audio.len().min(p + 4096))).await;
                    }
                }
            }
            let mut infos = Vec::new();
            for a in analyzers {
                infos.push(a.finish().await.unwrap().0);
            }
            jobs.into_iter().zip(infos).collect::<Vec<_>>()
        };
        let results = tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .expect("the analyzers deadlocked");
        for (f, info) in results {
            check(corpus.files[f].0, "interleaved", &info, &want[f]);
        }
    });
    println!("96 interleaved analyzers: {:?}", started.elapsed());
}

/// The hardening issue's reproduction, scaled to a 4-thread blocking pool:
/// uploads trickling in concurrently through the real server, whose chunk
/// sealing and object writes share that pool with the analyzers, all commit.
#[test]
fn concurrent_slow_uploads_all_commit() {
    let Some(corpus) = Corpus::generate(MIXED.map(encoding)) else {
        return;
    };
    let rt = tiny_blocking_pool();
    rt.block_on(async {
        let app = spawn_app(CatalogKind::Sqlite).await;
        let uploads = (0..24).map(|i| {
            let (e, audio) = &corpus.files[i % corpus.files.len()];
            let app = &app;
            async move {
                let mut h = header(&format!("slow-{i}"));
                h.chunk_size_bytes = 64 * 1024;
                // 64 KiB pieces, one every 5 ms.
                let body = callvault::client::pieces(audio.clone(), 64 * 1024).then(|p| async {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    p
                });
                let res = app
                    .client(&app.ingest_token)
                    .await
                    .ingest_stream(h, body)
                    .await
                    .unwrap_or_else(|s| panic!("{}: {s:?}", e.file));
                (e, res.recording.unwrap())
            }
        });
        let all = futures::future::join_all(uploads);
        let recs = tokio::time::timeout(Duration::from_secs(120), all)
            .await
            .expect("the uploads deadlocked");
        for (e, rec) in recs {
            let meta = rec.audio.unwrap();
            assert_eq!(
                (meta.container.as_str(), meta.warning.as_str()),
                (e.container, "")
            );
        }
        app.shutdown().await;
    });
}
