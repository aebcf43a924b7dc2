//! Signed playback URLs: what a browser fetches audio with, without a
//! bearer token (`docs/PLAYBACK-URLS.md`).
//!
//! A URL is `/v1/recordings/{id}/audio?sig=KID.PAYLOAD.MAC`. `PAYLOAD` is
//! base64url JSON of the [`Claims`] (tenant, issuing token id, purpose,
//! expiry, the tenant's revocation epoch at issue, a listening-session id);
//! `MAC` is HMAC-SHA256 under the URL key `KID` over a domain tag, the key
//! id, the recording id of the path and `PAYLOAD` as sent. The MAC is
//! checked before the payload is parsed, in constant time. Keys rotate:
//! the first key of the set signs, all of them verify.
//!
//! This module is pure: the request-time checks against the catalog (the
//! token still live, the epoch current) are [`check_issuer`]'s, and the
//! issuing and revoking use cases are [`issue`] and [`revoke_all`].

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::Purpose;
use crate::access::{self, Action};
use crate::archive::Archive;
use crate::audit::event::Action as AuditAction;
use crate::audit::trail;
use crate::catalog::{tenants, tokens};
use crate::domain::{Principal, RecordingId, TenantId, now_ms};
use crate::error::{Error, Result};

/// How long a URL works when the caller does not say.
pub const DEFAULT_TTL_SECS: u64 = 15 * 60;
/// The shortest and longest lifetimes a URL may be issued with.
pub const MIN_TTL_SECS: u64 = 10;
pub const MAX_TTL_SECS: u64 = 12 * 3600;

const MAC_DOMAIN: &[u8] = b"callvault playback url v1\0";
const KEY_LEN: usize = 32;
/// What the derived key's id starts with (keys from a file have the ids the
/// file gives them).
const DERIVED_KEY_PREFIX: &str = "d";

/// One URL key: an id and a 256-bit HMAC key (redacted from `Debug`).
pub struct UrlKey {
    id: String,
    secret: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for UrlKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UrlKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl UrlKey {
    fn mac(&self, recording: &RecordingId, payload: &str) -> aws_lc_rs::hmac::Tag {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, self.secret.as_ref());
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
        for part in [
            self.id.as_bytes(),
            recording.to_string().as_bytes(),
            payload.as_bytes(),
        ] {
            ctx.update(MAC_DOMAIN);
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        ctx.sign()
    }
}

/// The deployment's URL keys: the first signs, every one verifies (so a
/// key can rotate without breaking the URLs already out).
#[derive(Debug)]
pub struct UrlKeys {
    keys: Vec<UrlKey>,
}

/// A key id: 1 to 32 of `[A-Za-z0-9_-]` (it travels in the URL).
fn valid_key_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl UrlKeys {
    /// One key derived from the deployment's audit signing key, which every
    /// node already shares (HMAC-SHA256 of the seed under a purpose label):
    /// no second secret to distribute. Its id names the audit key it came
    /// from.
    pub fn derived(audit_key: &crate::audit::note::SignerKey) -> Self {
        let secret = audit_key.derive_secret("playback url key");
        Self {
            keys: vec![UrlKey {
                id: format!("{DERIVED_KEY_PREFIX}{:08x}", audit_key.key_id()),
                secret,
            }],
        }
    }

    /// Keys from a file's text: one per line, `KEY_ID BASE64_32_BYTES`
    /// (`#` starts a comment); the first line's key signs. Errors name the
    /// line, never its secret.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut keys: Vec<UrlKey> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| format!("line {}: {why}", n + 1);
            let (id, b64) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad("expected `KEY_ID BASE64_KEY`"))?;
            if !valid_key_id(id) {
                return Err(bad("a key id is 1 to 32 of A-Z a-z 0-9 _ -"));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(bad("the key id appears twice"));
            }
            let raw = Zeroizing::new(
                STANDARD
                    .decode(b64.trim())
                    .or_else(|_| URL_SAFE_NO_PAD.decode(b64.trim()))
                    .map_err(|_| bad("the key is not base64"))?,
            );
            let secret: [u8; KEY_LEN] = raw
                .as_slice()
                .try_into()
                .map_err(|_| bad("the key must be 32 bytes"))?;
            keys.push(UrlKey {
                id: id.to_owned(),
                secret: Zeroizing::new(secret),
            });
        }
        if keys.is_empty() {
            return Err("no key in the file".into());
        }
        Ok(Self { keys })
    }

    /// A fresh key file's line: `KEY_ID BASE64`.
    pub fn generate_line(id: &str) -> Result<Zeroizing<String>> {
        if !valid_key_id(id) {
            return Err(Error::invalid("key id", "is 1 to 32 of A-Z a-z 0-9 _ -"));
        }
        let mut secret = Zeroizing::new([0u8; KEY_LEN]);
        crate::crypto::fill_random(&mut secret[..])
            .map_err(|e| Error::Server(crate::error::DriverError::new(e)))?;
        Ok(Zeroizing::new(format!(
            "{id} {}",
            STANDARD.encode(&secret[..])
        )))
    }

    /// The id of the key that signs new URLs.
    pub fn signing_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// The `sig` parameter of a URL for `recording` carrying `claims`.
    pub fn sign(&self, recording: &RecordingId, claims: &Claims) -> String {
        let key = &self.keys[0];
        // Serializing a struct of strings and integers cannot fail.
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(json);
        let mac = URL_SAFE_NO_PAD.encode(key.mac(recording, &payload).as_ref());
        format!("{}.{payload}.{mac}", key.id)
    }

    /// The claims of `sig` for `recording`, if the MAC is right and the URL
    /// has not expired at `now_ms`.
    pub fn verify(
        &self,
        recording: &RecordingId,
        sig: &str,
        now_ms: i64,
    ) -> std::result::Result<Claims, UrlRefused> {
        let mut parts = sig.split('.');
        let (Some(kid), Some(payload), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(UrlRefused::BadSignature);
        };
        let key = self
            .keys
            .iter()
            .find(|k| k.id == kid)
            .ok_or(UrlRefused::UnknownKey)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| UrlRefused::BadSignature)?;
        let expected = key.mac(recording, payload);
        if !constant_time_eq(expected.as_ref(), &mac) {
            return Err(UrlRefused::BadSignature);
        }
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| UrlRefused::BadSignature)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| UrlRefused::BadSignature)?;
        if now_ms >= claims.expires_at_ms {
            return Err(UrlRefused::Expired {
                at_ms: claims.expires_at_ms,
            });
        }
        Ok(claims)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a URL grants, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The tenant.
    #[serde(rename = "t")]
    pub tenant: String,
    /// The issuing token's id: revoking the token stops the URL.
    #[serde(rename = "k")]
    pub token_id: String,
    /// `stream` or `download`.
    #[serde(rename = "p")]
    pub purpose: String,
    /// When the URL stops working (ms since the epoch).
    #[serde(rename = "e")]
    pub expires_at_ms: i64,
    /// The tenant's URL epoch at issue: bumping it stops the URL.
    #[serde(rename = "n")]
    pub epoch: u64,
    /// The listening session the URL's requests are audited under.
    #[serde(rename = "s")]
    pub session: String,
}

impl Claims {
    pub fn purpose(&self) -> Purpose {
        if self.purpose == Purpose::Download.as_str() {
            Purpose::Download
        } else {
            Purpose::Stream
        }
    }
}

/// Why a URL does not work. The texts are what the client reads (with
/// 403): none says anything about another tenant or recording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    #[error("the link has no signature")]
    Missing,
    #[error("the link's signature is not valid")]
    BadSignature,
    #[error("the link was signed with a key this server no longer accepts")]
    UnknownKey,
    #[error("the link expired at {}", crate::domain::format_ms(*at_ms))]
    Expired { at_ms: i64 },
    #[error("the links of this tenant were revoked")]
    EpochRevoked,
    #[error("the token that issued the link was revoked or has expired")]
    IssuerRevoked,
    #[error("the recording's encryption key is not usable")]
    KeyUnusable,
}

/// An issued URL.
#[derive(Debug, Clone)]
pub struct IssuedUrl {
    /// `/v1/recordings/{id}/audio?sig=…` (the signature is a credential:
    /// whoever has the URL can listen until it expires).
    pub path: String,
    pub expires_at_ms: i64,
    pub purpose: Purpose,
}

/// The path of a recording's audio.
pub fn audio_path(recording: &RecordingId) -> String {
    format!("/v1/recordings/{recording}/audio")
}

/// Issues a URL to `rec` for `purpose`, valid `ttl_secs` (0: the default),
/// signed for the caller's token; audited with the caller's `reason`.
pub async fn issue(
    archive: &Archive,
    principal: &Principal,
    rec: RecordingId,
    ttl_secs: u64,
    purpose: Purpose,
    reason: &str,
) -> Result<IssuedUrl> {
    if reason.len() > 1024 {
        return Err(Error::invalid("reason", "is longer than 1024 bytes"));
    }
    if purpose == Purpose::Download && reason.trim().is_empty() {
        return Err(Error::invalid("reason", "a download needs a reason"));
    }
    access::require(archive, principal, Action::ReadRecordings).await?;
    let ttl = if ttl_secs == 0 {
        DEFAULT_TTL_SECS
    } else {
        ttl_secs
    };
    if !(MIN_TTL_SECS..=MAX_TTL_SECS).contains(&ttl) {
        return Err(Error::invalid(
            "ttl",
            &format!(
                "must be between {MIN_TTL_SECS} s and {} h",
                MAX_TTL_SECS / 3600
            ),
        ));
    }
    super::find(archive, principal, rec, AuditAction::PlaybackUrlIssued).await?;
    let mut expires_at_ms = now_ms().saturating_add(i64::try_from(ttl * 1000).unwrap_or(i64::MAX));
    // A URL never outlives the token that issued it.
    if let Some(token_expiry) = principal.expires_at_ms {
        expires_at_ms = expires_at_ms.min(token_expiry);
    }
    let epoch = tenants::url_epoch(&mut *archive.catalog.conn().await?, &principal.tenant).await?;
    let mut session = [0u8; 12];
    crate::crypto::fill_random(&mut session)
        .map_err(|e| Error::Server(crate::error::DriverError::new(e)))?;
    let claims = Claims {
        tenant: principal.tenant.to_string(),
        token_id: principal.token_id.clone(),
        purpose: purpose.as_str().to_owned(),
        expires_at_ms,
        epoch,
        session: URL_SAFE_NO_PAD.encode(session),
    };
    let sig = archive.url_keys.sign(&rec, &claims);
    trail::record(
        archive,
        principal,
        trail::by(principal, AuditAction::PlaybackUrlIssued)
            .recording(rec)
            .detail("purpose", purpose.as_str())
            .detail("session", claims.session.clone())
            .detail("expires_at_ms", expires_at_ms)
            .detail("url_key", archive.url_keys.signing_key_id())
            .detail("reason", reason),
    )
    .await?;
    Ok(IssuedUrl {
        path: format!("{}?sig={sig}", audio_path(&rec)),
        expires_at_ms,
        purpose,
    })
}

/// Stops every URL the caller's tenant has issued (bumps its epoch);
/// audited. Returns the new epoch.
pub async fn revoke_all(archive: &Archive, principal: &Principal) -> Result<u64> {
    access::require(archive, principal, Action::RevokeUrls).await?;
    let mut tx = archive.catalog.begin().await?;
    let epoch = tenants::bump_url_epoch(&mut tx, &principal.tenant).await?;
    trail::append(
        archive,
        &mut tx,
        crate::audit::event::log_of(&principal.tenant),
        trail::by(principal, AuditAction::PlaybackUrlsRevoked).detail("epoch", epoch),
    )
    .await?;
    tx.commit().await?;
    Ok(epoch)
}

/// The principal a verified URL acts as: its issuing token, if that is
/// still live and the URL's epoch still current. Asked on every request
/// (one catalog read), so a revocation stops every URL at once.
pub async fn check_issuer(
    archive: &Archive,
    claims: &Claims,
) -> std::result::Result<Principal, CheckError> {
    let tenant = TenantId::from_catalog(claims.tenant.clone());
    let mut conn = archive.catalog.conn().await.map_err(CheckError::Other)?;
    let (principal, epoch) = match tokens::url_issuer(&mut conn, &tenant, &claims.token_id).await {
        Ok(found) => found,
        Err(Error::Unauthenticated(_)) => {
            return Err(CheckError::Refused(UrlRefused::IssuerRevoked));
        }
        Err(e) => return Err(CheckError::Other(e)),
    };
    if claims.epoch != epoch {
        return Err(CheckError::Refused(UrlRefused::EpochRevoked));
    }
    Ok(principal)
}

/// A URL refused, or the check could not be made.
#[derive(Debug)]
pub enum CheckError {
    Refused(UrlRefused),
    Other(Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> UrlKeys {
        UrlKeys::parse(
            "# rotated 2026-11\nnew AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\nold 8fHx8fHx8fHx8fHx8fHx8fHx8fHx8fHx8fHx8fHx8fE=\n",
        )
        .expect("keys")
    }

    fn claims() -> Claims {
        Claims {
            tenant: "t1".into(),
            token_id: "tok".into(),
            purpose: "stream".into(),
            expires_at_ms: 2_000,
            epoch: 3,
            session: "s".into(),
        }
    }

    #[test]
    fn signs_with_the_first_key_and_verifies_with_any() {
        let k = keys();
        let rec = RecordingId::new();
        let sig = k.sign(&rec, &claims());
        assert!(sig.starts_with("new."));
        assert_eq!(k.verify(&rec, &sig, 1_000), Ok(claims()));
        // A key rotated out of first place still verifies its URLs.
        let old_only =
            UrlKeys::parse("old 8fHx8fHx8fHx8fHx8fHx8fHx8fHx8fHx8fHx8fHx8fE=").expect("k");
        let old_sig = old_only.sign(&rec, &claims());
        assert_eq!(k.verify(&rec, &old_sig, 1_000), Ok(claims()));
    }

    #[test]
    fn refuses_edits_other_recordings_expiry_and_unknown_keys() {
        let k = keys();
        let rec = RecordingId::new();
        let sig = k.sign(&rec, &claims());
        assert_eq!(
            k.verify(&RecordingId::new(), &sig, 1_000),
            Err(UrlRefused::BadSignature)
        );
        assert_eq!(
            k.verify(&rec, &sig, 2_000),
            Err(UrlRefused::Expired { at_ms: 2_000 })
        );
        let (kid, rest) = sig.split_once('.').expect("kid");
        assert_eq!(
            k.verify(&rec, &format!("zzz.{rest}"), 1_000),
            Err(UrlRefused::UnknownKey)
        );
        // Another payload under the same MAC.
        let mut other = claims();
        other.expires_at_ms = 9_999_999;
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).expect("json"));
        let mac = sig.rsplit('.').next().expect("mac");
        assert_eq!(
            k.verify(&rec, &format!("{kid}.{forged_payload}.{mac}"), 1_000),
            Err(UrlRefused::BadSignature)
        );
        // Every single-character edit is refused.
        for i in 0..sig.len() {
            let mut bytes = sig.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let edited = String::from_utf8(bytes).expect("ascii");
            assert!(
                k.verify(&rec, &edited, 1_000).is_err(),
                "edit at {i} accepted"
            );
        }
        for junk in ["", ".", "..", "a.b.c.d", "new..", "new.!.!"] {
            assert!(k.verify(&rec, junk, 1_000).is_err(), "{junk:?} accepted");
        }
    }

    #[test]
    fn key_files_are_checked_line_by_line_without_echoing_secrets() {
        for (text, want) in [
            ("", "no key in the file"),
            ("k1", "line 1: expected `KEY_ID BASE64_KEY`"),
            ("bad/id AAAA", "line 1: a key id is"),
            ("k1 not-base64!", "line 1: the key is not base64"),
            ("k1 AAAA", "line 1: the key must be 32 bytes"),
        ] {
            let err = UrlKeys::parse(text).expect_err(text);
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
        let line = UrlKeys::generate_line("k2").expect("line");
        assert!(
            UrlKeys::parse(&format!("{}\n{}", *line, *line))
                .expect_err("dup")
                .contains("twice")
        );
        assert!(
            !format!("{:?}", UrlKeys::parse(&line).expect("k"))
                .contains(line.split(' ').nth(1).expect("b64"))
        );
    }
}
