//! The scanner's RPM ordering against Debian's `rpm` itself (its Lua
//! `rpm.vercmp`, one `rpm --eval` for a whole batch of pairs) on generated
//! versions with epochs, releases, `~`, `^`, letters and leading zeros.

use std::cmp::Ordering;
use std::process::Command;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use scanner::rpm_version::compare_rpm;

/// rpm's answers for each pair, in order.
fn rpm_says(pairs: &[(String, String)]) -> Vec<Ordering> {
    let mut script = String::from("%{lua:\n");
    for (a, b) in pairs {
        script.push_str(&format!("print(rpm.vercmp(\"{a}\", \"{b}\") .. \"\\n\")\n"));
    }
    script.push('}');
    let output = Command::new("rpm")
        .arg("--eval")
        .arg(&script)
        .output()
        .expect("rpm runs (Debian's rpm package: scripts/install-deps)");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let answers: Vec<Ordering> = text
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| match line.trim() {
            "-1" => Ordering::Less,
            "0" => Ordering::Equal,
            "1" => Ordering::Greater,
            other => panic!("rpm.vercmp said {other:?}"),
        })
        .collect();
    assert_eq!(answers.len(), pairs.len(), "{text}");
    answers
}

/// Versions rpm accepts, from few symbols so that pairs share prefixes.
fn version() -> impl Strategy<Value = String> {
    let epoch = prop_oneof![Just(String::new()), "[0-2]:"];
    let field = "[0-9a-c.~^_]{0,3}[0-9][0-9a-c.~^_]{0,4}";
    let release = prop_oneof![
        Just(String::new()),
        "-[0-9a-c.~^]{1,5}".prop_map(String::from)
    ];
    (epoch, field, release).prop_map(|(epoch, field, release)| format!("{epoch}{field}{release}"))
}

fn check_batch(pairs: Vec<(String, String)>) {
    let answers = rpm_says(&pairs);
    let wrong: Vec<String> = pairs
        .iter()
        .zip(&answers)
        .filter(|((a, b), rpm)| compare_rpm(a, b) != **rpm)
        .map(|((a, b), rpm)| {
            format!(
                "{a} vs {b}: rpm says {rpm:?}, the scanner {:?}",
                compare_rpm(a, b)
            )
        })
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn ordering_matches_rpm() {
    // Batches of pairs: one rpm process per batch, not per pair.
    let mut runner = TestRunner::new(Config {
        cases: 16,
        ..Config::default()
    });
    let batch = proptest::collection::vec((version(), version()), 400);
    runner
        .run(&batch, |pairs| {
            check_batch(pairs);
            Ok(())
        })
        .unwrap();
}

#[test]
fn ordering_matches_rpm_on_neighbours() {
    // A version against small edits of itself: the comparisons that decide
    // (a `~` or `^` against the end, a separator against nothing).
    let mut runner = TestRunner::new(Config {
        cases: 4,
        ..Config::default()
    });
    let edits = proptest::collection::vec(
        (
            version(),
            prop_oneof![
                Just("~"),
                Just("^"),
                Just("."),
                Just("a"),
                Just("0"),
                Just("-1"),
                Just("-"),
                Just("-."),
                Just("_")
            ],
        ),
        300,
    );
    runner
        .run(&edits, |edits| {
            let pairs = edits
                .into_iter()
                .map(|(base, edit)| (base.clone(), format!("{base}{edit}")))
                .collect();
            check_batch(pairs);
            Ok(())
        })
        .unwrap();
}
