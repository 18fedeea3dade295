//! Watch options etcdctl cannot express, driven through gRPC and checked on etcd
//! 3.4 and on shoal alike: periodic progress notifications, fragmented responses,
//! progress requests, and client-chosen watch ids.

mod common;

use std::time::Duration;

use common::{Cluster, ClusterOptions, Flavor};
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::watch_client::WatchClient;
use proto::etcdserverpb::watch_request::RequestUnion;
use proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
    WatchResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const MAX_REQUEST_BYTES: usize = 4096;
const WAIT: Duration = Duration::from_secs(5);
const N_FRAGMENT_KEYS: usize = 600;

fn start(flavor: Flavor) -> Cluster {
    let options = ClusterOptions {
        extra_args: vec![
            "--experimental-watch-progress-notify-interval".into(),
            "1s".into(),
            "--max-request-bytes".into(),
            MAX_REQUEST_BYTES.to_string(),
        ],
        ..ClusterOptions::default()
    };
    Cluster::start(flavor, 1, options)
}

fn create(key: &str, range_end: &str) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.as_bytes().to_vec().into(),
        range_end: range_end.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

fn create_request(create: WatchCreateRequest) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(create)),
    }
}

/// One watch stream: requests go in through `requests`, responses come out.
struct Stream {
    requests: mpsc::Sender<WatchRequest>,
    responses: tonic::Streaming<WatchResponse>,
}

impl Stream {
    /// Opens a stream with its first request already queued: etcd sends its
    /// response headers only with its first message.
    async fn open(endpoint: &str, first: WatchRequest) -> Stream {
        let mut client = tokio::time::timeout(WAIT, WatchClient::connect(endpoint.to_string()))
            .await
            .expect("connect in time")
            .expect("connect");
        let (requests, receiver) = mpsc::channel(16);
        requests.send(first).await.expect("queue the first request");
        let responses = tokio::time::timeout(WAIT, client.watch(ReceiverStream::new(receiver)))
            .await
            .expect("watch call in time")
            .expect("watch call")
            .into_inner();
        Stream {
            requests,
            responses,
        }
    }

    async fn next(&mut self) -> WatchResponse {
        tokio::time::timeout(WAIT, self.responses.message())
            .await
            .expect("a watch response in time")
            .expect("a healthy stream")
            .expect("the stream stays open")
    }

    /// The next response that satisfies `wanted`, skipping at most a few others
    /// (periodic progress notifications may arrive in between).
    async fn next_matching(
        &mut self,
        what: &str,
        wanted: impl Fn(&WatchResponse) -> bool,
    ) -> WatchResponse {
        let mut skipped = Vec::new();
        for _ in 0..8 {
            let response = self.next().await;
            if wanted(&response) {
                return response;
            }
            skipped.push(format!(
                "id={} created={} canceled={} events={}",
                response.watch_id,
                response.created,
                response.canceled,
                response.events.len()
            ));
        }
        panic!("no response {what} among: {skipped:?}");
    }

    async fn send(&self, request: WatchRequest) {
        self.requests.send(request).await.expect("send a request");
    }
}

async fn put(endpoint: &str, key: &str, value: &str) -> i64 {
    let mut kv = KvClient::connect(endpoint.to_string())
        .await
        .expect("connect");
    let response = kv
        .put(PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("put")
        .into_inner();
    response.header.expect("header").revision
}

/// Everything the scenario observed, with ids and terms left out, so etcd's and
/// shoal's transcripts can be compared line by line.
async fn scenario(endpoint: String) -> Vec<String> {
    let mut transcript = Vec::new();

    // Periodic progress: after the event, an empty response at its revision.
    let mut progress_watch = WatchCreateRequest {
        progress_notify: true,
        ..create("p", "")
    };
    progress_watch.watch_id = 0;
    let mut stream = Stream::open(&endpoint, create_request(progress_watch)).await;
    let created = stream.next().await;
    transcript.push(format!(
        "created={} id={}",
        created.created, created.watch_id
    ));
    let revision = put(&endpoint, "p", "1").await;
    let event = stream.next().await;
    transcript.push(format!(
        "events={} at {}",
        event.events.len(),
        revision == event.header.unwrap().revision
    ));
    let progress = stream.next().await;
    assert!(
        progress.events.is_empty(),
        "a progress notification has no events"
    );
    assert_eq!(
        progress.header.unwrap().revision,
        revision,
        "progress names the latest revision"
    );
    transcript.push(format!(
        "progress id={} events={}",
        progress.watch_id,
        progress.events.len()
    ));

    // A progress request on the same stream: answered with watch id -1.
    stream
        .send(WatchRequest {
            request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
        })
        .await;
    let answer = stream
        .next_matching("to the progress request (watch id -1)", |response| {
            response.watch_id == -1
        })
        .await;
    assert_eq!(answer.header.unwrap().revision, revision);
    transcript.push(format!("progress request answered id={}", answer.watch_id));

    // Client-chosen ids, and a duplicate refused.
    stream
        .send(create_request(WatchCreateRequest {
            watch_id: 7,
            ..create("q", "")
        }))
        .await;
    let chosen = stream
        .next_matching("creating watch 7", |response| response.watch_id == 7)
        .await;
    transcript.push(format!(
        "chosen id={} created={} canceled={}",
        chosen.watch_id, chosen.created, chosen.canceled
    ));
    stream
        .send(create_request(WatchCreateRequest {
            watch_id: 7,
            ..create("r", "")
        }))
        .await;
    let duplicate = stream
        .next_matching("to the duplicate watch 7", |response| {
            response.created && response.canceled
        })
        .await;
    transcript.push(format!(
        "duplicate id={} created={} canceled={} reason={}",
        duplicate.watch_id, duplicate.created, duplicate.canceled, duplicate.cancel_reason
    ));

    // Fragments: deleting 600 values of 1,000 bytes at one revision gives a
    // response (with the previous values) larger than etcd's limit for one
    // message: --max-request-bytes plus 512 KiB of gRPC overhead.
    let value = "x".repeat(1000);
    let mut kv = KvClient::connect(endpoint.clone()).await.expect("connect");
    for n in 0..N_FRAGMENT_KEYS {
        kv.put(PutRequest {
            key: format!("f/{n:03}").into_bytes().into(),
            value: value.clone().into_bytes().into(),
            ..Default::default()
        })
        .await
        .expect("put");
    }
    let fragmenting = WatchCreateRequest {
        fragment: true,
        prev_kv: true,
        ..create("f/", "f0")
    };
    let mut fragments = Stream::open(&endpoint, create_request(fragmenting)).await;
    fragments.next().await;
    let whole_watch = WatchCreateRequest {
        prev_kv: true,
        ..create("f/", "f0")
    };
    let mut whole = Stream::open(&endpoint, create_request(whole_watch)).await;
    whole.next().await;
    kv.delete_range(DeleteRangeRequest {
        key: "f/".as_bytes().to_vec().into(),
        range_end: "f0".as_bytes().to_vec().into(),
        ..Default::default()
    })
    .await
    .expect("delete range");
    let mut pieces = Vec::new();
    for _ in 0..64 {
        let piece = fragments
            .next_matching("with the txn's events", |response| {
                !response.events.is_empty()
            })
            .await;
        let last = !piece.fragment;
        pieces.push(piece);
        if last {
            break;
        }
    }
    let keys: Vec<String> = pieces
        .iter()
        .flat_map(|piece| piece.events.iter())
        .map(|event| String::from_utf8_lossy(&event.kv.as_ref().unwrap().key).into_owned())
        .collect();
    let expected: Vec<String> = (0..N_FRAGMENT_KEYS).map(|n| format!("f/{n:03}")).collect();
    assert_eq!(keys, expected, "fragments carry every event in order");
    assert!(
        pieces.len() > 1,
        "a response over --max-request-bytes is fragmented"
    );
    transcript.push(format!("fragments={} events={}", pieces.len(), keys.len()));
    let unfragmented = whole
        .next_matching("with the txn's events", |response| {
            !response.events.is_empty()
        })
        .await;
    assert!(!unfragmented.fragment);
    transcript.push(format!("unfragmented events={}", unfragmented.events.len()));
    transcript
}

fn run(flavor: Flavor) -> Vec<String> {
    let cluster = start(flavor);
    let endpoint = cluster.endpoint(0);
    common::tokio_runtime().block_on(scenario(endpoint))
}

#[test]
fn etcd_passes_the_watch_options_scenario() {
    let transcript = run(Flavor::Etcd);
    eprintln!("{transcript:#?}");
    assert!(transcript.len() >= 7, "{transcript:#?}");
}

#[test]
fn shoal_watch_options_match_etcd() {
    let expected = run(Flavor::Etcd);
    let actual = run(Flavor::Shoal);
    assert_eq!(actual, expected, "shoal's transcript differs from etcd's");
}
