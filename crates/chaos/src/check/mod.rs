//! Checkers over a recorded history, one per property, each naming the
//! property it checks. Each returns a [`CheckResult`]; a run fails when any
//! verdict is a violation.

pub mod lease;
pub mod linearizability;
pub mod lock;
pub mod lost_write;
pub mod watch;

use std::collections::HashMap;
use std::fmt;

use crate::history::{Event, History};

/// A checker's conclusion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Each string describes one violation, with the records involved.
    Violation(Vec<String>),
    /// The checker could not decide (search bound, missing data); not a failure.
    Unknown(String),
}

#[derive(Clone, Debug)]
pub struct CheckResult {
    pub property: &'static str,
    pub verdict: Verdict,
    /// What was checked: counts of keys, operations, events.
    pub detail: String,
}

impl CheckResult {
    pub fn is_violation(&self) -> bool {
        matches!(self.verdict, Verdict::Violation(_))
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.verdict {
            Verdict::Pass => write!(formatter, "PASS     {} ({})", self.property, self.detail),
            Verdict::Unknown(why) => write!(
                formatter,
                "UNKNOWN  {} ({}): {why}",
                self.property, self.detail
            ),
            Verdict::Violation(violations) => {
                write!(
                    formatter,
                    "VIOLATED {} ({}): {} violation(s)",
                    self.property,
                    self.detail,
                    violations.len()
                )?;
                for violation in violations.iter().take(10) {
                    write!(formatter, "\n           - {violation}")?;
                }
                if violations.len() > 10 {
                    write!(formatter, "\n           - … {} more", violations.len() - 10)?;
                }
                Ok(())
            }
        }
    }
}

/// Limits for the checkers.
#[derive(Clone, Copy, Debug)]
pub struct CheckOptions {
    /// Bound on the linearizability search per key (steps).
    pub max_search_steps_per_key: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_search_steps_per_key: 5_000_000,
        }
    }
}

/// Every checker over `history`.
pub fn check_all(history: &History, options: CheckOptions) -> Vec<CheckResult> {
    let mut results = linearizability::check(history, options.max_search_steps_per_key);
    results.push(watch::check(history));
    results.push(lock::check(history));
    results.push(lease::check(history));
    results.push(lost_write::check(history));
    results.push(lost_write::check_convergence(history));
    results
}

/// The reference history indexed by (revision, key).
pub(crate) struct Reference<'a> {
    pub by_revision_and_key: HashMap<(i64, &'a str), &'a Event>,
}

impl<'a> Reference<'a> {
    pub fn new(events: &'a [Event]) -> Reference<'a> {
        Reference {
            by_revision_and_key: events
                .iter()
                .map(|event| ((event.mod_revision, event.key.as_str()), event))
                .collect(),
        }
    }

    pub fn get(&self, revision: i64, key: &str) -> Option<&'a Event> {
        self.by_revision_and_key.get(&(revision, key)).copied()
    }
}

/// Violations → verdict.
pub(crate) fn verdict(violations: Vec<String>) -> Verdict {
    if violations.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Violation(violations)
    }
}
