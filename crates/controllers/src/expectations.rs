//! Expectations (upstream's `UIDTrackingControllerExpectations`): what a
//! controller has asked of the API server and its informer has not shown it
//! yet. A controller whose last creations or deletions are not all seen
//! does not act again (it would create or delete the same pods twice); it
//! acts once they are seen, or after `TIMEOUT` in case a watch event was
//! lost.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long expectations are trusted (upstream's `ExpectationsTimeout`).
pub const TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
struct Expected {
    /// Creations asked for and not yet seen.
    creations: i64,
    /// The keys of pods asked to be deleted and not yet seen going.
    deletions: HashSet<String>,
    since: Instant,
}

/// Expectations per controller key (`namespace/name`).
#[derive(Debug, Default)]
pub struct Expectations {
    by_controller: Mutex<HashMap<String, Expected>>,
}

impl Expectations {
    pub fn new() -> Expectations {
        Expectations::default()
    }

    /// Whether the controller may act: everything it asked for was seen
    /// (or it never asked, or it asked too long ago).
    pub fn satisfied(&self, controller: &str) -> bool {
        let by_controller = self.by_controller.lock();
        match by_controller.get(controller) {
            None => true,
            Some(expected) => {
                (expected.creations <= 0 && expected.deletions.is_empty())
                    || expected.since.elapsed() > TIMEOUT
            }
        }
    }

    /// Records that `count` creations are about to be asked for (replacing
    /// what was expected: the controller only acts when that was met).
    pub fn expect_creations(&self, controller: &str, count: usize) {
        self.by_controller.lock().insert(
            controller.to_string(),
            Expected {
                creations: count as i64,
                deletions: HashSet::new(),
                since: Instant::now(),
            },
        );
    }

    /// Records that the pods `pod_keys` are about to be deleted.
    pub fn expect_deletions(&self, controller: &str, pod_keys: impl IntoIterator<Item = String>) {
        self.by_controller.lock().insert(
            controller.to_string(),
            Expected {
                creations: 0,
                deletions: pod_keys.into_iter().collect(),
                since: Instant::now(),
            },
        );
    }

    /// One creation was seen (or failed, or was never asked for).
    pub fn creation_observed(&self, controller: &str) {
        if let Some(expected) = self.by_controller.lock().get_mut(controller) {
            expected.creations -= 1;
        }
    }

    /// The pod `pod_key` was seen going (or its deletion failed).
    pub fn deletion_observed(&self, controller: &str, pod_key: &str) {
        if let Some(expected) = self.by_controller.lock().get_mut(controller) {
            expected.deletions.remove(pod_key);
        }
    }

    /// Forgets the controller (it was deleted).
    pub fn forget(&self, controller: &str) {
        self.by_controller.lock().remove(controller);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_controller_waits_until_its_creations_and_deletions_are_seen() {
        let expectations = Expectations::new();
        assert!(expectations.satisfied("default/web"));
        expectations.expect_creations("default/web", 2);
        assert!(!expectations.satisfied("default/web"));
        expectations.creation_observed("default/web");
        assert!(!expectations.satisfied("default/web"));
        expectations.creation_observed("default/web");
        assert!(expectations.satisfied("default/web"));
        expectations.expect_deletions("default/web", ["default/a".to_string()]);
        assert!(!expectations.satisfied("default/web"));
        // A deletion of another pod does not count.
        expectations.deletion_observed("default/web", "default/b");
        assert!(!expectations.satisfied("default/web"));
        expectations.deletion_observed("default/web", "default/a");
        assert!(expectations.satisfied("default/web"));
        expectations.expect_creations("default/web", 1);
        expectations.forget("default/web");
        assert!(expectations.satisfied("default/web"));
    }
}
