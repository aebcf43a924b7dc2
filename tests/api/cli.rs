//! `callvault tenant create | list` on the embedded default: what an
//! operator types, run as the binary.

use std::path::Path;
use std::process::Output;

fn callvault(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_callvault"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        // Debug logs, so there are log lines to look at.
        .env("CALLVAULT_LOG", "debug")
        .output()
        .unwrap()
}

fn keys_in(dir: &Path) -> Vec<String> {
    callvault::kms::local::LocalKeyring::key_arns_in(&dir.join("keyring.json")).unwrap()
}

/// `tenant create` prints what it made (JSON with `--json`); one that
/// fails (the name taken, the name invalid) leaves no key behind in the
/// keyring; `tenant list` shows each tenant with its key and recordings;
/// the data directory is 0700 and the catalog and keyring 0600; log lines
/// on a pipe carry no colour codes.
#[test]
fn tenants_are_created_listed_and_failures_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let out = callvault(&dir, &["tenant", "create", "acme", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(made["name"], "acme");
    let key = made["key_arn"].as_str().unwrap().to_owned();
    assert!(key.starts_with("arn:callvault:kms:"), "{key}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.is_empty(), "no log lines to check");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes on a pipe: {stderr}"
    );
    let keys = keys_in(&dir);
    assert!(keys.contains(&key));

    for (name, says) in [("acme", "already exists"), ("not ok!", "name")] {
        let out = callvault(&dir, &["tenant", "create", name]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{name}: {stderr}");
        assert_eq!(keys_in(&dir), keys, "{name}: a key was left behind");
    }

    let out = callvault(&dir, &["tenant", "create", "globex"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("tenant globex ("));
    let out = callvault(&dir, &["tenant", "list", "--json"]);
    assert!(out.status.success());
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["name"], "acme");
    assert_eq!(list[0]["tenant_id"], made["tenant_id"]);
    assert_eq!(list[0]["key_arn"], key.as_str());
    assert_eq!(list[0]["recording_count"], 0);
    assert!(list[0]["create_time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(list[1]["name"], "globex");
    let out = callvault(&dir, &["tenant", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("NAME") && text.contains("acme") && text.contains(&key),
        "{text}"
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("catalog.db")), 0o600);
        assert_eq!(mode(&dir.join("keyring.json")), 0o600);
    }
}

/// A failed command says what kind of failure it was: exit 3 not found,
/// 4 refused, 5 unavailable, 2 a usage error (clap), 1 anything else; with
/// `--json` the error is an object on stderr with the gRPC code's name.
#[tokio::test]
async fn failures_have_distinct_exit_codes_and_json_errors() {
    let app = crate::helpers::spawn_app(crate::helpers::CatalogKind::Sqlite).await;
    let run = |args: Vec<String>| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_callvault"))
            .args(&args)
            .env("CALLVAULT_LOG", "off")
            .env_remove("CALLVAULT_SERVER")
            .env_remove("CALLVAULT_TOKEN")
            .output()
            .await
            .unwrap()
    };
    let get = |server: &str, token: &str, json: bool| {
        let mut args: Vec<String> = [
            "recordings",
            "get",
            "0190a5d0-ac96-774b-bcce-b302099a8057",
            "--server",
            server,
            "--token",
            token,
        ]
        .map(str::to_owned)
        .to_vec();
        if json {
            args.push("--json".into());
        }
        args
    };
    let error_of = |out: &Output| -> serde_json::Value {
        let stderr = String::from_utf8_lossy(&out.stderr);
        serde_json::from_str(stderr.trim()).unwrap_or_else(|_| panic!("not JSON: {stderr}"))
    };

    let out = run(get(&app.addr, &app.supervisor_token, true)).await;
    assert_eq!(out.status.code(), Some(3));
    let err = error_of(&out);
    assert_eq!(err["error"]["code"], "NOT_FOUND");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not found")
    );

    let out = run(get(&app.addr, "cv_not-a-token", true)).await;
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(error_of(&out)["error"]["code"], "UNAUTHENTICATED");

    let out = run(get("http://127.0.0.1:1", &app.supervisor_token, false)).await;
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "));

    let out = run(vec!["recordings".into(), "get".into()]).await;
    assert_eq!(out.status.code(), Some(2));

    // Operator commands classify the same way: an unknown tenant.
    let dir = tempfile::tempdir().unwrap();
    let out = run(vec![
        "token".into(),
        "list".into(),
        "--tenant".into(),
        "nosuch".into(),
        "--json".into(),
        "--data-dir".into(),
        dir.path().display().to_string(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(error_of(&out)["error"]["code"], "NOT_FOUND");
    app.shutdown().await;
}

/// The binary with an environment of the test's choosing (nothing of the
/// test runner's `CALLVAULT_*` leaks in).
fn bare(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_callvault"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CALLVAULT_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .env("CALLVAULT_LOG", "off")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Conventions of the whole command tree, through the real binary: flags
/// before the subcommand, a `CALLVAULT_*` variable for every flag (yes/no
/// ones taking `1`), `--json` on the operator and key commands that had
/// none, completions that the shells parse and man pages that groff
/// renders without a warning.
#[test]
fn flags_come_first_or_from_the_environment_and_every_command_speaks_json() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();

    // A subcommand's flags before the subcommand (cargo's and the AWS
    // CLI's habit), the top level's own flag among them.
    let made = json_of(&ok(bare(
        &[
            "--log-json",
            "--data-dir",
            d,
            "--json",
            "tenant",
            "create",
            "acme",
        ],
        &[],
    )));
    assert_eq!(made["name"], "acme");
    // The same flags from the environment; a yes/no variable takes 1.
    let listed = json_of(&ok(bare(
        &["tenant", "list"],
        &[
            ("CALLVAULT_DATA_DIR", d),
            ("CALLVAULT_JSON", "1"),
            ("CALLVAULT_LOG_JSON", "1"),
        ],
    )));
    assert_eq!(listed[0]["name"], "acme");
    let text = ok(bare(
        &["tenant", "list"],
        &[("CALLVAULT_DATA_DIR", d), ("CALLVAULT_JSON", "0")],
    ));
    assert!(String::from_utf8_lossy(&text.stdout).starts_with("NAME"));
    let bad = bare(
        &["tenant", "list"],
        &[("CALLVAULT_DATA_DIR", d), ("CALLVAULT_JSON", "maybe")],
    );
    assert_eq!(
        bad.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // token create / revoke in JSON: the secret once, on stdout.
    let token = json_of(&ok(bare(
        &[
            "token",
            "create",
            "--tenant",
            "acme",
            "--role",
            "supervisor",
            "--expires-in",
            "1d",
            "--json",
        ],
        &[("CALLVAULT_DATA_DIR", d)],
    )));
    assert!(
        token["token"].as_str().unwrap().starts_with("cv_"),
        "{token}"
    );
    assert_eq!(token["role"], "supervisor");
    assert!(token["expires_at"].as_str().unwrap().ends_with('Z'));
    let id = token["token_id"].as_str().unwrap();
    let revoked = json_of(&ok(bare(
        &[
            "token", "revoke", id, "--tenant", "acme", "--reason", "test", "--json",
        ],
        &[("CALLVAULT_DATA_DIR", d)],
    )));
    assert_eq!(revoked["token_id"], id);
    assert_eq!(revoked["revoked"], true);

    // keys local in JSON, each with the state AWS KMS would report.
    let env = [("CALLVAULT_DATA_DIR", d), ("CALLVAULT_JSON", "true")];
    let key = json_of(&ok(bare(&["keys", "local", "create"], &env)));
    assert_eq!(key["state"], "Enabled");
    let arn = key["key_arn"].as_str().unwrap();
    for (cmd, state) in [
        ("disable", "Disabled"),
        ("enable", "Enabled"),
        ("schedule-deletion", "PendingDeletion"),
        ("cancel-deletion", "Disabled"),
    ] {
        let out = json_of(&ok(bare(&["keys", "local", cmd, arn], &env)));
        assert_eq!(out["state"], state, "{cmd}");
    }
    // The text form of create is still the bare ARN, for `$(…)`.
    let text = ok(bare(
        &["keys", "local", "create"],
        &[("CALLVAULT_DATA_DIR", d)],
    ));
    assert!(
        String::from_utf8_lossy(&text.stdout)
            .trim()
            .starts_with("arn:")
    );
    let line = json_of(&ok(bare(&["urls", "keygen", "--id", "k1", "--json"], &[])));
    assert!(line["line"].as_str().unwrap().starts_with("k1 "));

    // Completions every shell here can check, and a man page per command.
    let bash = ok(bare(&["completions", "bash"], &[]));
    let script = tmp.path().join("callvault.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    let text = String::from_utf8_lossy(&bash.stdout);
    assert!(
        text.contains("complete -F _callvault") && text.contains("--call-id"),
        "bash"
    );
    for shell in ["zsh", "fish"] {
        let out = ok(bare(&["completions", shell], &[]));
        let path = tmp.path().join(format!("callvault.{shell}"));
        std::fs::write(&path, &out.stdout).unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("recordings"),
            "{shell}"
        );
        match std::process::Command::new(shell)
            .arg("-n")
            .arg(&path)
            .output()
        {
            Ok(o) => assert!(
                o.status.success(),
                "{shell}: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(_) => assert!(std::env::var_os("CI").is_none(), "{shell} is not installed"),
        }
    }
    let man = ok(bare(&["man"], &[]));
    assert!(String::from_utf8_lossy(&man.stdout).starts_with(".ie \\n(.g .ds Aq"));
    let pages = tmp.path().join("man");
    ok(bare(&["man", "--dir", pages.to_str().unwrap()], &[]));
    let page = pages.join("callvault-recordings-list.1");
    let roff = std::fs::read_to_string(&page).unwrap();
    assert!(roff.contains(".TH callvault-recordings-list 1"), "{roff}");
    assert!(
        roff.contains("CALLVAULT_MIN_DURATION"),
        "the page names each variable"
    );
    assert!(pages.join("callvault-keys-local-disable.1").is_file());
    match std::process::Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(&page)
        .output()
    {
        Ok(o) => assert!(
            o.status.success() && o.stderr.is_empty(),
            "groff: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(_) => assert!(std::env::var_os("CI").is_none(), "groff is not installed"),
    }
}

/// `ingest -` reads standard input (a call id is then required: there is no
/// file to name the call by) and `play -o -` writes standard output, in a
/// pipeline with sox as a user would run it.
#[tokio::test]
async fn ingest_reads_stdin_and_play_writes_stdout() {
    let app = crate::helpers::spawn_app(crate::helpers::CatalogKind::Sqlite).await;
    let tmp = tempfile::tempdir().unwrap();
    let wav = tmp.path().join("call.wav");
    let sox = tokio::process::Command::new("sox")
        .args(["-n", "-r", "8000", "-c", "1", "-e", "u-law"])
        .arg(&wav)
        .args(["synth", "12", "sine", "300-900"])
        .status()
        .await
        .expect("sox is installed");
    assert!(sox.success());
    let audio = std::fs::read(&wav).unwrap();
    let run = |args: Vec<&str>, token: &str, stdin: Option<Vec<u8>>| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_callvault"));
        cmd.args(&args)
            .env("CALLVAULT_SERVER", &app.addr)
            .env("CALLVAULT_TOKEN", token)
            .env("CALLVAULT_LOG", "off")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        async move {
            use tokio::io::AsyncWriteExt;
            let mut child = cmd.spawn().unwrap();
            let mut pipe = child.stdin.take().unwrap();
            if let Some(bytes) = stdin {
                // A command refused at parsing never reads its input.
                let _ = pipe.write_all(&bytes).await;
            }
            drop(pipe);
            child.wait_with_output().await.unwrap()
        }
    };
    let out = run(
        vec!["ingest", "-", "--json"],
        &app.ingest_token,
        Some(audio.clone()),
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "a call id is required from stdin"
    );
    let out = run(
        vec!["ingest", "-", "--call-id", "piped-1", "--json"],
        &app.ingest_token,
        Some(audio.clone()),
    )
    .await;
    let rec = json_of(&ok(out));
    assert_eq!(rec["size_bytes"], audio.len());
    assert_eq!(rec["deduplicated"], false);
    let id = rec["recording_id"].as_str().unwrap().to_owned();
    let out = ok(run(vec!["play", &id, "-o", "-"], &app.supervisor_token, None).await);
    assert!(
        out.stdout == audio,
        "stdout is the recording, byte for byte"
    );
    let out = ok(run(
        vec!["play", &id, "-o", "-", "--offset", "1000"],
        &app.supervisor_token,
        None,
    )
    .await);
    assert!(out.stdout[..] == audio[1000..]);
    app.shutdown().await;
}
