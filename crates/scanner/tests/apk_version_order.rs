//! The scanner's apk ordering against apk-tools' own table of cases
//! (`data/apk-version.data`), and the laws of an order on generated
//! versions: Debian has no `apk` to ask, so the table is the reference.

use std::cmp::Ordering;

use proptest::prelude::*;
use scanner::apk_version::{compare_apk, compare_apk_fuzzy, is_valid_apk};

/// apk's `apk_version_match`: whether `a OP b` holds, where OP is a mask of
/// `<`, `=`, `>` and `~` (fuzzy, which implies `=`).
fn holds(a: &str, op: &str, b: &str) -> bool {
    let fuzzy = op.contains('~');
    let order = if fuzzy {
        compare_apk_fuzzy(a, b)
    } else {
        compare_apk(a, b)
    };
    match order {
        Ordering::Less => op.contains('<'),
        Ordering::Equal => op.contains('=') || fuzzy,
        Ordering::Greater => op.contains('>'),
    }
}

#[test]
fn apk_tools_table_of_cases() {
    let table = include_str!("data/apk-version.data");
    let mut failures = Vec::new();
    let mut n_cases = 0;
    for (line_idx, line) in table.lines().enumerate() {
        let case = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('#') || case.is_empty() && !line.starts_with('!') {
            continue;
        }
        n_cases += 1;
        let words: Vec<&str> = case.split_whitespace().collect();
        let ok = match words.as_slice() {
            [a, op, b] => match op.strip_prefix('!') {
                Some(op) => !holds(a, op, b),
                None => holds(a, op, b),
            },
            [version] => match version.strip_prefix('!') {
                Some(version) => !is_valid_apk(version),
                None => is_valid_apk(version),
            },
            // "!" alone: the empty version is invalid.
            [] => !is_valid_apk(""),
            _ => panic!("line {}: cannot read {line:?}", line_idx + 1),
        };
        if !ok {
            failures.push(format!("line {}: {case}", line_idx + 1));
        }
    }
    assert!(n_cases > 750, "only {n_cases} cases read");
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Valid versions from few symbols, so generated pairs share prefixes and
/// meet at every kind of part.
fn version() -> impl Strategy<Value = String> {
    let digits = "(0|1|2|10|01|00)";
    let numbers = format!("{digits}(\\.{digits}){{0,3}}");
    let letter = "[ab]?";
    let suffixes = "(_(alpha|beta|pre|rc|p|git)[0-2]?){0,2}";
    let hash = "(~[0-9a-f]{1,3})?";
    let revision = "(-r[0-9]{1,2})?";
    proptest::string::string_regex(&format!("{numbers}{letter}{suffixes}{hash}{revision}"))
        .expect("a valid pattern")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn generated_versions_are_valid(a in version()) {
        prop_assert!(is_valid_apk(&a), "{a}");
    }

    #[test]
    fn an_order_antisymmetric_and_reflexive(a in version(), b in version()) {
        prop_assert_eq!(compare_apk(&a, &a), Ordering::Equal);
        prop_assert_eq!(compare_apk(&a, &b), compare_apk(&b, &a).reverse(), "{} {}", a, b);
    }

    #[test]
    fn an_order_transitive(a in version(), b in version(), c in version()) {
        let mut sorted = [a, b, c];
        sorted.sort_by(|x, y| compare_apk(x, y));
        prop_assert_ne!(compare_apk(&sorted[0], &sorted[1]), Ordering::Greater);
        prop_assert_ne!(compare_apk(&sorted[1], &sorted[2]), Ordering::Greater);
        prop_assert_ne!(compare_apk(&sorted[0], &sorted[2]), Ordering::Greater, "{:?}", sorted);
    }

    /// What each kind of part means: a revision and a patch suffix make a
    /// newer version, a pre-release suffix an older one, a higher last
    /// number a newer one.
    #[test]
    fn parts_move_the_version_the_way_they_mean(base in "[1-9][0-9]{0,2}(\\.[1-9][0-9]?){0,3}", n in 1u32..50) {
        prop_assert_eq!(compare_apk(&format!("{base}-r{n}"), &base), Ordering::Greater);
        prop_assert_eq!(compare_apk(&format!("{base}_p{n}"), &format!("{base}-r{n}")), Ordering::Greater);
        prop_assert_eq!(compare_apk(&format!("{base}_rc{n}"), &base), Ordering::Less);
        prop_assert_eq!(compare_apk(&format!("{base}_alpha"), &format!("{base}_beta{n}")), Ordering::Less);
        prop_assert_eq!(compare_apk(&format!("{base}.{n}"), &format!("{base}.{}", n + 1)), Ordering::Less);
        prop_assert_eq!(compare_apk(&format!("{base}.{n}"), &base), Ordering::Greater);
    }
}
