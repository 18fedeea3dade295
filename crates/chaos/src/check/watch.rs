//! Watch guarantees: each watcher sees events in revision order, without gaps
//! or duplicates, and exactly the events of the reference history (the one
//! watch read from revision 1 after the run); and every write a client saw
//! acknowledged and every value it read is in that history at its revision.

use std::collections::{BTreeMap, HashMap};

use crate::check::{CheckResult, Reference, verdict};
use crate::history::{Event, EventKind, History, Operation, Outcome};

pub const PROPERTY: &str =
    "watch guarantees (ordered, no gaps or duplicates, matching the KV history)";

pub fn check(history: &History) -> CheckResult {
    let mut violations = Vec::new();
    let reference_events = &history.end.reference;
    let reference = Reference::new(reference_events);

    // The reference is itself a watch: it must be ordered without duplicates.
    let mut watchers: BTreeMap<String, Vec<&Event>> = BTreeMap::new();
    for event in reference_events {
        watchers
            .entry("reference".to_string())
            .or_default()
            .push(event);
    }
    let mut first_start: HashMap<String, i64> = HashMap::new();
    for record in &history.records {
        match &record.operation {
            Operation::WatchStart {
                watcher,
                start_revision,
                ..
            } => {
                let name = format!("watcher {watcher}");
                first_start.entry(name).or_insert(*start_revision);
            }
            Operation::WatchEvents {
                watcher, events, ..
            } => {
                let name = format!("watcher {watcher}");
                for event in events {
                    watchers.entry(name.clone()).or_default().push(event);
                }
            }
            _ => {}
        }
    }

    let mut n_events = 0;
    for (name, events) in &watchers {
        n_events += events.len();
        let mut received: HashMap<(i64, &str), &Event> = HashMap::new();
        let mut last_revision = 0;
        for &event in events {
            if event.mod_revision < last_revision {
                violations.push(format!(
                    "{name}: event out of order: revision {} after revision {last_revision} ({} {:?})",
                    event.mod_revision, event.key, event.kind
                ));
            }
            if received
                .insert((event.mod_revision, event.key.as_str()), event)
                .is_some()
            {
                violations.push(format!(
                    "{name}: duplicate event: {} {:?} at revision {}",
                    event.key, event.kind, event.mod_revision
                ));
            }
            last_revision = last_revision.max(event.mod_revision);
            if name != "reference" {
                match reference.get(event.mod_revision, &event.key) {
                    Some(expected) if expected == event => {}
                    Some(expected) => violations.push(format!(
                        "{name}: event {event:?} differs from the KV history's {expected:?}"
                    )),
                    None if history.end.final_revision > 0
                        && event.mod_revision <= history.end.final_revision =>
                    {
                        violations.push(format!("{name}: event {event:?} is not in the KV history"))
                    }
                    None => {}
                }
            }
        }
        // Gaps: every reference event between the watcher's start and the last
        // revision it received must have been delivered to it.
        if name != "reference" {
            let start = first_start.get(name).copied().unwrap_or(1);
            let missing: Vec<&Event> = reference_events
                .iter()
                .filter(|event| event.mod_revision >= start && event.mod_revision <= last_revision)
                .filter(|event| !received.contains_key(&(event.mod_revision, event.key.as_str())))
                .collect();
            if let Some(first) = missing.first() {
                violations.push(format!(
                    "{name}: gap: {} event(s) between revisions {start} and {last_revision} were \
                     never delivered, the first {} {:?} at revision {}",
                    missing.len(),
                    first.key,
                    first.kind,
                    first.mod_revision
                ));
            }
        }
    }

    // Reads and acknowledged writes against the reference.
    if history.end.final_revision > 0 {
        for (record_idx, record) in history.records.iter().enumerate() {
            if record.outcome != Outcome::Ok {
                continue;
            }
            if let Operation::Get {
                key,
                value: Some(value),
                mod_revision: Some(mod_revision),
            } = &record.operation
            {
                match reference.get(*mod_revision, key) {
                    Some(event) if event.kind == EventKind::Put && event.value == *value => {}
                    other => violations.push(format!(
                        "record #{record_idx}: get {key} returned {value:?} at mod revision \
                         {mod_revision}, but the KV history has {other:?} there"
                    )),
                }
            }
        }
    }

    CheckResult {
        property: PROPERTY,
        verdict: verdict(violations),
        detail: format!(
            "{} watchers, {n_events} events, reference of {} events",
            watchers.len().saturating_sub(1),
            reference_events.len()
        ),
    }
}
