//! Expectations (upstream's ControllerExpectations, keyed by ReplicaSet):
//! what this controller just wrote and the informer has not shown yet. A
//! Deployment whose expectations are unmet is not synced, so a sync never
//! acts on a copy older than its own writes (which would scale a
//! ReplicaSet twice, or create one again). ReplicaSet writes carry no
//! resourceVersion precondition (the ReplicaSet controller writes their
//! status all the time); this is what stands in for it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;

/// After this long an unmet expectation is dropped (a watch event lost
/// for good must not stall the Deployment forever); upstream's is 5 min.
pub const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// Created: it must appear (with at least this generation).
    Created { generation: i64 },
    /// Updated: its generation must reach this (if it still exists).
    Updated { generation: i64 },
    /// Deleted: it must be gone (or be another object of the same name).
    Deleted { uid: Option<String> },
}

impl Expected {
    /// Whether the informer's copy of the ReplicaSet shows the write.
    pub fn met(&self, seen: Option<&ReplicaSet>) -> bool {
        match (self, seen) {
            (Expected::Created { .. }, None) => false,
            (Expected::Updated { .. }, None) => true,
            (Expected::Created { generation } | Expected::Updated { generation }, Some(rs)) => {
                rs.metadata.generation.unwrap_or(0) >= *generation
            }
            (Expected::Deleted { .. }, None) => true,
            (Expected::Deleted { uid }, Some(rs)) => uid.is_some() && rs.metadata.uid != *uid,
        }
    }
}

/// ReplicaSet key → what is expected of it, since when.
type Pending = HashMap<String, (Expected, Instant)>;

#[derive(Default)]
pub struct Expectations {
    /// By Deployment key.
    pending: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    pub fn expect(&self, deployment: &str, replica_set: String, expected: Expected) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending
            .entry(deployment.to_string())
            .or_default()
            .insert(replica_set, (expected, Instant::now()));
    }

    /// True when every expectation of the Deployment is met (or expired);
    /// met ones are forgotten. `seen` looks a ReplicaSet up in the informer.
    pub fn satisfied(
        &self,
        deployment: &str,
        seen: impl Fn(&str) -> Option<std::sync::Arc<ReplicaSet>>,
    ) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let Some(expected) = pending.get_mut(deployment) else {
            return true;
        };
        expected.retain(|key, (expected, since)| {
            since.elapsed() < EXPECTATION_TIMEOUT && !expected.met(seen(key).as_deref())
        });
        let done = expected.is_empty();
        if done {
            pending.remove(deployment);
        }
        done
    }

    pub fn forget(&self, deployment: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.remove(deployment);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::sync::Arc;

    fn replica_set(generation: i64, uid: &str) -> Arc<ReplicaSet> {
        Arc::new(ReplicaSet {
            metadata: ObjectMeta {
                generation: Some(generation),
                uid: Some(uid.into()),
                ..ObjectMeta::default()
            },
            ..ReplicaSet::default()
        })
    }

    #[test]
    fn a_write_is_expected_until_the_informer_shows_it() {
        let expectations = Expectations::default();
        expectations.expect(
            "ns/web",
            "ns/web-a".into(),
            Expected::Created { generation: 1 },
        );
        expectations.expect(
            "ns/web",
            "ns/web-b".into(),
            Expected::Updated { generation: 3 },
        );
        expectations.expect(
            "ns/web",
            "ns/web-c".into(),
            Expected::Deleted {
                uid: Some("c1".into()),
            },
        );
        let unseen = |key: &str| match key {
            "ns/web-a" => None,
            "ns/web-b" => Some(replica_set(2, "b1")),
            _ => Some(replica_set(1, "c1")),
        };
        assert!(
            !expectations.satisfied("ns/web", unseen),
            "the created one is not seen yet"
        );
        let stale = |key: &str| match key {
            "ns/web-a" => Some(replica_set(1, "a1")),
            "ns/web-b" => Some(replica_set(2, "b1")),
            _ => Some(replica_set(1, "c1")),
        };
        assert!(!expectations.satisfied("ns/web", stale));
        let current = |key: &str| match key {
            "ns/web-a" => Some(replica_set(1, "a1")),
            "ns/web-b" => Some(replica_set(3, "b1")),
            _ => None,
        };
        assert!(expectations.satisfied("ns/web", current));
        assert!(expectations.satisfied("ns/other", |_| None));
    }
}
