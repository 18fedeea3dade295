//! dpkg's version ordering (`dpkg --compare-versions`): epoch, then upstream
//! version, then Debian revision, each compared as dpkg's `verrevcmp` does
//! (`~` before everything, even the end; letters before other symbols; runs
//! of digits as numbers, an empty run equal to zero).
//!
//! Written here rather than taken from the `debversion` crate: that crate
//! orders an empty digit run below `0`, so it calls `1.0a` older than
//! `1.0a0` and `1.0` older than `1.0-0`, where dpkg calls them equal (and it
//! brings regex, chrono and bignum dependencies for 60 lines of logic).
//! The property test in `tests/version_order.rs` checks this module against
//! dpkg itself on generated versions.

use std::cmp::Ordering;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VersionError {
    #[error("version {0:?} is empty")]
    Empty(String),
    #[error("version {0:?} has a bad epoch (digits before the first ':')")]
    BadEpoch(String),
    #[error("version {0:?} has an empty upstream part")]
    EmptyUpstream(String),
}

/// A Debian version split into its parts, borrowed from the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebianVersion<'a> {
    pub epoch: u64,
    pub upstream: &'a str,
    /// Empty when the version has no `-`.
    pub revision: &'a str,
}

impl<'a> DebianVersion<'a> {
    pub fn parse(text: &'a str) -> Result<DebianVersion<'a>, VersionError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(VersionError::Empty(text.to_string()));
        }
        let (epoch, rest) = match trimmed.split_once(':') {
            Some((epoch, rest)) => {
                if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(VersionError::BadEpoch(text.to_string()));
                }
                let epoch = epoch
                    .parse::<u64>()
                    .map_err(|_| VersionError::BadEpoch(text.to_string()))?;
                (epoch, rest)
            }
            None => (0, trimmed),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((upstream, revision)) => (upstream, revision),
            None => (rest, ""),
        };
        if upstream.is_empty() {
            return Err(VersionError::EmptyUpstream(text.to_string()));
        }
        Ok(DebianVersion {
            epoch,
            upstream,
            revision,
        })
    }
}

impl Ord for DebianVersion<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(self.upstream, other.upstream))
            .then_with(|| verrevcmp(self.revision, other.revision))
    }
}

impl PartialOrd for DebianVersion<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compares two Debian version strings as `dpkg --compare-versions` does.
pub fn compare_debian(a: &str, b: &str) -> Result<Ordering, VersionError> {
    Ok(DebianVersion::parse(a)?.cmp(&DebianVersion::parse(b)?))
}

/// The weight dpkg gives a character in a non-digit run; the end of the
/// string (and a digit, which ends the run) weighs 0.
fn order(byte: Option<u8>) -> i32 {
    match byte {
        None => 0,
        Some(b) if b.is_ascii_digit() => 0,
        Some(b) if b.is_ascii_alphabetic() => i32::from(b),
        Some(b'~') => -1,
        Some(b) => i32::from(b) + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut a_idx, mut b_idx) = (0, 0);
    let is_digit = |s: &[u8], i: usize| s.get(i).is_some_and(u8::is_ascii_digit);
    let is_non_digit = |s: &[u8], i: usize| s.get(i).is_some_and(|c| !c.is_ascii_digit());
    while a_idx < a.len() || b_idx < b.len() {
        while is_non_digit(a, a_idx) || is_non_digit(b, b_idx) {
            let a_order = order(a.get(a_idx).copied());
            let b_order = order(b.get(b_idx).copied());
            if a_order != b_order {
                return a_order.cmp(&b_order);
            }
            a_idx += 1;
            b_idx += 1;
        }
        while a.get(a_idx) == Some(&b'0') {
            a_idx += 1;
        }
        while b.get(b_idx) == Some(&b'0') {
            b_idx += 1;
        }
        let mut first_difference = Ordering::Equal;
        while is_digit(a, a_idx) && is_digit(b, b_idx) {
            if first_difference == Ordering::Equal {
                first_difference = a[a_idx].cmp(&b[b_idx]);
            }
            a_idx += 1;
            b_idx += 1;
        }
        if is_digit(a, a_idx) {
            return Ordering::Greater;
        }
        if is_digit(b, b_idx) {
            return Ordering::Less;
        }
        if first_difference != Ordering::Equal {
            return first_difference;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cases from dpkg's own tests (t-version.c) and the edges `debversion`
    /// gets wrong.
    #[test]
    fn dpkg_cases() {
        let cases = [
            ("0", "0", Ordering::Equal),
            ("0", "00", Ordering::Equal),
            ("1.0", "1.0-0", Ordering::Equal),
            ("1.0a", "1.0a0", Ordering::Equal),
            ("1:0", "0:0", Ordering::Greater),
            ("1:0", "2", Ordering::Greater),
            ("1.0~rc1", "1.0", Ordering::Less),
            ("1.0~~", "1.0~", Ordering::Less),
            ("1.0~~a", "1.0~", Ordering::Less),
            ("1.0-1~bpo1", "1.0-1", Ordering::Less),
            ("1.0+b1", "1.0", Ordering::Greater),
            ("a", "b", Ordering::Less),
            ("1.0a", "1.0+", Ordering::Less),
            ("1.002", "1.2", Ordering::Equal),
            ("3.0.11-1~deb12u2", "3.0.11-1", Ordering::Less),
            ("2.36-9+deb12u4", "2.36-9+deb12u10", Ordering::Less),
            ("0:1.2-3", "1.2-3", Ordering::Equal),
        ];
        for (a, b, expected) in cases {
            assert_eq!(compare_debian(a, b).unwrap(), expected, "{a} vs {b}");
            assert_eq!(
                compare_debian(b, a).unwrap(),
                expected.reverse(),
                "{b} vs {a}"
            );
        }
    }

    #[test]
    fn bad_versions() {
        assert_eq!(
            compare_debian("x:1", "1"),
            Err(VersionError::BadEpoch("x:1".into()))
        );
        assert!(compare_debian("", "1").is_err());
        assert!(compare_debian("1:-1", "1").is_err());
    }
}
