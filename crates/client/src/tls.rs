//! TLS towards a store's `https://` client URLs, as etcd's clients do it:
//! the server checked against a CA file (`--cacert`), a client certificate
//! and key offered when given (`--cert`, `--key`), ALPN `h2`. Used by
//! [`crate::Remote`] and by `shoal bench`.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};

use crate::ClientError;

/// The files a client's TLS takes (etcdctl's `--cacert`, `--cert`, `--key`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// The CA that signed the servers' certificates.
    pub ca_file: Option<PathBuf>,
    /// The client certificate, for servers under `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl ClientTlsFiles {
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }
}

fn refused(path: &std::path::Path, reason: impl std::fmt::Display) -> ClientError {
    ClientError::Refused(format!("{}: {reason}", path.display()))
}

/// The rustls settings for `files`. Without a CA file nothing would be
/// trusted (shoal carries no system roots), so the CA is required.
pub fn client_config(files: &ClientTlsFiles) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let Some(ca_path) = &files.ca_file else {
        return Err(ClientError::Refused(
            "TLS to the store needs a CA file (--cacert) to check the server's certificate".into(),
        ));
    };
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca_path).map_err(|error| refused(ca_path, error))?;
    let mut n_certificates = 0;
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate.map_err(|error| refused(ca_path, error))?;
        roots
            .add(certificate)
            .map_err(|error| refused(ca_path, error))?;
        n_certificates += 1;
    }
    if n_certificates == 0 {
        return Err(refused(ca_path, "no PEM certificate in the file"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::Refused(error.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (&files.cert_file, &files.key_file) {
        (Some(cert_path), Some(key_path)) => {
            let pem = std::fs::read(cert_path).map_err(|error| refused(cert_path, error))?;
            let certificates = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| refused(cert_path, error))?;
            if certificates.is_empty() {
                return Err(refused(cert_path, "no PEM certificate in the file"));
            }
            let pem = std::fs::read(key_path).map_err(|error| refused(key_path, error))?;
            let key =
                PrivateKeyDer::from_pem_slice(&pem).map_err(|error| refused(key_path, error))?;
            builder
                .with_client_auth_cert(certificates, key)
                .map_err(|error| refused(key_path, error))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(ClientError::Refused(
                "a client certificate and its key must be given together".into(),
            ));
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Connects to `uri`'s host and port and runs the TLS handshake, checking
/// the server's certificate against the URL's host.
pub async fn connect(
    uri: &http::Uri,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let host = uri
        .host()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: no host")))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let server_name = ServerName::try_from(host.clone())
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {error}")))?;
    let connecting = async {
        let socket = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        socket.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(config)
            .connect(server_name, socket)
            .await
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("{uri}: timed out")))?
}

/// A connector for tonic's `Endpoint::connect_with_connector*`: every
/// connection it opens is TLS.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

impl TlsConnector {
    pub fn new(config: Arc<rustls::ClientConfig>, timeout: Duration) -> TlsConnector {
        TlsConnector { config, timeout }
    }
}

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<Self::Response>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = Arc::clone(&self.config);
        let timeout = self.timeout;
        Box::pin(async move {
            let stream = connect(&uri, config, timeout).await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}
