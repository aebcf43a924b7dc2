use super::*;

#[test]
fn writers_on_separate_handles_never_lose_each_others_keys() {
    // Two handles on one data dir stand in for two processes: they share
    // nothing in memory, only the file lock.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        LocalKeyring::open(dir.path(), "local").unwrap(),
        LocalKeyring::open(dir.path(), "local").unwrap(),
    );
    let arns: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = [&a, &b, &a, &b]
            .into_iter()
            .map(|ring| {
                s.spawn(move || {
                    (0..5)
                        .map(|_| ring.create_key().unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let file = a.load().unwrap();
    assert_eq!(file.keys.len(), arns.len());
    for arn in &arns {
        assert!(file.keys.iter().any(|k| &k.arn == arn), "{arn} was lost");
    }
}

#[cfg(unix)]
#[test]
fn keyring_and_lock_are_private_and_no_temp_file_is_left() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ring = LocalKeyring::open(dir.path(), "local").unwrap();
    ring.create_key().unwrap();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        let name = entry.file_name().into_string().unwrap();
        assert_eq!(mode, 0o600, "{name} has mode {mode:o}");
        names.push(name);
    }
    names.sort();
    assert_eq!(names, ["keyring.json", "keyring.lock"]);
}

#[test]
fn debug_output_never_shows_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let ring = LocalKeyring::open(dir.path(), "local").unwrap();
    ring.create_key().unwrap();
    ring.create_rsa_key("RSA_2048").unwrap();
    let file = ring.load().unwrap();
    let shown = format!("{file:?} {ring:?}");
    for key in &file.keys {
        assert!(!shown.contains(&key.versions[0]), "{shown}");
        assert!(shown.contains(&key.arn), "{shown}");
    }
    assert!(shown.contains("<1 redacted>"), "{shown}");
}
