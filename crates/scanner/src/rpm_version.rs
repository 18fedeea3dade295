//! RPM's version ordering: `rpmvercmp` on each of epoch, version and
//! release. `rpmvercmp` walks both strings a segment at a time: separators
//! (anything not an ASCII letter or digit, other than `~` and `^`) are
//! skipped; `~` sorts before everything, even the end (`1.0~rc1 < 1.0`);
//! `^` sorts after the end but before anything else (`1.0 < 1.0^git1 <
//! 1.0.1`); runs of digits compare as numbers (leading zeros dropped) and
//! are newer than runs of letters, which compare as bytes; when one side
//! runs out, the side with more left is newer.
//!
//! Written here from the rules rpm documents; `tests/rpm_version_order.rs`
//! checks it against Debian's `rpm` (its Lua `rpm.vercmp`) on generated
//! versions.

use std::cmp::Ordering;

/// rpm's `rpmvercmp` on one field (a version or a release).
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (mut one, mut two) = (a.as_bytes(), b.as_bytes());
    let is_separator = |byte: &u8| !byte.is_ascii_alphanumeric() && *byte != b'~' && *byte != b'^';
    loop {
        while one.first().is_some_and(is_separator) {
            one = &one[1..];
        }
        while two.first().is_some_and(is_separator) {
            two = &two[1..];
        }
        if one.is_empty() && two.is_empty() {
            break;
        }
        let (first_one, first_two) = (one.first().copied(), two.first().copied());
        if first_one == Some(b'~') || first_two == Some(b'~') {
            if first_one != Some(b'~') {
                return Ordering::Greater;
            }
            if first_two != Some(b'~') {
                return Ordering::Less;
            }
            one = &one[1..];
            two = &two[1..];
            continue;
        }
        if first_one == Some(b'^') || first_two == Some(b'^') {
            if first_one.is_none() {
                return Ordering::Less;
            }
            if first_two.is_none() {
                return Ordering::Greater;
            }
            if first_one != Some(b'^') {
                return Ordering::Greater;
            }
            if first_two != Some(b'^') {
                return Ordering::Less;
            }
            one = &one[1..];
            two = &two[1..];
            continue;
        }
        if one.is_empty() || two.is_empty() {
            break;
        }
        let numeric = one[0].is_ascii_digit();
        let in_segment = |byte: &u8| {
            if numeric {
                byte.is_ascii_digit()
            } else {
                byte.is_ascii_alphabetic()
            }
        };
        let length_one = one.iter().take_while(|b| in_segment(b)).count();
        let length_two = two.iter().take_while(|b| in_segment(b)).count();
        let (segment_one, rest_one) = one.split_at(length_one);
        let (segment_two, rest_two) = two.split_at(length_two);
        // Segments of different types: a number is newer than letters.
        if segment_two.is_empty() {
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let order = if numeric {
            let strip =
                |digits: &[u8]| -> usize { digits.iter().take_while(|d| **d == b'0').count() };
            let significant_one = &segment_one[strip(segment_one)..];
            let significant_two = &segment_two[strip(segment_two)..];
            significant_one
                .len()
                .cmp(&significant_two.len())
                .then_with(|| significant_one.cmp(significant_two))
        } else {
            segment_one.cmp(segment_two)
        };
        if order != Ordering::Equal {
            return order;
        }
        one = rest_one;
        two = rest_two;
    }
    match (one.is_empty(), two.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

/// An `[EPOCH:]VERSION[-RELEASE]` as rpm splits it: the epoch before the
/// first `:` when it is all digits, the release after the last `-`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evr<'a> {
    pub epoch: u64,
    pub version: &'a str,
    pub release: Option<&'a str>,
}

impl<'a> Evr<'a> {
    pub fn parse(text: &'a str) -> Evr<'a> {
        let (epoch, rest) = match text.split_once(':') {
            Some((epoch, rest)) if epoch.bytes().all(|b| b.is_ascii_digit()) => {
                (epoch.parse().unwrap_or(0), rest)
            }
            _ => (0, text),
        };
        let (version, release) = match rest.rsplit_once('-') {
            Some((version, release)) => (version, Some(release)),
            None => (rest, None),
        };
        Evr {
            epoch,
            version,
            release,
        }
    }
}

/// Orders two `[EPOCH:]VERSION[-RELEASE]` strings as `rpm.vercmp` does: a
/// missing epoch is 0, and a missing release is older than any release,
/// even an empty one (`1.0 < 1.0-`).
pub fn compare_rpm(a: &str, b: &str) -> Ordering {
    let (a, b) = (Evr::parse(a), Evr::parse(b));
    a.epoch
        .cmp(&b.epoch)
        .then_with(|| rpmvercmp(a.version, b.version))
        .then_with(|| match (a.release, b.release) {
            (Some(one), Some(two)) => rpmvercmp(one, two),
            (one, two) => one.is_some().cmp(&two.is_some()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn rpm_cases() {
        // Cases from rpm's documented rules (and its test suite's kinds).
        for (a, b, expected) in [
            ("1.0", "1.0", Equal),
            ("1.0", "2.0", Less),
            ("2.0.1", "2.0.1a", Less),
            ("5.5p1", "5.5p10", Less),
            ("10xyz", "10.1xyz", Less),
            ("xyz10", "xyz10.1", Less),
            ("1.0", "1.0a", Less),
            ("1.0a", "1.0", Greater),
            ("a", "1", Less),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0^", "1.0", Greater),
            ("1.0^git1", "1.0.1", Less),
            ("1.0^git1~pre", "1.0^git1", Less),
            ("001", "1", Equal),
            ("1.1", "1_1", Equal),
            ("1:1.0-1", "2.0-1", Greater),
            ("1.0-1.el9", "1.0-1.el9_3", Less),
            ("1.0", "1.0-5", Less),
            ("1.0", "1.0-", Less),
            ("1.0-", "1.0-.", Equal),
        ] {
            assert_eq!(compare_rpm(a, b), expected, "{a} vs {b}");
            assert_eq!(compare_rpm(b, a), expected.reverse(), "{b} vs {a}");
        }
    }
}
