//! Compaction: its errors, what it keeps and deletes, and that reads at or above it do not
//! change.

mod common;

use common::{TestStore, text};
use mvcc::MvccError;

/// Every read the test can make at revisions `from..=to`, to compare before and after.
fn history(store: &TestStore, from: i64, to: i64) -> Vec<Vec<(String, String)>> {
    (from..=to)
        .map(|revision| store.all_at(revision).unwrap())
        .collect()
}

#[test]
fn compaction_errors() {
    let store = TestStore::new();
    assert!(matches!(store.compact(0), Err(MvccError::Compacted)));
    assert!(matches!(store.compact(2), Err(MvccError::FutureRevision)));
    store.put("a", "1"); // 2
    store.put("a", "2"); // 3
    let response = store.compact(2).unwrap();
    assert_eq!(response.header.unwrap().revision, 3);
    assert_eq!(store.mvcc.compact_revision(), 2);
    assert_eq!(
        store.mvcc.current_revision(),
        3,
        "compaction does not bump the revision"
    );
    assert!(matches!(store.compact(2), Err(MvccError::Compacted)));
    assert!(matches!(store.compact(1), Err(MvccError::Compacted)));
    assert!(matches!(store.compact(4), Err(MvccError::FutureRevision)));
    store.compact(3).unwrap();
    assert_eq!(store.mvcc.compact_revision(), 3);
}

#[test]
fn compaction_at_current_keeps_latest_state_and_deletes_old_records() {
    let store = TestStore::new();
    for round in 0..5 {
        store.put("a", &round.to_string());
        store.put("b", &round.to_string());
    }
    store.delete("b", "");
    store.put("c", "only");
    let current = store.mvcc.current_revision();
    let before = store.all_at(0).unwrap();
    let size_before = store.mvcc.db_size_in_use();
    assert_eq!(store.stored_record_count(), 12);
    store.compact(current).unwrap();
    assert_eq!(store.all_at(0).unwrap(), before);
    assert_eq!(store.all_at(current).unwrap(), before);
    assert!(matches!(
        store.all_at(current - 1),
        Err(MvccError::Compacted)
    ));
    // Only a's and c's latest puts remain; b's history ended in a tombstone.
    assert_eq!(store.stored_record_count(), 2);
    assert!(store.mvcc.db_size_in_use() < size_before);
    let a = store.get("a").unwrap();
    assert_eq!((a.version, a.create_revision), (5, 2));
}

#[test]
fn compaction_at_a_tombstone() {
    let store = TestStore::new();
    store.put("a", "1"); // 2
    store.put("b", "1"); // 3
    store.delete("a", ""); // 4
    store.put("b", "2"); // 5
    let before = history(&store, 4, 5);
    store.compact(4).unwrap();
    assert_eq!(history(&store, 4, 5), before);
    // a vanished entirely; b keeps its revision 3 (visible at 4) and 5.
    assert_eq!(store.stored_record_count(), 2);
    assert_eq!(
        store.all_at(4).unwrap(),
        vec![("b".to_string(), "1".to_string())]
    );
}

#[test]
fn compaction_before_a_tombstone_keeps_the_tombstone() {
    let store = TestStore::new();
    store.put("a", "1"); // 2
    store.put("a", "2"); // 3
    store.delete("a", ""); // 4
    store.compact(3).unwrap();
    assert_eq!(text(&store.get_at("a", 3).unwrap().unwrap().value), "2");
    assert_eq!(store.get_at("a", 4).unwrap(), None);
    assert_eq!(store.stored_record_count(), 2);
    store.compact(4).unwrap();
    assert_eq!(store.stored_record_count(), 0);
    assert_eq!(store.get("a"), None);
    store.put("a", "again"); // 5
    let a = store.get("a").unwrap();
    assert_eq!((a.create_revision, a.version), (5, 1));
}

#[test]
fn key_deleted_and_recreated_across_the_compaction_point() {
    let store = TestStore::new();
    store.put("k", "old"); // 2
    store.put("k", "old2"); // 3
    store.delete("k", ""); // 4
    store.put("other", "x"); // 5
    store.put("k", "new"); // 6
    store.put("k", "new2"); // 7
    let before = history(&store, 5, 7);
    store.compact(5).unwrap();
    assert_eq!(history(&store, 5, 7), before);
    let k = store.get("k").unwrap();
    assert_eq!((k.create_revision, k.version, k.mod_revision), (6, 2, 7));
    assert_eq!(store.get_at("k", 5).unwrap(), None);

    // Compacting in the middle of the new generation keeps its create revision and version.
    store.compact(6).unwrap();
    let k = store.get_at("k", 6).unwrap().unwrap();
    assert_eq!(
        (k.create_revision, k.version, text(&k.value).as_str()),
        (6, 1, "new")
    );
    store.put("k", "new3"); // 8
    assert_eq!(store.get("k").unwrap().version, 3);
}

#[test]
fn compaction_inside_a_batch_with_writes_around_it() {
    let store = TestStore::new();
    store.put("a", "1"); // 2
    store.apply(|writer| {
        writer.put(&common::put_request("a", "2")).unwrap(); // 3
        writer.compact(3).unwrap();
        assert!(matches!(writer.compact(3), Err(MvccError::Compacted)));
        writer.put(&common::put_request("a", "3")).unwrap(); // 4
        writer.compact(4).unwrap();
    });
    assert_eq!(store.mvcc.compact_revision(), 4);
    assert_eq!(store.mvcc.current_revision(), 4);
    let a = store.get("a").unwrap();
    assert_eq!(
        (a.version, a.mod_revision, text(&a.value).as_str()),
        (3, 4, "3")
    );
    assert_eq!(store.stored_record_count(), 1);
    let store = store.reopen();
    assert_eq!(store.mvcc.compact_revision(), 4);
    assert_eq!(store.mvcc.current_revision(), 4);
}

#[test]
fn compaction_of_everything_survives_reopen_with_the_revision() {
    let store = TestStore::new();
    store.put("a", "1"); // 2
    store.delete("a", ""); // 3
    store.compact(3).unwrap();
    assert_eq!(store.stored_record_count(), 0);
    let store = store.reopen();
    // Nothing is stored, yet the current revision must not go back.
    assert_eq!(store.mvcc.current_revision(), 3);
    assert_eq!(store.mvcc.compact_revision(), 3);
    assert_eq!(store.put("b", "1").header.unwrap().revision, 4);
}
