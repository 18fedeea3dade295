//! gRPC on a raw HTTP/2 connection, on etcd 3.4 and on shoal. Malformed
//! request bodies: each call fails with an error status (never OK, never a
//! dropped connection), and the member keeps serving the same connection.
//! Many streams on one connection. Watch streams whose client stopped
//! sending, or stopped reading for a while.
//! Run with `--no-capture` to see both servers' statuses side by side.

mod common;

use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use common::{Cluster, ClusterOptions, Flavor};
use prost::Message as _;
use proto::etcdserverpb::watch_request::RequestUnion;
use proto::etcdserverpb::{
    PutRequest, RangeRequest, RangeResponse, WatchCreateRequest, WatchRequest, WatchResponse,
};

const WAIT: Duration = Duration::from_secs(10);
const MAX_REQUEST_BYTES: usize = 4096;

struct Call {
    status: String,
    message: String,
    body: Bytes,
}

/// Opens a gRPC stream to `path` and sends `body` on it.
async fn open_stream(
    send: &mut h2::client::SendRequest<Bytes>,
    authority: &str,
    path: &str,
    body: Bytes,
    end_of_stream: bool,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let request = http::Request::post(format!("http://{authority}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let mut sender = send.clone().ready().await.expect("connection ready");
    let (response, mut stream) = sender.send_request(request, false).expect("send headers");
    stream.send_data(body, end_of_stream).expect("send body");
    (response, stream)
}

async fn call(
    send: &mut h2::client::SendRequest<Bytes>,
    authority: &str,
    path: &str,
    body: Bytes,
) -> Call {
    let (response, _) = open_stream(send, authority, path, body, true).await;
    let response = tokio::time::timeout(WAIT, response)
        .await
        .expect("a response in time")
        .expect("a response, not a reset");
    let headers = response.headers().clone();
    let mut body = response.into_body();
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("response body");
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.expect("trailers").unwrap_or_default();
    let field = |name: &str| {
        trailers
            .get(name)
            .or_else(|| headers.get(name))
            .map(|value| value.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    Call {
        status: field("grpc-status"),
        message: field("grpc-message"),
        body: data.freeze(),
    }
}

fn framed(flag: u8, message: &[u8], announced_len: usize) -> Bytes {
    let mut body = BytesMut::new();
    body.put_u8(flag);
    body.put_u32(announced_len as u32);
    body.extend_from_slice(message);
    body.freeze()
}

/// Starts a one-member cluster of `flavor` and runs `test` with its
/// `host:port`.
fn with_member<F: std::future::Future<Output = ()>>(
    flavor: Flavor,
    options: ClusterOptions,
    test: impl FnOnce(String) -> F,
) {
    let cluster = Cluster::start(flavor, 1, options);
    let authority = cluster
        .endpoint(0)
        .trim_start_matches("http://")
        .to_string();
    common::tokio_runtime().block_on(test(authority));
}

/// A well-formed request body: one uncompressed message.
fn message(request: &impl prost::Message) -> Bytes {
    let encoded = request.encode_to_vec();
    framed(0, &encoded, encoded.len())
}

/// Opens a raw HTTP/2 connection to `authority`, with room for `data_frame_budget`
/// bytes of small frames held unread.
async fn connect(authority: &str, data_frame_budget: usize) -> h2::client::SendRequest<Bytes> {
    let socket = tokio::net::TcpStream::connect(authority).await.unwrap();
    let (send, connection) = h2::client::Builder::new()
        .data_frame_budget(data_frame_budget)
        .handshake(socket)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

/// Puts `w`=`v` on `send` and asserts it succeeded.
async fn put_ok(send: &mut h2::client::SendRequest<Bytes>, authority: &str, key: &'static [u8]) {
    let put = PutRequest {
        key: Bytes::from_static(key),
        value: Bytes::from_static(b"v"),
        ..Default::default()
    };
    let answer = call(send, authority, "/etcdserverpb.KV/Put", message(&put)).await;
    assert_eq!(answer.status, "0", "{:?}", answer.message);
}

fn check(flavor: Flavor) {
    let options = ClusterOptions {
        extra_args: vec!["--max-request-bytes".into(), MAX_REQUEST_BYTES.to_string()],
        ..ClusterOptions::default()
    };
    with_member(flavor, options, |authority| async move {
        let mut send = connect(&authority, 64 * 1024).await;
        let put = PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        }
        .encode_to_vec();
        let big = PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![b'x'; 2 * 1024 * 1024]),
            ..Default::default()
        }
        .encode_to_vec();
        let cases: Vec<(&str, Bytes)> = vec![
            ("an empty body", Bytes::new()),
            ("half a prefix", Bytes::from_static(&[0, 0, 0])),
            (
                "a length longer than the body",
                framed(0, &put, put.len() + 10),
            ),
            (
                "the compressed flag without an encoding",
                framed(1, &put, put.len()),
            ),
            ("a message that does not decode", framed(0, &[0xff; 7], 7)),
            ("a message over the size limit", framed(0, &big, big.len())),
        ];
        for (name, body) in cases {
            for path in [
                "/etcdserverpb.KV/Put",
                "/etcdserverpb.KV/Range",
                "/etcdserverpb.Watch/Watch",
            ] {
                if body.is_empty() && path.contains("Watch") {
                    // A watch stream without requests stays open (see
                    // `watch_streams`).
                    continue;
                }
                let answer = call(&mut send, &authority, path, body.clone()).await;
                println!(
                    "{flavor:?} {path} {name}: grpc-status {} {:?}",
                    answer.status, answer.message
                );
                assert!(
                    !answer.status.is_empty() && answer.status != "0",
                    "{flavor:?} {path} with {name}: status {:?} {:?}",
                    answer.status,
                    answer.message
                );
                assert!(!answer.message.contains('\n'), "{}", answer.message);
            }
        }
        // The same connection still serves a well-formed call. A body with a
        // second message after the first is answered for the first (etcd's
        // server reads one message of a unary call and ignores the rest).
        put_ok(&mut send, &authority, b"k").await;
        let twice: Bytes = [framed(0, &put, put.len()), framed(0, &put, put.len())]
            .concat()
            .into();
        let answer = call(&mut send, &authority, "/etcdserverpb.KV/Put", twice).await;
        assert_eq!(answer.status, "0", "{:?}", answer.message);
        let range = RangeRequest {
            key: Bytes::from_static(b"k"),
            ..Default::default()
        };
        let answer = call(
            &mut send,
            &authority,
            "/etcdserverpb.KV/Range",
            message(&range),
        )
        .await;
        assert_eq!(answer.status, "0", "{:?}", answer.message);
        let response = RangeResponse::decode(answer.body.slice(5..)).unwrap();
        assert_eq!(&response.kvs[0].value[..], b"v");
    });
}

/// Opens more watch streams on one connection than hyper's default stream
/// limit (200), then puts on the same connection: the put must not queue
/// behind the watches.
fn many_streams(flavor: Flavor) {
    const WATCHES: usize = 300;
    with_member(flavor, ClusterOptions::default(), |authority| async move {
        // Room for every watch's first small answer before its reader runs
        // (h2 closes a connection holding too many small frames unread).
        let mut send = connect(&authority, 1024 * 1024).await;
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: Bytes::from_static(b"w"),
                ..Default::default()
            })),
        };
        let mut watches = Vec::new();
        for _ in 0..WATCHES {
            let (response, stream) = open_stream(
                &mut send,
                &authority,
                "/etcdserverpb.Watch/Watch",
                message(&create),
                false,
            )
            .await;
            // Each watch's answers are read as they come (h2 limits how
            // many small frames it holds unread).
            let (answered, answered_receiver) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let response = match response.await {
                    Ok(response) => response,
                    Err(error) => {
                        eprintln!("watch refused: {error}");
                        return;
                    }
                };
                let _ = answered.send(response.status());
                let mut body = response.into_body();
                while let Some(Ok(chunk)) = body.data().await {
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
            });
            watches.push((answered_receiver, stream));
        }
        put_ok(&mut send, &authority, b"w").await;
        // The watches were served too: the last one opened has its headers.
        let (last_answered, _) = watches.pop().unwrap();
        let status = tokio::time::timeout(WAIT, last_answered)
            .await
            .expect("the last watch answered in time")
            .expect("the last watch was not refused");
        assert_eq!(status, http::StatusCode::OK);
    });
}

/// Reads the next gRPC message of a response body into `buffer`'s front.
async fn next_watch_response(body: &mut h2::RecvStream, buffer: &mut BytesMut) -> WatchResponse {
    loop {
        if buffer.len() >= 5 {
            let length = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
            if buffer.len() >= 5 + length {
                let message = buffer.split_to(5 + length);
                return WatchResponse::decode(&message[5..]).expect("a watch response");
            }
        }
        let chunk = tokio::time::timeout(WAIT, body.data())
            .await
            .expect("a watch response in time")
            .expect("the watch stream still open")
            .expect("the watch stream's data");
        let _ = body.flow_control().release_capacity(chunk.len());
        buffer.extend_from_slice(&chunk);
    }
}

/// Opens a watch on `key` and returns its response body once it answered
/// `created`.
async fn open_watch(
    send: &mut h2::client::SendRequest<Bytes>,
    authority: &str,
    key: &'static [u8],
    end_of_stream: bool,
) -> (h2::RecvStream, BytesMut, h2::SendStream<Bytes>) {
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: Bytes::from_static(key),
            ..Default::default()
        })),
    };
    let (response, requests) = open_stream(
        send,
        authority,
        "/etcdserverpb.Watch/Watch",
        message(&create),
        end_of_stream,
    )
    .await;
    let response = tokio::time::timeout(WAIT, response)
        .await
        .expect("the watch answered in time")
        .expect("the watch was not refused");
    let mut body = response.into_body();
    let mut buffer = BytesMut::new();
    let created = next_watch_response(&mut body, &mut buffer).await;
    assert!(created.created, "{created:?}");
    (body, buffer, requests)
}

/// A watch stream whose client has ended its requests keeps its watcher (as
/// etcd does: only a reset or the connection's end stops it). A watch whose
/// client reads nothing while a thousand events of half a KiB are written
/// (more than flow control and the server's queues hold) then gets every
/// one of them, in order, once.
fn watch_streams(flavor: Flavor) {
    const PUTS: usize = 1000;
    with_member(flavor, ClusterOptions::default(), |authority| async move {
        let mut send = connect(&authority, 1024 * 1024).await;
        let (mut body, mut buffer, _requests) = open_watch(&mut send, &authority, b"h", true).await;
        put_ok(&mut send, &authority, b"h").await;
        let event = next_watch_response(&mut body, &mut buffer).await;
        assert_eq!(event.events.len(), 1, "{event:?}");
        assert_eq!(&event.events[0].kv.as_ref().unwrap().key[..], b"h");

        // The slow reader has a connection of its own: the data it leaves
        // unread holds that connection's window.
        let mut slow_send = connect(&authority, 4 * 1024 * 1024).await;
        let (mut slow, mut slow_buffer, _slow_requests) =
            open_watch(&mut slow_send, &authority, b"s", false).await;
        let mut first_revision = 0;
        for put_idx in 0..PUTS {
            let mut value = format!("{put_idx:08}").into_bytes();
            value.resize(512, b'.');
            let put = PutRequest {
                key: Bytes::from_static(b"s"),
                value: value.into(),
                ..Default::default()
            };
            let answer = call(&mut send, &authority, "/etcdserverpb.KV/Put", message(&put)).await;
            assert_eq!(answer.status, "0", "{:?}", answer.message);
            if put_idx == 0 {
                let response =
                    proto::etcdserverpb::PutResponse::decode(answer.body.slice(5..)).unwrap();
                first_revision = response.header.unwrap().revision;
            }
        }
        let mut seen = 0;
        while seen < PUTS {
            let response = next_watch_response(&mut slow, &mut slow_buffer).await;
            assert!(!response.canceled, "{response:?}");
            for event in response.events {
                let kv = event.kv.expect("an event's key-value");
                assert_eq!(
                    kv.mod_revision,
                    first_revision + seen as i64,
                    "event {seen}"
                );
                assert_eq!(&kv.value[..8], format!("{seen:08}").as_bytes());
                seen += 1;
            }
        }
    });
}

/// Reads what is left of a response body; its trailers, as text.
async fn stream_end(body: &mut h2::RecvStream) -> String {
    while let Some(Ok(_)) = body.data().await {}
    format!("{:?}", body.trailers().await)
}

/// A client that keeps sending watch requests but reads no answers is held
/// back by flow control: the server stops reading its requests instead of
/// piling up their answers, and the client's other calls on the same
/// connection go on.
fn unread_answers(flavor: Flavor) {
    // Far more request bytes than either member takes in before it stops
    // reading (3-4 MB here: its stream window, the requests whose answers
    // fill its send buffers, and on shoal 64 KiB of answers held back). A
    // member reading on regardless takes all of them.
    const LIMIT_BYTES: usize = 32 * 1024 * 1024;
    with_member(flavor, ClusterOptions::default(), |authority| async move {
        let mut send = connect(&authority, 64 * 1024 * 1024).await;
        let (mut body, _buffer, mut requests) =
            open_watch(&mut send, &authority, b"u", false).await;
        // A progress request padded with an unknown field of 1,000 bytes
        // (field 100, which both servers skip): cheap to send in bulk, each
        // answered with ~45 bytes.
        let mut padded = WatchRequest {
            request_union: Some(RequestUnion::ProgressRequest(Default::default())),
        }
        .encode_to_vec();
        padded.extend_from_slice(&[0xa2, 0x06, 0xe8, 0x07]);
        padded.extend_from_slice(&[0u8; 1000]);
        let batch: Bytes = framed(0, &padded, padded.len()).repeat(64).into();
        // What is left of the batch being sent: pieces follow one another
        // whatever the capacity cuts them at.
        let mut unsent = Bytes::new();
        let mut sent = 0;
        // Sends until the member gives no more capacity for 5 s.
        loop {
            assert!(
                sent < LIMIT_BYTES,
                "{flavor:?} read {sent} bytes of requests whose answers nobody read"
            );
            if unsent.is_empty() {
                unsent = batch.clone();
            }
            requests.reserve_capacity(unsent.len());
            let mut capacity = requests.capacity();
            if capacity == 0 {
                let assigned = tokio::time::timeout(
                    Duration::from_secs(5),
                    std::future::poll_fn(|context| requests.poll_capacity(context)),
                )
                .await;
                match assigned {
                    Err(_) => break,
                    Ok(Some(Ok(assigned))) => capacity = assigned,
                    Ok(other) => panic!(
                        "{flavor:?}: the watch stream ended: {other:?} {}",
                        stream_end(&mut body).await
                    ),
                }
            }
            let piece = unsent.split_to(capacity.min(unsent.len()));
            sent += piece.len();
            if requests.send_data(piece, false).is_err() {
                panic!(
                    "{flavor:?}: the watch stream ended: {}",
                    stream_end(&mut body).await
                );
            }
        }
        println!("{flavor:?} stopped reading after {sent} bytes of requests");
        // The requests it holds unread take that stream's window, not the
        // whole connection's: another call on the connection still goes
        // through (etcd's connection window is 2^31-1 bytes).
        tokio::time::timeout(WAIT, put_ok(&mut send, &authority, b"other"))
            .await
            .unwrap_or_else(|_| {
                panic!("{flavor:?}: a put on the connection of a held-back stream had no answer")
            });
    });
}

#[test]
fn unread_answers_hold_back_requests_on_etcd() {
    unread_answers(Flavor::Etcd);
}

#[test]
fn unread_answers_hold_back_requests_on_shoal() {
    unread_answers(Flavor::Shoal);
}

#[test]
fn watch_streams_on_etcd() {
    watch_streams(Flavor::Etcd);
}

#[test]
fn watch_streams_on_shoal() {
    watch_streams(Flavor::Shoal);
}

#[test]
fn many_streams_on_one_connection_on_etcd() {
    many_streams(Flavor::Etcd);
}

#[test]
fn many_streams_on_one_connection_on_shoal() {
    many_streams(Flavor::Shoal);
}

#[test]
fn malformed_request_bodies_are_refused_by_etcd() {
    check(Flavor::Etcd);
}

#[test]
fn malformed_request_bodies_are_refused_by_shoal() {
    check(Flavor::Shoal);
}
