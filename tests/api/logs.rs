//! The server's log as an operator reads it: fields as values (not Rust
//! `Debug` structs), and one line, not one per packet, for a damaged
//! upload's decoder complaints.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn callvault(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_callvault"));
    cmd.env("CALLVAULT_DATA_DIR", dir)
        .env_remove("CALLVAULT_LOG");
    cmd
}

fn out(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

/// Ten minutes of an ffmpeg-encoded MP3 (its defaults), with 300 bytes of
/// noise written every 2,000 bytes through its middle three fifths: a
/// damaged upload the decoder resynchronises over hundreds of times.
fn damaged_mp3(dir: &Path) -> Option<std::path::PathBuf> {
    let clean = dir.join("clean.mp3");
    let made = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-f", "lavfi", "-i"])
        .arg("sine=frequency=440:duration=600")
        .args(["-ac", "1", "-ar", "16000"])
        .arg(&clean)
        .status();
    if !matches!(made, Ok(s) if s.success()) {
        return None;
    }
    let mut bytes = std::fs::read(&clean).unwrap();
    let n = bytes.len();
    let mut x: u32 = 7;
    for at in (n / 5..4 * n / 5).step_by(2000) {
        for b in &mut bytes[at..at + 300] {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            *b = (x >> 16) as u8;
        }
    }
    let damaged = dir.join("damaged.mp3");
    std::fs::write(&damaged, bytes).unwrap();
    Some(damaged)
}

/// The target of a fmt log line (`<time>  LEVEL target: message …`).
fn target(line: &str) -> Option<&str> {
    line.split_whitespace().nth(2)?.strip_suffix(':')
}

#[test]
fn a_damaged_upload_is_one_log_line_and_fields_are_values() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mp3) = damaged_mp3(tmp.path()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "ffmpeg is missing (scripts/test.sh installs it)"
        );
        eprintln!("skipped: ffmpeg is missing");
        return;
    };
    let dir = tmp.path().join("data");
    out(callvault(&dir).args(["tenant", "create", "acme"]));
    let ingest =
        out(callvault(&dir).args(["token", "create", "--tenant", "acme", "--role", "ingest"]));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = tmp.path().join("server.log");
    let mut server = callvault(&dir)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ingested = callvault(&dir)
        .env("CALLVAULT_SERVER", format!("http://127.0.0.1:{port}"))
        .env("CALLVAULT_TOKEN", &ingest)
        .arg("ingest")
        .arg(&mp3)
        .args(["--call-id", "damaged-1"])
        .output()
        .unwrap();
    // The waveform job decodes the whole recording right after the commit.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    while !text.contains("computing peaks") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        text.clear();
        std::fs::File::open(&log)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
    }
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        ingested.status.success(),
        "{}",
        String::from_utf8_lossy(&ingested.stderr)
    );

    let lines: Vec<&str> = text.lines().collect();
    // No line of symphonia's own: its reports were counted...
    let raw: Vec<_> = lines
        .iter()
        .filter(|l| target(l).is_some_and(|t| t.starts_with("symphonia")))
        .collect();
    assert!(raw.is_empty(), "decoder lines reached the log: {raw:#?}");
    // ...into one line for the peaks decode, naming the recording and how
    // many there were.
    let summaries: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("reported damage while computing peaks"))
        .collect();
    assert_eq!(summaries.len(), 1, "{text}");
    let reports: u64 = summaries[0]
        .split_whitespace()
        .find_map(|f| f.strip_prefix("reports="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no reports= field: {}", summaries[0]));
    assert!(
        reports >= 20,
        "only {reports} decoder reports: {}",
        summaries[0]
    );
    assert!(summaries[0].contains("recording="), "{}", summaries[0]);
    // Fields are values: the roles as `serve --roles` takes them.
    let serving = lines
        .iter()
        .find(|l| l.contains("callvault serving"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(serving.contains("roles=ingest,playback,admin"), "{serving}");
    for l in &lines {
        assert!(
            !l.contains(" { ") && !l.contains("Some("),
            "a Debug value: {l}"
        );
    }
}
