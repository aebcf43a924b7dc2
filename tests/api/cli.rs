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
