//! The platform's store client over the network (`client::Remote`), checked
//! against etcd 3.4 and against a shoal member alike: the same calls must see
//! the same outcomes (conditional writes, prefix reads, a watch with previous
//! values, a watch from a compacted revision).

mod common;

use std::time::Duration;

use client::{ClientError, Kv, Remote, WatchRequest, WatchUpdate};
use common::{Cluster, ClusterOptions, Flavor};
use futures::StreamExt as _;
use proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use proto::etcdserverpb::request_op::Request as Op;
use proto::etcdserverpb::{
    CompactionRequest, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

const WAIT: Duration = Duration::from_secs(10);

/// A put of `key` that succeeds only if `key` does not exist.
fn create(key: &str, value: &str) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Create as i32,
            key: key.as_bytes().to_vec().into(),
            target_union: Some(TargetUnion::CreateRevision(0)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: key.as_bytes().to_vec().into(),
                value: value.as_bytes().to_vec().into(),
                ..Default::default()
            })),
        }],
        failure: vec![],
    }
}

/// What the client saw, with revisions made relative to the first write.
async fn observe(endpoint: String) -> Vec<String> {
    let remote = Remote::new(std::slice::from_ref(&endpoint)).expect("a valid endpoint");
    let mut seen = Vec::new();
    let first = remote
        .txn(create("/registry/a/one", "1"))
        .await
        .expect("txn");
    let base = first.header.expect("header").revision;
    seen.push(format!("create one: {}", first.succeeded));
    let again = remote
        .txn(create("/registry/a/one", "x"))
        .await
        .expect("txn");
    seen.push(format!("create one again: {}", again.succeeded));
    let mut watch = remote
        .watch(WatchRequest {
            key: b"/registry/a/".to_vec(),
            range_end: client::prefix_end(b"/registry/a/"),
            start_revision: base,
            prev_kv: true,
        })
        .await
        .expect("watch");
    remote
        .txn(create("/registry/a/two", "2"))
        .await
        .expect("txn");
    remote
        .put(PutRequest {
            key: b"/registry/a/one".to_vec().into(),
            value: b"1b".to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("put");
    remote
        .delete_range(proto::etcdserverpb::DeleteRangeRequest {
            key: b"/registry/a/two".to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("delete");
    let range = remote
        .range(RangeRequest {
            key: b"/registry/a/".to_vec().into(),
            range_end: client::prefix_end(b"/registry/a/").into(),
            ..Default::default()
        })
        .await
        .expect("range");
    for kv in &range.kvs {
        seen.push(format!(
            "range: {} = {} (mod {})",
            String::from_utf8_lossy(&kv.key),
            String::from_utf8_lossy(&kv.value),
            kv.mod_revision - base
        ));
    }
    let mut events = 0;
    while events < 4 {
        let update = tokio::time::timeout(WAIT, watch.next())
            .await
            .expect("a watch update in time")
            .expect("the watch goes on")
            .expect("no watch error");
        if let WatchUpdate::Events { events: batch, .. } = update {
            for event in batch {
                let kv = event.kv.expect("an event has its key");
                let previous = event
                    .prev_kv
                    .map(|prev| String::from_utf8_lossy(&prev.value).into_owned())
                    .unwrap_or_else(|| "-".into());
                seen.push(format!(
                    "event {}: {} at {} (previous {previous})",
                    if event.r#type == 0 { "put" } else { "delete" },
                    String::from_utf8_lossy(&kv.key),
                    kv.mod_revision - base
                ));
                events += 1;
            }
        }
    }
    drop(watch);
    // A watch from before a compaction ends with Compacted.
    let mut kv_client = proto::etcdserverpb::kv_client::KvClient::connect(endpoint)
        .await
        .expect("connect");
    kv_client
        .compact(CompactionRequest {
            revision: base + 2,
            physical: true,
        })
        .await
        .expect("compact");
    let mut old = remote
        .watch(WatchRequest {
            key: b"/registry/a/".to_vec(),
            range_end: client::prefix_end(b"/registry/a/"),
            start_revision: base,
            prev_kv: false,
        })
        .await
        .expect("a watch from a compacted revision is still created");
    let ended = tokio::time::timeout(WAIT, old.next())
        .await
        .expect("an answer in time");
    match ended {
        Some(Err(ClientError::Compacted { compact_revision })) => seen.push(format!(
            "old watch: compacted at {}",
            compact_revision - base
        )),
        other => seen.push(format!("old watch: {other:?}")),
    }
    let stale = remote
        .range(RangeRequest {
            key: b"/registry/a/one".to_vec().into(),
            revision: base,
            ..Default::default()
        })
        .await;
    seen.push(format!("read at a compacted revision: {:?}", stale.err()));
    seen
}

fn run(flavor: Flavor) -> Vec<String> {
    let cluster = Cluster::start(flavor, 1, ClusterOptions::default());
    let endpoint = cluster.endpoint(0);
    common::tokio_runtime().block_on(observe(endpoint))
}

#[test]
fn the_remote_client_sees_the_same_on_etcd_and_on_shoal() {
    let expected = vec![
        "create one: true",
        "create one again: false",
        "range: /registry/a/one = 1b (mod 2)",
        "event put: /registry/a/one at 0 (previous -)",
        "event put: /registry/a/two at 1 (previous -)",
        "event put: /registry/a/one at 2 (previous 1)",
        "event delete: /registry/a/two at 3 (previous 2)",
        "old watch: compacted at 2",
        "read at a compacted revision: Some(Compacted { compact_revision: 0 })",
    ];
    let on_etcd = run(Flavor::Etcd);
    assert_eq!(on_etcd, expected, "etcd, the reference");
    let on_shoal = run(Flavor::Shoal);
    assert_eq!(on_shoal, on_etcd, "shoal against etcd");
}
