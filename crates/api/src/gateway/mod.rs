//! The HTTP/1.1 side of the client port: etcd's v3 JSON gateway (`/v3/...`),
//! the v2 keys API (`/v2/...`, see [`crate::v2`]), `/health` and `/version`.
//!
//! etcd serves gRPC and HTTP/1.1 on one port; so does shoal. The relay in
//! [`crate::authority`] looks at the first bytes of each connection and hands
//! the ones that are not HTTP/2 to [`HttpApi::serve_connection`]. The gateway
//! translates each JSON request into the gRPC message, calls the same service
//! the gRPC server runs (so validation, errors and behaviour are shared), and
//! writes the answer back as grpc-gateway does (see [`json`]).

pub(crate) mod json;
mod routes;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use store::Member;

use crate::conn::ConnInfo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Every response body the HTTP server sends.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The HTTP/1.1 APIs of one member.
pub struct HttpApi {
    member: Arc<Member>,
    metrics: Arc<metrics::Endpoint>,
}

impl HttpApi {
    pub fn new(member: Arc<Member>, metrics: Arc<metrics::Endpoint>) -> HttpApi {
        HttpApi { member, metrics }
    }

    /// Serves HTTP/1.1 requests on one client connection until it closes.
    pub async fn serve_connection<S>(self: Arc<Self>, connection: S, info: Arc<ConnInfo>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(Arc::clone(&info));
            let api = self.clone();
            async move { Ok::<_, Infallible>(api.handle(request).await) }
        });
        if let Err(error) = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(connection), service)
            .await
        {
            tracing::debug!(%error, "HTTP/1.1 client connection ended");
        }
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let path = request.uri().path().to_string();
        let mut response = if path.starts_with("/v3/") {
            routes::handle(&self.member, request).await
        } else if path.starts_with("/v2/") {
            crate::v2::handle(&self.member, request).await
        } else {
            match path.as_str() {
                "/health" => get_only(&request).unwrap_or_else(|| self.health()),
                "/version" => get_only(&request).unwrap_or_else(version),
                "/metrics" => get_only(&request).unwrap_or_else(|| self.serve_metrics(&request)),
                _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
            }
        };
        // etcd answers every client request with these (its default --cors "*").
        let headers = response.headers_mut();
        headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        headers.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
        );
        headers.insert(
            "access-control-allow-headers",
            HeaderValue::from_static("accept, content-type, authorization"),
        );
        response
    }

    /// etcd's `/health`: healthy while a leader is known and no alarm is raised.
    /// etcd's `/metrics`: the member's, the port's gRPC counts and the
    /// process's, in the format the scrape's `Accept` asks for. It never
    /// fails: values that cannot be read (a member without a leader) are
    /// served as they are.
    fn serve_metrics<B>(&self, request: &Request<B>) -> Response<Body> {
        let accept = request
            .headers()
            .get(header::ACCEPT)
            .and_then(|value| value.to_str().ok());
        let (content_type, body) = self.metrics.render(accept);
        let mut response = full(StatusCode::OK, body);
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }

    fn health(&self) -> Response<Body> {
        let healthy =
            self.member.status().leader_id != 0 && self.member.alarm_descriptions().is_empty();
        let (status, body) = if healthy {
            (StatusCode::OK, r#"{"health":"true"}"#)
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, r#"{"health":"false"}"#)
        };
        let mut response = full(status, body);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

/// `/version`: shoal reports the etcd API version it implements as both the
/// server and the cluster version (see the README's known differences).
fn version() -> Response<Body> {
    json_response(
        StatusCode::OK,
        format!(
            r#"{{"etcdserver":"{0}","etcdcluster":"{0}"}}"#,
            store::ETCD_API_VERSION
        ),
    )
}

/// Go's `http.ServeMux` answer to a method a GET-only handler does not take.
fn get_only<B>(request: &Request<B>) -> Option<Response<Body>> {
    if request.method() == Method::GET || request.method() == Method::HEAD {
        return None;
    }
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET"));
    Some(response)
}

pub(crate) fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed_unsync());
    *response.status_mut() = status;
    response
}

/// A plain-text answer, as Go's `http.Error` writes it.
pub(crate) fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = full(status, body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

pub(crate) fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = full(status, body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A connection whose first bytes were already read (to tell HTTP/1.1 from
/// HTTP/2): reads return those bytes first, then the rest of the stream.
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: impl Into<Bytes>, inner: S) -> Prefixed<S> {
        Prefixed {
            prefix: prefix.into(),
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buffer.remaining());
            buffer.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(context, buffer)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(context, buffer)
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(context)
    }
}
