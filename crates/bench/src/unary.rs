//! The KV workloads' connections: unary gRPC calls made on the `h2` crate
//! directly, without tonic's `Channel`.
//!
//! The load generator shares the machine's CPUs with the members it measures,
//! so what it spends per request is taken from them. A tonic `Channel` hands
//! each call to a buffer task, which hands it to hyper's client, which hands it
//! to the connection task; here a client task opens the HTTP/2 stream itself
//! and the connection task is the only other one involved. Measured per put
//! (BENCHMARKS.md), this is what the client spends on the etcd and shoal rows
//! alike. Watch and lease workloads, which hold long-lived streams, keep tonic.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::{BufMut as _, Bytes, BytesMut};
use proto::etcdserverpb::{
    PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use tonic::{Code, Status};

const PUT: &str = "/etcdserverpb.KV/Put";
const RANGE: &str = "/etcdserverpb.KV/Range";
const TXN: &str = "/etcdserverpb.KV/Txn";

/// Length of a gRPC message's prefix: a compression flag and a 4-byte length.
const MESSAGE_PREFIX: usize = 5;
/// Receive windows large enough that a client never waits for a window
/// update on a range over every key (tens of megabytes) of a shared connection.
const STREAM_WINDOW: u32 = 16 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;

/// How long after a failed attempt to reopen a lost connection calls fail at
/// once instead of dialing again (grpc-go backs off too).
const REDIAL_BACKOFF: Duration = Duration::from_millis(200);

/// One HTTP/2 connection; clones share it, one stream per call. A lost
/// connection (the server restarted, or sent GOAWAY) is reopened by the next
/// call, as tonic's `Channel` and grpc-go do; calls in between fail.
#[derive(Clone)]
pub struct KvConnection {
    link: Arc<Link>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// The auth token sent with every call (`--user`), as etcd's clients
    /// send it: in the `token` metadata.
    token: Option<http::HeaderValue>,
}

struct Link {
    url: String,
    address: String,
    dial_timeout: Duration,
    tls: crate::connect::Tls,
    state: tokio::sync::Mutex<LinkState>,
}

struct LinkState {
    /// The open connection, if there is one.
    send: Option<h2::client::SendRequest<Bytes>>,
    /// Counts the connections opened, so a failure is blamed on the right one.
    generation: u64,
    /// No new attempt before this, after one failed.
    next_dial: Option<tokio::time::Instant>,
}

/// Opens an HTTP/2 connection to `url` (`http://host:port`) and starts the
/// task that drives it.
/// With `tls`, the URL is `https://` and the connection TLS.
pub async fn dial(
    url: &str,
    dial_timeout: Duration,
    tls: &crate::connect::Tls,
) -> anyhow::Result<KvConnection> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("invalid endpoint {url}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    anyhow::ensure!(
        uri.scheme_str() == Some(scheme),
        "invalid endpoint {url}: only {scheme}:// endpoints are supported{}",
        if tls.is_some() {
            " with --cacert"
        } else {
            " without --cacert"
        }
    );
    let authority = uri
        .authority()
        .cloned()
        .with_context(|| format!("invalid endpoint {url}: no host"))?;
    let address = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let send = open(url, &address, dial_timeout, tls).await?;
    Ok(KvConnection {
        link: Arc::new(Link {
            url: url.to_string(),
            address,
            dial_timeout,
            tls: tls.clone(),
            state: tokio::sync::Mutex::new(LinkState {
                send: Some(send),
                generation: 0,
                next_dial: None,
            }),
        }),
        scheme: uri.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP),
        authority,
        token: None,
    })
}

/// Connects, does the HTTP/2 handshake and starts the connection's task.
async fn open(
    url: &str,
    address: &str,
    dial_timeout: Duration,
    tls: &crate::connect::Tls,
) -> anyhow::Result<h2::client::SendRequest<Bytes>> {
    if let Some(config) = tls {
        let uri: http::Uri = url
            .parse()
            .with_context(|| format!("invalid endpoint {url}"))?;
        let stream = client::tls::connect(&uri, Arc::clone(config), dial_timeout)
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
        return handshake(url, stream).await;
    }
    let socket = tokio::time::timeout(dial_timeout, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| anyhow::anyhow!("cannot connect to {url}: timed out"))?
        .with_context(|| format!("cannot connect to {url}"))?;
    socket.set_nodelay(true)?;
    handshake(url, socket).await
}

/// The HTTP/2 handshake on an open connection, and the connection's task.
async fn handshake<T>(url: &str, io: T) -> anyhow::Result<h2::client::SendRequest<Bytes>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(256 * 1024)
        .handshake::<_, Bytes>(io)
        .await
        .with_context(|| format!("cannot connect to {url}: HTTP/2 handshake"))?;
    // The connection's end shows in the calls that fail with it.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(send)
}

impl KvConnection {
    /// The same connection, calling with an auth token.
    pub fn with_token(mut self, token: http::HeaderValue) -> KvConnection {
        self.token = Some(token);
        self
    }

    /// The open connection and its generation, reopening a lost one.
    async fn sender(&self) -> Result<(u64, h2::client::SendRequest<Bytes>), Status> {
        let link = &self.link;
        let mut state = link.state.lock().await;
        if let Some(send) = &state.send {
            return Ok((state.generation, send.clone()));
        }
        if let Some(next_dial) = state.next_dial
            && tokio::time::Instant::now() < next_dial
        {
            return Err(Status::unavailable(format!(
                "connection to {} lost; reconnecting",
                link.url
            )));
        }
        match open(&link.url, &link.address, link.dial_timeout, &link.tls).await {
            Ok(send) => {
                state.generation += 1;
                state.send = Some(send.clone());
                state.next_dial = None;
                Ok((state.generation, send))
            }
            Err(error) => {
                state.next_dial = Some(tokio::time::Instant::now() + REDIAL_BACKOFF);
                Err(Status::unavailable(format!("{error:#}")))
            }
        }
    }

    /// Forgets connection `generation` after it failed, so the next call
    /// reopens it.
    async fn lost(&self, generation: u64) {
        let mut state = self.link.state.lock().await;
        if state.generation == generation {
            state.send = None;
        }
    }

    pub async fn put(&mut self, request: PutRequest) -> Result<PutResponse, Status> {
        self.call(PUT, &request).await
    }

    pub async fn range(&mut self, request: RangeRequest) -> Result<RangeResponse, Status> {
        self.call(RANGE, &request).await
    }

    pub async fn txn(&mut self, request: TxnRequest) -> Result<TxnResponse, Status> {
        self.call(TXN, &request).await
    }

    /// One unary call: the request as a single data frame, then the response
    /// message and the trailers that carry its status.
    async fn call<Q, R>(&mut self, path: &'static str, request: &Q) -> Result<R, Status>
    where
        Q: prost::Message,
        R: prost::Message + Default,
    {
        let body = encode(request)?;
        let uri = http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|error| Status::internal(format!("request URI: {error}")))?;
        let mut http_request = http::Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .body(())
            .map_err(|error| Status::internal(format!("request headers: {error}")))?;
        if let Some(token) = &self.token {
            http_request.headers_mut().insert("token", token.clone());
        }
        let (generation, send) = self.sender().await?;
        let outcome = async {
            // Fails at once when the connection has closed (h2 queues a
            // stream over the server's concurrency limit itself).
            let mut sender = send.ready().await?;
            let (response, mut stream) = sender.send_request(http_request, false)?;
            stream.send_data(body, true)?;
            let response = response.await?;
            Ok::<_, h2::Error>(response)
        }
        .await;
        let response = match outcome {
            Ok(response) => response,
            Err(error) => {
                if error.is_io() || error.is_go_away() || error.reason().is_none() {
                    self.lost(generation).await;
                }
                return Err(transport(error));
            }
        };
        if response.status() != http::StatusCode::OK {
            return Err(Status::unknown(format!(
                "HTTP status {} from the server",
                response.status()
            )));
        }
        // A call that fails at once answers with headers alone ("trailers-only").
        if let Some(status) = Status::from_header_map(response.headers())
            && status.code() != Code::Ok
        {
            return Err(status);
        }
        let mut body = response.into_body();
        let mut message = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(transport)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            message.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.map_err(transport)?;
        match trailers.as_ref().and_then(Status::from_header_map) {
            Some(status) if status.code() == Code::Ok => decode(message.freeze()),
            Some(status) => Err(status),
            None => Err(Status::internal("response ended without a grpc-status")),
        }
    }
}

/// A message with its gRPC prefix (uncompressed).
fn encode<Q: prost::Message>(request: &Q) -> Result<Bytes, Status> {
    let length = request.encoded_len();
    let prefix_length = u32::try_from(length)
        .map_err(|_| Status::invalid_argument(format!("request of {length} bytes")))?;
    let mut body = BytesMut::with_capacity(MESSAGE_PREFIX + length);
    body.put_u8(0);
    body.put_u32(prefix_length);
    request
        .encode(&mut body)
        .map_err(|error| Status::internal(format!("encoding the request: {error}")))?;
    Ok(body.freeze())
}

/// The one message of a unary response body.
fn decode<R: prost::Message + Default>(body: Bytes) -> Result<R, Status> {
    if body.len() < MESSAGE_PREFIX {
        return Err(Status::internal(format!(
            "response body of {} bytes has no message",
            body.len()
        )));
    }
    if body[0] != 0 {
        return Err(Status::internal(
            "compressed response (no compression was asked for)",
        ));
    }
    let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() != MESSAGE_PREFIX + length {
        return Err(Status::internal(format!(
            "response body of {} bytes holds a message of {length}",
            body.len()
        )));
    }
    R::decode(body.slice(MESSAGE_PREFIX..))
        .map_err(|error| Status::internal(format!("decoding the response: {error}")))
}

/// The status grpc-go reports for an HTTP/2 failure: a stream the server
/// cancelled or refused, a stream reset for another reason, or a lost
/// connection.
fn transport(error: h2::Error) -> Status {
    let message = format!("connection: {error}");
    match error.reason() {
        _ if error.is_io() || error.is_go_away() => Status::unavailable(message),
        Some(h2::Reason::CANCEL) => Status::cancelled(message),
        Some(h2::Reason::REFUSED_STREAM) => Status::unavailable(message),
        Some(_) => Status::internal(message),
        None => Status::unavailable(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_with_their_prefix() {
        let request = PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"value"),
            ..Default::default()
        };
        let body = encode(&request).unwrap();
        assert_eq!(body[0], 0);
        assert_eq!(&body[1..5], &(body.len() as u32 - 5).to_be_bytes());
        let decoded: PutRequest = decode(body.clone()).unwrap();
        assert_eq!(decoded, request);
        let short = decode::<PutRequest>(body.slice(..body.len() - 1)).unwrap_err();
        assert!(short.message().contains("holds a message of"), "{short:?}");
        let mut compressed = body.to_vec();
        compressed[0] = 1;
        assert!(decode::<PutRequest>(Bytes::from(compressed)).is_err());
    }
}
