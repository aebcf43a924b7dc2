//! The README's command blocks, run as written: "Running it" (bootstrap,
//! serve, ingest, list, get, play) and "Tokens" (create with an expiry,
//! list, revoke), line by line through bash with the binary under test as
//! `$B`, so the README cannot drift from the binary.
//!
//! What stands in for the reader: `cargo build --release` is skipped (the
//! binary under test is `$B`), `$B serve` runs in the background on a free
//! port (every `50051` in the block becomes that port), and each `<…>`
//! placeholder is filled from an earlier command's output: the tokens
//! `token create` printed, the recording id `ingest --json` printed, the id
//! `token list --json` shows. `call.wav` is a call sox makes.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::free_port;

/// The first fenced `sh` block after the heading `heading`.
fn block_after(readme: &str, heading: &str) -> Vec<String> {
    let from = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README has no `{heading}`"));
    let rest = &readme[from..];
    let start = rest.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = start + rest[start..].find("\n```").expect("the block's end");
    // Continuation lines joined, comments and blank lines dropped.
    let mut lines = Vec::new();
    let mut pending = String::new();
    for raw in rest[start..end].lines() {
        let line = strip_comment(raw);
        if let Some(head) = line.trim_end().strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        let whole = pending.split_whitespace().collect::<Vec<_>>().join(" ");
        if !whole.is_empty() {
            lines.push(whole);
        }
        pending.clear();
    }
    lines
}

/// The line without its ` # comment` (a `#` after whitespace, outside
/// quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev.is_whitespace() => return &line[..i],
            _ => {}
        }
        prev = c;
    }
    line
}

struct Session {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    /// Placeholder -> value.
    filled: HashMap<&'static str, String>,
    port: u16,
    server: Option<Child>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

impl Session {
    /// `line` with the port and placeholders filled; `[--json]` optional
    /// parts taken.
    fn fill(&self, line: &str) -> String {
        let mut line = line
            .replace("50051", &self.port.to_string())
            .replace("[--json]", "--json");
        for (placeholder, value) in &self.filled {
            line = line.replace(placeholder, value);
        }
        assert!(
            !line.contains('<'),
            "a placeholder this test cannot fill: {line}"
        );
        line
    }

    fn bash(&self, line: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg("-euo")
            .arg("pipefail")
            .arg("-c")
            .arg(line)
            .current_dir(self.dir.path())
            .env("B", env!("CARGO_BIN_EXE_callvault"))
            .env("CALLVAULT_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs one README line; returns its stdout.
    fn run(&mut self, written: &str) -> String {
        if written.starts_with("cargo build") {
            return String::new();
        }
        if let Some(var) = written.strip_prefix("B=") {
            assert!(var.ends_with("/callvault"), "{written}");
            return String::new();
        }
        let line = self.fill(written);
        if let Some(assign) = line.strip_prefix("export ") {
            let (k, v) = assign.split_once('=').expect("export K=V");
            self.env.push((k.to_owned(), v.to_owned()));
            return String::new();
        }
        if line == "$B serve" {
            self.start_server();
            return String::new();
        }
        let out = self.bash(&line).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "README line failed ({}):\n{written}\nran: {line}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if line.contains(" --json") {
            let parsed = serde_json::from_str::<serde_json::Value>(&stdout);
            assert!(parsed.is_ok(), "{line}: not JSON: {stdout}");
        }
        stdout
    }

    fn start_server(&mut self) {
        let line = format!("exec $B serve --listen 127.0.0.1:{}", self.port);
        let child = self
            .bash(&line)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the README's server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// 20 s of a μ-law call as sox writes it, or the crate's synthetic WAV
/// where sox is missing.
fn make_call(path: &Path) {
    let sox = Command::new("sox")
        .args(["-n", "-r", "8000", "-c", "1", "-e", "u-law"])
        .arg(path)
        .args(["synth", "20", "sine", "300-3000"])
        .status();
    if !matches!(sox, Ok(s) if s.success()) {
        std::fs::write(path, callvault::synth::synth_wav(20, 8000, 1)).unwrap();
    }
}

#[test]
fn the_readme_running_it_and_tokens_blocks_run_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let running = block_after(&readme, "## Running it");
    let tokens = block_after(&readme, "### Tokens");
    assert!(
        running.len() >= 12 && tokens.len() >= 3,
        "{running:?} {tokens:?}"
    );
    let mut s = Session {
        dir: tempfile::tempdir().unwrap(),
        env: Vec::new(),
        filled: HashMap::new(),
        port: free_port(),
        server: None,
    };
    let call = s.dir.path().join("call.wav");
    make_call(&call);
    let sent = std::fs::read(&call).unwrap();

    for line in &running {
        let out = s.run(line);
        for role in ["ingest", "supervisor", "admin", "compliance"] {
            if line.starts_with("$B token create") && line.contains(&format!("--role {role}")) {
                let token = out.trim().to_owned();
                assert!(!token.is_empty() && !token.contains(' '), "{line}: {out}");
                let key = match role {
                    "ingest" => "<ingest token>",
                    "supervisor" => "<supervisor token>",
                    "admin" => "<admin token>",
                    _ => "<compliance token>",
                };
                s.filled.insert(key, token);
            }
        }
        if line.contains(" ingest call.wav") {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            let id = v["recording_id"].as_str().unwrap().to_owned();
            s.filled.insert("<id>", id);
        }
    }
    // `play <id> -o call.wav` wrote back what `ingest call.wav` sent.
    assert_eq!(std::fs::read(&call).unwrap(), sent);
    let listed = s.run("CALLVAULT_TOKEN=<supervisor token> $B recordings list --json");
    assert!(listed.contains("call-42"), "{listed}");

    for line in &tokens {
        let out = s.run(line);
        if line.starts_with("$B token list") {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            // The token this block created: the only one with an expiry.
            let expiring: Vec<_> = v
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| !t["expires_at"].is_null())
                .collect();
            assert_eq!(expiring.len(), 1, "{out}");
            let id = expiring[0]["token_id"].as_str().unwrap().to_owned();
            s.filled.insert("<token id>", id);
        }
    }
    let after = s.run("$B token list --tenant acme --json");
    let after: serde_json::Value = serde_json::from_str(&after).unwrap();
    let revoked: Vec<_> = after
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !t["revoked_at"].is_null())
        .map(|t| t["token_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(revoked, [s.filled["<token id>"].as_str()], "{after}");
}
