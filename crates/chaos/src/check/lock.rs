//! Lock safety: no two holders at once. A v3lock owner key's create revision is
//! its fencing token; the holder is the existing key under the lock's prefix
//! with the lowest create revision. Replaying the reference history, every
//! grant (at its response revision) and every fenced write to the protected
//! resource (at its revision) must come from the holder at that revision, and
//! the resource's writes must carry non-decreasing fencing tokens.

use std::collections::BTreeMap;

use crate::check::{CheckResult, verdict};
use crate::history::{EventKind, History, Operation, Outcome};

pub const PROPERTY: &str = "lock safety (one holder at a time, by fencing revision)";

/// Something the holder did at a revision, to be checked against the replay.
struct Claim {
    revision: i64,
    name: String,
    key: String,
    what: &'static str,
    record_idx: usize,
}

pub fn check(history: &History) -> CheckResult {
    let mut violations = Vec::new();
    let mut claims = Vec::new();
    for (record_idx, record) in history.records.iter().enumerate() {
        if record.outcome != Outcome::Ok {
            continue;
        }
        match &record.operation {
            Operation::LockAcquire {
                name,
                key: Some(key),
                revision: Some(revision),
                ..
            } => claims.push(Claim {
                revision: *revision,
                name: name.clone(),
                key: key.clone(),
                what: "granted",
                record_idx,
            }),
            Operation::FencedWrite {
                owner_key,
                succeeded: Some(true),
                revision: Some(revision),
                ..
            } => claims.push(Claim {
                revision: *revision,
                name: owner_key
                    .rsplit_once('/')
                    .map(|(name, _)| name.to_string())
                    .unwrap_or_default(),
                key: owner_key.clone(),
                what: "wrote the protected resource",
                record_idx,
            }),
            _ => {}
        }
    }
    claims.sort_by_key(|claim| claim.revision);

    // Replay: owner keys per lock name, key → create revision.
    let mut owners: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    let lock_names: Vec<String> = {
        let mut names: Vec<String> = claims.iter().map(|claim| claim.name.clone()).collect();
        names.sort();
        names.dedup();
        names
    };
    let mut events = history.end.reference.iter().peekable();
    for claim in &claims {
        while let Some(event) = events.next_if(|event| event.mod_revision <= claim.revision) {
            for name in &lock_names {
                if event.key.starts_with(&format!("{name}/")) {
                    let keys = owners.entry(name.clone()).or_default();
                    match event.kind {
                        EventKind::Put => {
                            keys.insert(event.key.clone(), event.create_revision);
                        }
                        EventKind::Delete => {
                            keys.remove(&event.key);
                        }
                    }
                }
            }
        }
        let keys = owners.get(&claim.name).cloned().unwrap_or_default();
        let holder = keys
            .iter()
            .min_by_key(|(_, create_revision)| **create_revision);
        match holder {
            Some((holder, _)) if *holder == claim.key => {}
            Some((holder, holder_revision)) => violations.push(format!(
                "record #{}: {} {} at revision {} while {holder} (fencing revision \
                 {holder_revision}) held {}: two holders at once",
                claim.record_idx, claim.key, claim.what, claim.revision, claim.name
            )),
            None => violations.push(format!(
                "record #{}: {} {} at revision {}, but no owner key of {} existed then",
                claim.record_idx, claim.key, claim.what, claim.revision, claim.name
            )),
        }
    }

    // Fencing tokens of the resource's writes never go backwards.
    let mut last_token: BTreeMap<&str, (i64, &str)> = BTreeMap::new();
    let create_revision_of: BTreeMap<&str, i64> = history
        .end
        .reference
        .iter()
        .filter(|event| event.kind == EventKind::Put && event.create_revision == event.mod_revision)
        .map(|event| (event.key.as_str(), event.create_revision))
        .collect();
    let mut writes: Vec<(i64, &str, &str)> = history
        .records
        .iter()
        .filter(|record| record.outcome == Outcome::Ok)
        .filter_map(|record| match &record.operation {
            Operation::FencedWrite {
                owner_key,
                resource_key,
                succeeded: Some(true),
                revision: Some(revision),
                ..
            } => Some((*revision, resource_key.as_str(), owner_key.as_str())),
            _ => None,
        })
        .collect();
    writes.sort();
    for (revision, resource, owner) in writes {
        let Some(&token) = create_revision_of.get(owner) else {
            continue;
        };
        if let Some((previous, previous_owner)) = last_token.get(resource)
            && token < *previous
        {
            violations.push(format!(
                "{resource} written at revision {revision} by {owner} with fencing revision \
                 {token} after {previous_owner} wrote it with the newer fencing revision {previous}"
            ));
        }
        last_token.insert(resource, (token, owner));
    }

    CheckResult {
        property: PROPERTY,
        verdict: verdict(violations),
        detail: format!("{} grants and fenced writes", claims.len()),
    }
}
