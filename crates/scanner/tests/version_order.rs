//! The scanner's Debian version ordering against `dpkg --compare-versions`
//! itself, on generated versions with epochs, `~`, `+`, letters and
//! leading zeros.

use std::cmp::Ordering;
use std::process::Command;

use proptest::prelude::*;
use scanner::version::compare_debian;

fn dpkg_says(a: &str, relation: &str, b: &str) -> bool {
    let status = Command::new("dpkg")
        .args(["--compare-versions", a, relation, b])
        .status()
        .expect("dpkg runs");
    match status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!("dpkg --compare-versions {a} {relation} {b} failed: {other:?}"),
    }
}

fn dpkg_order(a: &str, b: &str) -> Ordering {
    if dpkg_says(a, "lt", b) {
        Ordering::Less
    } else if dpkg_says(a, "eq", b) {
        Ordering::Equal
    } else {
        Ordering::Greater
    }
}

/// Versions dpkg accepts without complaint: an optional epoch, an upstream
/// part starting with a digit, an optional revision. Few distinct symbols,
/// so that generated pairs often share prefixes and the interesting
/// comparisons (`~` against the end, `0` against nothing) come up.
fn version() -> impl Strategy<Value = String> {
    let epoch = prop_oneof![Just(String::new()), "[0-2]:"];
    let upstream = "[0-9][0-9a~.+]{0,6}";
    let revision = prop_oneof![Just(String::new()), "-[0-9a~.+]{1,5}"];
    (epoch, upstream, revision)
        .prop_map(|(epoch, upstream, revision)| format!("{epoch}{upstream}{revision}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn ordering_matches_dpkg(a in version(), b in version()) {
        prop_assert_eq!(compare_debian(&a, &b).unwrap(), dpkg_order(&a, &b), "{} vs {}", a, b);
    }

    #[test]
    fn ordering_matches_dpkg_on_neighbours(a in version(), suffix in "[~+a0.][0-9a~]{0,2}") {
        let b = format!("{a}{suffix}");
        prop_assert_eq!(compare_debian(&a, &b).unwrap(), dpkg_order(&a, &b), "{} vs {}", a, b);
    }
}
