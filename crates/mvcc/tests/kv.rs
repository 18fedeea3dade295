//! Puts, deletes, revisions, headers, events, and what readers may see before a publish.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{TestStore, bytes, put_request, range_request, text};
use mvcc::MvccError;
use proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};
use proto::mvccpb::KeyValue;
use proto::mvccpb::event::EventType;

#[test]
fn fresh_store_starts_at_revision_one_and_first_put_gets_two() {
    let store = TestStore::new();
    assert_eq!(store.mvcc.current_revision(), 1);
    assert_eq!(store.mvcc.compact_revision(), 0);
    assert_eq!(store.mvcc.consistent_index(), 0);
    assert_eq!(store.all_at(0).unwrap(), vec![]);

    let response = store.put("foo", "bar");
    assert_eq!(response.header.unwrap().revision, 2);
    assert_eq!(response.prev_kv, None);
    assert_eq!(store.mvcc.current_revision(), 2);
}

#[test]
fn create_mod_and_version_across_put_delete_put() {
    let store = TestStore::new();
    store.put("foo", "a"); // 2
    store.put("foo", "b"); // 3
    let foo = store.get("foo").unwrap();
    assert_eq!(
        (foo.create_revision, foo.mod_revision, foo.version),
        (2, 3, 2)
    );

    let deleted = store.delete("foo", ""); // 4
    assert_eq!(deleted.deleted, 1);
    assert_eq!(deleted.header.unwrap().revision, 4);
    assert_eq!(text(&deleted.prev_kvs[0].value), "b");
    assert_eq!(store.get("foo"), None);

    store.put("foo", "c"); // 5
    let foo = store.get("foo").unwrap();
    assert_eq!(
        (foo.create_revision, foo.mod_revision, foo.version),
        (5, 5, 1)
    );
    assert_eq!(text(&foo.value), "c");
}

#[test]
fn old_revisions_stay_readable_including_before_tombstones() {
    let store = TestStore::new();
    store.put("a", "1"); // 2
    store.put("b", "1"); // 3
    store.put("a", "2"); // 4
    store.delete("b", ""); // 5
    store.put("b", "2"); // 6

    let at = |revision| store.all_at(revision).unwrap();
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    };
    assert_eq!(at(1), pairs(&[]));
    assert_eq!(at(2), pairs(&[("a", "1")]));
    assert_eq!(at(3), pairs(&[("a", "1"), ("b", "1")]));
    assert_eq!(at(4), pairs(&[("a", "2"), ("b", "1")]));
    assert_eq!(at(5), pairs(&[("a", "2")]));
    assert_eq!(at(6), pairs(&[("a", "2"), ("b", "2")]));
    assert_eq!(at(0), at(6));

    // etcd's header carries the store's current revision even for a historical read.
    let old = store
        .range(&RangeRequest {
            key: bytes("a"),
            revision: 2,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(old.header.unwrap().revision, 6);
    assert!(matches!(
        store.get_at("a", 7),
        Err(MvccError::FutureRevision)
    ));
}

#[test]
fn delete_of_nothing_keeps_the_revision() {
    let store = TestStore::new();
    store.put("a", "1");
    let response = store.delete("zzz", "");
    assert_eq!(response.deleted, 0);
    assert_eq!(response.header.unwrap().revision, 2);
    assert_eq!(store.mvcc.current_revision(), 2);
    let response = store.delete("a", "a"); // an empty range
    assert_eq!(response.deleted, 0);
    assert_eq!(store.mvcc.current_revision(), 2);
}

#[test]
fn delete_range_uses_one_main_revision_with_sub_revisions() {
    let store = TestStore::new();
    for key in ["a", "b", "c", "d"] {
        store.put(key, "v");
    }
    let (response, events) = store.apply(|writer| {
        let response = writer
            .delete_range(&DeleteRangeRequest {
                key: bytes("b"),
                range_end: bytes("\0"),
                prev_kv: false,
            })
            .unwrap();
        (response, writer.take_events())
    });
    assert_eq!(response.deleted, 3);
    assert!(response.prev_kvs.is_empty());
    assert_eq!(response.header.unwrap().revision, 6);
    assert_eq!(store.mvcc.current_revision(), 6);
    let deleted: Vec<_> = events
        .iter()
        .map(|event| {
            assert_eq!(event.r#type, EventType::Delete as i32);
            let kv = event.kv.as_ref().unwrap();
            assert_eq!(kv.mod_revision, 6);
            assert_eq!((kv.create_revision, kv.version, kv.lease), (0, 0, 0));
            assert!(kv.value.is_empty());
            assert_eq!(event.prev_kv.as_ref().unwrap().key, kv.key);
            text(&kv.key)
        })
        .collect();
    assert_eq!(deleted, ["b", "c", "d"]);
    assert_eq!(store.all_at(0).unwrap().len(), 1);
}

#[test]
fn put_prev_kv_ignore_value_and_ignore_lease() {
    let store = TestStore::new();
    assert!(matches!(
        store.put_request(PutRequest {
            ignore_value: true,
            ..put_request("missing", "")
        }),
        Err(MvccError::KeyNotFound)
    ));
    assert!(matches!(
        store.put_request(PutRequest {
            ignore_lease: true,
            ..put_request("missing", "x")
        }),
        Err(MvccError::KeyNotFound)
    ));
    assert_eq!(
        store.mvcc.current_revision(),
        1,
        "failed puts write nothing"
    );

    store
        .put_request(PutRequest {
            lease: 77,
            ..put_request("k", "original")
        })
        .unwrap(); // 2
    let response = store
        .put_request(PutRequest {
            ignore_value: true,
            prev_kv: true,
            lease: 0,
            ..put_request("k", "ignored")
        })
        .unwrap(); // 3
    let previous = response.prev_kv.unwrap();
    assert_eq!(text(&previous.value), "original");
    assert_eq!(previous.lease, 77);
    let now = store.get("k").unwrap();
    assert_eq!(text(&now.value), "original");
    assert_eq!(now.lease, 0);
    assert_eq!(now.version, 2);

    store
        .put_request(PutRequest {
            lease: 99,
            ..put_request("k", "x")
        })
        .unwrap(); // 4
    store
        .put_request(PutRequest {
            ignore_lease: true,
            lease: 5,
            ..put_request("k", "new value")
        })
        .unwrap(); // 5
    let now = store.get("k").unwrap();
    assert_eq!((text(&now.value).as_str(), now.lease), ("new value", 99));
    assert_eq!(
        (now.create_revision, now.mod_revision, now.version),
        (2, 5, 4)
    );
}

#[test]
fn put_events_carry_kv_and_prev_kv() {
    let store = TestStore::new();
    let events = store.apply(|writer| {
        writer.put(&put_request("k", "1")).unwrap();
        writer.put(&put_request("k", "2")).unwrap();
        assert_eq!(writer.revision(), 3);
        writer.take_events()
    });
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].r#type, EventType::Put as i32);
    assert_eq!(events[0].prev_kv, None);
    assert_eq!(
        events[1].kv,
        Some(KeyValue {
            key: bytes("k"),
            create_revision: 2,
            mod_revision: 3,
            version: 2,
            value: bytes("2"),
            lease: 0,
        })
    );
    assert_eq!(events[1].prev_kv, events[0].kv);
    assert!(store.apply(|writer| writer.take_events()).is_empty());
}

#[test]
fn several_writes_in_one_batch_each_bump_the_revision() {
    let store = TestStore::new();
    store.apply(|writer| {
        assert_eq!(writer.revision(), 1);
        assert_eq!(
            writer
                .put(&put_request("a", "1"))
                .unwrap()
                .header
                .unwrap()
                .revision,
            2
        );
        assert_eq!(
            writer
                .put(&put_request("b", "1"))
                .unwrap()
                .header
                .unwrap()
                .revision,
            3
        );
        writer.set_consistent_index(42);
        assert_eq!(writer.revision(), 3);
    });
    assert_eq!(store.mvcc.current_revision(), 3);
    assert_eq!(store.mvcc.consistent_index(), 42);
    assert_eq!(store.get("b").unwrap().mod_revision, 3);
}

#[test]
fn unpublished_writes_are_invisible_to_readers() {
    let store = TestStore::new();
    store.put("a", "1");
    let wtx = store.begin_write();
    {
        let mut writer = store.mvcc.writer(&wtx);
        writer.put(&put_request("a", "2")).unwrap();
        writer.put(&put_request("b", "1")).unwrap();
        writer
            .delete_range(&DeleteRangeRequest {
                key: bytes("a"),
                ..Default::default()
            })
            .unwrap();
        // While the writer is alive a reader on another thread still sees revision 2 only.
        let mvcc = store.mvcc.clone();
        let seen = std::thread::spawn(move || {
            let response = mvcc.range(&range_request("\0", "\0")).unwrap();
            (
                response.header.unwrap().revision,
                response
                    .kvs
                    .iter()
                    .map(|kv| (text(&kv.key), text(&kv.value)))
                    .collect::<Vec<_>>(),
            )
        })
        .join()
        .unwrap();
        assert_eq!(seen, (2, vec![("a".to_string(), "1".to_string())]));
        assert!(matches!(
            store.get_at("a", 3),
            Err(MvccError::FutureRevision)
        ));
    }
    assert_eq!(store.mvcc.current_revision(), 2);
    wtx.commit().unwrap();
    // Committed but not yet published: still invisible.
    assert_eq!(store.all_at(0).unwrap().len(), 1);
    assert_eq!(store.get("a").unwrap().mod_revision, 2);
    store.mvcc.publish();
    assert_eq!(store.mvcc.current_revision(), 5);
    assert_eq!(
        store.all_at(0).unwrap(),
        vec![("b".to_string(), "1".to_string())]
    );
}

#[test]
fn concurrent_readers_only_see_whole_published_batches() {
    // Each batch writes two keys with the same value; a reader must never see them differ.
    let store = TestStore::new();
    store.apply(|writer| {
        writer.put(&put_request("x", "0")).unwrap();
        writer.put(&put_request("y", "0")).unwrap();
    });
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let mvcc = store.mvcc.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut reads = 0;
                while !done.load(Ordering::Relaxed) || reads < 10 {
                    let response = mvcc.range(&range_request("x", "z")).unwrap();
                    assert_eq!(response.kvs.len(), 2);
                    assert_eq!(response.kvs[0].value, response.kvs[1].value);
                    assert_eq!(
                        response.kvs[1].mod_revision,
                        response.header.unwrap().revision
                    );
                    reads += 1;
                }
            })
        })
        .collect();
    for round in 1..200 {
        let value = round.to_string();
        store.apply(|writer| {
            writer.put(&put_request("x", &value)).unwrap();
            writer.put(&put_request("y", &value)).unwrap();
            if round % 50 == 0 {
                let revision = writer.revision();
                writer.compact(revision - 1).unwrap();
            }
        });
    }
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap();
    }
}
