//! `pods/log`, `pods/exec` and `pods/attach`: served by the pod's node agent
//! (kubelet's role), which the API server reaches as kube-apiserver reaches
//! kubelets — at the Node's address (`status.addresses`, InternalIP first)
//! and port (`status.daemonEndpoints.kubeletEndpoint.Port`), over TLS
//! verified against the cluster CA, presenting its kubelet client
//! certificate. Logs are streamed back; exec and attach are WebSocket
//! upgrades spliced byte for byte once the agent has accepted them (the
//! API server never reads their frames), as upstream's UpgradeAwareHandler
//! does.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
use serde_json::Value;

use crate::Api;
use crate::handlers::Request;
use crate::server::{Body, ServeError};
use crate::status::ApiError;

/// kubelet's port, when a Node does not say.
const DEFAULT_AGENT_PORT: u64 = 10250;
/// How long connecting to an agent (TCP and TLS) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS settings the API server calls node agents with: agents' serving
/// certificates verified against `ca_pem`, and `cert_pem` presented.
pub fn agent_client_tls(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ClientConfig>, ServeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let ca = ca.map_err(|error| ServeError::Tls(format!("cluster CA: {error}")))?;
        roots
            .add(ca)
            .map_err(|error| ServeError::Tls(format!("cluster CA: {error}")))?;
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|error| ServeError::Tls(format!("kubelet client certificate: {error}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|error| ServeError::Tls(format!("kubelet client key: {error}")))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ServeError::Tls(error.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|error| ServeError::Tls(format!("kubelet client certificate: {error}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Which streaming endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Log,
    Exec,
    Attach,
}

impl Endpoint {
    fn agent_path(self) -> &'static str {
        match self {
            Endpoint::Log => "containerLogs",
            Endpoint::Exec => "exec",
            Endpoint::Attach => "attach",
        }
    }
}

fn names_of(pod: &Value, field: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .map(|containers| {
            containers
                .iter()
                .filter_map(|container| container.get("name").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The container a request is for: the one it names, which must be the
/// pod's, or the pod's only container (kube-apiserver's texts).
fn choose_container(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let containers = names_of(pod, "containers");
    let init_containers = names_of(pod, "initContainers");
    let ephemeral_containers = names_of(pod, "ephemeralContainers");
    match asked.filter(|asked| !asked.is_empty()) {
        Some(asked) => {
            let known = containers
                .iter()
                .chain(&init_containers)
                .chain(&ephemeral_containers)
                .any(|container| container == asked);
            if known {
                Ok(asked.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {asked} is not valid for pod {name}"
                )))
            }
        }
        None => match containers.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}"
            ))),
            // Every container, init and ephemeral ones too, in the order
            // kube-apiserver visits them.
            _ => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                init_containers
                    .iter()
                    .chain(&containers)
                    .chain(&ephemeral_containers)
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            ))),
        },
    }
}

/// A Node's agent address: its first InternalIP (then ExternalIP, then any
/// address), and its kubelet endpoint's port.
fn agent_address(node: &Value) -> Option<(String, u16)> {
    let addresses = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)?;
    let of_type = |wanted: &str| {
        addresses
            .iter()
            .find(|address| address.get("type").and_then(Value::as_str) == Some(wanted))
            .and_then(|address| address.get("address").and_then(Value::as_str))
    };
    let host = of_type("InternalIP")
        .or_else(|| of_type("ExternalIP"))
        .or_else(|| {
            addresses
                .iter()
                .find_map(|address| address.get("address").and_then(Value::as_str))
        })?
        .to_string();
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .filter(|port| *port > 0)
        .unwrap_or(DEFAULT_AGENT_PORT);
    Some((host, u16::try_from(port).ok()?))
}

/// The request's query without `container` (the agent's path names it).
fn agent_query(query: &str) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key != "container" {
            out.append_pair(&key, &value);
        }
    }
    out.finish()
}

/// A response body that ends, rather than fails, when the agent's does: the
/// client sees the log end where the agent's stream broke.
struct EndOnError(Incoming);

impl hyper::body::Body for EndOnError {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match Pin::new(&mut self.get_mut().0).poll_frame(context) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(_)) | None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Serves `pods/log`, `pods/exec` or `pods/attach` for pod `name`.
pub(crate) async fn serve(
    api: &Api,
    request: &Request<'_>,
    name: &str,
    subresource: &str,
) -> Result<hyper::Response<Body>, ApiError> {
    let endpoint = match (subresource, &request.parts.method) {
        ("log", &http::Method::GET) => Endpoint::Log,
        ("exec", &http::Method::GET | &http::Method::POST) => Endpoint::Exec,
        ("attach", &http::Method::GET | &http::Method::POST) => Endpoint::Attach,
        _ => {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({} {})",
                request.parts.method,
                request.parts.uri.path()
            )));
        }
    };
    let pod = crate::handlers::get(api, request, name).await?;
    let raw_query = request.parts.uri.query().unwrap_or("");
    let asked = form_urlencoded::parse(raw_query.as_bytes())
        .find(|(key, _)| key == "container")
        .map(|(_, value)| value.into_owned());
    let container = choose_container(&pod, name, asked.as_deref())?;
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node_name.is_empty() {
        if endpoint == Endpoint::Log {
            // kube-apiserver answers a pod no node runs with an empty log.
            return Ok(crate::respond::text(200, ""));
        }
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let is_upgrade = request.parts.headers.contains_key(http::header::UPGRADE);
    if endpoint != Endpoint::Log && !is_upgrade {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let nodes = api
        .registry
        .find("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("the nodes resource is not registered"))?;
    let node = match crate::handlers::read(api, &nodes, &nodes.key(None, node_name)).await? {
        Some(stored) => stored.object,
        None => return Err(ApiError::not_found(&nodes, node_name)),
    };
    let Some((host, port)) = agent_address(&node) else {
        return Err(ApiError::internal(format!(
            "node {node_name} has no address to reach its agent at (status.addresses is empty)"
        )));
    };
    let Some(tls) = api.config.agent_client_tls.clone() else {
        return Err(ApiError::unavailable(
            "this API server has no client certificate for node agents",
        ));
    };
    let namespace = request.namespace.unwrap_or("default");
    let query = agent_query(raw_query);
    let path_and_query = format!(
        "/{}/{namespace}/{name}/{container}{}{query}",
        endpoint.agent_path(),
        if query.is_empty() { "" } else { "?" }
    );
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let url = format!("https://{authority}{path_and_query}");
    let dial_error = |error: String| match endpoint {
        Endpoint::Log => ApiError::internal(format!("Get \"{url}\": {error} (node {node_name})")),
        _ => ApiError::internal(format!(
            "error dialing backend: {error} (node {node_name} at {authority})"
        )),
    };
    let mut sender = connect(&host, port, tls).await.map_err(dial_error)?;

    let mut agent_request = hyper::Request::builder()
        .method(request.parts.method.clone())
        .uri(path_and_query.as_str())
        .header(http::header::HOST, authority.as_str());
    if endpoint != Endpoint::Log {
        for header in [
            http::header::CONNECTION,
            http::header::UPGRADE,
            http::header::SEC_WEBSOCKET_KEY,
            http::header::SEC_WEBSOCKET_VERSION,
            http::header::SEC_WEBSOCKET_PROTOCOL,
        ] {
            for value in request.parts.headers.get_all(&header) {
                agent_request = agent_request.header(&header, value);
            }
        }
        for value in request.parts.headers.get_all("X-Stream-Protocol-Version") {
            agent_request = agent_request.header("X-Stream-Protocol-Version", value);
        }
    }
    let agent_request = agent_request
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|error| ApiError::internal(format!("building the agent request: {error}")))?;
    let mut response = sender
        .send_request(agent_request)
        .await
        .map_err(|error| dial_error(error.to_string()))?;

    if endpoint == Endpoint::Log && response.status() == http::StatusCode::OK {
        let (parts, body) = response.into_parts();
        let mut answer = hyper::Response::new(EndOnError(body).boxed());
        *answer.status_mut() = http::StatusCode::OK;
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(http::HeaderValue::from_static("text/plain"));
        answer
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, content_type);
        return Ok(answer);
    }
    if endpoint != Endpoint::Log && response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = request
            .parts
            .extensions
            .get::<hyper::upgrade::OnUpgrade>()
            .cloned()
        else {
            return Err(ApiError::bad_request(
                "Upgrade request required: the connection cannot be upgraded (HTTP/1.1 only)",
            ));
        };
        let agent_upgrade = hyper::upgrade::on(&mut response);
        let mut answer = hyper::Response::new(crate::respond::full(Bytes::new()));
        *answer.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        for (header, value) in response.headers() {
            answer.headers_mut().append(header, value.clone());
        }
        tokio::spawn(async move {
            let (client, agent) = match tokio::join!(client_upgrade, agent_upgrade) {
                (Ok(client), Ok(agent)) => (client, agent),
                (client, agent) => {
                    tracing::debug!(
                        client_ok = client.is_ok(),
                        agent_ok = agent.is_ok(),
                        "a stream's upgrade failed on one side"
                    );
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut agent = TokioIo::new(agent);
            if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut agent).await {
                tracing::debug!(%error, "a proxied stream ended with an error");
            }
        });
        return Ok(answer);
    }
    // The agent refused: pass its answer on, as a Status.
    let code = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let status: Option<Value> = serde_json::from_slice(&body)
        .ok()
        .filter(|value: &Value| value.get("kind").and_then(Value::as_str) == Some("Status"));
    let message = match &status {
        Some(status) => status
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        None => String::from_utf8_lossy(&body).trim().to_string(),
    };
    Err(ApiError::from_agent(code, message))
}

/// Connects to an agent: TCP, TLS against the cluster CA (the agent's
/// certificate must name `host`), and an HTTP/1.1 connection that can be
/// upgraded, driven by a task of its own.
async fn connect(
    host: &str,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
) -> Result<hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>, String> {
    let server_name = ServerName::try_from(host.to_string())
        .map_err(|error| format!("{host} is not a host name: {error}"))?;
    let address = format!("{host}:{port}");
    let dial = async {
        let socket = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|error| format!("dial tcp {address}: {error}"))?;
        let _ = socket.set_nodelay(true);
        tokio_rustls::TlsConnector::from(tls)
            .connect(server_name, socket)
            .await
            .map_err(|error| format!("TLS with {address}: {error}"))
    };
    let stream = tokio::time::timeout(DIAL_TIMEOUT, dial)
        .await
        .map_err(|_| format!("dial tcp {address}: i/o timeout"))??;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("HTTP with {address}: {error}"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "an agent connection ended with an error");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"metadata": {"name": "web"}, "spec": {
            "initContainers": [{"name": "setup"}],
            "containers": [{"name": "app"}, {"name": "sidecar"}],
        }})
    }

    #[test]
    fn a_container_is_named_or_the_only_one() {
        assert_eq!(
            choose_container(&pod(), "web", Some("sidecar")).unwrap(),
            "sidecar"
        );
        assert_eq!(
            choose_container(&pod(), "web", Some("setup")).unwrap(),
            "setup"
        );
        let missing = choose_container(&pod(), "web", None).unwrap_err();
        assert_eq!(missing.code, 400);
        assert_eq!(
            missing.message,
            "a container name must be specified for pod web, choose one of: [setup app sidecar]"
        );
        let unknown = choose_container(&pod(), "web", Some("db")).unwrap_err();
        assert_eq!(unknown.message, "container db is not valid for pod web");
        let single = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(choose_container(&single, "p", None).unwrap(), "only");
    }

    #[test]
    fn the_agent_is_at_the_internal_ip_and_kubelet_port() {
        let node = json!({"status": {
            "addresses": [
                {"type": "Hostname", "address": "n1"},
                {"type": "ExternalIP", "address": "203.0.113.5"},
                {"type": "InternalIP", "address": "10.0.0.5"},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10251}},
        }});
        assert_eq!(agent_address(&node), Some(("10.0.0.5".to_string(), 10251)));
        let bare = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}]}});
        assert_eq!(agent_address(&bare), Some(("n1".to_string(), 10250)));
        assert_eq!(agent_address(&json!({"status": {}})), None);
    }

    #[test]
    fn the_agent_query_drops_the_container() {
        assert_eq!(
            agent_query("container=app&command=sh&command=-c&command=echo+hi&stdout=true"),
            "command=sh&command=-c&command=echo+hi&stdout=true"
        );
    }
}
