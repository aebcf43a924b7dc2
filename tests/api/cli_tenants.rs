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
