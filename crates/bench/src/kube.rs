//! Connections to the Kubernetes API for the `kube-*` workloads: the
//! kubeconfig's server, cluster CA and client certificate, and HTTP/2 over
//! TLS on the `h2` crate directly.
//!
//! As for the KV workloads (`unary.rs`), the client shares the CPUs with the
//! server it measures, so a client task opens its HTTP/2 stream itself and the
//! connection's task is the only other one involved (hyper's client would add
//! its pool and a dispatch task per request).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;

/// Receive windows large enough that a list of every pod (tens of megabytes)
/// never waits for a window update.
const STREAM_WINDOW: u32 = 16 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;

/// What the workloads need from a kubeconfig: where the API is and how to
/// prove who we are.
pub struct KubeConfig {
    pub server: http::Uri,
    ca_pem: Vec<u8>,
    client_cert_pem: Vec<u8>,
    client_key_pem: Vec<u8>,
}

/// The parts of the kubeconfig format read here (the current context's
/// cluster and user; data fields or file paths).
#[derive(Deserialize)]
struct KubeConfigFile {
    #[serde(rename = "current-context", default)]
    current_context: String,
    #[serde(default)]
    clusters: Vec<Named<Cluster>>,
    #[serde(default)]
    users: Vec<Named<User>>,
    #[serde(default)]
    contexts: Vec<Named<Context>>,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    value: T,
}

#[derive(Deserialize)]
struct Cluster {
    server: String,
    #[serde(rename = "certificate-authority-data")]
    ca_data: Option<String>,
    #[serde(rename = "certificate-authority")]
    ca_file: Option<PathBuf>,
}

#[derive(Deserialize)]
struct User {
    #[serde(rename = "client-certificate-data")]
    cert_data: Option<String>,
    #[serde(rename = "client-certificate")]
    cert_file: Option<PathBuf>,
    #[serde(rename = "client-key-data")]
    key_data: Option<String>,
    #[serde(rename = "client-key")]
    key_file: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Context {
    cluster: String,
    user: String,
}

impl KubeConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
        let file: KubeConfigFile = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("invalid kubeconfig {}", path.display()))?;
        let context = file
            .contexts
            .iter()
            .find(|context| context.name == file.current_context)
            .or(file.contexts.first())
            .with_context(|| format!("kubeconfig {} has no context", path.display()))?;
        let cluster = file
            .clusters
            .iter()
            .find(|cluster| cluster.name == context.value.cluster)
            .with_context(|| format!("kubeconfig: no cluster {}", context.value.cluster))?;
        let user = file
            .users
            .iter()
            .find(|user| user.name == context.value.user)
            .with_context(|| format!("kubeconfig: no user {}", context.value.user))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let server: http::Uri = cluster
            .value
            .server
            .parse()
            .with_context(|| format!("kubeconfig: invalid server {}", cluster.value.server))?;
        anyhow::ensure!(
            server.scheme_str() == Some("https"),
            "kubeconfig: server {server} is not https://"
        );
        let ca = &cluster.value;
        let user = &user.value;
        Ok(Self {
            server,
            ca_pem: data_or_file("certificate-authority", &ca.ca_data, &ca.ca_file, base)?,
            client_cert_pem: data_or_file(
                "client-certificate",
                &user.cert_data,
                &user.cert_file,
                base,
            )?,
            client_key_pem: data_or_file("client-key", &user.key_data, &user.key_file, base)?,
        })
    }

    /// A TLS client that trusts the cluster CA alone, presents the client
    /// certificate and offers HTTP/2 only.
    fn tls(&self) -> anyhow::Result<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca_pem) {
            roots
                .add(cert.context("kubeconfig: certificate-authority")?)
                .context("kubeconfig: certificate-authority")?;
        }
        let chain = CertificateDer::pem_slice_iter(&self.client_cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .context("kubeconfig: client-certificate")?;
        let key = PrivateKeyDer::from_pem_slice(&self.client_key_pem)
            .context("kubeconfig: client-key")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .context("kubeconfig: client certificate and key")?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

fn data_or_file(
    field: &str,
    data: &Option<String>,
    file: &Option<PathBuf>,
    base: &Path,
) -> anyhow::Result<Vec<u8>> {
    match (data, file) {
        (Some(data), _) => base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .with_context(|| format!("kubeconfig: {field}-data is not base64")),
        (None, Some(file)) => {
            let path = base.join(file);
            std::fs::read(&path)
                .with_context(|| format!("kubeconfig: cannot read {field} {}", path.display()))
        }
        (None, None) => anyhow::bail!(
            "kubeconfig: no {field} (client-certificate authentication is the only kind supported)"
        ),
    }
}

/// One HTTP/2 connection to the API server; clones share it, one stream per
/// request.
#[derive(Clone)]
pub struct KubeConnection {
    send: h2::client::SendRequest<Bytes>,
    authority: http::uri::Authority,
}

/// An answer read in full.
pub struct Answer {
    pub status: http::StatusCode,
    pub body: Bytes,
}

/// Opens `n_conns` connections to the kubeconfig's server.
pub async fn dial_all(
    config: &KubeConfig,
    n_conns: usize,
    dial_timeout: Duration,
) -> anyhow::Result<Vec<KubeConnection>> {
    let tls = Arc::new(config.tls()?);
    let mut connections = Vec::with_capacity(n_conns);
    for _ in 0..n_conns {
        connections.push(dial(config, Arc::clone(&tls), dial_timeout).await?);
    }
    Ok(connections)
}

async fn dial(
    config: &KubeConfig,
    tls: Arc<rustls::ClientConfig>,
    dial_timeout: Duration,
) -> anyhow::Result<KubeConnection> {
    let server = &config.server;
    let authority = server
        .authority()
        .cloned()
        .with_context(|| format!("kubeconfig: server {server} has no host"))?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let address = format!("{host}:{}", authority.port_u16().unwrap_or(443));
    let server_name = ServerName::try_from(host.to_string())
        .with_context(|| format!("kubeconfig: server {server}: invalid host"))?;
    let handshake = async {
        let socket = tokio::net::TcpStream::connect(&address)
            .await
            .with_context(|| format!("cannot connect to {server}"))?;
        socket.set_nodelay(true)?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(server_name, socket)
            .await
            .with_context(|| format!("cannot connect to {server}: TLS handshake"))?;
        anyhow::ensure!(
            stream.get_ref().1.alpn_protocol() == Some(b"h2"),
            "{server} did not agree to HTTP/2 (ALPN)"
        );
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(256 * 1024)
            .handshake::<_, Bytes>(stream)
            .await
            .with_context(|| format!("cannot connect to {server}: HTTP/2 handshake"))?;
        spawn_connection(connection);
        anyhow::Ok(send)
    };
    let send = tokio::time::timeout(dial_timeout, handshake)
        .await
        .map_err(|_| anyhow::anyhow!("cannot connect to {server}: timed out"))??;
    Ok(KubeConnection { send, authority })
}

/// Drives a connection; its end shows in the requests that fail with it.
fn spawn_connection<T>(connection: h2::client::Connection<T, Bytes>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    tokio::spawn(async move {
        let _ = connection.await;
    });
}

impl KubeConnection {
    /// Sends a request and returns the response's head and body stream.
    pub async fn open(
        &self,
        method: http::Method,
        path_and_query: &str,
        headers: &[(http::header::HeaderName, &str)],
        body: Option<Bytes>,
    ) -> anyhow::Result<http::Response<h2::RecvStream>> {
        let uri = http::Uri::builder()
            .scheme("https")
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()?;
        let mut request = http::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        let request = request.body(())?;
        let mut sender = self.send.clone().ready().await?;
        let (response, mut stream) = sender.send_request(request, body.is_none())?;
        if let Some(body) = body {
            stream.send_data(body, true)?;
        }
        Ok(response.await?)
    }

    /// One request, its answer read in full.
    pub async fn request(
        &self,
        method: http::Method,
        path_and_query: &str,
        headers: &[(http::header::HeaderName, &str)],
        body: Option<Bytes>,
    ) -> anyhow::Result<Answer> {
        let response = self.open(method, path_and_query, headers, body).await?;
        let status = response.status();
        let mut stream = response.into_body();
        let mut body = BytesMut::new();
        while let Some(chunk) = stream.data().await {
            let chunk = chunk?;
            let _ = stream.flow_control().release_capacity(chunk.len());
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            body: body.freeze(),
        })
    }
}

impl Answer {
    /// The answer, or an error carrying the API's status line and message.
    pub fn ok(self) -> anyhow::Result<Self> {
        if self.status.is_success() {
            return Ok(self);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|status| status["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned());
        anyhow::bail!("HTTP {}: {message}", self.status)
    }
}
