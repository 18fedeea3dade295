//! Validates each checker on hand-made histories: a correct history passes, and
//! each kind of bug (a stale read, a lost write, a duplicate or missing watch
//! event, two lock holders, a lease ending early, a double swap) is caught.

use chaos::check::{self, CheckOptions, CheckResult, Verdict};
use chaos::history::{End, Event, EventKind, History, Operation, Outcome, Record};

const SECOND: u64 = 1_000_000_000;

fn record(
    client: u32,
    invoke_ns: u64,
    complete_ns: u64,
    outcome: Outcome,
    operation: Operation,
) -> Record {
    Record {
        client,
        invoke_ns,
        complete_ns,
        outcome,
        operation,
    }
}

fn put(client: u32, interval: (u64, u64), key: &str, value: &str, revision: i64) -> Record {
    record(
        client,
        interval.0,
        interval.1,
        Outcome::Ok,
        Operation::Put {
            key: key.to_string(),
            value: value.to_string(),
            revision: Some(revision),
        },
    )
}

fn get(client: u32, interval: (u64, u64), key: &str, value: Option<(&str, i64)>) -> Record {
    record(
        client,
        interval.0,
        interval.1,
        Outcome::Ok,
        Operation::Get {
            key: key.to_string(),
            value: value.map(|(value, _)| value.to_string()),
            mod_revision: value.map(|(_, revision)| revision),
        },
    )
}

fn put_event(key: &str, value: &str, mod_revision: i64, create_revision: i64) -> Event {
    Event {
        kind: EventKind::Put,
        key: key.to_string(),
        value: value.to_string(),
        mod_revision,
        create_revision,
    }
}

fn delete_event(key: &str, mod_revision: i64) -> Event {
    Event {
        kind: EventKind::Delete,
        key: key.to_string(),
        value: String::new(),
        mod_revision,
        create_revision: 0,
    }
}

fn watch(watcher: u32, at_ns: u64, events: Vec<Event>) -> Record {
    record(
        100 + watcher,
        at_ns,
        at_ns,
        Outcome::Ok,
        Operation::WatchEvents {
            watcher,
            member: 0,
            events,
        },
    )
}

fn watch_start(watcher: u32, start_revision: i64) -> Record {
    record(
        100 + watcher,
        0,
        0,
        Outcome::Ok,
        Operation::WatchStart {
            watcher,
            member: 0,
            start_revision,
        },
    )
}

/// A consistent register history on key x, with its end state.
fn good_register_history() -> History {
    let reference = vec![put_event("x", "a", 2, 2), put_event("x", "b", 3, 2)];
    History {
        records: vec![
            put(1, (10, 20), "x", "a", 2),
            get(2, (25, 30), "x", Some(("a", 2))),
            put(1, (40, 50), "x", "b", 3),
            get(2, (45, 55), "x", Some(("a", 2))), // concurrent with the put: fine
            get(2, (60, 70), "x", Some(("b", 3))),
            watch_start(0, 1),
            watch(0, 80, reference.clone()),
        ],
        end: End {
            final_state: vec![put_event("x", "b", 3, 2)],
            reference,
            final_revision: 3,
            member_hashes: vec![(0, 7), (1, 7), (2, 7)],
        },
    }
}

fn result_for<'a>(results: &'a [CheckResult], property: &str) -> &'a CheckResult {
    results
        .iter()
        .find(|result| result.property == property)
        .unwrap_or_else(|| panic!("no result for {property}"))
}

fn assert_violated(history: &History, property: &str, needle: &str) {
    let results = check::check_all(history, CheckOptions::default());
    let result = result_for(&results, property);
    match &result.verdict {
        Verdict::Violation(violations) => assert!(
            violations
                .iter()
                .any(|violation| violation.contains(needle)),
            "{property}: violations {violations:?} do not mention {needle:?}"
        ),
        other => panic!("{property} was not violated: {other:?}"),
    }
    for other in &results {
        if other.property != property {
            assert!(
                !other.is_violation() || property_may_cascade(property, other.property),
                "an unrelated checker fired: {other}"
            );
        }
    }
}

/// A lost write also breaks the reference cross-checks of the watch checker
/// and vice versa; other pairs must stay independent.
fn property_may_cascade(property: &str, other: &str) -> bool {
    let related = [check::lost_write::PROPERTY, check::watch::PROPERTY];
    related.contains(&property) && related.contains(&other)
}

#[test]
fn a_correct_history_passes_every_checker() {
    let results = check::check_all(&good_register_history(), CheckOptions::default());
    for result in &results {
        assert!(!result.is_violation(), "{result}");
    }
    for property in [
        check::linearizability::REGISTER_PROPERTY,
        check::watch::PROPERTY,
        check::lost_write::PROPERTY,
        check::lost_write::CONVERGENCE_PROPERTY,
    ] {
        let result = result_for(&results, property);
        assert_eq!(result.verdict, Verdict::Pass, "{result}");
    }
}

#[test]
fn a_stale_read_is_not_linearizable() {
    let mut history = good_register_history();
    // After b was acknowledged, a read that returns a.
    history.records.push(get(3, (80, 90), "x", Some(("a", 2))));
    assert_violated(&history, check::linearizability::REGISTER_PROPERTY, "x:");
}

#[test]
fn a_read_of_a_value_never_written_is_not_linearizable() {
    let mut history = good_register_history();
    history
        .records
        .push(get(3, (80, 90), "x", Some(("zzz", 2))));
    let results = check::linearizability::check(&history, 1_000_000);
    assert!(results[0].is_violation(), "{}", results[0]);
}

#[test]
fn an_unknown_put_may_have_happened_or_not() {
    let mut history = good_register_history();
    history.records.push(record(
        4,
        100,
        200,
        Outcome::Unknown,
        Operation::Put {
            key: "x".to_string(),
            value: "c".to_string(),
            revision: None,
        },
    ));
    // One read sees it, a later one sees it too; another key's reads never do.
    history
        .records
        .push(get(2, (300, 310), "x", Some(("c", 4))));
    let results = check::linearizability::check(&history, 1_000_000);
    assert_eq!(results[0].verdict, Verdict::Pass, "{}", results[0]);

    let mut never_applied = good_register_history();
    never_applied.records.push(record(
        4,
        100,
        200,
        Outcome::Unknown,
        Operation::Put {
            key: "x".to_string(),
            value: "c".to_string(),
            revision: None,
        },
    ));
    never_applied
        .records
        .push(get(2, (300, 310), "x", Some(("b", 3))));
    let results = check::linearizability::check(&never_applied, 1_000_000);
    assert_eq!(results[0].verdict, Verdict::Pass, "{}", results[0]);
}

#[test]
fn the_search_bound_gives_unknown_not_a_verdict() {
    let results = check::linearizability::check(&good_register_history(), 2);
    assert!(
        matches!(results[0].verdict, Verdict::Unknown(_)),
        "{}",
        results[0]
    );
}

fn cas(
    client: u32,
    interval: (u64, u64),
    expected: [Option<&str>; 2],
    new: [&str; 2],
    result: Option<bool>,
) -> Record {
    record(
        client,
        interval.0,
        interval.1,
        Outcome::Ok,
        Operation::Cas {
            keys: vec!["a".to_string(), "b".to_string()],
            expected: expected
                .iter()
                .map(|value| value.map(str::to_string))
                .collect(),
            new: new.iter().map(|value| value.to_string()).collect(),
            succeeded: result,
            observed: match result {
                Some(false) => Some(vec![Some("1".to_string()), Some("1".to_string())]),
                _ => None,
            },
            revision: Some(2),
        },
    )
}

#[test]
fn two_swaps_from_the_same_state_are_not_linearizable() {
    let ok = History {
        records: vec![
            cas(1, (0, 10), [None, None], ["1", "1"], Some(true)),
            cas(2, (5, 15), [None, None], ["2", "2"], Some(false)),
        ],
        end: End::default(),
    };
    let results = check::linearizability::check(&ok, 1_000_000);
    assert_eq!(results[1].verdict, Verdict::Pass, "{}", results[1]);

    let double_swap = History {
        records: vec![
            cas(1, (0, 10), [None, None], ["1", "1"], Some(true)),
            cas(2, (20, 30), [None, None], ["2", "2"], Some(true)),
        ],
        end: End::default(),
    };
    let results = check::linearizability::check(&double_swap, 1_000_000);
    assert!(results[1].is_violation(), "{}", results[1]);
}

#[test]
fn a_lost_write_is_caught() {
    let mut history = good_register_history();
    // Acknowledged at revision 4, but the end state still has b at 3 and the
    // KV history never had it.
    history.records.push(put(1, (80, 90), "x", "c", 4));
    assert_violated(
        &history,
        check::lost_write::PROPERTY,
        "acknowledged at revision 4",
    );
}

#[test]
fn a_write_that_vanished_from_the_end_state_is_caught() {
    let mut history = good_register_history();
    history.end.final_state.clear();
    assert_violated(
        &history,
        check::lost_write::PROPERTY,
        "missing from the final state",
    );
}

#[test]
fn a_duplicate_watch_event_is_caught() {
    let mut history = good_register_history();
    history
        .records
        .push(watch(0, 90, vec![put_event("x", "b", 3, 2)]));
    assert_violated(&history, check::watch::PROPERTY, "duplicate event");
}

#[test]
fn a_watch_gap_is_caught() {
    let mut history = good_register_history();
    history
        .records
        .retain(|record| !matches!(record.operation, Operation::WatchEvents { .. }));
    history
        .records
        .push(watch(0, 80, vec![put_event("x", "b", 3, 2)]));
    assert_violated(&history, check::watch::PROPERTY, "gap");
}

#[test]
fn a_watch_event_out_of_order_is_caught() {
    let mut history = good_register_history();
    history
        .records
        .retain(|record| !matches!(record.operation, Operation::WatchEvents { .. }));
    history
        .records
        .push(watch(0, 80, vec![put_event("x", "b", 3, 2)]));
    history
        .records
        .push(watch(0, 81, vec![put_event("x", "a", 2, 2)]));
    assert_violated(&history, check::watch::PROPERTY, "out of order");
}

#[test]
fn a_watch_event_that_differs_from_the_kv_history_is_caught() {
    let mut history = good_register_history();
    history
        .records
        .retain(|record| !matches!(record.operation, Operation::WatchEvents { .. }));
    history.records.push(watch(
        0,
        80,
        vec![put_event("x", "a", 2, 2), put_event("x", "WRONG", 3, 2)],
    ));
    assert_violated(
        &history,
        check::watch::PROPERTY,
        "differs from the KV history",
    );
}

fn lock_acquire(client: u32, key: &str, revision: i64) -> Record {
    record(
        client,
        0,
        1,
        Outcome::Ok,
        Operation::LockAcquire {
            name: "chaos/lock".to_string(),
            lease: 1,
            key: Some(key.to_string()),
            revision: Some(revision),
        },
    )
}

fn fenced_write(client: u32, owner_key: &str, revision: i64) -> Record {
    record(
        client,
        0,
        1,
        Outcome::Ok,
        Operation::FencedWrite {
            owner_key: owner_key.to_string(),
            resource_key: "chaos/lock-resource".to_string(),
            value: owner_key.to_string(),
            succeeded: Some(true),
            revision: Some(revision),
        },
    )
}

fn lock_reference() -> Vec<Event> {
    vec![
        put_event("chaos/lock/a", "", 3, 3),
        put_event("chaos/lock/b", "", 4, 4),
        put_event("chaos/lock-resource", "chaos/lock/a", 5, 5),
        delete_event("chaos/lock/a", 6),
        put_event("chaos/lock-resource", "chaos/lock/b", 7, 5),
    ]
}

#[test]
fn lock_holders_one_at_a_time_pass() {
    let history = History {
        records: vec![
            lock_acquire(1, "chaos/lock/a", 3),
            fenced_write(1, "chaos/lock/a", 5),
            lock_acquire(2, "chaos/lock/b", 6),
            fenced_write(2, "chaos/lock/b", 7),
        ],
        end: End {
            reference: lock_reference(),
            final_revision: 7,
            ..End::default()
        },
    };
    let result = check::lock::check(&history);
    assert_eq!(result.verdict, Verdict::Pass, "{result}");
}

#[test]
fn two_lock_holders_at_once_are_caught() {
    // b is granted at revision 4, while a (fencing revision 3) still holds.
    let history = History {
        records: vec![
            lock_acquire(1, "chaos/lock/a", 3),
            lock_acquire(2, "chaos/lock/b", 4),
            fenced_write(1, "chaos/lock/a", 5),
        ],
        end: End {
            reference: lock_reference(),
            final_revision: 7,
            ..End::default()
        },
    };
    let result = check::lock::check(&history);
    let Verdict::Violation(violations) = &result.verdict else {
        panic!("two holders not caught: {result}");
    };
    assert!(
        violations[0].contains("two holders at once"),
        "{violations:?}"
    );
}

#[test]
fn a_fenced_write_by_a_former_holder_is_caught() {
    // a writes the resource at revision 7, after its key was deleted at 6.
    let mut reference = lock_reference();
    reference.pop();
    reference.push(put_event("chaos/lock-resource", "chaos/lock/a", 7, 5));
    let history = History {
        records: vec![
            lock_acquire(1, "chaos/lock/a", 3),
            fenced_write(1, "chaos/lock/a", 7),
        ],
        end: End {
            reference,
            final_revision: 7,
            ..End::default()
        },
    };
    let result = check::lock::check(&history);
    assert!(result.is_violation(), "{result}");
}

fn lease_history(deletion_seen_ns: u64, revoke_ns: Option<u64>) -> History {
    let lease = 0x42;
    let key = "chaos/lease/42";
    let mut records = vec![
        record(
            1,
            0,
            SECOND / 100,
            Outcome::Ok,
            Operation::LeaseGrant {
                lease,
                ttl_seconds: 3,
            },
        ),
        record(
            1,
            SECOND / 10,
            SECOND / 5,
            Outcome::Ok,
            Operation::LeasePut {
                key: key.to_string(),
                value: "v".to_string(),
                lease,
                revision: Some(2),
            },
        ),
        record(
            1,
            SECOND,
            SECOND + SECOND / 100,
            Outcome::Ok,
            Operation::LeaseKeepAlive {
                lease,
                ttl_seconds: Some(3),
            },
        ),
    ];
    if let Some(revoke_ns) = revoke_ns {
        records.push(record(
            1,
            revoke_ns,
            revoke_ns + 1000,
            Outcome::Ok,
            Operation::LeaseRevoke { lease },
        ));
    }
    records.push(watch(0, deletion_seen_ns, vec![delete_event(key, 3)]));
    History {
        records,
        end: End {
            reference: vec![put_event(key, "v", 2, 2), delete_event(key, 3)],
            final_revision: 3,
            ..End::default()
        },
    }
}

#[test]
fn a_lease_key_deleted_after_expiry_or_revoke_passes() {
    // Keep-alive sent at 1 s with TTL 3 s: expiry no earlier than 4 s.
    let result = check::lease::check(&lease_history(5 * SECOND, None));
    assert_eq!(result.verdict, Verdict::Pass, "{result}");
    let result = check::lease::check(&lease_history(2 * SECOND, Some(SECOND + SECOND / 2)));
    assert_eq!(result.verdict, Verdict::Pass, "{result}");
}

#[test]
fn a_lease_key_deleted_before_its_lease_could_expire_is_caught() {
    let result = check::lease::check(&lease_history(2 * SECOND, None));
    let Verdict::Violation(violations) = &result.verdict else {
        panic!("early deletion not caught: {result}");
    };
    assert!(
        violations[0].contains("could not expire before"),
        "{violations:?}"
    );
}

#[test]
fn members_that_disagree_are_caught() {
    let mut history = good_register_history();
    history.end.member_hashes[2].1 = 8;
    assert_violated(
        &history,
        check::lost_write::CONVERGENCE_PROPERTY,
        "members disagree",
    );
}

#[test]
fn a_history_survives_saving_and_loading() {
    let history = good_register_history();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("history.jsonl");
    history.save(&path).expect("save");
    let loaded = History::load(&path).expect("load");
    assert_eq!(loaded.records, history.records);
    assert_eq!(loaded.end, history.end);
}
