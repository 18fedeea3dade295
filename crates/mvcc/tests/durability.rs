//! What survives the process: reopening from redb, snapshots and restore, HashKV, and the
//! consistent index.

mod common;

use common::{TestStore, bytes, put_request, range_request, text};
use mvcc::MvccError;
use proto::etcdserverpb::{RangeRequest, RangeResponse};

/// A history with overwrites, deletes, a multi-write batch and a compaction.
fn build_history(store: &TestStore) {
    store.put("a", "1"); // 2
    store.put("b", "1"); // 3
    store.apply(|writer| {
        writer.put(&put_request("a", "2")).unwrap(); // 4
        writer.put(&put_request("c", "1")).unwrap(); // 5
        writer.set_consistent_index(10);
    });
    store.delete("b", ""); // 6
    store.put("b", "2"); // 7
    store.compact(4).unwrap();
    store.put("d", "1"); // 8
    store.apply(|writer| writer.set_consistent_index(11));
}

/// Every answer the store gives at every revision up to one past the current, with headers.
fn observe(store: &TestStore) -> Vec<Result<RangeResponse, String>> {
    let current = store.mvcc.current_revision();
    (0..=current + 1)
        .map(|revision| {
            store
                .range(&RangeRequest {
                    revision,
                    ..range_request("\0", "\0")
                })
                .map_err(|error| error.to_string())
        })
        .collect()
}

fn counters(store: &TestStore) -> (i64, i64, u64, u64) {
    (
        store.mvcc.current_revision(),
        store.mvcc.compact_revision(),
        store.mvcc.consistent_index(),
        store.mvcc.db_size_in_use(),
    )
}

#[test]
fn reopen_rebuilds_identical_state() {
    let store = TestStore::new();
    build_history(&store);
    let before = observe(&store);
    let counters_before = counters(&store);
    assert_eq!(&[counters_before.0, counters_before.1], &[8, 4]);
    assert_eq!(counters_before.2, 11);
    let hash = store.mvcc.hash_kv(0).unwrap();

    let store = store.reopen();
    assert_eq!(observe(&store), before);
    assert_eq!(counters(&store), counters_before);
    assert_eq!(store.mvcc.hash_kv(0).unwrap(), hash);
    // Writing continues from the same revision with the same key metadata.
    assert_eq!(store.put("a", "3").header.unwrap().revision, 9);
    let a = store.get("a").unwrap();
    assert_eq!((a.create_revision, a.version), (2, 3));
}

#[test]
fn reopen_of_an_empty_store() {
    let store = TestStore::new().reopen();
    assert_eq!(counters(&store), (1, 0, 0, 0));
    assert_eq!(store.put("a", "1").header.unwrap().revision, 2);
}

#[test]
fn snapshot_restore_round_trip_into_another_store() {
    let source = TestStore::new();
    build_history(&source);
    let snapshot = source.mvcc.snapshot().unwrap();

    let target = TestStore::new();
    target.put("unrelated", "will vanish");
    target.put("a", "x");
    let wtx = target.begin_write();
    target.mvcc.restore(&wtx, &snapshot).unwrap();
    // Until the commit and publish, readers keep seeing the old state.
    assert_eq!(target.mvcc.current_revision(), 3);
    wtx.commit().unwrap();
    target.mvcc.publish();

    assert_eq!(observe(&target), observe(&source));
    assert_eq!(counters(&target), counters(&source));
    assert_eq!(
        target.mvcc.hash_kv(0).unwrap(),
        source.mvcc.hash_kv(0).unwrap()
    );
    assert_eq!(target.mvcc.snapshot().unwrap(), snapshot);

    // Both continue identically, and the restored state survives a reopen.
    source.put("a", "next");
    target.put("a", "next");
    let target = target.reopen();
    assert_eq!(observe(&target), observe(&source));
    assert_eq!(
        target.mvcc.hash_kv(0).unwrap(),
        source.mvcc.hash_kv(0).unwrap()
    );
}

#[test]
fn restore_then_write_in_the_same_batch() {
    let source = TestStore::new();
    build_history(&source);
    let snapshot = source.mvcc.snapshot().unwrap();
    let target = TestStore::new();
    let wtx = target.begin_write();
    target.mvcc.restore(&wtx, &snapshot).unwrap();
    {
        let mut writer = target.mvcc.writer(&wtx);
        assert_eq!(writer.revision(), 8);
        assert_eq!(
            writer
                .put(&put_request("a", "3"))
                .unwrap()
                .header
                .unwrap()
                .revision,
            9
        );
        writer.set_consistent_index(12);
    }
    wtx.commit().unwrap();
    target.mvcc.publish();
    assert_eq!(target.mvcc.consistent_index(), 12);
    assert_eq!(target.get("a").unwrap().version, 3);
}

#[test]
fn restore_refuses_corrupt_snapshots_and_leaves_state_alone() {
    let source = TestStore::new();
    build_history(&source);
    let snapshot = source.mvcc.snapshot().unwrap();
    let target = TestStore::new();
    target.put("keep", "me");
    let mut flipped = snapshot.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    for corrupt in [
        &b""[..],
        &b"not a snapshot at all, but long enough to have a header"[..],
        &snapshot[..snapshot.len() - 1],
        &flipped,
    ] {
        let wtx = target.begin_write();
        let result = target.mvcc.restore(&wtx, corrupt);
        assert!(matches!(result, Err(MvccError::Storage(_))), "{result:?}");
        wtx.abort().unwrap();
    }
    assert_eq!(
        target.all_at(0).unwrap(),
        vec![("keep".to_string(), "me".to_string())]
    );
    // A refused snapshot touched nothing in memory either, so writing goes on.
    target.put("more", "1");
    assert_eq!(target.mvcc.current_revision(), 3);
}

#[test]
fn readers_during_a_restore_see_old_state_then_new() {
    let source = TestStore::new();
    build_history(&source);
    let snapshot = source.mvcc.snapshot().unwrap();
    let target = TestStore::new();
    target.put("old", "1");
    let wtx = target.begin_write();
    target.mvcc.restore(&wtx, &snapshot).unwrap();
    wtx.commit().unwrap();
    // Committed but unpublished: a reader thread waits for the publish, then sees the new state.
    let mvcc = target.mvcc.clone();
    let reader = std::thread::spawn(move || mvcc.range(&range_request("\0", "\0")).unwrap());
    std::thread::sleep(std::time::Duration::from_millis(20));
    target.mvcc.publish();
    let seen = reader.join().unwrap();
    assert_eq!(seen.header.unwrap().revision, 8);
    assert_eq!(
        seen.kvs.iter().map(|kv| text(&kv.key)).collect::<Vec<_>>(),
        ["a", "b", "c", "d"]
    );
}

#[test]
fn hash_kv_matches_for_equal_histories_and_differs_after_divergence() {
    let first = TestStore::new();
    let second = TestStore::new();
    build_history(&first);
    build_history(&second);
    assert_eq!(
        first.mvcc.hash_kv(0).unwrap(),
        second.mvcc.hash_kv(0).unwrap()
    );
    let (hash, compact_revision) = first.mvcc.hash_kv(0).unwrap();
    assert_eq!(compact_revision, 4);

    first.put("x", "1");
    second.put("x", "2");
    assert_ne!(
        first.mvcc.hash_kv(0).unwrap(),
        second.mvcc.hash_kv(0).unwrap()
    );
    // Up to the common revision they still agree, and match the earlier hash.
    assert_eq!(first.mvcc.hash_kv(8).unwrap(), (hash, 4));
    assert_eq!(second.mvcc.hash_kv(8).unwrap(), (hash, 4));
    assert_ne!(first.mvcc.hash_kv(7).unwrap().0, hash);

    assert!(matches!(
        first.mvcc.hash_kv(10),
        Err(MvccError::FutureRevision)
    ));
    assert!(matches!(first.mvcc.hash_kv(3), Err(MvccError::Compacted)));
    assert!(first.mvcc.hash_kv(4).is_ok());
}

#[test]
fn consistent_index_is_persisted_with_the_data() {
    let store = TestStore::new();
    store.apply(|writer| {
        writer.put(&put_request("a", "1")).unwrap();
        writer.set_consistent_index(5);
        // Not visible before the publish.
        assert_eq!(writer.revision(), 2);
    });
    assert_eq!(store.mvcc.consistent_index(), 5);
    let wtx = store.begin_write();
    {
        let mut writer = store.mvcc.writer(&wtx);
        writer.set_consistent_index(6);
    }
    assert_eq!(store.mvcc.consistent_index(), 5);
    wtx.commit().unwrap();
    store.mvcc.publish();
    assert_eq!(store.mvcc.consistent_index(), 6);
    let store = store.reopen();
    assert_eq!(store.mvcc.consistent_index(), 6);
    assert_eq!(store.get("a").unwrap().key, bytes("a"));
}
