//! Lease safety: a key attached to a lease disappears only after the lease
//! expired or was revoked. A lease cannot expire before (the latest invocation
//! of a grant or of a keep-alive that answered a positive TTL) + TTL, because
//! the server started that TTL after the client sent the request; a watcher that
//! saw the key's deletion before that time, with no revoke sent yet, saw the
//! lease end early. Also: a revoked lease's keys are gone at the end, and no
//! keep-alive finds a lease alive after its key's deletion was seen.

use std::collections::BTreeMap;

use crate::check::{CheckResult, verdict};
use crate::history::{EventKind, History, Operation, Outcome};

pub const PROPERTY: &str = "lease safety (leased keys disappear only after expiry or revocation)";

/// Tolerance for the TTL lower bound, in nanoseconds. Both ends read the same
/// monotonic clock, so this only absorbs the servers' millisecond rounding.
const SLACK_NS: u64 = 100_000_000;

#[derive(Default)]
struct LeaseFacts {
    ttl_seconds: i64,
    /// The latest invocation known to have (re)started the TTL.
    last_renewal_invoke_ns: Option<u64>,
    /// The latest invocation of a keep-alive that answered a positive TTL.
    last_alive_invoke_ns: Option<u64>,
    first_revoke_invoke_ns: Option<u64>,
    revoke_acknowledged: bool,
    keys: Vec<String>,
}

pub fn check(history: &History) -> CheckResult {
    let mut violations = Vec::new();
    let mut leases: BTreeMap<i64, LeaseFacts> = BTreeMap::new();
    let mut deletion_seen_ns: BTreeMap<&str, u64> = BTreeMap::new();
    for record in &history.records {
        match &record.operation {
            Operation::LeaseGrant { lease, ttl_seconds } if record.outcome != Outcome::Fail => {
                let facts = leases.entry(*lease).or_default();
                facts.ttl_seconds = *ttl_seconds;
                facts.last_renewal_invoke_ns =
                    facts.last_renewal_invoke_ns.max(Some(record.invoke_ns));
            }
            Operation::LeaseKeepAlive {
                lease,
                ttl_seconds: Some(ttl),
            } if record.outcome == Outcome::Ok && *ttl > 0 => {
                let facts = leases.entry(*lease).or_default();
                facts.last_renewal_invoke_ns =
                    facts.last_renewal_invoke_ns.max(Some(record.invoke_ns));
                facts.last_alive_invoke_ns = facts.last_alive_invoke_ns.max(Some(record.invoke_ns));
            }
            Operation::LeaseRevoke { lease } if record.outcome != Outcome::Fail => {
                let facts = leases.entry(*lease).or_default();
                facts.first_revoke_invoke_ns = Some(
                    facts
                        .first_revoke_invoke_ns
                        .map_or(record.invoke_ns, |earlier| earlier.min(record.invoke_ns)),
                );
                facts.revoke_acknowledged |= record.outcome == Outcome::Ok;
            }
            Operation::LeasePut { key, lease, .. } if record.outcome != Outcome::Fail => {
                leases.entry(*lease).or_default().keys.push(key.clone());
            }
            Operation::WatchEvents { events, .. } => {
                for event in events
                    .iter()
                    .filter(|event| event.kind == EventKind::Delete)
                {
                    let seen = deletion_seen_ns
                        .entry(&event.key)
                        .or_insert(record.complete_ns);
                    *seen = (*seen).min(record.complete_ns);
                }
            }
            _ => {}
        }
    }

    let deleted_in_reference: std::collections::HashSet<&str> = history
        .end
        .reference
        .iter()
        .filter(|event| event.kind == EventKind::Delete)
        .map(|event| event.key.as_str())
        .collect();
    for (lease, facts) in &leases {
        let Some(renewed_ns) = facts.last_renewal_invoke_ns else {
            continue;
        };
        let ttl_ns = u64::try_from(facts.ttl_seconds.max(0)).unwrap_or(0) * 1_000_000_000;
        let earliest_expiry_ns = (renewed_ns + ttl_ns).saturating_sub(SLACK_NS);
        for key in &facts.keys {
            let Some(&seen_ns) = deletion_seen_ns.get(key.as_str()) else {
                continue;
            };
            let revoked_before = facts
                .first_revoke_invoke_ns
                .is_some_and(|revoke_ns| revoke_ns <= seen_ns);
            if !revoked_before && seen_ns < earliest_expiry_ns {
                violations.push(format!(
                    "lease {lease:x}: key {key} was seen deleted at {:.3} s, but the lease \
                     (TTL {} s, last renewed by a request sent at {:.3} s) could not expire before \
                     {:.3} s and no revoke had been sent",
                    seconds(seen_ns),
                    facts.ttl_seconds,
                    seconds(renewed_ns),
                    seconds(earliest_expiry_ns + SLACK_NS)
                ));
            }
            if let Some(alive_ns) = facts.last_alive_invoke_ns
                && alive_ns > seen_ns
            {
                violations.push(format!(
                    "lease {lease:x}: a keep-alive sent at {:.3} s found the lease alive, but its \
                     key {key} had been seen deleted at {:.3} s",
                    seconds(alive_ns),
                    seconds(seen_ns)
                ));
            }
        }
        if facts.revoke_acknowledged && history.end.final_revision > 0 {
            for key in &facts.keys {
                let put_in_reference = history
                    .end
                    .reference
                    .iter()
                    .any(|event| event.key == *key && event.kind == EventKind::Put);
                if put_in_reference && !deleted_in_reference.contains(key.as_str()) {
                    violations.push(format!(
                        "lease {lease:x}: revoked (acknowledged), but its key {key} was never deleted"
                    ));
                }
            }
        }
    }

    CheckResult {
        property: PROPERTY,
        verdict: verdict(violations),
        detail: format!(
            "{} leases, {} deletions observed by watchers",
            leases.len(),
            deletion_seen_ns.len()
        ),
    }
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}
