//! The gRPC server: HTTP/2 connections served on the `h2` crate, with the
//! write calls of the KV service answered and the Watch streams served
//! (`grpc_watch`) on the connection's own task, and every other call handed
//! to tonic's routes.
//!
//! Why not tonic's server for everything: at 1,000 clients a put cost the
//! leader's tokio workers 15-21 µs (BENCHMARKS.md), most of it in the layers
//! between the socket and the service: hyper's task per request, the tower
//! and axum routing futures (moved in memory as they grow), tonic's streaming
//! decoder and encoder. Here a Put, Txn, DeleteRange or Compact is a future
//! polled by the connection task next to the connection itself: its request
//! body is read and decoded in place, `KvService` answers it (the same code
//! tonic calls, so validation and errors are the same), and the response
//! goes out as three frames. When a raft commit completes many calls of one
//! connection at once, their responses leave in one socket write.
//!
//! The price: a call's decoding and encoding run on the task that also drives
//! the connection's socket, so a large Txn answer delays the other streams of
//! its connection by that long (Range, the call with large answers, is not
//! among these calls).
//!
//! Everything else (Range with its chunked body, Lease, Maintenance,
//! Cluster, Lock, Election, and unknown methods) goes to tonic's `Routes`
//! through a small adapter: the h2 request body as an `http_body::Body`, and a
//! task that writes the response body to the stream as the peer's flow
//! control allows. One thing tonic's server did is not done: honouring a
//! request's `grpc-timeout` (clients enforce their own deadlines).

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::Either;
use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use hyper::body::{Body, Frame};
use proto::etcdserverpb::kv_server::Kv;
use tonic::Status;
use tonic::codegen::Service;
use tonic::service::Routes;

use crate::KvService;
use crate::encoded_range::check_request_encoding;
use crate::grpc_watch;
use crate::metrics::{CallRecord, GrpcMetrics};

/// HTTP/2 settings: a 1 MiB window per stream, as hyper's server had under
/// tonic, and a 16 KiB limit on a request's headers. Concurrent streams are
/// not limited (tonic left hyper's limit unset, etcd advertises 2^32-1): a
/// client with hundreds of watches or lock waiters on one connection must
/// not queue its other calls behind them.
const STREAM_WINDOW: u32 = 1024 * 1024;
/// Room for eight streams' worth of requests held unread. A watch stream
/// whose answers the client does not read stops being read (flow control
/// holds the client back), and what it sent stays in its window; with the
/// connection's window no larger than a stream's (as under tonic), one such
/// stream could take all of it and stall every other call on the
/// connection. etcd's connection window is 2^31-1 bytes; this one bounds
/// what a connection can make a member buffer.
const CONNECTION_WINDOW: u32 = 8 * STREAM_WINDOW;
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// How long a connection may keep answering after shutdown began (GOAWAY
/// sent) before it is closed; watch streams never end by themselves.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// How long the last frames (answers already written, the final GOAWAY)
/// get to leave once the grace is over.
const SHUTDOWN_FLUSH: Duration = Duration::from_millis(100);
/// The gRPC message prefix: a compression flag and the message length.
pub(crate) const MESSAGE_PREFIX_LEN: usize = 5;

/// What every connection of one listener shares.
pub(crate) struct Services {
    pub kv: Arc<KvService>,
    pub routes: Routes,
    /// The largest request message accepted, in bytes.
    pub max_message: usize,
    /// Calls by method and code, and bytes each way (`/metrics`).
    pub metrics: Arc<GrpcMetrics>,
}

/// Serves HTTP/2 on one accepted connection until the peer closes it, it
/// fails, or `stop` turns true (then in-flight calls get `SHUTDOWN_GRACE`).
pub(crate) async fn serve_connection<T>(
    io: T,
    services: Arc<Services>,
    info: Arc<crate::conn::ConnInfo>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let handshake = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .handshake::<_, Bytes>(io);
    let mut connection = tokio::select! {
        handshake = handshake => match handshake {
            Ok(connection) => connection,
            Err(error) => {
                tracing::debug!(%error, "client connection closed before its HTTP/2 handshake");
                return;
            }
        },
        _ = stop.wait_for(|stopped| *stopped) => return,
    };
    let mut calls = FuturesUnordered::new();
    // The watch streams of this connection get their events one after another.
    let watch_group = store::watch::WatchQueue::new_group();
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            // Shutdown first, so no flood of requests keeps it waiting; then
            // the calls, so what they send in this turn leaves in the
            // connection's one write below.
            biased;
            _ = stop.wait_for(|stopped| *stopped), if closing.is_none() => {
                connection.graceful_shutdown();
                closing = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
            }
            () = sleep_until(closing), if closing.is_some() => break,
            Some(()) = calls.next(), if !calls.is_empty() => {}
            accepted = connection.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    let request = carrying(request, &info);
                    let record = services.metrics.call(request.uri().path());
                    match Inline::for_path(request.uri().path()) {
                    Some(Inline::Kv(call)) => calls.push(Either::Left(answer(
                        Arc::clone(&services),
                        call,
                        request,
                        respond,
                        record,
                    ))),
                    Some(Inline::Watch) => {
                        let watch = grpc_watch::serve(
                            services.kv.member.clone(),
                            watch_group,
                            services.max_message,
                            request,
                            respond,
                        );
                        // A panic ends this stream alone (its drop resets it).
                        // The stream ends when its client goes: counted as
                        // Canceled when the record drops.
                        let watch = std::panic::AssertUnwindSafe(watch)
                            .catch_unwind()
                            .map(move |_| drop(record));
                        calls.push(Either::Right(watch));
                    }
                    None => {
                        tokio::spawn(pass_to_tonic(
                            services.routes.clone(),
                            request,
                            respond,
                            record,
                            Arc::clone(&services.metrics),
                        ));
                    }
                }},
                Some(Err(error)) => {
                    tracing::debug!(%error, "client connection failed");
                    break;
                }
                None => break,
            },
        }
    }
    if closing.is_some() {
        // Calls still unanswered are reset; what was answered leaves.
        drop(calls);
        connection.abrupt_shutdown(h2::Reason::NO_ERROR);
        let _ = tokio::time::timeout(
            SHUTDOWN_FLUSH,
            poll_fn(|context| connection.poll_closed(context)),
        )
        .await;
    }
}

/// The request with its connection's facts in its extensions.
fn carrying<B>(
    mut request: http::Request<B>,
    info: &Arc<crate::conn::ConnInfo>,
) -> http::Request<B> {
    request.extensions_mut().insert(Arc::clone(info));
    request
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The calls served on the connection's task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inline {
    Kv(KvCall),
    Watch,
}

/// The KV calls answered on the connection's task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KvCall {
    Put,
    Txn,
    DeleteRange,
    Compact,
}

impl Inline {
    fn for_path(path: &str) -> Option<Inline> {
        match path {
            "/etcdserverpb.KV/Put" => Some(Inline::Kv(KvCall::Put)),
            "/etcdserverpb.KV/Txn" => Some(Inline::Kv(KvCall::Txn)),
            "/etcdserverpb.KV/DeleteRange" => Some(Inline::Kv(KvCall::DeleteRange)),
            "/etcdserverpb.KV/Compact" => Some(Inline::Kv(KvCall::Compact)),
            "/etcdserverpb.Watch/Watch" => Some(Inline::Watch),
            _ => None,
        }
    }
}

/// Answers one KV call: the response headers, the message and the trailers
/// of a success, or a trailers-only response carrying the error.
async fn answer(
    services: Arc<Services>,
    call: KvCall,
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    mut record: Option<CallRecord>,
) {
    let outcome = std::pin::pin!(async {
        check_request_encoding(request.headers())?;
        let (parts, body) = request.into_parts();
        let body = read_message(body, services.max_message).await?;
        services.metrics.received(MESSAGE_PREFIX_LEN + body.len());
        // The call's metadata (its auth token) and connection facts go with
        // the message, as tonic would pass them.
        let kv = &services.kv;
        match call {
            KvCall::Put => encode(kv.put(decode_with(body, &parts)?).await?.get_ref()),
            KvCall::Txn => encode(kv.txn(decode_with(body, &parts)?).await?.get_ref()),
            KvCall::DeleteRange => {
                encode(kv.delete_range(decode_with(body, &parts)?).await?.get_ref())
            }
            KvCall::Compact => encode(kv.compact(decode_with(body, &parts)?).await?.get_ref()),
        }
    });
    // A panic answers this call alone, as a task per call (hyper's) did,
    // instead of ending the connection task and every stream on it.
    let outcome = std::panic::AssertUnwindSafe(outcome)
        .catch_unwind()
        .map(|outcome| {
            outcome
                .unwrap_or_else(|_| Err(Status::internal("the server failed answering this call")))
        });
    // A client that resets the stream has given up: the call is dropped, as
    // tonic's server drops it (a proposal already made may still commit).
    let outcome = tokio::select! {
        outcome = outcome => outcome,
        _ = poll_fn(|context| respond.poll_reset(context)) => return,
    };
    let code = match &outcome {
        Ok(_) => 0,
        Err(status) => status.code() as i32,
    };
    if let Some(record) = &mut record {
        record.set_code(code);
    }
    match outcome {
        Ok(message) => {
            let Ok(mut stream) = respond.send_response(grpc_response(), false) else {
                return;
            };
            services.metrics.sent(message.len());
            if stream.send_data(message, false).is_ok() {
                let _ = stream.send_trailers(ok_trailers());
            }
        }
        Err(status) => {
            let _ = respond.send_response(status.into_http::<()>(), true);
        }
    }
}

/// Reads a unary request body: a length-prefixed, uncompressed message of at
/// most `max_message` bytes, returned without its prefix. Bytes after the
/// first message are ignored, as etcd's server and tonic's ignore them.
async fn read_message(mut body: h2::RecvStream, max_message: usize) -> Result<Bytes, Status> {
    let mut buffer = BytesMut::new();
    let mut announced = None;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|error| Status::internal(format!("request body: {error}")))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        buffer.extend_from_slice(&chunk);
        if announced.is_none() && buffer.len() >= MESSAGE_PREFIX_LEN {
            announced = Some(check_prefix(&buffer, max_message)?);
        }
        if let Some(length) = announced
            && buffer.len() >= MESSAGE_PREFIX_LEN + length
        {
            break;
        }
    }
    match announced {
        None if buffer.is_empty() => Err(Status::internal("Missing request message.")),
        Some(length) if buffer.len() >= MESSAGE_PREFIX_LEN + length => Ok(buffer
            .freeze()
            .slice(MESSAGE_PREFIX_LEN..MESSAGE_PREFIX_LEN + length)),
        _ => Err(Status::internal("Unexpected EOF decoding stream.")),
    }
}

/// The length a message prefix announces, refused as tonic refuses it when it
/// is over the limit or the message is compressed.
pub(crate) fn check_prefix(buffer: &[u8], max_message: usize) -> Result<usize, Status> {
    if buffer[0] != 0 {
        return Err(Status::internal(
            "protocol error: received message with compressed-flag but no grpc-encoding was specified",
        ));
    }
    let length = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
    if length > max_message {
        return Err(Status::out_of_range(format!(
            "Error, decoded message length too large: found {length} bytes, the limit is: {max_message} bytes"
        )));
    }
    Ok(length)
}

/// Decodes a unary message into a tonic request with the call's headers as
/// its metadata and the connection's facts in its extensions.
fn decode_with<M: prost::Message + Default>(
    message: Bytes,
    parts: &http::request::Parts,
) -> Result<tonic::Request<M>, Status> {
    let mut request = M::decode(message)
        .map(tonic::Request::new)
        .map_err(|error| Status::internal(error.to_string()))?;
    // Only what the services read: the token headers, not the whole map.
    for name in ["token", "authorization"] {
        if let Some(value) = parts.headers.get(name) {
            let mut headers = http::HeaderMap::new();
            headers.insert(name, value.clone());
            *request.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers);
            break;
        }
    }
    if let Some(info) = parts.extensions.get::<Arc<crate::conn::ConnInfo>>() {
        request.extensions_mut().insert(Arc::clone(info));
    }
    Ok(request)
}

/// The prefix of an uncompressed response message of `length` bytes,
/// refused as tonic refuses a message over 4 GB.
pub(crate) fn message_prefix(length: usize) -> Result<[u8; MESSAGE_PREFIX_LEN], Status> {
    let length = u32::try_from(length).map_err(|_| {
        Status::resource_exhausted(format!(
            "Cannot return body with more than 4GB of data but got {length} bytes"
        ))
    })?;
    let mut prefix = [0u8; MESSAGE_PREFIX_LEN];
    prefix[1..].copy_from_slice(&length.to_be_bytes());
    Ok(prefix)
}

/// The response headers of a call that answers.
pub(crate) fn grpc_response() -> http::Response<()> {
    let mut response = http::Response::new(());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// The trailers of a successful call.
pub(crate) fn ok_trailers() -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    trailers.insert(Status::GRPC_STATUS, http::HeaderValue::from_static("0"));
    trailers
}

/// A response message with its gRPC prefix.
fn encode<M: prost::Message>(message: &M) -> Result<Bytes, Status> {
    let mut buffer = BytesMut::with_capacity(MESSAGE_PREFIX_LEN + message.encoded_len());
    encode_into(message, &mut buffer)?;
    Ok(buffer.freeze())
}

/// Appends a response message with its gRPC prefix to `buffer`.
pub(crate) fn encode_into<M: prost::Message>(
    message: &M,
    buffer: &mut BytesMut,
) -> Result<(), Status> {
    buffer.extend_from_slice(&message_prefix(message.encoded_len())?);
    message
        .encode(buffer)
        .map_err(|error| Status::internal(error.to_string()))
}

/// Hands a call to tonic's routes and writes the response they produce.
async fn pass_to_tonic(
    mut routes: Routes,
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    mut record: Option<CallRecord>,
    metrics: Arc<GrpcMetrics>,
) {
    let (parts, body) = request.into_parts();
    let request = http::Request::from_parts(parts, RequestBody::new(body, Some(metrics.clone())));
    if let Err(never) =
        poll_fn(|context| Service::<http::Request<RequestBody>>::poll_ready(&mut routes, context))
            .await
    {
        match never {}
    }
    // A client that resets the stream has given up: the call is dropped (a
    // lock waiter leaves the queue this way).
    let response = tokio::select! {
        response = routes.call(request) => response,
        _ = poll_fn(|context| respond.poll_reset(context)) => return,
    };
    let Ok(response) = response;
    let (parts, body) = response.into_parts();
    let end_of_stream = body.is_end_stream();
    // A trailers-only answer (an error) carries its status in the headers.
    if let Some(record) = &mut record {
        record.set_code_from(&parts.headers);
    }
    let Ok(stream) = respond.send_response(http::Response::from_parts(parts, ()), end_of_stream)
    else {
        return;
    };
    if !end_of_stream {
        send_body(stream, body, record.as_mut(), &metrics).await;
    }
}

/// Writes a response body to its stream: data as the stream's flow control
/// allows, then the trailers (or an empty end). Stops when the client resets
/// the stream (a cancelled watch), dropping the body.
async fn send_body(
    mut stream: h2::SendStream<Bytes>,
    body: tonic::body::Body,
    mut record: Option<&mut CallRecord>,
    metrics: &GrpcMetrics,
) {
    let mut body = std::pin::pin!(body);
    loop {
        let frame = tokio::select! {
            frame = poll_fn(|context| body.as_mut().poll_frame(context)) => frame,
            _ = poll_fn(|context| stream.poll_reset(context)) => return,
        };
        let frame = match frame {
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(error)) => {
                tracing::debug!(%error, "response body failed");
                stream.send_reset(h2::Reason::INTERNAL_ERROR);
                return;
            }
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                metrics.sent(data.len());
                if send_data(&mut stream, data).await.is_err() {
                    return;
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    if let Some(record) = record.as_deref_mut() {
                        record.set_code_from(&trailers);
                    }
                    let _ = stream.send_trailers(trailers);
                    return;
                }
            }
        }
    }
}

/// Sends `data` in pieces as the peer's windows open.
async fn send_data(stream: &mut h2::SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let capacity = match poll_fn(|context| stream.poll_capacity(context)).await {
            Some(capacity) => capacity?,
            None => return Err(h2::Error::from(h2::Reason::CANCEL)),
        };
        if capacity == 0 {
            continue;
        }
        let piece = data.split_to(capacity.min(data.len()));
        stream.send_data(piece, false)?;
    }
    Ok(())
}

/// An h2 request body as an `http_body::Body`, giving back flow-control
/// capacity as tonic consumes the data.
pub(crate) struct RequestBody {
    stream: h2::RecvStream,
    data_done: bool,
    metrics: Option<Arc<GrpcMetrics>>,
}

impl RequestBody {
    fn new(stream: h2::RecvStream, metrics: Option<Arc<GrpcMetrics>>) -> RequestBody {
        RequestBody {
            stream,
            data_done: false,
            metrics,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if !this.data_done {
            match ready!(this.stream.poll_data(context)) {
                Some(Ok(data)) => {
                    let _ = this.stream.flow_control().release_capacity(data.len());
                    if let Some(metrics) = &this.metrics {
                        metrics.received(data.len());
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => this.data_done = true,
            }
        }
        match ready!(this.stream.poll_trailers(context)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(error) => Poll::Ready(Some(Err(error))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }
}
