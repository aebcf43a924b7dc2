//! Checkpoints (<https://c2sp.org/tlog-checkpoint>): the signed statement
//! "the log `origin` has `size` leaves and root `root`", as the text of a
//! signed note.
//!
//! Pure: no I/O. The format is specified in the module documentation of
//! [`super`].

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::merkle::Hash;
use super::note::{self, NoteError, SignerKey, VerifierKey};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    #[error("the checkpoint is for log {actual:?}, not {expected:?}")]
    OriginMismatch { expected: String, actual: String },
    #[error(transparent)]
    Note(#[from] NoteError),
}

/// A log's tree head. Fields are private so that every value formats to a
/// text [`Checkpoint::parse`] accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
    extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint of `origin` at `size` with `root`. The origin and each
    /// extension line must be non-empty single lines without control
    /// characters.
    pub fn new(
        origin: &str,
        size: u64,
        root: Hash,
        extensions: Vec<String>,
    ) -> Result<Self, CheckpointError> {
        check_line(origin, "the origin is empty or not a single printable line")?;
        for line in &extensions {
            check_line(
                line,
                "an extension line is empty or not a single printable line",
            )?;
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// Parses a checkpoint body (a note's text): origin, decimal size without
    /// leading zeros, base64 of a 32-byte root, optional non-empty extension
    /// lines, each line ending in a newline.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let body = text.strip_suffix('\n').ok_or(CheckpointError::Malformed(
            "the text does not end in a newline",
        ))?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(CheckpointError::Malformed("fewer than three lines"));
        };
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        Self::new(origin, parse_size(size)?, parse_root(root)?, extensions)
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn root(&self) -> &Hash {
        &self.root
    }

    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// The note text: `origin\nsize\nbase64(root)\n` then each extension line.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root.as_bytes())
        );
        for line in &self.extensions {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// The signed checkpoint note.
    pub fn sign(&self, signers: &[&SignerKey]) -> Result<String, CheckpointError> {
        Ok(note::sign(&self.to_text(), signers)?)
    }

    /// Verifies a signed checkpoint note against `known` keys (see
    /// [`note::open`]), parses it, and checks it is a checkpoint of the log
    /// `origin`: a signature by the right key over another log's checkpoint
    /// (another tenant's, with a shared key) is refused.
    pub fn open(
        signed: &[u8],
        origin: &str,
        known: &[VerifierKey],
    ) -> Result<Self, CheckpointError> {
        let verified = note::open(signed, known)?;
        let checkpoint = Self::parse(&verified.text)?;
        if checkpoint.origin != origin {
            return Err(CheckpointError::OriginMismatch {
                expected: origin.to_owned(),
                actual: checkpoint.origin,
            });
        }
        Ok(checkpoint)
    }
}

fn check_line(line: &str, error: &'static str) -> Result<(), CheckpointError> {
    // The note format already refuses characters below U+0020 other than
    // newline; a line has no newline either.
    if line.is_empty() || line.chars().any(|c| c < ' ') {
        return Err(CheckpointError::Malformed(error));
    }
    Ok(())
}

fn parse_size(line: &str) -> Result<u64, CheckpointError> {
    let malformed = CheckpointError::Malformed(
        "the tree size is not a decimal number without leading zeros below 2^64",
    );
    let digits_only = !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (line.len() > 1 && line.starts_with('0')) {
        return Err(malformed);
    }
    line.parse().map_err(|_| malformed)
}

fn parse_root(line: &str) -> Result<Hash, CheckpointError> {
    let malformed =
        || CheckpointError::Malformed("the root hash is not canonical base64 of 32 bytes");
    let bytes = STANDARD.decode(line).map_err(|_| malformed())?;
    Hash::from_slice(&bytes).map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::merkle::{leaf_hash, root};

    /// The example of https://c2sp.org/tlog-checkpoint (C2SP/C2SP commit
    /// 5ba5ee8, tlog-checkpoint.md). Its key is not published, so only the
    /// body is checked here.
    #[test]
    fn parses_the_c2sp_example_body() {
        let text =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let checkpoint = Checkpoint::parse(text).unwrap();
        assert_eq!(checkpoint.origin(), "example.com/behind-the-sofa");
        assert_eq!(checkpoint.size(), 20_852_163);
        assert!(checkpoint.extensions().is_empty());
        assert_eq!(checkpoint.to_text(), text);
    }

    #[test]
    fn round_trips_with_extensions_and_every_edge_size() {
        let r = root(&[leaf_hash(b"a"), leaf_hash(b"b")]);
        for size in [0, 1, 9, 10, u64::MAX] {
            let ext = vec![
                "ext one".to_owned(),
                "\u{2014} looks like a signature".to_owned(),
            ];
            let checkpoint = Checkpoint::new("callvault.test/tenant/t1", size, r, ext).unwrap();
            assert_eq!(
                Checkpoint::parse(&checkpoint.to_text()).unwrap(),
                checkpoint
            );
        }
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let root = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=";
        let cases: Vec<(&str, String)> = vec![
            ("empty", String::new()),
            ("no final newline", format!("log\n1\n{root}")),
            ("two lines", "log\n1\n".to_owned()),
            ("empty origin", format!("\n1\n{root}\n")),
            ("leading zero", format!("log\n01\n{root}\n")),
            ("plus sign", format!("log\n+1\n{root}\n")),
            ("negative", format!("log\n-1\n{root}\n")),
            ("hex size", format!("log\n0x1\n{root}\n")),
            ("space in size", format!("log\n 1\n{root}\n")),
            ("2^64", format!("log\n18446744073709551616\n{root}\n")),
            ("empty size", format!("log\n\n{root}\n")),
            (
                "short root",
                "log\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2=\n".to_owned(),
            ),
            (
                "unpadded root",
                "log\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n".to_owned(),
            ),
            (
                "non-canonical root",
                "log\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=\n".to_owned(),
            ),
            ("hex root", format!("log\n1\n{}\n", "ab".repeat(32))),
            ("empty extension", format!("log\n1\n{root}\n\n")),
            (
                "empty middle extension",
                format!("log\n1\n{root}\na\n\nb\n"),
            ),
            ("carriage return", format!("log\r\n1\n{root}\n")),
            ("tab in extension", format!("log\n1\n{root}\na\tb\n")),
        ];
        for (name, text) in cases {
            assert!(
                matches!(Checkpoint::parse(&text), Err(CheckpointError::Malformed(_))),
                "{name} was accepted"
            );
        }
        let r = Hash::from_bytes([0; 32]);
        assert!(Checkpoint::new("two\nlines", 1, r, vec![]).is_err());
        assert!(Checkpoint::new("log", 1, r, vec![String::new()]).is_err());
    }
}
