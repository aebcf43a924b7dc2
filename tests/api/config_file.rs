//! `--config FILE` (hardening issue, item 12): the example config is
//! accepted, file < environment < flags, unknown keys are refused with
//! their line, secrets never print, and `serve` runs from a file.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_callvault");

fn callvault(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut c = Command::new(BIN);
    c.args(args).env("CALLVAULT_LOG", "warn");
    // The developer's own settings must not leak into what is tested.
    for (k, _) in std::env::vars() {
        if k.starts_with("CALLVAULT_") && k != "CALLVAULT_LOG" {
            c.env_remove(k);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn line<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no `{key}` in:\n{stdout}"))
}

#[test]
fn the_example_config_is_accepted_and_every_flag_is_shown() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/callvault.example.toml");
    let (ok, stdout, stderr) = callvault(&["config", "check", "--config", example], &[]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("configuration OK"), "{stderr}");
    // Every key the example sets is reported as coming from its line.
    let text = std::fs::read_to_string(example).unwrap();
    for (n, l) in text.lines().enumerate() {
        if let Some((key, _)) = l.split_once(" = ").filter(|_| !l.starts_with('#')) {
            assert!(
                line(&stdout, key).ends_with(&format!("callvault.example.toml:{}", n + 1)),
                "{key}: {}",
                line(&stdout, key)
            );
        }
    }
    // And every flag of `serve` is there, set or not.
    for key in [
        "database-url",
        "tls-cert",
        "metrics-listen",
        "allowed-kms-accounts",
    ] {
        line(&stdout, key);
    }
}

#[test]
fn flags_beat_the_environment_which_beats_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1111\"\nrequest-timeout-secs = 11\nupload-lease-secs = 33\nallowed-kms-accounts = [\"111122223333\", \"444455556666\"]\nkms = \"aws\"\naudit-signing-key = \"/nonexistent\"\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (_, stdout, stderr) = callvault(
        &[
            "config",
            "check",
            "--config",
            f,
            "--listen",
            "127.0.0.1:3333",
        ],
        &[
            ("CALLVAULT_LISTEN", "127.0.0.1:2222"),
            ("CALLVAULT_REQUEST_TIMEOUT_SECS", "22"),
        ],
    );
    assert_eq!(
        line(&stdout, "listen"),
        "listen = \"127.0.0.1:3333\"  # flag"
    );
    assert_eq!(
        line(&stdout, "request-timeout-secs"),
        "request-timeout-secs = \"22\"  # environment CALLVAULT_REQUEST_TIMEOUT_SECS"
    );
    assert!(
        line(&stdout, "upload-lease-secs").ends_with(":3"),
        "{stdout}"
    );
    assert!(line(&stdout, "upload-lease-secs").contains("\"33\""));
    assert!(
        line(&stdout, "allowed-kms-accounts").contains("[\"111122223333\", \"444455556666\"]"),
        "{stdout}"
    );
    assert!(line(&stdout, "max-concurrent-streams").ends_with("# default"));
    // The check itself: the audit key file named in the file is missing.
    assert!(stderr.contains("/nonexistent"), "{stderr}");
}

#[test]
fn unknown_keys_and_bad_values_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    for (body, want) in [
        (
            "# a comment\n\nlistne = \"127.0.0.1:1\"\n",
            ":3: unknown key `listne`",
        ),
        (
            "listen = { host = \"x\" }\n",
            ":1: `listen` must be a string",
        ),
        ("[server]\nlisten = \"x\"\n", ":1: `server` is a table"),
        ("listen = \n", ":1: not valid TOML"),
        ("config = \"other.toml\"\n", ":1: unknown key `config`"),
    ] {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, body).unwrap();
        let (ok, _, stderr) = callvault(
            &["config", "check", "--config", file.to_str().unwrap()],
            &[],
        );
        assert!(!ok, "{body} accepted");
        assert!(stderr.contains(want), "{body}: {stderr}");
    }
    let (ok, _, stderr) = callvault(&["config", "check", "--config", "/nonexistent.toml"], &[]);
    assert!(
        !ok && stderr.contains("cannot read the config file /nonexistent.toml"),
        "{stderr}"
    );
}

#[test]
fn config_check_never_prints_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "database-url = \"postgres://cv:hunter2@db.internal:5432/callvault\"\n",
    )
    .unwrap();
    let (_, stdout, stderr) = callvault(
        &["config", "check", "--config", file.to_str().unwrap()],
        &[],
    );
    assert!(
        line(&stdout, "database-url").contains("postgres://cv:REDACTED@db.internal:5432/callvault"),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"));
}

#[test]
fn serve_runs_from_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let file = dir.path().join("callvault.toml");
    std::fs::write(
        &file,
        format!(
            "data-dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\nroles = \"playback\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let mut child = Command::new(BIN)
        .args(["serve", "--config", file.to_str().unwrap()])
        .env("CALLVAULT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if text.contains("callvault serving") {
            assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
            assert!(dir.path().join("data").join("catalog.db").exists());
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "serve exited: {text}");
        assert!(Instant::now() < deadline, "serve did not start: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
