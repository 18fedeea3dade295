//! No acknowledged write lost: every write a client saw acknowledged is in the
//! reference history at its revision with its value, and at the end it is still
//! visible or was superseded (a later write to the key, or its deletion). Also
//! replica convergence: every member that answered has the same `HashKV` at the
//! final revision.

use std::collections::HashMap;

use crate::check::{CheckResult, Reference, Verdict, verdict};
use crate::history::{EventKind, History, Operation, Outcome};

pub const PROPERTY: &str = "no acknowledged write lost";
pub const CONVERGENCE_PROPERTY: &str = "replica convergence (equal HashKV on every member)";

pub fn check(history: &History) -> CheckResult {
    if history.end.final_revision == 0 {
        return CheckResult {
            property: PROPERTY,
            verdict: Verdict::Unknown("the final state could not be read".to_string()),
            detail: String::new(),
        };
    }
    let mut violations = Vec::new();
    let reference = Reference::new(&history.end.reference);
    let final_state: HashMap<&str, (i64, &str)> = history
        .end
        .final_state
        .iter()
        .map(|kv| (kv.key.as_str(), (kv.mod_revision, kv.value.as_str())))
        .collect();
    let mut n_acknowledged = 0;
    for (record_idx, record) in history.records.iter().enumerate() {
        if record.outcome != Outcome::Ok {
            continue;
        }
        let writes: Vec<(&str, &str, i64)> = match &record.operation {
            Operation::Put {
                key,
                value,
                revision: Some(revision),
            }
            | Operation::LeasePut {
                key,
                value,
                revision: Some(revision),
                ..
            }
            | Operation::FencedWrite {
                resource_key: key,
                value,
                succeeded: Some(true),
                revision: Some(revision),
                ..
            } => vec![(key, value, *revision)],
            Operation::Cas {
                keys,
                new,
                succeeded: Some(true),
                revision: Some(revision),
                ..
            } => keys
                .iter()
                .zip(new)
                .map(|(key, value)| (key.as_str(), value.as_str(), *revision))
                .collect(),
            _ => continue,
        };
        for (key, value, revision) in writes {
            n_acknowledged += 1;
            let describe = || {
                format!(
                    "record #{record_idx}: put {key}={value} acknowledged at revision {revision}"
                )
            };
            match reference.get(revision, key) {
                Some(event) if event.kind == EventKind::Put && event.value == value => {}
                other => violations.push(format!(
                    "{}, but the KV history has {other:?} there",
                    describe()
                )),
            }
            match final_state.get(key) {
                Some((mod_revision, final_value)) => {
                    if *mod_revision < revision
                        || (*mod_revision == revision && *final_value != value)
                    {
                        violations.push(format!(
                            "{}, but the final state has {key}={final_value} at revision {mod_revision}",
                            describe()
                        ));
                    }
                }
                None => {
                    let deleted_later = history.end.reference.iter().any(|event| {
                        event.key == key
                            && event.kind == EventKind::Delete
                            && event.mod_revision > revision
                    });
                    if !deleted_later {
                        violations.push(format!(
                            "{}, but {key} is missing from the final state and was never deleted",
                            describe()
                        ));
                    }
                }
            }
        }
    }
    CheckResult {
        property: PROPERTY,
        verdict: verdict(violations),
        detail: format!(
            "{n_acknowledged} acknowledged writes, {} keys at the end",
            final_state.len()
        ),
    }
}

pub fn check_convergence(history: &History) -> CheckResult {
    let hashes = &history.end.member_hashes;
    let detail = format!(
        "{} members answered at revision {}",
        hashes.len(),
        history.end.final_revision
    );
    let verdict = match hashes.first() {
        None => Verdict::Unknown("no member answered HashKV".to_string()),
        Some((_, first)) if hashes.iter().all(|(_, hash)| hash == first) => {
            if hashes.len() < 2 {
                Verdict::Unknown("fewer than two members answered HashKV".to_string())
            } else {
                Verdict::Pass
            }
        }
        Some(_) => Verdict::Violation(vec![format!(
            "members disagree at revision {}: {}",
            history.end.final_revision,
            hashes
                .iter()
                .map(|(member, hash)| format!("m{member}={hash:08x}"))
                .collect::<Vec<_>>()
                .join(" ")
        )]),
    };
    CheckResult {
        property: CONVERGENCE_PROPERTY,
        verdict,
        detail,
    }
}
