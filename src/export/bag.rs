//! The bag's layout and its tag files (RFC 8493), shared by the server that
//! writes a bundle and the verifier that reads one. Pure: no I/O.
//! `docs/EXPORT.md` is the normative description.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `bagit.txt`: the bag declaration.
pub const BAGIT_TXT: &str = "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n";

pub const BAGIT_PATH: &str = "bagit.txt";
pub const BAG_INFO_PATH: &str = "bag-info.txt";
pub const MANIFEST_PATH: &str = "manifest-sha256.txt";
pub const TAG_MANIFEST_PATH: &str = "tagmanifest-sha256.txt";
/// The detached signature over the tag manifest: a signed note (not listed in
/// the tag manifest, which it covers).
pub const SIGNATURE_PATH: &str = "tagmanifest-sha256.txt.sig";
pub const CHECKPOINT_PATH: &str = "data/audit/checkpoint.txt";
pub const VERIFIER_KEY_PATH: &str = "data/audit/verifier-key.txt";
pub const RECORDINGS_DIR: &str = "data/recordings/";
pub const EVENTS_DIR: &str = "data/audit/events/";

/// The first line of the signature note's text.
pub const SIGNATURE_HEADER: &str = "callvault export v1";

/// The tar's single top-level directory: the bag's base directory.
pub fn root_dir(export_id: &str) -> String {
    format!("callvault-export-{export_id}")
}

/// The file extension of a recording by the container its probe found.
pub fn extension(container: &str) -> &'static str {
    match container {
        "wav" => "wav",
        "mp3" => "mp3",
        "flac" => "flac",
        "ogg" => "ogg",
        "webm" => "webm",
        "mkv" => "mka",
        "mp4" => "m4a",
        _ => "bin",
    }
}

/// Where a recording's audio goes in the bag.
pub fn audio_path(recording_id: &str, container: &str) -> String {
    format!("{RECORDINGS_DIR}{recording_id}.{}", extension(container))
}

/// Where a recording's metadata goes in the bag.
pub fn metadata_path(recording_id: &str) -> String {
    format!("{RECORDINGS_DIR}{recording_id}.json")
}

/// Where an audit event's inclusion proof goes in the bag (zero padded so
/// that names sort in log order).
pub fn event_path(index: u64) -> String {
    format!("{EVENTS_DIR}{index:020}.json")
}

/// `data/recordings/<id>.json`: what the catalog knows of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingMetadata {
    pub recording_id: String,
    pub external_call_id: String,
    /// The audio file in the bag (relative to the bag's base directory).
    pub file: String,
    pub labels: BTreeMap<String, String>,
    /// When the call started, as the platform said (RFC 3339), if it did.
    pub start_time: Option<String>,
    /// When the recording was ingested (RFC 3339).
    pub ingest_time: String,
    pub size_bytes: u64,
    /// Hex SHA-256 of the audio, computed at ingest.
    pub sha256: String,
    pub chunk_count: u32,
    pub chunk_size_bytes: u32,
    pub format_version: u8,
    pub kms_key_arn: String,
    pub kms_region: String,
    pub wrap_algorithm: String,
    pub probe: Probe,
}

/// What the audio probe found at ingest. The same fields as
/// `domain::AudioInfo`, kept apart on purpose: this is a published file
/// format, which must not change when the domain type does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub container: String,
    pub codec: String,
    pub sample_rate_hz: u32,
    pub channels: u32,
    pub duration_ms: u64,
    pub warning: Option<String>,
}

/// `Payload-Oxum`: payload octets and file count.
pub fn payload_oxum(octets: u64, files: u64) -> String {
    format!("{octets}.{files}")
}

/// A tag file of `Label: value` lines, in the order given. Values are one
/// line each (the caller refuses control characters).
pub fn tag_file(fields: &[(&str, String)]) -> String {
    fields.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
}

/// The `Label: value` lines of a tag file (continuation lines, which start
/// with white space, are appended to the value before them).
pub fn parse_tag_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with([' ', '\t']) {
            let last = out
                .last_mut()
                .ok_or_else(|| format!("line {} continues nothing", n + 1))?;
            last.1.push(' ');
            last.1.push_str(line.trim());
            continue;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("line {} is not `Label: value`", n + 1))?;
        out.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    Ok(out)
}

/// A manifest: one `<hex sha-256>  <path>` line per file, in path order.
pub fn manifest(entries: &BTreeMap<String, String>) -> String {
    entries
        .iter()
        .map(|(path, sha)| format!("{sha}  {path}\n"))
        .collect()
}

/// The entries of a manifest, refusing malformed lines and paths that
/// appear twice or leave the bag.
pub fn parse_manifest(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let (sha, path) = line
            .split_once(char::is_whitespace)
            .map(|(s, p)| (s, p.trim_start()))
            .filter(|(s, p)| {
                s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) && !p.is_empty()
            })
            .ok_or_else(|| format!("line {} is not `<sha-256>  <path>`", n + 1))?;
        if path.starts_with('/') || path.split('/').any(|c| c == ".." || c == ".") {
            return Err(format!("line {}: `{path}` leaves the bag", n + 1));
        }
        if out
            .insert(path.to_owned(), sha.to_ascii_lowercase())
            .is_some()
        {
            return Err(format!("line {}: `{path}` is listed twice", n + 1));
        }
    }
    Ok(out)
}

/// The text the signature note signs: the export, the audit log it belongs
/// to, and the SHA-256 of the tag manifest (which covers every other file
/// through the payload manifest).
pub fn signature_text(export_id: &str, origin: &str, tag_manifest_sha256: &str) -> String {
    format!(
        "{SIGNATURE_HEADER}\nexport {export_id}\norigin {origin}\n{TAG_MANIFEST_PATH} sha256 {tag_manifest_sha256}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_round_trip_and_refuse_what_they_must() {
        let mut m = BTreeMap::new();
        m.insert("data/b.wav".to_owned(), "a".repeat(64));
        m.insert("data/a.json".to_owned(), "b".repeat(64));
        let text = manifest(&m);
        assert!(text.starts_with(&format!("{}  data/a.json\n", "b".repeat(64))));
        assert_eq!(parse_manifest(&text).unwrap(), m);
        let cases = [
            (
                format!("{}  data/x\n{0}  data/x\n", "c".repeat(64)),
                "twice",
            ),
            (
                format!("{}  ../etc/passwd\n", "c".repeat(64)),
                "leaves the bag",
            ),
            ("abc  data/x\n".to_owned(), "line 1"),
            (format!("{}\n", "c".repeat(64)), "line 1"),
        ];
        for (text, want) in cases {
            let err = parse_manifest(&text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn tag_files_round_trip_with_continuations() {
        let text = tag_file(&[
            ("Source-Organization", "acme".into()),
            ("Payload-Oxum", payload_oxum(10, 2)),
        ]);
        assert_eq!(text, "Source-Organization: acme\nPayload-Oxum: 10.2\n");
        let parsed = parse_tag_file(&format!("{text}External-Description: a\n  b\n")).unwrap();
        assert_eq!(parsed[1], ("Payload-Oxum".into(), "10.2".into()));
        assert_eq!(parsed[2], ("External-Description".into(), "a b".into()));
        assert!(parse_tag_file(" x\n").is_err());
        assert!(parse_tag_file("no colon\n").is_err());
    }

    #[test]
    fn paths_sort_in_log_order_and_name_the_container() {
        assert!(event_path(9) < event_path(10));
        assert_eq!(audio_path("r", "mp4"), "data/recordings/r.m4a");
        assert_eq!(audio_path("r", "wav"), "data/recordings/r.wav");
    }
}
