//! Participants of a call (data subjects): roles and identifiers as given,
//! and the normalized form the blind index is computed over. Pure.

use std::collections::BTreeMap;

use super::ParseError;

/// Most participants one recording may name.
pub const MAX_PARTICIPANTS: usize = 16;
const MAX_IDENTIFIER: usize = 256;

/// A recording's participants: role -> identifier as given.
pub type Participants = BTreeMap<String, String>;

/// Checks roles and identifiers (`field` names them in errors).
pub fn parse_participants(field: &str, given: Participants) -> Result<Participants, ParseError> {
    if given.len() > MAX_PARTICIPANTS {
        return Err(ParseError::new(
            field,
            &format!("at most {MAX_PARTICIPANTS} participants"),
        ));
    }
    for (role, id) in &given {
        let role_ok = !role.is_empty()
            && role.len() <= 32
            && role
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !role_ok {
            return Err(ParseError::new(
                field,
                &format!(
                    "role `{}`: 1..=32 lowercase letters, digits and '_' (caller, callee, agent, customer)",
                    role.escape_debug()
                ),
            ));
        }
        normalize_identifier(&format!("{field}.{role}"), id)?;
    }
    Ok(given)
}

/// The form an identifier is indexed and searched in. A phone number
/// written internationally (`+44 20 7183 8750`, `0044-20-7183-8750`)
/// becomes E.164 (`+442071838750`): spaces, dashes, dots and parentheses
/// dropped, `00` read as `+`, then `+` and 2..=15 digits not starting with
/// 0. Anything else (an agent id, a customer number, an extension) is
/// trimmed and lowercased. An identifier that starts like an international
/// number but is not one is refused rather than indexed under a form no
/// search would produce.
pub fn normalize_identifier(field: &str, id: &str) -> Result<String, ParseError> {
    let t = id.trim();
    if t.is_empty() || t.len() > MAX_IDENTIFIER {
        return Err(ParseError::new(field, "identifiers are 1..=256 bytes"));
    }
    if t.chars().any(char::is_control) {
        return Err(ParseError::new(field, "control characters are not allowed"));
    }
    let international = t.strip_prefix('+').or_else(|| t.strip_prefix("00"));
    let Some(rest) = international else {
        return Ok(t.to_lowercase());
    };
    let digits: String = rest
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let e164 = (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if !e164 {
        // The value itself is not repeated: messages are logged.
        return Err(ParseError::new(
            field,
            "starts like an international phone number but is not one: E.164 is '+', then 2 to 15 digits not starting with 0",
        ));
    }
    Ok(format!("+{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_normalize_to_e164() {
        for given in [
            "+442071838750",
            "+44 20 7183 8750",
            "0044-20-7183-8750",
            " +44 (20) 7183.8750 ",
        ] {
            assert_eq!(
                normalize_identifier("p", given).unwrap(),
                "+442071838750",
                "{given}"
            );
        }
        assert!(normalize_identifier("p", "+44 20 x").is_err());
        assert!(normalize_identifier("p", "+0123456").is_err());
        assert!(normalize_identifier("p", "+1234567890123456").is_err());
        assert_eq!(normalize_identifier("p", " A-17 ").unwrap(), "a-17");
        assert_eq!(
            normalize_identifier("p", "2071838750").unwrap(),
            "2071838750"
        );
        assert!(normalize_identifier("p", "").is_err());
    }

    #[test]
    fn roles_are_plain_words() {
        let ok = Participants::from([("caller".into(), "+15551234567".into())]);
        assert!(parse_participants("participants", ok).is_ok());
        let bad = Participants::from([("Caller Number".into(), "x".into())]);
        assert!(parse_participants("participants", bad).is_err());
        let many: Participants = (0..17).map(|i| (format!("p{i}"), "x".into())).collect();
        assert!(parse_participants("participants", many).is_err());
    }
}
