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

    /// Records that `count` creations are about to be asked for (added to
    /// what is still expected, unless that expired).
    pub fn expect_creations(&self, controller: &str, count: usize) {
        let mut by_controller = self.by_controller.lock();
        let expected = Self::fresh(&mut by_controller, controller);
        expected.creations = expected.creations.max(0) + count as i64;
    }

    /// Records that the pods `pod_keys` are about to be deleted.
    pub fn expect_deletions(&self, controller: &str, pod_keys: impl IntoIterator<Item = String>) {
        let mut by_controller = self.by_controller.lock();
        let expected = Self::fresh(&mut by_controller, controller);
        expected.deletions.extend(pod_keys);
    }

    /// The controller's record, emptied if it expired, stamped now.
    fn fresh<'a>(
        by_controller: &'a mut HashMap<String, Expected>,
        controller: &str,
    ) -> &'a mut Expected {
        let expected = by_controller
            .entry(controller.to_string())
            .or_insert_with(|| Expected {
                creations: 0,
                deletions: HashSet::new(),
                since: Instant::now(),
            });
        if expected.since.elapsed() > TIMEOUT {
            expected.creations = 0;
            expected.deletions.clear();
        }
        expected.since = Instant::now();
        expected
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
        // Deletions and creations asked for in one sync are both awaited.
        expectations.expect_deletions("default/web", ["default/c".to_string()]);
        expectations.expect_creations("default/web", 1);
        expectations.creation_observed("default/web");
        assert!(!expectations.satisfied("default/web"));
        expectations.deletion_observed("default/web", "default/c");
        assert!(expectations.satisfied("default/web"));
        expectations.expect_creations("default/web", 1);
        expectations.forget("default/web");
        assert!(expectations.satisfied("default/web"));
    }
}
