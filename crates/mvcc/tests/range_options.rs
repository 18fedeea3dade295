//! Every `RangeRequest` option, with the quirks of etcd 3.4's applier.

mod common;

use common::{TestStore, bytes, keys, range_request, text};
use mvcc::MvccError;
use proto::etcdserverpb::RangeRequest;
use proto::etcdserverpb::range_request::{SortOrder, SortTarget};

/// Keys whose orders by key, version, create, mod and value all differ:
///
/// | key | value | create | mod | version |
/// |-----|-------|--------|-----|---------|
/// | a   | "m"   | 4      | 6   | 2       |
/// | b   | "z"   | 2      | 8   | 3       |
/// | c   | "a"   | 5      | 5   | 1       |
/// | d   | "m"   | 3      | 3   | 1       |
///
/// Current revision: 8.
fn sample_store() -> TestStore {
    let store = TestStore::new();
    store.put("b", "b1"); // 2
    store.put("d", "m"); // 3
    store.put("a", "a1"); // 4
    store.put("c", "a"); // 5
    store.put("a", "m"); // 6
    store.put("b", "b2"); // 7
    store.put("b", "z"); // 8
    store
}

fn all_keys() -> RangeRequest {
    range_request("\0", "\0")
}

#[test]
fn single_key_from_key_prefix_and_all_keys() {
    let store = sample_store();
    store.put("ab", "x"); // 9
    store.put("a\u{7f}", "x"); // 10
    assert_eq!(keys(&store.range(&range_request("a", "")).unwrap()), ["a"]);
    assert_eq!(
        keys(&store.range(&range_request("missing", "")).unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        keys(&store.range(&range_request("b", "\0")).unwrap()),
        ["b", "c", "d"]
    );
    // Prefix "a": range_end is the prefix with its last byte incremented.
    assert_eq!(
        keys(&store.range(&range_request("a", "b")).unwrap()),
        ["a", "ab", "a\u{7f}"]
    );
    assert_eq!(
        keys(&store.range(&all_keys()).unwrap()),
        ["a", "ab", "a\u{7f}", "b", "c", "d"]
    );
    // An inverted or empty interval is simply empty.
    let inverted = store.range(&range_request("d", "a")).unwrap();
    assert_eq!((inverted.kvs.len(), inverted.count), (0, 0));
    let empty = store.range(&range_request("b", "b")).unwrap();
    assert_eq!((empty.kvs.len(), empty.count), (0, 0));
}

#[test]
fn limit_sets_more_and_count_ignores_limit() {
    let store = sample_store();
    let limited = store
        .range(&RangeRequest {
            limit: 2,
            ..all_keys()
        })
        .unwrap();
    assert_eq!(keys(&limited), ["a", "b"]);
    assert!(limited.more);
    assert_eq!(limited.count, 4);
    assert_eq!(limited.header.unwrap().revision, 8);

    for limit in [4, 5, 0, -1] {
        let response = store
            .range(&RangeRequest {
                limit,
                ..all_keys()
            })
            .unwrap();
        assert_eq!(response.kvs.len(), 4, "limit {limit}");
        assert!(!response.more, "limit {limit}");
        assert_eq!(response.count, 4);
    }
}

#[test]
fn count_only_and_keys_only() {
    let store = sample_store();
    let counted = store
        .range(&RangeRequest {
            count_only: true,
            limit: 1,
            ..all_keys()
        })
        .unwrap();
    assert!(counted.kvs.is_empty());
    assert_eq!(counted.count, 4);
    assert!(!counted.more);

    let keys_only = store
        .range(&RangeRequest {
            keys_only: true,
            ..all_keys()
        })
        .unwrap();
    assert_eq!(keys(&keys_only), ["a", "b", "c", "d"]);
    assert!(keys_only.kvs.iter().all(|kv| kv.value.is_empty()));
    let b = &keys_only.kvs[1];
    assert_eq!((b.create_revision, b.mod_revision, b.version), (2, 8, 3));
}

fn sorted(store: &TestStore, target: SortTarget, order: SortOrder) -> Vec<String> {
    keys(
        &store
            .range(&RangeRequest {
                sort_target: target as i32,
                sort_order: order as i32,
                ..all_keys()
            })
            .unwrap(),
    )
}

#[test]
fn sort_by_every_target_in_both_orders() {
    let store = sample_store();
    use SortOrder::{Ascend, Descend, None};
    use SortTarget::{Create, Key, Mod, Value, Version};
    assert_eq!(sorted(&store, Key, Ascend), ["a", "b", "c", "d"]);
    assert_eq!(sorted(&store, Key, Descend), ["d", "c", "b", "a"]);
    assert_eq!(sorted(&store, Key, None), ["a", "b", "c", "d"]);
    assert_eq!(sorted(&store, Create, Ascend), ["b", "d", "a", "c"]);
    assert_eq!(sorted(&store, Create, Descend), ["c", "a", "d", "b"]);
    assert_eq!(sorted(&store, Mod, Ascend), ["d", "c", "a", "b"]);
    assert_eq!(sorted(&store, Mod, Descend), ["b", "a", "c", "d"]);
    // Ties (c and d on version, a and d on value) keep ascending key order in both directions.
    assert_eq!(sorted(&store, Version, Ascend), ["c", "d", "a", "b"]);
    assert_eq!(sorted(&store, Version, Descend), ["b", "a", "c", "d"]);
    assert_eq!(sorted(&store, Value, Ascend), ["c", "a", "d", "b"]);
    assert_eq!(sorted(&store, Value, Descend), ["b", "a", "d", "c"]);
    // Order NONE with a target other than the key sorts ascending.
    assert_eq!(sorted(&store, Mod, None), ["d", "c", "a", "b"]);
    assert_eq!(sorted(&store, Value, None), ["c", "a", "d", "b"]);
}

#[test]
fn sort_applies_before_limit() {
    let store = sample_store();
    let response = store
        .range(&RangeRequest {
            sort_target: SortTarget::Mod as i32,
            sort_order: SortOrder::Descend as i32,
            limit: 2,
            ..all_keys()
        })
        .unwrap();
    assert_eq!(keys(&response), ["b", "a"]);
    assert!(response.more);
    assert_eq!(response.count, 4);
}

#[test]
fn default_ascending_sort_only_sees_the_first_limit_plus_one_keys() {
    // etcd fetches limit+1 keys in key order when the order is NONE, then sorts those.
    let store = sample_store();
    let response = store
        .range(&RangeRequest {
            sort_target: SortTarget::Mod as i32,
            limit: 2,
            ..all_keys()
        })
        .unwrap();
    // First three keys by key: a (mod 6), b (mod 8), c (mod 5); sorted by mod: c, a, b.
    assert_eq!(keys(&response), ["c", "a"]);
    assert!(response.more);
    assert_eq!(response.count, 4);
}

#[test]
fn min_and_max_filters_apply_before_limit_but_not_to_count() {
    let store = sample_store();
    let filtered = |request: RangeRequest| {
        let response = store.range(&request).unwrap();
        assert_eq!(response.count, 4, "count ignores filters");
        (keys(&response), response.more)
    };
    assert_eq!(
        filtered(RangeRequest {
            min_mod_revision: 6,
            ..all_keys()
        }),
        (vec!["a".to_string(), "b".to_string()], false)
    );
    assert_eq!(
        filtered(RangeRequest {
            max_mod_revision: 5,
            ..all_keys()
        }),
        (vec!["c".to_string(), "d".to_string()], false)
    );
    assert_eq!(
        filtered(RangeRequest {
            min_create_revision: 3,
            max_create_revision: 4,
            ..all_keys()
        }),
        (vec!["a".to_string(), "d".to_string()], false)
    );
    assert_eq!(
        filtered(RangeRequest {
            min_create_revision: 3,
            limit: 1,
            ..all_keys()
        }),
        (vec!["a".to_string()], true)
    );
    assert_eq!(
        filtered(RangeRequest {
            max_create_revision: 2,
            limit: 1,
            ..all_keys()
        }),
        (vec!["b".to_string()], false)
    );
}

#[test]
fn options_apply_to_historical_reads() {
    let store = sample_store();
    let response = store
        .range(&RangeRequest {
            revision: 5,
            sort_target: SortTarget::Value as i32,
            sort_order: SortOrder::Descend as i32,
            ..all_keys()
        })
        .unwrap();
    let pairs: Vec<_> = response
        .kvs
        .iter()
        .map(|kv| (text(&kv.key), text(&kv.value)))
        .collect();
    assert_eq!(
        pairs,
        [("d", "m"), ("b", "b1"), ("a", "a1"), ("c", "a")]
            .map(|(key, value)| (key.to_string(), value.to_string()))
    );
    assert_eq!(response.count, 4);
    assert_eq!(response.header.unwrap().revision, 8);
}

#[test]
fn future_and_compacted_revisions_are_errors() {
    let store = sample_store();
    let at = |revision| {
        store.range(&RangeRequest {
            key: bytes("a"),
            revision,
            ..Default::default()
        })
    };
    assert!(matches!(at(9), Err(MvccError::FutureRevision)));
    store.compact(6).unwrap();
    assert!(matches!(at(5), Err(MvccError::Compacted)));
    assert_eq!(text(&at(6).unwrap().kvs[0].value), "m");
    assert!(at(0).is_ok());
    assert!(
        at(-3).is_ok(),
        "a negative revision reads the current one, as in etcd"
    );
}

/// A response larger than one chunk of the encoded path, with leases, values
/// of every size class and each option that changes what is encoded: the
/// common `range` helper checks both paths agree byte for byte.
#[test]
fn large_responses_encode_as_prost_does() {
    let store = TestStore::new();
    for n in 0..3000u32 {
        let value = "v".repeat((n as usize * 37) % 1500);
        store
            .put_request(proto::etcdserverpb::PutRequest {
                key: bytes(&format!("key{n:05}")),
                value: bytes(&value),
                lease: if n % 7 == 0 { 5 + i64::from(n) } else { 0 },
                ..Default::default()
            })
            .unwrap();
    }
    let everything = store.range(&all_keys()).unwrap();
    assert_eq!(everything.kvs.len(), 3000);
    assert!(prost::Message::encoded_len(&everything) > 2 * 1024 * 1024);
    for request in [
        RangeRequest {
            keys_only: true,
            ..all_keys()
        },
        RangeRequest {
            count_only: true,
            ..all_keys()
        },
        RangeRequest {
            limit: 1234,
            ..all_keys()
        },
        RangeRequest {
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Value as i32,
            limit: 10,
            ..all_keys()
        },
        RangeRequest {
            revision: 1500,
            ..all_keys()
        },
    ] {
        store.range(&request).unwrap();
    }
}
