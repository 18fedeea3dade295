//! Transactions: compares of every target and result, ranges, nesting, revisions and headers.

mod common;

use common::{TestStore, bytes, put_request, range_request, text};
use mvcc::MvccError;
use proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use proto::etcdserverpb::request_op::Request;
use proto::etcdserverpb::response_op::Response;
use proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, ResponseHeader, TxnRequest,
    TxnResponse,
};

fn compare(key: &str, target: CompareTarget, result: CompareResult, union: TargetUnion) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: bytes(key),
        target_union: Some(union),
        range_end: bytes(""),
    }
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(put_request(key, value))),
    }
}

fn range_op(request: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(request)),
    }
}

fn delete_op(key: &str, range_end: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
            key: bytes(key),
            range_end: bytes(range_end),
            prev_kv: true,
        })),
    }
}

fn txn_op(request: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestTxn(request)),
    }
}

/// Runs a txn whose only purpose is to evaluate `compares`, and reports the branch taken.
fn holds(store: &TestStore, compares: Vec<Compare>) -> bool {
    store
        .txn(&TxnRequest {
            compare: compares,
            ..Default::default()
        })
        .unwrap()
        .succeeded
}

fn header_revision(header: &Option<ResponseHeader>) -> i64 {
    header.as_ref().unwrap().revision
}

/// k: create 2, mod 3, version 2, lease 0, value "m".
fn store_with_k() -> TestStore {
    let store = TestStore::new();
    store.put("k", "a"); // 2
    store.put("k", "m"); // 3
    store
}

#[test]
fn compare_every_target_and_result() {
    use CompareResult::{Equal, Greater, Less, NotEqual};
    use CompareTarget::{Create, Lease, Mod, Value, Version};
    let store = store_with_k();
    let cases = [
        (
            Version,
            TargetUnion::Version(2),
            [true, false, false, false],
        ),
        (Version, TargetUnion::Version(1), [false, true, false, true]),
        (
            Create,
            TargetUnion::CreateRevision(2),
            [true, false, false, false],
        ),
        (
            Create,
            TargetUnion::CreateRevision(3),
            [false, false, true, true],
        ),
        (
            Mod,
            TargetUnion::ModRevision(3),
            [true, false, false, false],
        ),
        (Mod, TargetUnion::ModRevision(2), [false, true, false, true]),
        (Lease, TargetUnion::Lease(0), [true, false, false, false]),
        (Lease, TargetUnion::Lease(1), [false, false, true, true]),
        (
            Value,
            TargetUnion::Value(bytes("m")),
            [true, false, false, false],
        ),
        (
            Value,
            TargetUnion::Value(bytes("a")),
            [false, true, false, true],
        ),
        (
            Value,
            TargetUnion::Value(bytes("ma")),
            [false, false, true, true],
        ),
    ];
    for (target, union, expected) in cases {
        for (result, expected) in [Equal, Greater, Less, NotEqual].into_iter().zip(expected) {
            assert_eq!(
                holds(&store, vec![compare("k", target, result, union.clone())]),
                expected,
                "{target:?} {result:?} {union:?}"
            );
        }
    }
    assert_eq!(
        store.mvcc.current_revision(),
        3,
        "compare-only txns write nothing"
    );
}

#[test]
fn compare_union_of_another_kind_compares_against_zero() {
    let store = store_with_k();
    // A version compare carrying a create_revision union compares version 2 with 0.
    assert!(holds(
        &store,
        vec![compare(
            "k",
            CompareTarget::Version,
            CompareResult::Greater,
            TargetUnion::CreateRevision(100)
        )]
    ));
}

#[test]
fn compares_on_missing_keys() {
    use CompareResult::{Equal, NotEqual};
    let store = store_with_k();
    for (target, union) in [
        (CompareTarget::Version, TargetUnion::Version(0)),
        (CompareTarget::Create, TargetUnion::CreateRevision(0)),
        (CompareTarget::Mod, TargetUnion::ModRevision(0)),
        (CompareTarget::Lease, TargetUnion::Lease(0)),
    ] {
        assert!(holds(
            &store,
            vec![compare("nope", target, Equal, union.clone())]
        ));
        assert!(!holds(
            &store,
            vec![compare("nope", target, NotEqual, union)]
        ));
    }
    // A value compare on a missing key fails whatever the result asked for.
    for result in [Equal, NotEqual, CompareResult::Greater, CompareResult::Less] {
        assert!(!holds(
            &store,
            vec![compare(
                "nope",
                CompareTarget::Value,
                result,
                TargetUnion::Value(bytes(""))
            )]
        ));
    }
}

#[test]
fn all_compares_must_hold() {
    use CompareResult::Equal;
    let store = store_with_k();
    let good = compare("k", CompareTarget::Version, Equal, TargetUnion::Version(2));
    let bad = compare("k", CompareTarget::Version, Equal, TargetUnion::Version(3));
    assert!(holds(&store, vec![good.clone(), good.clone()]));
    assert!(!holds(&store, vec![good.clone(), bad.clone()]));
    assert!(!holds(&store, vec![bad, good]));
    assert!(holds(&store, vec![]));
}

#[test]
fn range_compares_apply_to_every_key_in_the_range() {
    let store = TestStore::new();
    store.put("p/a", "1"); // 2
    store.put("p/b", "1"); // 3
    store.put("q", "1"); // 4
    let in_prefix = |result, revision| Compare {
        range_end: bytes("p0"),
        ..compare(
            "p/",
            CompareTarget::Mod,
            result,
            TargetUnion::ModRevision(revision),
        )
    };
    assert!(holds(&store, vec![in_prefix(CompareResult::Less, 4)]));
    assert!(!holds(&store, vec![in_prefix(CompareResult::Less, 3)]));
    assert!(holds(&store, vec![in_prefix(CompareResult::Greater, 1)]));
    let from_key = Compare {
        range_end: bytes("\0"),
        ..compare(
            "p/b",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(bytes("1")),
        )
    };
    assert!(holds(&store, vec![from_key]));
    // An empty range behaves like a missing key.
    let empty = Compare {
        range_end: bytes("z"),
        ..compare(
            "r",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(0),
        )
    };
    assert!(holds(&store, vec![empty]));
}

#[test]
fn branches_run_in_order_with_one_main_revision_and_sub_revisions() {
    let store = store_with_k();
    let request = TxnRequest {
        compare: vec![compare(
            "k",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(bytes("m")),
        )],
        success: vec![
            range_op(range_request("k", "")),
            put_op("x", "1"),
            range_op(range_request("\0", "\0")),
            put_op("y", "1"),
            delete_op("k", ""),
            range_op(range_request("k", "")),
        ],
        failure: vec![put_op("failed", "1")],
    };
    let (response, events) = store.apply(|writer| {
        let response = writer.txn(&request).unwrap();
        (response, writer.take_events())
    });
    assert!(response.succeeded);
    assert_eq!(header_revision(&response.header), 4);
    let responses: Vec<_> = response
        .responses
        .iter()
        .map(|op| op.response.clone().unwrap())
        .collect();
    match &responses[0] {
        // Before any write the txn reads at its start revision.
        Response::ResponseRange(range) => {
            assert_eq!(header_revision(&range.header), 3);
            assert_eq!(text(&range.kvs[0].value), "m");
        }
        other => panic!("unexpected {other:?}"),
    }
    match &responses[1] {
        Response::ResponsePut(put) => assert_eq!(header_revision(&put.header), 4),
        other => panic!("unexpected {other:?}"),
    }
    match &responses[2] {
        // After a write, reads see the txn's own earlier writes.
        Response::ResponseRange(range) => {
            assert_eq!(header_revision(&range.header), 4);
            assert_eq!(
                range.kvs.iter().map(|kv| text(&kv.key)).collect::<Vec<_>>(),
                ["k", "x"]
            );
            assert_eq!(range.kvs[1].mod_revision, 4);
        }
        other => panic!("unexpected {other:?}"),
    }
    match &responses[4] {
        Response::ResponseDeleteRange(delete) => {
            assert_eq!(delete.deleted, 1);
            assert_eq!(header_revision(&delete.header), 4);
            assert_eq!(text(&delete.prev_kvs[0].value), "m");
        }
        other => panic!("unexpected {other:?}"),
    }
    match &responses[5] {
        Response::ResponseRange(range) => assert!(range.kvs.is_empty()),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(store.mvcc.current_revision(), 4);
    assert_eq!(store.get("x").unwrap().mod_revision, 4);
    assert_eq!(store.get("y").unwrap().mod_revision, 4);
    assert_eq!(store.get("k"), None);
    assert_eq!(store.get("failed"), None);
    assert_eq!(events.len(), 3);
    assert!(
        events
            .iter()
            .all(|event| event.kv.as_ref().unwrap().mod_revision == 4)
    );
}

#[test]
fn failure_branch_runs_when_a_compare_fails() {
    let store = store_with_k();
    let response = store
        .txn(&TxnRequest {
            compare: vec![compare(
                "k",
                CompareTarget::Version,
                CompareResult::Equal,
                TargetUnion::Version(9),
            )],
            success: vec![put_op("success", "1")],
            failure: vec![
                put_op("failure", "1"),
                range_op(range_request("failure", "")),
            ],
        })
        .unwrap();
    assert!(!response.succeeded);
    assert_eq!(response.responses.len(), 2);
    assert!(store.get("failure").is_some());
    assert!(store.get("success").is_none());
}

#[test]
fn read_only_and_no_op_txns_keep_the_revision() {
    let store = store_with_k();
    let read_only = store
        .txn(&TxnRequest {
            success: vec![range_op(range_request("k", ""))],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(header_revision(&read_only.header), 3);
    let deletes_nothing = store
        .txn(&TxnRequest {
            success: vec![delete_op("nothing", "")],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(header_revision(&deletes_nothing.header), 3);
    match &deletes_nothing.responses[0].response {
        Some(Response::ResponseDeleteRange(delete)) => {
            assert_eq!((delete.deleted, header_revision(&delete.header)), (0, 3))
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(store.mvcc.current_revision(), 3);
}

#[test]
fn delete_after_a_write_reports_the_new_revision_even_when_deleting_nothing() {
    let store = store_with_k();
    let response = store
        .txn(&TxnRequest {
            success: vec![put_op("a", "1"), delete_op("nothing", "")],
            ..Default::default()
        })
        .unwrap();
    match &response.responses[1].response {
        Some(Response::ResponseDeleteRange(delete)) => {
            assert_eq!((delete.deleted, header_revision(&delete.header)), (0, 4))
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn nested_txns_share_the_revision_and_decide_compares_at_the_start() {
    let store = store_with_k();
    // The nested compare asks whether "x" exists. The outer txn creates "x" before the nested
    // one runs, but etcd 3.4 evaluates every compare on the chosen path up front.
    let nested = TxnRequest {
        compare: vec![compare(
            "x",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(0),
        )],
        success: vec![
            put_op("nested-saw-no-x", "1"),
            range_op(range_request("x", "")),
        ],
        failure: vec![put_op("nested-saw-x", "1")],
    };
    let response = store
        .txn(&TxnRequest {
            success: vec![put_op("x", "1"), txn_op(nested), put_op("z", "1")],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(header_revision(&response.header), 4);
    let Some(Response::ResponseTxn(nested_response)) = &response.responses[1].response else {
        panic!("nested response missing");
    };
    let TxnResponse {
        header,
        succeeded,
        responses,
    } = nested_response;
    assert!(*succeeded);
    // etcd leaves the nested txn's header empty.
    assert_eq!(header, &Some(ResponseHeader::default()));
    match &responses[1].response {
        Some(Response::ResponseRange(range)) => {
            assert_eq!(range.kvs.len(), 1, "reads still see earlier writes");
            assert_eq!(header_revision(&range.header), 4);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(store.get("nested-saw-no-x").is_some());
    assert!(store.get("nested-saw-x").is_none());
    for key in ["x", "nested-saw-no-x", "z"] {
        assert_eq!(store.get(key).unwrap().mod_revision, 4, "{key}");
    }
}

#[test]
fn nested_txn_on_the_failure_branch() {
    let store = store_with_k();
    let inner = TxnRequest {
        compare: vec![compare(
            "k",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(bytes("m")),
        )],
        success: vec![put_op("inner-success", "1")],
        failure: vec![put_op("inner-failure", "1")],
    };
    let outer = TxnRequest {
        compare: vec![compare(
            "k",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(bytes("other")),
        )],
        success: vec![txn_op(TxnRequest::default()), put_op("outer-success", "1")],
        failure: vec![txn_op(inner.clone()), txn_op(inner)],
    };
    let response = store.txn(&outer).unwrap();
    assert!(!response.succeeded);
    assert_eq!(response.responses.len(), 2);
    assert!(store.get("inner-success").is_some());
    assert!(store.get("outer-success").is_none());
    // The same key written twice in one txn: one revision, version 2.
    let written = store.get("inner-success").unwrap();
    assert_eq!(
        (
            written.mod_revision,
            written.version,
            written.create_revision
        ),
        (4, 2, 4)
    );
}

#[test]
fn up_front_checks_fail_the_whole_txn_before_any_write() {
    let store = store_with_k();
    let ignore_value_on_missing = TxnRequest {
        success: vec![
            put_op("written-first", "1"),
            RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    ignore_value: true,
                    ..put_request("missing", "")
                })),
            },
        ],
        ..Default::default()
    };
    assert!(matches!(
        store.txn(&ignore_value_on_missing),
        Err(MvccError::KeyNotFound)
    ));
    let future_range = TxnRequest {
        success: vec![
            put_op("written-first", "1"),
            range_op(RangeRequest {
                revision: 4,
                ..range_request("k", "")
            }),
        ],
        ..Default::default()
    };
    assert!(matches!(
        store.txn(&future_range),
        Err(MvccError::FutureRevision)
    ));
    assert_eq!(store.mvcc.current_revision(), 3);
    assert!(store.get("written-first").is_none());

    store.compact(3).unwrap();
    let compacted_range = TxnRequest {
        success: vec![range_op(RangeRequest {
            revision: 2,
            ..range_request("k", "")
        })],
        ..Default::default()
    };
    assert!(matches!(
        store.txn(&compacted_range),
        Err(MvccError::Compacted)
    ));
    // A range at an older, retained revision inside a txn works and reports the txn's view.
    let historical = store
        .txn(&TxnRequest {
            success: vec![
                put_op("k", "new"),
                range_op(RangeRequest {
                    revision: 3,
                    ..range_request("k", "")
                }),
            ],
            ..Default::default()
        })
        .unwrap();
    match &historical.responses[1].response {
        Some(Response::ResponseRange(range)) => {
            assert_eq!(text(&range.kvs[0].value), "m");
            assert_eq!(header_revision(&range.header), 4);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn empty_request_op_yields_an_empty_response_op() {
    let store = store_with_k();
    let response = store
        .txn(&TxnRequest {
            success: vec![RequestOp { request: None }],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(response.responses.len(), 1);
    assert!(response.responses[0].response.is_none());
}

#[test]
fn txn_put_leases_follow_the_branch_the_compares_choose() {
    let store = store_with_k();
    let leased_put = |key: &str, lease| RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            lease,
            ..put_request(key, "v")
        })),
    };
    let request = TxnRequest {
        compare: vec![compare(
            "k",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(2),
        )],
        success: vec![
            leased_put("a", 7),
            leased_put("b", 0),
            txn_op(TxnRequest {
                compare: vec![compare(
                    "k",
                    CompareTarget::Version,
                    CompareResult::Equal,
                    TargetUnion::Version(99),
                )],
                success: vec![leased_put("c", 8)],
                failure: vec![leased_put("d", 9)],
            }),
        ],
        failure: vec![leased_put("e", 10)],
    };
    let leases = store.apply(|writer| writer.txn_put_leases(&request).unwrap());
    assert_eq!(leases, [7, 9]);
    assert_eq!(store.mvcc.current_revision(), 3, "asking writes nothing");
}
