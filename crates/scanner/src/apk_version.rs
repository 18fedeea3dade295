//! Alpine's version ordering, as apk-tools compares versions: the version
//! is read as a sequence of typed parts,
//! `digits{.digits}…{letter}{_suffix{digits}}…{~hash}{-rN}`, compared part
//! by part while both sides have a part of the same kind.
//!
//! - Numbers compare as numbers, except that a dotted part with a leading
//!   zero on either side compares as text (`1.01 < 1.1`, `8.2.0 < 8.2.001`).
//! - Suffixes rank `_alpha < _beta < _pre < _rc < (none) < _cvs < _svn <
//!   _git < _hg < _p`, each optionally numbered.
//! - When one side runs out of parts of the other's kind, the one that goes
//!   on is newer, unless what it goes on with is a pre-release suffix; the
//!   later a part's kind comes in the sequence, the older (`1.0_p1 >
//!   1.0-r5`, since the suffix comes before the revision).
//! - A version that breaks the grammar still orders: the part where it
//!   breaks is later than any valid kind, so it sorts older than a valid
//!   continuation (apk's own tables: `1.0 < 1.0bc`).
//!
//! This is apk-tools 3's ordering (its `version.c`), which agrees with
//! apk-tools 2.14 on every case of apk-tools 2's test table and differs on
//! dotted parts with leading zeros, which apk 2 compared by the count of
//! zeros. Written here (no crate does it); `tests/apk_version_order.rs`
//! runs apk-tools' own table of cases and checks the order's laws on
//! generated versions.

use std::cmp::Ordering;

/// The kinds of part, in the order a version may hold them; a later kind
/// where the other side has an earlier one makes the version older.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    InitialDigits,
    Digits,
    Letter,
    Suffix,
    SuffixNumber,
    CommitHash,
    Revision,
    End,
    Invalid,
}

/// Suffix ranks; `NONE` stands between the pre-releases and the rest.
const SUFFIXES: [(&str, u8); 9] = [
    ("alpha", 1),
    ("beta", 2),
    ("pre", 3),
    ("rc", 4),
    ("cvs", 6),
    ("svn", 7),
    ("git", 8),
    ("hg", 9),
    ("p", 10),
];
const SUFFIX_NONE: u8 = 5;

struct Part<'a> {
    kind: Kind,
    /// The part's text (digits, the letter, the suffix name, the hash).
    text: &'a [u8],
    number: u64,
    suffix_rank: u8,
}

struct Parts<'a> {
    rest: &'a [u8],
    current: Part<'a>,
}

impl<'a> Parts<'a> {
    fn new(version: &'a str) -> Parts<'a> {
        let mut parts = Parts {
            rest: version.as_bytes(),
            current: Part {
                kind: Kind::InitialDigits,
                text: &[],
                number: 0,
                suffix_rank: 0,
            },
        };
        parts.take_digits();
        parts
    }

    /// Reads a run of digits into the current part; none is invalid.
    fn take_digits(&mut self) {
        let n_digits = self.rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let (digits, rest) = self.rest.split_at(n_digits);
        self.current.text = digits;
        // Wrapping, as apk's 64-bit accumulator does on absurd inputs.
        self.current.number = digits.iter().fold(0u64, |number, digit| {
            number
                .wrapping_mul(10)
                .wrapping_add(u64::from(digit - b'0'))
        });
        self.rest = rest;
        if digits.is_empty() {
            self.current.kind = Kind::Invalid;
        }
    }

    /// Reads a run of bytes matching `wanted` as the current part's text.
    fn take_while(&mut self, wanted: impl Fn(u8) -> bool) {
        let n_taken = self.rest.iter().take_while(|b| wanted(**b)).count();
        let (taken, rest) = self.rest.split_at(n_taken);
        self.current.text = taken;
        self.rest = rest;
    }

    /// Moves to the next part, checking that its kind may follow the
    /// current one.
    fn advance(&mut self) {
        let previous = self.current.kind;
        let Some(&first) = self.rest.first() else {
            self.current.kind = Kind::End;
            return;
        };
        let next = match first {
            b'a'..=b'z' if previous <= Kind::Digits => {
                self.current.text = &self.rest[..1];
                self.rest = &self.rest[1..];
                Kind::Letter
            }
            b'.' | b'0'..=b'9' => {
                if first == b'.' {
                    if previous > Kind::Digits {
                        self.current.kind = Kind::Invalid;
                        return;
                    }
                    self.rest = &self.rest[1..];
                }
                let kind = match previous {
                    Kind::InitialDigits | Kind::Digits => Kind::Digits,
                    Kind::Suffix => Kind::SuffixNumber,
                    _ => Kind::Invalid,
                };
                if kind != Kind::Invalid {
                    self.current.kind = kind;
                    self.take_digits();
                    return;
                }
                kind
            }
            b'_' if previous <= Kind::SuffixNumber => {
                self.rest = &self.rest[1..];
                self.take_while(|b| b.is_ascii_lowercase());
                let name = self.current.text;
                match SUFFIXES
                    .iter()
                    .find(|(suffix, _)| suffix.as_bytes() == name)
                {
                    Some((_, rank)) => {
                        self.current.suffix_rank = *rank;
                        Kind::Suffix
                    }
                    None => Kind::Invalid,
                }
            }
            b'~' if previous < Kind::CommitHash => {
                self.rest = &self.rest[1..];
                self.take_while(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if self.current.text.is_empty() {
                    Kind::Invalid
                } else {
                    Kind::CommitHash
                }
            }
            b'-' if previous < Kind::Revision => {
                if self.rest.get(1) != Some(&b'r') {
                    Kind::Invalid
                } else {
                    self.rest = &self.rest[2..];
                    self.current.kind = Kind::Revision;
                    self.take_digits();
                    return;
                }
            }
            _ => Kind::Invalid,
        };
        self.current.kind = next;
    }
}

/// Two parts of the same kind.
fn compare_parts(a: &Part<'_>, b: &Part<'_>) -> Ordering {
    match a.kind {
        Kind::Digits if a.text.first() == Some(&b'0') || b.text.first() == Some(&b'0') => {
            a.text.cmp(b.text)
        }
        Kind::InitialDigits | Kind::Digits | Kind::SuffixNumber | Kind::Revision => {
            a.number.cmp(&b.number)
        }
        Kind::Letter => a.text.cmp(b.text),
        Kind::Suffix => a.suffix_rank.cmp(&b.suffix_rank),
        Kind::CommitHash | Kind::End | Kind::Invalid => a.text.cmp(b.text),
    }
}

fn compare(a: &str, b: &str, fuzzy: bool) -> Ordering {
    let mut a_parts = Parts::new(a);
    let mut b_parts = Parts::new(b);
    while a_parts.current.kind == b_parts.current.kind && a_parts.current.kind < Kind::End {
        let order = compare_parts(&a_parts.current, &b_parts.current);
        if order != Ordering::Equal {
            return order;
        }
        a_parts.advance();
        b_parts.advance();
    }
    let (a_part, b_part) = (&a_parts.current, &b_parts.current);
    if a_part.kind == b_part.kind || (fuzzy && b_part.kind == Kind::End) {
        return Ordering::Equal;
    }
    if a_part.kind == Kind::Suffix && a_part.suffix_rank < SUFFIX_NONE {
        return Ordering::Less;
    }
    if b_part.kind == Kind::Suffix && b_part.suffix_rank < SUFFIX_NONE {
        return Ordering::Greater;
    }
    // The side whose next part is of a later kind is older.
    b_part.kind.cmp(&a_part.kind)
}

/// Orders two Alpine package versions as `apk version -t` does.
pub fn compare_apk(a: &str, b: &str) -> Ordering {
    compare(a, b, false)
}

/// apk's fuzzy match (`~` in a dependency): `a` equals `b` when it begins
/// with all of `b`'s parts (`3.6.9 ~ 3.6`), and otherwise orders as
/// `compare_apk`.
pub fn compare_apk_fuzzy(a: &str, b: &str) -> Ordering {
    compare(a, b, true)
}

/// Whether `version` follows apk's grammar (`apk version -c`).
pub fn is_valid_apk(version: &str) -> bool {
    let mut parts = Parts::new(version);
    while parts.current.kind < Kind::End {
        parts.advance();
    }
    parts.current.kind == Kind::End
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_revisions_and_letters() {
        use Ordering::*;
        for (a, b, expected) in [
            ("1.0_alpha1", "1.0_beta", Less),
            ("1.0_rc3", "1.0", Less),
            ("1.0", "1.0_p1", Less),
            ("1.0_p1", "1.0-r5", Greater),
            ("1.0-r1", "1.0-r10", Less),
            ("1.0a", "1.0b", Less),
            ("1.0", "1.0a", Less),
            ("1.01", "1.1", Less),
            ("2.0", "10.0", Less),
            ("1.0~abc1-r0", "1.0~abc2-r0", Less),
            ("1.0", "1.0", Equal),
        ] {
            assert_eq!(compare_apk(a, b), expected, "{a} vs {b}");
            assert_eq!(compare_apk(b, a), expected.reverse(), "{b} vs {a}");
        }
        assert!(is_valid_apk("1.2.3_pre1_p2~0a1b-r12"));
        for bad in [
            "",
            "1.",
            "a1",
            "1.0-r",
            "1.0_foo",
            "1.0a1",
            "1.0-r1_p1",
            "1.0~",
        ] {
            assert!(!is_valid_apk(bad), "{bad:?}");
        }
        assert_eq!(compare_apk_fuzzy("3.6.9", "3.6"), Equal);
        assert_eq!(compare_apk_fuzzy("3.5", "3.6"), Less);
    }
}
