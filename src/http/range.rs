//! `Range` and `If-Range` as RFC 9110 §14 has them, for one resource of a
//! known size. Pure.

/// What to send of a representation of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranged {
    /// 200: all of it (no `Range`, one we do not serve, or an `If-Range`
    /// that does not match).
    Full,
    /// 206: bytes `start..end` (half open).
    Partial { start: u64, end: u64 },
    /// 416: nothing of it is in the range asked for.
    Unsatisfiable,
}

/// Decides what a request with `range` (the `Range` header) and
/// `if_range` (the `If-Range` header) gets of a resource of `size` bytes
/// whose strong entity tag is `etag` (quoted).
///
/// Served: one range of the forms `N-M`, `N-` and `-N` (what browsers and
/// `curl -r` send). A `Range` that is not `bytes=…` or does not parse is
/// ignored (200), as §14.2 allows. Several ranges are served as the one
/// range that covers them all: a browser never asks for more than one, and
/// a multipart/byteranges answer helps nobody else here. An `If-Range`
/// that is not our current strong entity tag (a date, or another tag)
/// means the client's copy is stale: 200 with everything.
pub fn decide(range: Option<&str>, if_range: Option<&str>, size: u64, etag: &str) -> Ranged {
    let Some(range) = range else {
        return Ranged::Full;
    };
    if if_range.is_some_and(|v| v.trim() != etag) {
        return Ranged::Full;
    }
    // The unit is case-insensitive (RFC 9110 §14.1).
    let spec = match range.trim().split_once('=') {
        Some((unit, spec)) if unit.trim().eq_ignore_ascii_case("bytes") => spec,
        _ => return Ranged::Full,
    };
    if spec.split(',').all(|p| p.trim().is_empty()) {
        // No range in it: not a Range we can parse, so ignored.
        return Ranged::Full;
    }
    let mut cover: Option<(u64, u64)> = None;
    let mut any_satisfiable = false;
    for part in spec.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((first, last)) = part.split_once('-') else {
            return Ranged::Full;
        };
        let (first, last) = (first.trim(), last.trim());
        let span = if first.is_empty() {
            // Suffix: the last N bytes.
            let Some(n) = parse(last) else {
                return Ranged::Full;
            };
            if n == 0 {
                None
            } else {
                Some((size.saturating_sub(n), size))
            }
        } else {
            let Some(a) = parse(first) else {
                return Ranged::Full;
            };
            let b = if last.is_empty() {
                u64::MAX
            } else {
                match parse(last) {
                    Some(b) if b >= a => b,
                    _ => return Ranged::Full,
                }
            };
            (a < size).then(|| (a, b.saturating_add(1).min(size)))
        };
        if let Some((a, b)) = span.filter(|(a, b)| a < b) {
            any_satisfiable = true;
            cover = Some(match cover {
                None => (a, b),
                Some((x, y)) => (x.min(a), y.max(b)),
            });
        }
    }
    match cover {
        Some((start, end)) if any_satisfiable => Ranged::Partial { start, end },
        _ => Ranged::Unsatisfiable,
    }
}

/// Digits only (no sign, no spaces inside), as the grammar has it.
fn parse(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::Ranged::{self, *};
    use super::decide;

    const TAG: &str = "\"abc\"";

    fn r(range: &str) -> Ranged {
        decide(Some(range), None, 1000, TAG)
    }

    #[test]
    fn every_single_range_form() {
        assert_eq!(decide(None, None, 1000, TAG), Full);
        assert_eq!(r("bytes=0-0"), Partial { start: 0, end: 1 });
        assert_eq!(r("bytes=0-499"), Partial { start: 0, end: 500 });
        assert_eq!(
            r("bytes=500-"),
            Partial {
                start: 500,
                end: 1000
            }
        );
        assert_eq!(
            r("bytes=0-"),
            Partial {
                start: 0,
                end: 1000
            }
        );
        assert_eq!(
            r("bytes=-100"),
            Partial {
                start: 900,
                end: 1000
            }
        );
        assert_eq!(
            r("bytes=-5000"),
            Partial {
                start: 0,
                end: 1000
            }
        );
        assert_eq!(
            r("bytes=900-5000"),
            Partial {
                start: 900,
                end: 1000
            }
        );
        assert_eq!(
            r("bytes=999-"),
            Partial {
                start: 999,
                end: 1000
            }
        );
        assert_eq!(r(" bytes= 10 - 19 "), Partial { start: 10, end: 20 });
        assert_eq!(r("Bytes=10-19"), Partial { start: 10, end: 20 });
    }

    #[test]
    fn past_the_end_is_unsatisfiable() {
        assert_eq!(r("bytes=1000-"), Unsatisfiable);
        assert_eq!(r("bytes=1000-2000"), Unsatisfiable);
        assert_eq!(r("bytes=-0"), Unsatisfiable);
        assert_eq!(decide(Some("bytes=0-"), None, 0, TAG), Unsatisfiable);
    }

    #[test]
    fn what_is_not_a_byte_range_is_ignored() {
        for bad in [
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=1",
            "bytes=+1-2",
            "bytes=--1",
            "bytes=18446744073709551616-",
            "bytes=",
            "bytes= , ",
        ] {
            assert_eq!(r(bad), Full, "{bad}");
        }
    }

    #[test]
    fn several_ranges_are_served_as_their_cover() {
        assert_eq!(r("bytes=0-9,20-29"), Partial { start: 0, end: 30 });
        assert_eq!(r("bytes=2000-,10-19"), Partial { start: 10, end: 20 });
        assert_eq!(r("bytes=2000-,3000-"), Unsatisfiable);
    }

    #[test]
    fn if_range_serves_the_range_only_for_our_current_tag() {
        assert_eq!(
            decide(Some("bytes=10-19"), Some(TAG), 1000, TAG),
            Partial { start: 10, end: 20 }
        );
        assert_eq!(
            decide(Some("bytes=10-19"), Some("\"old\""), 1000, TAG),
            Full
        );
        assert_eq!(
            decide(Some("bytes=10-19"), Some("W/\"abc\""), 1000, TAG),
            Full
        );
        assert_eq!(
            decide(
                Some("bytes=10-19"),
                Some("Wed, 21 Oct 2015 07:28:00 GMT"),
                1000,
                TAG
            ),
            Full
        );
    }
}
