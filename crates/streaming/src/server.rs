//! The agent's HTTPS server, in kubelet's port role: `/containerLogs`,
//! `/exec` and `/attach` (WebSocket upgrades) for the API server alone. TLS
//! requires a client certificate signed by the cluster CA, and the
//! certificate must name an authorized user (the API server's kubelet
//! client) or group (`system:masters`); anything else is 403. Errors are
//! Kubernetes `Status` objects, which the API server passes on.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use http_body_util::combinators::BoxBody;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::channel::Protocol;
use crate::{
    AttachRequest, ContainerRef, ExecRequest, LogOptions, Process, StreamBackend, StreamError,
    StreamOptions, cri_log, session,
};

type Body = BoxBody<Bytes, Infallible>;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid TLS material: {0}")]
    Tls(String),
}

/// The TLS settings of an agent's server: serve `cert_pem`, and require a
/// client certificate that `client_ca_pem` signed. HTTP/1.1 only: the
/// streams are HTTP/1.1 upgrades.
pub fn agent_tls_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|error| ServeError::Tls(format!("serving certificate: {error}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|error| ServeError::Tls(format!("serving key: {error}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        let ca = ca.map_err(|error| ServeError::Tls(format!("client CA: {error}")))?;
        roots
            .add(ca)
            .map_err(|error| ServeError::Tls(format!("client CA: {error}")))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|error| ServeError::Tls(format!("client verifier: {error}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ServeError::Tls(error.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|error| ServeError::Tls(format!("serving certificate and key: {error}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The subject of a client certificate: its common name and organizations.
fn subject_of(certificate: &CertificateDer<'_>) -> Option<(String, Vec<String>)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let subject = parsed.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|name| name.as_str().ok())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|organization| organization.as_str().ok().map(str::to_string))
        .collect();
    Some((name, groups))
}

/// An agent's streaming server: the backend it serves, and who may use it.
pub struct AgentServer {
    pub backend: Arc<dyn StreamBackend>,
    /// Certificate common names allowed in (the API server's kubelet client).
    pub authorized_users: Vec<String>,
    /// Certificate organizations allowed in (`system:masters`).
    pub authorized_groups: Vec<String>,
}

impl AgentServer {
    /// Serves on `listener` until `shutdown` resolves; then stops taking
    /// connections and ends the open ones.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => accepted,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let Ok((socket, peer)) = accepted else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let _ = socket.set_nodelay(true);
            let acceptor = acceptor.clone();
            let server = Arc::clone(&self);
            connections.spawn(async move {
                let handshake = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    acceptor.accept(socket),
                );
                let stream = match handshake.await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "agent TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let subject = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(subject_of);
                let service = hyper::service::service_fn(move |request| {
                    let server = Arc::clone(&server);
                    let subject = subject.clone();
                    async move { Ok::<_, Infallible>(server.handle(subject, request).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                if let Err(error) = connection.await {
                    tracing::debug!(%peer, %error, "agent connection ended with an error");
                }
            });
        }
        connections.shutdown().await;
    }

    fn authorized(&self, subject: &Option<(String, Vec<String>)>) -> Result<(), String> {
        let Some((user, groups)) = subject else {
            return Err("Unauthorized".to_string());
        };
        if self.authorized_users.contains(user)
            || groups
                .iter()
                .any(|group| self.authorized_groups.contains(group))
        {
            return Ok(());
        }
        Err(format!(
            "Forbidden (user={user}, verb=get, resource=nodes, subresource=proxy)"
        ))
    }

    async fn handle(
        &self,
        subject: Option<(String, Vec<String>)>,
        request: hyper::Request<Incoming>,
    ) -> hyper::Response<Body> {
        if let Err(message) = self.authorized(&subject) {
            return status_response(403, "Forbidden", &message);
        }
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or("").to_string();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let method = request.method().clone();
        let container = |namespace: &str, pod: &str, container: &str| ContainerRef {
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            container: container.to_string(),
        };
        let is_get = method == http::Method::GET;
        let is_get_or_post = is_get || method == http::Method::POST;
        let outcome = match segments.as_slice() {
            ["healthz"] if is_get => return text_response(200, "ok"),
            ["metrics"] if is_get => {
                let accept = request
                    .headers()
                    .get(http::header::ACCEPT)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_string);
                match self.backend.metrics(accept).await {
                    Ok((content_type, body)) => {
                        return hyper::Response::builder()
                            .status(200)
                            .header(http::header::CONTENT_TYPE, content_type)
                            .body(full(body))
                            .unwrap_or_else(|_| hyper::Response::new(empty()));
                    }
                    Err(error) => Err(error),
                }
            }
            ["containerLogs", namespace, pod, name] if is_get => {
                self.logs(container(namespace, pod, name), &query).await
            }
            ["exec", namespace, pod, name] if is_get_or_post => {
                let target = container(namespace, pod, name);
                self.upgrade(request, &query, target, true).await
            }
            ["attach", namespace, pod, name] if is_get_or_post => {
                let target = container(namespace, pod, name);
                self.upgrade(request, &query, target, false).await
            }
            ["containerLogs" | "exec" | "attach", ..] => Err(StreamError::NotFound(format!(
                "{method} {path}: the path names no container"
            ))),
            _ => Err(StreamError::NotFound("404 page not found".to_string())),
        };
        outcome.unwrap_or_else(|error| error_response(&error))
    }

    async fn logs(
        &self,
        container: ContainerRef,
        query: &str,
    ) -> Result<hyper::Response<Body>, StreamError> {
        let options = LogOptions::from_query(query, SystemTime::now())?;
        let files = self.backend.log_files(&container).await?;
        let path = cri_log::choose_file(&files, &options, &container)?;
        let running = if options.previous {
            None
        } else {
            files.running
        };
        let mut receiver = cri_log::stream_file(&path, &options, running).await?;
        let chunks = futures::stream::poll_fn(move |context| receiver.poll_recv(context));
        let body = http_body_util::StreamBody::new(futures::StreamExt::map(chunks, |chunk| {
            Ok::<_, Infallible>(Frame::data(chunk))
        }));
        Ok(hyper::Response::builder()
            .status(200)
            .header(http::header::CONTENT_TYPE, "text/plain")
            .body(body.boxed())
            .unwrap_or_else(|_| hyper::Response::new(empty())))
    }

    /// exec and attach: check the request, start the process, then accept
    /// the WebSocket upgrade and run the session on the upgraded connection.
    async fn upgrade(
        &self,
        mut request: hyper::Request<Incoming>,
        query: &str,
        container: ContainerRef,
        is_exec: bool,
    ) -> Result<hyper::Response<Body>, StreamError> {
        let headers = request.headers();
        let is_websocket = headers
            .get(http::header::UPGRADE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
        let key = headers
            .get(http::header::SEC_WEBSOCKET_KEY)
            .map(|key| key.as_bytes().to_vec());
        let (true, Some(key)) = (is_websocket, key) else {
            return Err(StreamError::BadRequest(
                "Upgrade request required: this node serves streams over WebSockets (v5.channel.k8s.io, v4.channel.k8s.io), not SPDY".to_string(),
            ));
        };
        let offered: Vec<&str> = headers
            .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        let protocol = if offered.is_empty() {
            None
        } else {
            Some(Protocol::negotiate(offered.iter().copied()).ok_or_else(|| {
                StreamError::BadRequest(format!(
                    "requested protocol(s) are not supported: {offered:?}; supports {:?}",
                    Protocol::supported()
                ))
            })?)
        };
        let (command, mut options) = stream_query(query)?;
        if !(options.stdin || options.stdout || options.stderr) {
            return Err(StreamError::BadRequest(
                "you must specify at least 1 of stdin, stdout, stderr".to_string(),
            ));
        }
        // With a terminal, stderr is stdout (kubelet drops the stream).
        if options.tty {
            options.stderr = false;
        }
        let process: Process = if is_exec {
            if command.is_empty() {
                return Err(StreamError::BadRequest(
                    "you must specify at least one command for the container".to_string(),
                ));
            }
            self.backend
                .exec(ExecRequest {
                    container,
                    command,
                    options,
                })
                .await?
        } else {
            self.backend
                .attach(AttachRequest { container, options })
                .await?
        };
        let on_upgrade = hyper::upgrade::on(&mut request);
        let session_protocol = protocol.unwrap_or(Protocol::V1);
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    tracing::debug!(%error, "the stream's upgrade failed");
                    return;
                }
            };
            let socket =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            session::run(socket, session_protocol, options, process).await;
        });
        let mut response = hyper::Response::builder()
            .status(101)
            .header(http::header::CONNECTION, "Upgrade")
            .header(http::header::UPGRADE, "websocket")
            .header(http::header::SEC_WEBSOCKET_ACCEPT, derive_accept_key(&key));
        if let Some(protocol) = protocol {
            response = response.header(http::header::SEC_WEBSOCKET_PROTOCOL, protocol.name());
        }
        Ok(response
            .body(empty())
            .unwrap_or_else(|_| hyper::Response::new(empty())))
    }
}

/// The command and stream options of an exec or attach query.
pub fn stream_query(query: &str) -> Result<(Vec<String>, StreamOptions), StreamError> {
    let mut command = Vec::new();
    let mut options = StreamOptions::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let flag = || match value.as_ref() {
            "1" | "true" | "True" | "TRUE" | "t" | "T" => Ok(true),
            "0" | "false" | "False" | "FALSE" | "f" | "F" | "" => Ok(false),
            other => Err(StreamError::BadRequest(format!(
                "invalid value for {key}: {other:?} is not a boolean"
            ))),
        };
        match key.as_ref() {
            "command" => command.push(value.to_string()),
            "stdin" | "input" => options.stdin = flag()?,
            "stdout" | "output" => options.stdout = flag()?,
            "stderr" | "error" => options.stderr = flag()?,
            "tty" => options.tty = flag()?,
            _ => {}
        }
    }
    Ok((command, options))
}

fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn text_response(code: u16, text: &str) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(text.to_string()))
        .unwrap_or_else(|_| hyper::Response::new(empty()))
}

fn status_response(code: u16, reason: &str, message: &str) -> hyper::Response<Body> {
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    hyper::Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(full(serde_json::to_vec(&status).unwrap_or_default()))
        .unwrap_or_else(|_| hyper::Response::new(empty()))
}

fn error_response(error: &StreamError) -> hyper::Response<Body> {
    let (code, reason) = error.code_and_reason();
    status_response(code, reason, &error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_queries_take_repeated_commands_and_both_boolean_spellings() {
        let (command, options) =
            stream_query("command=sh&command=-c&command=echo+hi&stdin=1&stdout=true&tty=false")
                .expect("a valid query");
        assert_eq!(command, ["sh", "-c", "echo hi"]);
        assert_eq!(
            options,
            StreamOptions {
                stdin: true,
                stdout: true,
                stderr: false,
                tty: false
            }
        );
        assert!(stream_query("stdout=yes").is_err());
    }
}
