//! Exact KMS key ARNs: the one parser, the one strictness.

use std::fmt;

use super::ParseError;

/// An exact KMS key ARN, `arn:<partition>:kms:<region>:<account>:key/<key id>`.
/// Aliases, alias ARNs and bare key ids are refused: the catalog names the
/// exact key that wrapped each data key. The built-in keyring's keys are
/// ARNs too (`arn:callvault:kms:local:local:key/<id>`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyArn(String);

const SHAPE: &str = "must be an exact KMS key ARN (arn:<partition>:kms:<region>:<account>:key/<key id>), \
                     not an alias or a bare key id";

impl KeyArn {
    pub const MAX_LEN: usize = 2048;

    /// Parses a client-supplied ARN; `field` names it in the error.
    pub fn parse(field: &str, s: &str) -> Result<Self, ParseError> {
        match parts(s) {
            Some(_) => Ok(Self(s.to_owned())),
            None => Err(ParseError::new(field, SHAPE)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn parts(&self) -> Parts<'_> {
        // Parsed at construction, so the parts are there.
        parts(&self.0).unwrap_or_default()
    }

    /// The key's home region.
    pub fn region(&self) -> &str {
        self.parts().region
    }

    pub fn account(&self) -> &str {
        self.parts().account
    }

    /// What follows `key/`; a multi-Region key shares it with its replicas.
    pub fn key_id(&self) -> &str {
        self.parts().key_id
    }

    /// The region of `s` if it is an exact key ARN (for ARNs that come back
    /// from KMS as plain strings).
    pub fn region_of(s: &str) -> Option<&str> {
        parts(s).map(|p| p.region)
    }

    /// The key id of `s` if it is an exact key ARN.
    pub fn key_id_of(s: &str) -> Option<&str> {
        parts(s).map(|p| p.key_id)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Parts<'a> {
    region: &'a str,
    account: &'a str,
    key_id: &'a str,
}

/// The one parser: `arn:<partition>:kms:<region>:<account>:key/<key id>`.
fn parts(s: &str) -> Option<Parts<'_>> {
    if s.len() > KeyArn::MAX_LEN || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    match s.splitn(6, ':').collect::<Vec<_>>().as_slice() {
        ["arn", partition, "kms", region, account, resource]
            if !partition.is_empty() && !region.is_empty() && !account.is_empty() =>
        {
            let key_id = resource.strip_prefix("key/")?;
            (!key_id.is_empty() && !key_id.contains('/')).then_some(Parts {
                region,
                account,
                key_id,
            })
        }
        _ => None,
    }
}

impl fmt::Display for KeyArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A key ARN reads as the string it is (never the other way round: a string
/// becomes a `KeyArn` only through [`KeyArn::parse`]).
impl std::ops::Deref for KeyArn {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for KeyArn {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for KeyArn {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for KeyArn {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl AsRef<str> for KeyArn {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The AWS accounts whose KMS keys tenants may register
/// (`--allowed-kms-accounts`); empty means any account. A deployment that
/// lists its accounts cannot be made to wrap recordings under a key in an
/// account it does not control.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedAccounts(std::collections::BTreeSet<String>);

impl AllowedAccounts {
    /// From account ids: each exactly twelve digits.
    pub fn new<S: AsRef<str>>(ids: impl IntoIterator<Item = S>) -> Result<Self, String> {
        let mut set = std::collections::BTreeSet::new();
        for id in ids {
            let id = id.as_ref().trim();
            if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("`{id}` is not an AWS account id (twelve digits)"));
            }
            set.insert(id.to_owned());
        }
        Ok(Self(set))
    }

    /// Whether any account is allowed (no list given).
    pub fn is_any(&self) -> bool {
        self.0.is_empty()
    }

    pub fn permits(&self, arn: &KeyArn) -> bool {
        self.is_any() || self.0.contains(arn.account())
    }

    /// The list, comma-separated, for messages.
    pub fn describe(&self) -> String {
        self.0.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_accounts() {
        let any = AllowedAccounts::default();
        let k = KeyArn::parse("f", "arn:aws:kms:eu-west-1:111122223333:key/x").unwrap();
        assert!(any.permits(&k));
        let one = AllowedAccounts::new(["444455556666"]).unwrap();
        assert!(!one.permits(&k));
        assert!(
            AllowedAccounts::new(["111122223333", "444455556666"])
                .unwrap()
                .permits(&k)
        );
        for bad in ["", "12345", "1111222233334", "11112222333a", "local"] {
            assert!(AllowedAccounts::new([bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn exact_arns_only() {
        let k = KeyArn::parse("f", "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab").unwrap();
        assert_eq!(
            (k.region(), k.account(), k.key_id()),
            ("eu-west-1", "111122223333", "1234abcd-12ab")
        );
        let local = KeyArn::parse("f", "arn:callvault:kms:local:local:key/x").unwrap();
        assert_eq!(local.region(), "local");
        for bad in [
            "alias/callvault",
            "arn:aws:kms:eu-west-1:111122223333:alias/callvault",
            "1234abcd-12ab",
            "arn:aws:kms::111122223333:key/x",
            "arn:aws:kms:eu-west-1::key/x",
            "arn:aws:kms:eu-west-1:111122223333:key/",
            "arn:aws:kms:eu-west-1:111122223333:key/a/b",
            "arn:aws:s3:eu-west-1:111122223333:key/x",
            "arn:aws:kms:eu-west-1:111122223333:key/x y",
        ] {
            let e = KeyArn::parse("key_arn", bad).unwrap_err();
            assert_eq!(e.field, "key_arn", "{bad}");
        }
    }
}
