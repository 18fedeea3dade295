//! The `/v3/...` routes of etcd 3.4's gRPC gateway: each path names one gRPC
//! method, whose request is the POSTed JSON and whose answer comes back as
//! JSON (a stream of `{"result": ...}` lines for the streaming methods).
//! Errors are grpc-gateway's `{"error", "message", "code"}` with its mapping
//! of gRPC codes to HTTP statuses.

use std::future::Future;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use proto::etcdserverpb::auth_server::Auth;
use proto::etcdserverpb::cluster_server::Cluster;
use proto::etcdserverpb::kv_server::Kv;
use proto::etcdserverpb::lease_server::Lease;
use proto::etcdserverpb::maintenance_server::Maintenance;
use proto::v3electionpb::election_server::Election;
use proto::v3lockpb::lock_server::Lock;
use serde_json::Value;
use store::Member;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use super::json::{JsonMessage, from_value, to_json};
use super::{Body, json_response, text};

/// The gRPC method behind each gateway path, as etcd 3.4's `rpc.proto`,
/// `v3lock.proto` and `v3election.proto` declare them (with the older
/// `/v3/kv/lease/...` spellings etcd still serves).
const ROUTES: &[&str] = &[
    "/v3/kv/range",
    "/v3/kv/put",
    "/v3/kv/deleterange",
    "/v3/kv/txn",
    "/v3/kv/compaction",
    "/v3/watch",
    "/v3/lease/grant",
    "/v3/lease/revoke",
    "/v3/kv/lease/revoke",
    "/v3/lease/keepalive",
    "/v3/lease/timetolive",
    "/v3/kv/lease/timetolive",
    "/v3/lease/leases",
    "/v3/kv/lease/leases",
    "/v3/cluster/member/add",
    "/v3/cluster/member/remove",
    "/v3/cluster/member/update",
    "/v3/cluster/member/list",
    "/v3/cluster/member/promote",
    "/v3/maintenance/alarm",
    "/v3/maintenance/status",
    "/v3/maintenance/defragment",
    "/v3/maintenance/hash",
    "/v3/maintenance/snapshot",
    "/v3/maintenance/transfer-leadership",
    "/v3/lock/lock",
    "/v3/lock/unlock",
    "/v3/election/campaign",
    "/v3/election/proclaim",
    "/v3/election/leader",
    "/v3/election/observe",
    "/v3/election/resign",
    "/v3/auth/enable",
    "/v3/auth/disable",
    "/v3/auth/status",
    "/v3/auth/authenticate",
    "/v3/auth/user/add",
    "/v3/auth/user/get",
    "/v3/auth/user/list",
    "/v3/auth/user/delete",
    "/v3/auth/user/changepw",
    "/v3/auth/user/grant",
    "/v3/auth/user/revoke",
    "/v3/auth/role/add",
    "/v3/auth/role/get",
    "/v3/auth/role/list",
    "/v3/auth/role/delete",
    "/v3/auth/role/grant",
    "/v3/auth/role/revoke",
];

/// How much JSON one request may carry: base64 makes bytes a third larger
/// and JSON adds field names, so twice the gRPC message limit is generous;
/// the decoded message is then held to the gRPC limit itself.
const JSON_OVERHEAD_FACTOR: usize = 2;

pub(super) async fn handle(member: &Arc<Member>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    if !ROUTES.contains(&path.as_str()) {
        return text(StatusCode::NOT_FOUND, "Not Found\n");
    }
    if request.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
    }
    let member = member.clone();
    let max_message = max_message_bytes(&member);
    // grpc-gateway passes the `Authorization` header on as the call's
    // `authorization` metadata, where etcd looks for a token.
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    let body = request.into_body();

    let kv = || crate::KvService {
        member: member.clone(),
    };
    let lease = || crate::lease::LeaseService {
        member: member.clone(),
    };
    let cluster = || crate::ClusterService {
        member: member.clone(),
    };
    let maintenance = || crate::MaintenanceService {
        member: member.clone(),
    };
    let lock = || crate::lock::LockService {
        member: member.clone(),
    };
    let election = || crate::election::ElectionService {
        member: member.clone(),
    };
    let auth = || crate::auth::AuthService {
        member: member.clone(),
    };
    macro_rules! unary {
        ($service:expr, $method:ident) => {
            unary(body, max_message, |request| async move {
                $service
                    .$method(authorized(authorization.as_ref(), request))
                    .await
            })
            .await
        };
    }
    match path.as_str() {
        "/v3/kv/range" => unary!(kv(), range),
        "/v3/kv/put" => unary!(kv(), put),
        "/v3/kv/deleterange" => unary!(kv(), delete_range),
        "/v3/kv/txn" => unary!(kv(), txn),
        "/v3/kv/compaction" => unary!(kv(), compact),
        "/v3/watch" => {
            let service = crate::watch::WatchService {
                member: member.clone(),
            };
            // etcd keeps a watch stream's watchers after the client finished
            // sending requests; they last until the client goes away.
            bidirectional(
                body,
                max_message,
                KeepRequestsOpen::Yes,
                |requests| async move {
                    service
                        .watch(authorized(authorization.as_ref(), requests))
                        .await
                },
            )
            .await
        }
        "/v3/lease/grant" => unary!(lease(), lease_grant),
        "/v3/lease/revoke" | "/v3/kv/lease/revoke" => unary!(lease(), lease_revoke),
        "/v3/lease/keepalive" => {
            let service = lease();
            bidirectional(
                body,
                max_message,
                KeepRequestsOpen::No,
                |requests| async move {
                    service
                        .lease_keep_alive(authorized(authorization.as_ref(), requests))
                        .await
                },
            )
            .await
        }
        "/v3/lease/timetolive" | "/v3/kv/lease/timetolive" => {
            unary!(lease(), lease_time_to_live)
        }
        "/v3/lease/leases" | "/v3/kv/lease/leases" => unary!(lease(), lease_leases),
        "/v3/cluster/member/add" => unary!(cluster(), member_add),
        "/v3/cluster/member/remove" => unary!(cluster(), member_remove),
        "/v3/cluster/member/update" => unary!(cluster(), member_update),
        "/v3/cluster/member/list" => unary!(cluster(), member_list),
        "/v3/cluster/member/promote" => unary!(cluster(), member_promote),
        "/v3/maintenance/alarm" => unary!(maintenance(), alarm),
        "/v3/maintenance/status" => unary!(maintenance(), status),
        "/v3/maintenance/defragment" => unary!(maintenance(), defragment),
        // etcd 3.4 maps both Hash and HashKV to this path; Hash wins.
        "/v3/maintenance/hash" => unary!(maintenance(), hash),
        "/v3/maintenance/transfer-leadership" => unary!(maintenance(), move_leader),
        "/v3/maintenance/snapshot" => {
            let service = maintenance();
            server_streaming(body, max_message, |request| async move {
                service
                    .snapshot(authorized(authorization.as_ref(), request))
                    .await
            })
            .await
        }
        "/v3/lock/lock" => unary!(lock(), lock),
        "/v3/lock/unlock" => unary!(lock(), unlock),
        "/v3/election/campaign" => unary!(election(), campaign),
        "/v3/election/proclaim" => unary!(election(), proclaim),
        "/v3/election/leader" => unary!(election(), leader),
        "/v3/election/resign" => unary!(election(), resign),
        "/v3/election/observe" => {
            let service = election();
            server_streaming(body, max_message, |request| async move {
                service
                    .observe(authorized(authorization.as_ref(), request))
                    .await
            })
            .await
        }
        "/v3/auth/enable" => unary!(auth(), auth_enable),
        "/v3/auth/disable" => unary!(auth(), auth_disable),
        "/v3/auth/status" => unary!(auth(), auth_status),
        "/v3/auth/authenticate" => unary!(auth(), authenticate),
        "/v3/auth/user/add" => unary!(auth(), user_add),
        "/v3/auth/user/get" => unary!(auth(), user_get),
        "/v3/auth/user/list" => unary!(auth(), user_list),
        "/v3/auth/user/delete" => unary!(auth(), user_delete),
        "/v3/auth/user/changepw" => unary!(auth(), user_change_password),
        "/v3/auth/user/grant" => unary!(auth(), user_grant_role),
        "/v3/auth/user/revoke" => unary!(auth(), user_revoke_role),
        "/v3/auth/role/add" => unary!(auth(), role_add),
        "/v3/auth/role/get" => unary!(auth(), role_get),
        "/v3/auth/role/list" => unary!(auth(), role_list),
        "/v3/auth/role/delete" => unary!(auth(), role_delete),
        "/v3/auth/role/grant" => unary!(auth(), role_grant_permission),
        "/v3/auth/role/revoke" => unary!(auth(), role_revoke_permission),
        _ => unreachable!("every path of ROUTES has a handler"),
    }
}

/// A call carrying the gateway request's `Authorization` header as its
/// `authorization` metadata, as grpc-gateway forwards it.
fn authorized<T>(authorization: Option<&HeaderValue>, message: T) -> tonic::Request<T> {
    let mut call = tonic::Request::new(message);
    if let Some(value) = authorization
        .and_then(|value| tonic::metadata::MetadataValue::try_from(value.as_bytes()).ok())
    {
        call.metadata_mut().insert("authorization", value);
    }
    call
}

/// The gRPC server's limit on one decoded request, which etcd's gateway
/// inherits by forwarding to it.
fn max_message_bytes(member: &Member) -> usize {
    usize::try_from(member.max_request_bytes())
        .unwrap_or(usize::MAX)
        .saturating_add(crate::GRPC_OVERHEAD_BYTES)
}

/// grpc-gateway (v1, as in etcd 3.4) `HTTPStatusFromCode`.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn quote(text: &str) -> String {
    super::json::go_html_safe(&serde_json::to_string(text).expect("a string always serialises"))
}

/// grpc-gateway's error body for a failed unary call.
pub(crate) fn error_response(status: &Status) -> Response<Body> {
    let message = quote(status.message());
    json_response(
        http_status(status.code()),
        format!(
            r#"{{"error":{message},"message":{message},"code":{}}}"#,
            status.code() as i32
        ),
    )
}

/// grpc-gateway's line for an error in the middle of a response stream.
fn stream_error_line(status: &Status) -> String {
    let http = http_status(status.code());
    format!(
        "{{\"error\":{{\"grpc_code\":{},\"http_code\":{},\"message\":{},\"http_status\":{}}}}}\n",
        status.code() as i32,
        http.as_u16(),
        quote(status.message()),
        quote(http.canonical_reason().unwrap_or_default()),
    )
}

fn ok_response(body: impl Into<Bytes>) -> Response<Body> {
    let mut response = json_response(StatusCode::OK, body);
    response.headers_mut().insert(
        "grpc-metadata-content-type",
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// Go's `encoding/json` texts for the syntax errors a client most often makes.
fn syntax_error(error: &serde_json::Error, input: &[u8]) -> String {
    if error.is_eof() {
        return "unexpected EOF".to_string();
    }
    let line_start: usize = input
        .split(|byte| *byte == b'\n')
        .take(error.line().saturating_sub(1))
        .map(|line| line.len() + 1)
        .sum();
    let offset = (line_start + error.column()).saturating_sub(1);
    match input.get(offset) {
        Some(byte) if byte.is_ascii_graphic() => format!(
            "invalid character '{}' looking for beginning of value",
            char::from(*byte)
        ),
        _ => error.to_string(),
    }
}

/// Decodes the JSON request of a unary call and holds it to the gRPC limit.
fn decode_request<M>(body: &[u8], max_message: usize) -> Result<M, Status>
where
    M: JsonMessage + prost::Message,
{
    // Like grpc-gateway, read one JSON value; an empty body is the empty message.
    let value = match serde_json::Deserializer::from_slice(body)
        .into_iter::<Value>()
        .next()
    {
        None => Value::Null,
        Some(Ok(value)) => value,
        Some(Err(error)) => return Err(Status::invalid_argument(syntax_error(&error, body))),
    };
    let request: M = from_value(&value).map_err(Status::invalid_argument)?;
    let size = request.encoded_len();
    if size > max_message {
        return Err(Status::resource_exhausted(format!(
            "grpc: received message larger than max ({size} vs. {max_message})"
        )));
    }
    Ok(request)
}

async fn read_body(body: Incoming, max_message: usize) -> Result<Bytes, Status> {
    let limit = max_message.saturating_mul(JSON_OVERHEAD_FACTOR);
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(Status::resource_exhausted(format!(
                "grpc: received message larger than max (more than {limit} bytes of JSON vs. {max_message})"
            )))
        }
        Err(error) => Err(Status::unknown(format!("reading the request: {error}"))),
    }
}

async fn unary<Req, Resp, Fut>(
    body: Incoming,
    max_message: usize,
    call: impl FnOnce(Req) -> Fut,
) -> Response<Body>
where
    Req: JsonMessage + prost::Message,
    Resp: JsonMessage,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let body = match read_body(body, max_message).await {
        Ok(body) => body,
        Err(status) => return error_response(&status),
    };
    let request = match decode_request(&body, max_message) {
        Ok(request) => request,
        Err(status) => return error_response(&status),
    };
    match call(request).await {
        Ok(response) => ok_response(to_json(response.get_ref())),
        Err(status) => error_response(&status),
    }
}

/// The JSON values of a streamed request body, parsed as they arrive.
struct RequestReader {
    body: Incoming,
    buffer: BytesMut,
    finished: bool,
    max_message: usize,
}

impl RequestReader {
    /// The next complete JSON value, `None` at the end of the body. Only
    /// awaits the body, so it may be cancelled between frames.
    async fn next(&mut self) -> Result<Option<Value>, String> {
        loop {
            let start = self
                .buffer
                .iter()
                .position(|byte| !byte.is_ascii_whitespace())
                .unwrap_or(self.buffer.len());
            let _ = self.buffer.split_to(start);
            if !self.buffer.is_empty() {
                let mut values =
                    serde_json::Deserializer::from_slice(&self.buffer).into_iter::<Value>();
                match values.next() {
                    Some(Ok(value)) => {
                        let used = values.byte_offset();
                        let _ = self.buffer.split_to(used);
                        return Ok(Some(value));
                    }
                    Some(Err(error)) if error.is_eof() && !self.finished => {}
                    Some(Err(error)) => return Err(syntax_error(&error, &self.buffer)),
                    None => {}
                }
            }
            if self.finished {
                return Ok(None);
            }
            if self.buffer.len() > self.max_message.saturating_mul(JSON_OVERHEAD_FACTOR) {
                return Err("request message too large".to_string());
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.put(data);
                    }
                }
                Some(Err(error)) => return Err(error.to_string()),
                None => self.finished = true,
            }
        }
    }
}

/// One gRPC length-prefixed message, as the service's request stream carries it.
fn grpc_frame<M: prost::Message>(message: &M) -> Frame<Bytes> {
    let encoded = message.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + encoded.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(encoded.len()).unwrap_or(u32::MAX));
    frame.put_slice(&encoded);
    Frame::data(frame.freeze())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeepRequestsOpen {
    /// The call ends when the client's requests do (lease keep-alive).
    No,
    /// The call lasts until the client goes away (watch).
    Yes,
}

type GrpcRequestBody = StreamBody<ReceiverStream<Result<Frame<Bytes>, std::convert::Infallible>>>;

/// A bidirectional streaming call: JSON values from the request body become
/// the gRPC request stream, the responses become `{"result": ...}` lines.
async fn bidirectional<Req, Resp, S, Fut>(
    body: Incoming,
    max_message: usize,
    keep_open: KeepRequestsOpen,
    call: impl FnOnce(Streaming<Req>) -> Fut,
) -> Response<Body>
where
    Req: JsonMessage + prost::Message + Default + Send + 'static,
    Resp: JsonMessage + Send + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + Unpin + 'static,
    Fut: Future<Output = Result<tonic::Response<S>, Status>>,
{
    let mut reader = RequestReader {
        body,
        buffer: BytesMut::new(),
        finished: false,
        max_message,
    };
    // grpc-gateway decodes the first request before answering: an error in
    // it fails the whole call (code Unknown, as it is no gRPC status).
    let first = match reader.next().await {
        Ok(first) => first,
        Err(message) => return error_response(&Status::unknown(message)),
    };
    let (requests, request_stream) = mpsc::channel(16);
    if let Some(value) = first {
        match from_value::<Req>(&value) {
            Ok(request) => {
                let _ = requests.send(Ok(grpc_frame(&request))).await;
            }
            Err(message) => return error_response(&Status::unknown(message)),
        }
    }
    let decoder = tonic_prost::ProstDecoder::<Req>::default();
    let request_body: GrpcRequestBody = StreamBody::new(ReceiverStream::new(request_stream));
    let streaming = Streaming::new_request(decoder, request_body, None, Some(max_message));
    let responses = match call(streaming).await {
        Ok(responses) => responses.into_inner(),
        Err(status) => return error_response(&status),
    };
    let encode: EncodeRequest = Box::new(|value| {
        from_value::<Req>(value)
            .ok()
            .map(|request| grpc_frame(&request))
    });
    stream_response(
        responses,
        Some(RequestSide {
            reader,
            requests,
            keep_open,
            encode,
        }),
    )
}

/// A server streaming call: one JSON request, a stream of result lines.
async fn server_streaming<Req, Resp, S, Fut>(
    body: Incoming,
    max_message: usize,
    call: impl FnOnce(Req) -> Fut,
) -> Response<Body>
where
    Req: JsonMessage + prost::Message,
    Resp: JsonMessage + Send + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + Unpin + 'static,
    Fut: Future<Output = Result<tonic::Response<S>, Status>>,
{
    let body = match read_body(body, max_message).await {
        Ok(body) => body,
        Err(status) => return error_response(&status),
    };
    let request = match decode_request(&body, max_message) {
        Ok(request) => request,
        Err(status) => return error_response(&status),
    };
    match call(request).await {
        Ok(responses) => stream_response(responses.into_inner(), None),
        Err(status) => error_response(&status),
    }
}

/// Turns one JSON request into its gRPC frame (`None` if it does not decode).
type EncodeRequest = Box<dyn Fn(&Value) -> Option<Frame<Bytes>> + Send>;

/// The client-to-server half of a bidirectional call.
struct RequestSide {
    reader: RequestReader,
    requests: mpsc::Sender<Result<Frame<Bytes>, std::convert::Infallible>>,
    keep_open: KeepRequestsOpen,
    encode: EncodeRequest,
}

/// Answers 200 at once and then writes one line per response, feeding the
/// request side (if any) from the body as it arrives, until the call ends or
/// the client goes away.
fn stream_response<Resp, S>(mut responses: S, request_side: Option<RequestSide>) -> Response<Body>
where
    Resp: JsonMessage + Send + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + Unpin + 'static,
{
    let (lines, body) = mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(64);
    tokio::spawn(async move {
        let (mut reader, mut requests, keep_open, encode) = match request_side {
            Some(side) => (
                Some(side.reader),
                Some(side.requests),
                side.keep_open,
                Some(side.encode),
            ),
            None => (None, None, KeepRequestsOpen::No, None),
        };
        loop {
            tokio::select! {
                request = async { reader.as_mut().expect("guarded").next().await }, if reader.is_some() => {
                    let frame = match (request, encode.as_ref()) {
                        (Ok(Some(value)), Some(encode)) => encode(&value),
                        _ => None,
                    };
                    match (frame, requests.as_ref()) {
                        (Some(frame), Some(sender)) => {
                            if sender.send(Ok(frame)).await.is_err() {
                                requests = None;
                            }
                        }
                        // The client is done sending (or sent garbage, which
                        // grpc-gateway also treats as the end of its requests).
                        _ => {
                            reader = None;
                            if keep_open == KeepRequestsOpen::No {
                                requests = None;
                            }
                        }
                    }
                }
                response = responses.next() => {
                    let line = match response {
                        Some(Ok(response)) => format!("{{\"result\":{}}}\n", to_json(&response)),
                        Some(Err(status)) => stream_error_line(&status),
                        None => break,
                    };
                    let failed = line.starts_with("{\"error\"");
                    if lines.send(Ok(Frame::data(Bytes::from(line)))).await.is_err() || failed {
                        break;
                    }
                }
                _ = lines.closed() => break,
            }
        }
    });
    let mut response = ok_response(Bytes::new());
    *response.body_mut() = StreamBody::new(ReceiverStream::new(body)).boxed_unsync();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
