//! `manifest.json`: what a backup holds and when it was taken. Pure: no I/O.
//!
//! ```json
//! {
//!   "format": "callvault-backup/1",
//!   "created_at": "2026-03-02T10:15:00.123Z",
//!   "callvault_version": "0.1.0",
//!   "catalog_schema_version": 5,
//!   "counts": { "tenants": 1, "recordings": 40, "uploads_in_flight": 2, "chunks": 130,
//!               "objects": 128, "object_bytes": 130023424, "in_flight_objects_skipped": 2 },
//!   "files": [ { "path": "catalog.db", "size": 229376, "sha256": "…" },
//!              { "path": "keyring.json", "size": 1243, "sha256": "…" },
//!              { "path": "objects/t/<tenant>/r/<recording>/0000000000", "size": 1048604, "sha256": "…" } ]
//! }
//! ```
//!
//! The checksums find damage (bit rot, a truncated copy, a file lost on the
//! way to tape), not forgery: the manifest is not signed, and whoever can
//! rewrite a backup's files can rewrite its manifest. `created_at` in
//! particular is covered by nothing; editing it only changes when `backup
//! prune` removes the backup. Paths are checked before anything is read or
//! written through them: relative, no `..`, only the three kinds of file a
//! backup holds.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// The value of `format`: the layout and the meaning of every field.
pub const FORMAT: &str = "callvault-backup/1";
pub const MANIFEST_FILE: &str = "manifest.json";
/// The catalog copy, where the data dir has `catalog.db`.
pub const CATALOG_FILE: &str = "catalog.db";
/// The local keyring copy, where the data dir has `keyring.json`.
pub const KEYRING_FILE: &str = "keyring.json";
/// Chunk objects under their store keys, as under the data dir's `objects/`.
pub const OBJECTS_DIR: &str = "objects";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    /// RFC 3339, UTC: when the catalog snapshot was taken.
    pub created_at: String,
    /// The callvault release that took the backup.
    pub callvault_version: String,
    /// The catalog's newest applied migration.
    pub catalog_schema_version: i64,
    pub counts: Counts,
    /// The catalog first, then the keyring, then objects in key order.
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    pub tenants: u64,
    /// Committed recordings in the catalog copy; every one of their chunk
    /// objects is in the backup.
    pub recordings: u64,
    /// Uploads in flight when the snapshot was taken. Not playable; a
    /// restored server removes them once their lease has run out.
    pub uploads_in_flight: u64,
    /// Chunk rows in the catalog copy.
    pub chunks: u64,
    /// Chunk objects in the backup.
    pub objects: u64,
    pub object_bytes: u64,
    /// Objects of uploads in flight that were gone (the upload was
    /// abandoned) or not the object their row names; nothing needs them.
    pub in_flight_objects_skipped: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative to the backup directory, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

impl Manifest {
    /// Parses and checks a manifest: the format, the time, every path and
    /// checksum, no path twice, the catalog present. The error says what is
    /// wrong.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("not a backup manifest: {e}"))?;
        if m.format != FORMAT {
            return Err(format!(
                "format `{}` is not {FORMAT} (a newer callvault's backup?)",
                m.format
            ));
        }
        parse_time(&m.created_at)?;
        let mut seen = BTreeSet::new();
        for f in &m.files {
            check_path(&f.path)?;
            if !is_sha256_hex(&f.sha256) {
                return Err(format!("{}: `{}` is not a hex SHA-256", f.path, f.sha256));
            }
            if !seen.insert(f.path.as_str()) {
                return Err(format!("{} is listed twice", f.path));
            }
        }
        if !seen.contains(CATALOG_FILE) {
            return Err(format!("{CATALOG_FILE} is not listed"));
        }
        let objects = m.objects().count() as u64;
        if objects != m.counts.objects {
            return Err(format!(
                "counts.objects says {} but {objects} objects are listed",
                m.counts.objects
            ));
        }
        Ok(m)
    }

    /// Pretty JSON with a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// `created_at` in Unix milliseconds.
    pub fn created_at_ms(&self) -> Result<i64, String> {
        parse_time(&self.created_at)
    }

    /// One entry, by a linear search; [`Manifest::by_path`] for many.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }

    /// The entries by path, for looking up every object of a large backup.
    pub fn by_path(&self) -> HashMap<&str, &FileEntry> {
        self.files.iter().map(|f| (f.path.as_str(), f)).collect()
    }

    /// The object entries, with their store keys.
    pub fn objects(&self) -> impl Iterator<Item = (&str, &FileEntry)> {
        self.files
            .iter()
            .filter_map(|f| Some((object_key(&f.path)?, f)))
    }
}

/// The backup path of the object with store key `key`.
pub fn object_path(key: &str) -> String {
    format!("{OBJECTS_DIR}/{key}")
}

/// The store key of an object path, `None` for another file.
pub fn object_key(path: &str) -> Option<&str> {
    path.strip_prefix(OBJECTS_DIR)?.strip_prefix('/')
}

/// RFC 3339 UTC with milliseconds, the form `created_at` is written in.
pub fn format_time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.replace_nanosecond(t.millisecond() as u32 * 1_000_000)
                .ok()
        })
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn parse_time(text: &str) -> Result<i64, String> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("created_at `{text}` is not an RFC 3339 time"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("created_at `{text}` is out of range"))
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A path a backup may hold: the catalog, the keyring, or an object under
/// `objects/` whose key is made of plain components (store keys are ids and
/// digits), so that nothing read from a manifest can point outside the
/// backup or the data directory it is restored into.
pub fn check_path(path: &str) -> Result<(), String> {
    if path == CATALOG_FILE || path == KEYRING_FILE {
        return Ok(());
    }
    let bad =
        || format!("path `{path}` is not one a backup holds (catalog.db, keyring.json, objects/…)");
    let key = object_key(path).ok_or_else(bad)?;
    let plain = |c: &str| {
        !c.is_empty()
            && c != "."
            && c != ".."
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    if path.len() > 1024 || !key.split('/').all(plain) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, size: u64) -> FileEntry {
        FileEntry {
            path: path.into(),
            size,
            sha256: "ab".repeat(32),
        }
    }

    fn sample() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            created_at: format_time(1_772_446_500_123),
            callvault_version: "0.1.0".into(),
            catalog_schema_version: 5,
            counts: Counts {
                tenants: 1,
                recordings: 1,
                chunks: 2,
                objects: 2,
                object_bytes: 300,
                ..Counts::default()
            },
            files: vec![
                entry("catalog.db", 4096),
                entry("keyring.json", 512),
                entry("objects/t/a1/r/b2/0000000000", 200),
                entry("objects/t/a1/r/b2/0000000001", 100),
            ],
        }
    }

    /// What `to_json` writes, `parse` reads back unchanged.
    #[test]
    fn round_trips() {
        let m = sample();
        let text = m.to_json();
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        assert_eq!(m.created_at, "2026-03-02T10:15:00.123Z");
        assert_eq!(m.created_at_ms().unwrap(), 1_772_446_500_123);
        assert_eq!(
            m.objects().map(|(k, _)| k).collect::<Vec<_>>(),
            ["t/a1/r/b2/0000000000", "t/a1/r/b2/0000000001"]
        );
        assert_eq!(object_path("t/a1/r/b2/0000000000"), m.files[2].path);
    }

    /// Each way a manifest can be wrong is refused with a message naming it.
    #[test]
    fn refuses_what_no_backup_writes() {
        type Edit = fn(&mut Manifest);
        let cases: [(&str, Edit); 7] = [
            ("is not callvault-backup/1", |m| m.format = "x/2".into()),
            ("not an RFC 3339", |m| m.created_at = "yesterday".into()),
            ("not a hex SHA-256", |m| m.files[1].sha256 = "AB".repeat(32)),
            ("listed twice", |m| {
                m.files[3].path = m.files[2].path.clone()
            }),
            ("catalog.db is not listed", |m| {
                m.files.remove(0);
            }),
            ("counts.objects", |m| m.counts.objects = 3),
            ("not one a backup holds", |m| {
                m.files[1].path = "../keyring.json".into()
            }),
        ];
        for (want, edit) in cases {
            let mut m = sample();
            edit(&mut m);
            let err = Manifest::parse(&m.to_json()).unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
        }
        let err = Manifest::parse(br#"{"format": "callvault-backup/1"}"#).unwrap_err();
        assert!(err.starts_with("not a backup manifest"), "{err}");
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        v["signed_by"] = "nobody".into();
        let err = Manifest::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
    }

    /// No path from a manifest can leave the backup or the data directory.
    #[test]
    fn paths_stay_inside() {
        for ok in [
            "catalog.db",
            "keyring.json",
            "objects/t/0194-ab/r/0194-cd/0000000007",
        ] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "objects",
            "objects/",
            "objects/../catalog.db",
            "objects/t/./x",
            "objects/t//x",
            "objects/t/x/",
            "objects/t/\u{e9}",
            "objects\\t\\x",
            "catalog.db-wal",
            "manifest.json",
            "./catalog.db",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }

    /// The time keeps milliseconds and reads back from other RFC 3339
    /// spellings (an operator may edit it by hand).
    #[test]
    fn times() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_500), "1970-01-01T00:00:01.5Z");
        assert_eq!(
            parse_time("2026-03-02T11:15:00+01:00").unwrap(),
            1_772_446_500_000
        );
    }
}
