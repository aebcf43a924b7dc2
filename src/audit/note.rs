//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519 keys, in
//! the text forms of Go's `golang.org/x/mod/sumdb/note`: signing, strict
//! parsing and verification, and the signer and verifier key texts.
//!
//! Pure: no I/O. Key generation draws from the system random source. The
//! format is specified in the module documentation of [`super`].

use std::fmt;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::SecretString;
use zeroize::Zeroizing;

/// Signature type byte of Ed25519 in key IDs and key texts.
pub const ALG_ED25519: u8 = 0x01;
/// A note with more signature lines is refused (Go's limit; the spec asks
/// verifiers to accept at least 16).
pub const MAX_SIGNATURES: usize = 100;
const SIGNATURE_PREFIX: &str = "\u{2014} ";
const SIGNER_KEY_PREFIX: &str = "PRIVATE+KEY+";
const SEED_LEN: usize = 32;
const PUBLIC_KEY_LEN: usize = 32;
pub const SIGNATURE_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    #[error("key name {0:?} must be non-empty, without spaces or '+'")]
    KeyName(String),
    #[error("malformed verifier key: {0}")]
    VerifierKey(&'static str),
    #[error("malformed signer key: {0}")]
    SignerKey(&'static str),
    #[error("signature type {0:#04x} is not supported (only Ed25519, 0x01)")]
    UnsupportedAlgorithm(u8),
    #[error("key ID {stated:08x} in the key text is not the key's ID {computed:08x}")]
    KeyIdMismatch { stated: u32, computed: u32 },
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    #[error("the note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    #[error("signature by known key {name}+{key_id:08x} does not verify")]
    InvalidSignature { name: String, key_id: u32 },
    #[error("two verifier keys are named {name}+{key_id:08x}")]
    AmbiguousVerifier { name: String, key_id: u32 },
    #[error("the note has no signature by a known key")]
    NoKnownSignature,
    #[error("a note needs at least one signer")]
    NoSigner,
    #[error("Ed25519 signing failed")]
    Signing,
    #[error("the system random source failed")]
    Random,
}

/// `SHA-256(name || 0x0A || 0x01 || public key)[:4]`, big-endian.
pub fn key_id(name: &str, public_key: &[u8; PUBLIC_KEY_LEN]) -> u32 {
    let mut input = Vec::with_capacity(name.len() + 2 + PUBLIC_KEY_LEN);
    input.extend_from_slice(name.as_bytes());
    input.push(b'\n');
    input.push(ALG_ED25519);
    input.extend_from_slice(public_key);
    let hash = digest(&SHA256, &input);
    let mut id = [0u8; 4];
    id.copy_from_slice(&hash.as_ref()[..4]);
    u32::from_be_bytes(id)
}

/// Non-empty, no Unicode white space (Go's `unicode.IsSpace`) and no '+'.
fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(NoteError::KeyName(name.to_owned()));
    }
    Ok(())
}

/// Splits `<name>+<8 hex digits>+<base64>` and decodes the last part.
fn split_key_text(text: &str) -> Option<(&str, u32, Zeroizing<Vec<u8>>)> {
    let (name, rest) = text.split_once('+')?;
    let (id_hex, key_b64) = rest.split_once('+')?;
    let lowercase_hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    if id_hex.len() != 8 || !id_hex.bytes().all(lowercase_hex) {
        return None;
    }
    let id = u32::from_str_radix(id_hex, 16).ok()?;
    let key = Zeroizing::new(STANDARD.decode(key_b64).ok()?);
    Some((name, id, key))
}

/// An Ed25519 public key with its name and key ID: what a verifier trusts.
/// Text form (`Display`, [`VerifierKey::parse`]):
/// `<name>+<hex key ID>+<base64(0x01 || public key)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    key_id: u32,
    public_key: [u8; PUBLIC_KEY_LEN],
}

impl VerifierKey {
    pub fn from_public_key(
        name: &str,
        public_key: [u8; PUBLIC_KEY_LEN],
    ) -> Result<Self, NoteError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, &public_key),
            public_key,
        })
    }

    /// Parses a verifier key text; its key ID must match the name and key.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let (name, stated, key) = split_key_text(text).ok_or(NoteError::VerifierKey(
            "expected <name>+<8 lowercase hex digits>+<base64 key>",
        ))?;
        check_name(name)?;
        let public_key = match key.split_first() {
            Some((&ALG_ED25519, public_key)) => <[u8; PUBLIC_KEY_LEN]>::try_from(public_key)
                .map_err(|_| NoteError::VerifierKey("an Ed25519 public key is 32 bytes"))?,
            Some((&other, _)) => return Err(NoteError::UnsupportedAlgorithm(other)),
            None => return Err(NoteError::VerifierKey("empty key")),
        };
        let computed = key_id(name, &public_key);
        if stated != computed {
            return Err(NoteError::KeyIdMismatch { stated, computed });
        }
        Ok(Self {
            name: name.to_owned(),
            key_id: computed,
            public_key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Checks a [`SignerKey::sign_raw`] signature.
    pub fn verify_raw(&self, context: &[u8], message: &[u8], signature: &[u8]) -> bool {
        let mut m = Vec::with_capacity(context.len() + message.len());
        m.extend_from_slice(context);
        m.extend_from_slice(message);
        UnparsedPublicKey::new(&ED25519, self.public_key)
            .verify(&m, signature)
            .is_ok()
    }

    pub fn public_key(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.public_key
    }

    fn verifies(&self, text: &str, signature: &[u8]) -> bool {
        signature.len() == SIGNATURE_LEN
            && UnparsedPublicKey::new(&ED25519, &self.public_key)
                .verify(text.as_bytes(), signature)
                .is_ok()
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut key = vec![ALG_ED25519];
        key.extend_from_slice(&self.public_key);
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            STANDARD.encode(key)
        )
    }
}

/// An Ed25519 signing key with its name. The seed is zeroized on drop and
/// never printed; its only way out is [`SignerKey::to_secret_text`].
pub struct SignerKey {
    name: String,
    key_id: u32,
    seed: Zeroizing<[u8; SEED_LEN]>,
    pair: Ed25519KeyPair,
    public_key: [u8; PUBLIC_KEY_LEN],
}

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignerKey")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .field("seed", &"<redacted>")
            .finish()
    }
}

impl SignerKey {
    /// A fresh key from the system random source.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        aws_lc_rs::rand::fill(seed.as_mut()).map_err(|_| NoteError::Random)?;
        Self::from_seed(name, seed)
    }

    /// The key of a 32-byte RFC 8032 seed.
    pub fn from_seed(name: &str, seed: Zeroizing<[u8; SEED_LEN]>) -> Result<Self, NoteError> {
        check_name(name)?;
        // Building from the seed we hold keeps the secret in zeroized memory
        // on our side (`Ed25519KeyPair::generate` would hand it back in a
        // buffer we do not control).
        let pair = Ed25519KeyPair::from_seed_unchecked(seed.as_ref())
            .map_err(|_| NoteError::SignerKey("the seed is not a valid Ed25519 seed"))?;
        let public_key = <[u8; PUBLIC_KEY_LEN]>::try_from(pair.public_key().as_ref())
            .map_err(|_| NoteError::SignerKey("the derived public key is not 32 bytes"))?;
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, &public_key),
            seed,
            pair,
            public_key,
        })
    }

    /// A 256-bit secret for `purpose`, derived from the seed
    /// (HMAC-SHA256(seed, "callvault derived key\0" || purpose)): another
    /// deployment secret without another secret to distribute. Knowing it
    /// reveals nothing of the seed.
    pub fn derive_secret(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, self.seed.as_ref());
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
        ctx.update(b"callvault derived key\0");
        ctx.update(purpose.as_bytes());
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Parses `PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>`; the key
    /// ID must be that of the derived public key.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let rest = text
            .strip_prefix(SIGNER_KEY_PREFIX)
            .ok_or(NoteError::SignerKey("does not start with PRIVATE+KEY+"))?;
        let (name, stated, key) = split_key_text(rest).ok_or(NoteError::SignerKey(
            "expected PRIVATE+KEY+<name>+<8 lowercase hex digits>+<base64 key>",
        ))?;
        check_name(name)?;
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        match key.split_first() {
            Some((&ALG_ED25519, bytes)) if bytes.len() == SEED_LEN => seed.copy_from_slice(bytes),
            Some((&ALG_ED25519, _)) => {
                return Err(NoteError::SignerKey("an Ed25519 seed is 32 bytes"));
            }
            Some((&other, _)) => return Err(NoteError::UnsupportedAlgorithm(other)),
            None => return Err(NoteError::SignerKey("empty key")),
        }
        let key = Self::from_seed(name, seed)?;
        if stated != key.key_id {
            return Err(NoteError::KeyIdMismatch {
                stated,
                computed: key.key_id,
            });
        }
        Ok(key)
    }

    /// The signer key text, for a secret store. The one place the seed
    /// leaves this type.
    pub fn to_secret_text(&self) -> SecretString {
        let mut key = Zeroizing::new(Vec::with_capacity(1 + SEED_LEN));
        key.push(ALG_ED25519);
        key.extend_from_slice(self.seed.as_ref());
        let b64_len = (1 + SEED_LEN).div_ceil(3) * 4;
        let len = SIGNER_KEY_PREFIX.len() + self.name.len() + 10 + b64_len;
        // Sized exactly, so no reallocation leaves a copy behind.
        let mut text = String::with_capacity(len);
        text.push_str(SIGNER_KEY_PREFIX);
        text.push_str(&self.name);
        text.push_str(&format!("+{:08x}+", self.key_id));
        STANDARD.encode_string(key.as_slice(), &mut text);
        SecretString::from(text)
    }

    /// A raw Ed25519 signature over `context || message`, for signatures
    /// that are not notes (the audit trail signs each event's leaf hash).
    /// `context` separates the uses of one key.
    pub fn sign_raw(&self, context: &[u8], message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut m = Vec::with_capacity(context.len() + message.len());
        m.extend_from_slice(context);
        m.extend_from_slice(message);
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.pair.sign(&m).as_ref());
        out
    }

    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            key_id: self.key_id,
            public_key: self.public_key,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }
}

/// Checks the note text rules shared by signing and opening: valid UTF-8 (a
/// `&str`), no control character but newline.
fn check_characters(text: &str) -> Result<(), NoteError> {
    if text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::Malformed("control character other than newline"));
    }
    Ok(())
}

/// Signs `text` (ending in a newline) with each signer, in order: the whole
/// signed note. Ed25519 is deterministic, so the same text and keys always
/// give the same bytes.
pub fn sign(text: &str, signers: &[&SignerKey]) -> Result<String, NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed("the text does not end in a newline"));
    }
    check_characters(text)?;
    if signers.is_empty() {
        return Err(NoteError::NoSigner);
    }
    let mut note = String::with_capacity(text.len() + 1 + signers.len() * 110);
    note.push_str(text);
    note.push('\n');
    for signer in signers {
        let signature = signer
            .pair
            .try_sign(text.as_bytes())
            .map_err(|_| NoteError::Signing)?;
        let mut raw = signer.key_id.to_be_bytes().to_vec();
        raw.extend_from_slice(signature.as_ref());
        note.push_str(SIGNATURE_PREFIX);
        note.push_str(&signer.name);
        note.push(' ');
        STANDARD.encode_string(&raw, &mut note);
        note.push('\n');
    }
    Ok(note)
}

/// A note whose signatures verified: its text and the known keys that signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedNote {
    pub text: String,
    pub signed_by: Vec<VerifierKey>,
}

/// Parses a signed note and verifies it against `known` keys.
///
/// Signatures by keys not in `known` (name and key ID both matching) are
/// ignored; a known key's signature that does not verify rejects the note
/// (`InvalidSignature`); a repeated signature by the same key counts once. At
/// least one known key must have signed (`NoKnownSignature`). Any syntax
/// error rejects the whole note (`Malformed`).
pub fn open(note: &[u8], known: &[VerifierKey]) -> Result<VerifiedNote, NoteError> {
    let note = std::str::from_utf8(note).map_err(|_| NoteError::Malformed("not UTF-8"))?;
    check_characters(note)?;
    let split = note
        .rfind("\n\n")
        .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
    let (text, signatures) = (&note[..=split], &note[split + 2..]);
    let Some(signatures) = signatures.strip_suffix('\n') else {
        return Err(NoteError::Malformed(
            "the signature block is empty or does not end in a newline",
        ));
    };
    let mut signed_by: Vec<VerifierKey> = Vec::new();
    for (count, line) in signatures.split('\n').enumerate() {
        if count == MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }
        let (name, key_id, signature) = parse_signature_line(line)?;
        let mut matching = known
            .iter()
            .filter(|k| k.name == name && k.key_id == key_id);
        let Some(key) = matching.next() else {
            continue;
        };
        if matching.next().is_some() {
            return Err(NoteError::AmbiguousVerifier {
                name: name.to_owned(),
                key_id,
            });
        }
        if signed_by.contains(key) {
            continue;
        }
        if !key.verifies(text, &signature) {
            return Err(NoteError::InvalidSignature {
                name: name.to_owned(),
                key_id,
            });
        }
        signed_by.push(key.clone());
    }
    if signed_by.is_empty() {
        return Err(NoteError::NoKnownSignature);
    }
    Ok(VerifiedNote {
        text: text.to_owned(),
        signed_by,
    })
}

/// `— <name> <base64(key ID || signature)>` → (name, key ID, signature).
fn parse_signature_line(line: &str) -> Result<(&str, u32, Vec<u8>), NoteError> {
    let rest = line
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or(NoteError::Malformed(
            "a signature line does not start with an em dash and a space",
        ))?;
    let (name, b64) = rest.split_once(' ').ok_or(NoteError::Malformed(
        "a signature line has no space after the key name",
    ))?;
    check_name(name).map_err(|_| NoteError::Malformed("a signature's key name is not valid"))?;
    let raw = STANDARD
        .decode(b64)
        .map_err(|_| NoteError::Malformed("a signature is not canonical standard base64"))?;
    match raw.split_first_chunk::<4>() {
        Some((id, signature)) if !signature.is_empty() => {
            Ok((name, u32::from_be_bytes(*id), signature.to_vec()))
        }
        _ => Err(NoteError::Malformed(
            "a signature is shorter than a key ID and one byte",
        )),
    }
}

#[cfg(test)]
mod tests;
