//! The API's listener: TLS (rustls) with optional client certificates,
//! HTTP/1.1 and HTTP/2 (hyper), and the authentication step in front of every
//! request: a verified client certificate, else a bearer token from the
//! token file (`authn`); a request with neither, or a token nobody holds,
//! is 401.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tokio::net::TcpListener;

use crate::Api;
use crate::status::ApiError;

/// Every response body: whole or streamed (watches).
pub type Body = BoxBody<Bytes, Infallible>;

/// Who made a request, as authentication found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    /// A request without credentials (only the join paths take one).
    pub fn anonymous() -> User {
        User {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid TLS material: {0}")]
    Tls(String),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The TLS settings: serve `cert_pem`, and verify client certificates
/// against `client_ca_pem` without requiring one (the request is then 401,
/// a Kubernetes `Status`, rather than a failed handshake).
pub fn tls_config(
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
    .allow_unauthenticated()
    .build()
    .map_err(|error| ServeError::Tls(format!("client verifier: {error}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ServeError::Tls(error.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|error| ServeError::Tls(format!("serving certificate and key: {error}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The user a verified client certificate names: its common name, and its
/// organizations as groups (Kubernetes' reading of an X.509 subject).
pub(crate) fn user_of(certificate: &CertificateDer<'_>) -> Option<User> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let subject = parsed.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|name| name.as_str().ok())?
        .to_string();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|organization| organization.as_str().ok().map(str::to_string))
        .collect();
    groups.push("system:authenticated".to_string());
    Some(User { name, groups })
}

/// Binds the API's address.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Listen { address, source })
}

/// Serves the API on `listener` until `shutdown` resolves; then stops taking
/// connections and closes the open ones after a short grace.
pub async fn serve(
    api: Arc<Api>,
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
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting an API connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let acceptor = acceptor.clone();
        let api = Arc::clone(&api);
        connections.spawn(async move {
            let stream = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(socket),
            )
            .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let user = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(user_of);
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let api = Arc::clone(&api);
                let user = user.clone();
                async move { Ok::<_, Infallible>(handle(api, user, request).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(error) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, %error, "API connection ended with an error");
            }
        });
    }
    // Open watches keep connections busy for minutes: a short grace, then close.
    let grace = tokio::time::sleep(std::time::Duration::from_secs(1));
    tokio::pin!(grace);
    loop {
        tokio::select! {
            () = &mut grace => break,
            next = connections.join_next() => if next.is_none() { break },
        }
    }
    connections.shutdown().await;
}

/// The largest request body taken (kube-apiserver's limit).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

async fn handle(
    api: Arc<Api>,
    user: Option<User>,
    request: hyper::Request<Incoming>,
) -> hyper::Response<Body> {
    // The dashboard's page holds no data: it is served to anyone, and asks
    // for a token before it calls the API.
    if let Some(page) = crate::dashboard::page(request.method(), request.uri().path()) {
        return page;
    }
    let (parts, body) = request.into_parts();
    // The join paths carry the join token as their bearer token: it is
    // the join authority's to check, not the token file's.
    let join_path = matches!(
        (&parts.method, parts.uri.path()),
        (&http::Method::GET, "/cacerts") | (&http::Method::POST, "/shoal/v1/join")
    );
    let bearer = if join_path {
        None
    } else {
        crate::authn::bearer_token(&parts.headers)
    };
    let user = match (user, bearer) {
        (Some(user), _) => Some(user),
        (None, Some(token)) => match api.config.tokens.as_ref().and_then(|file| file.user(token)) {
            Some(user) => Some(user.clone()),
            None => {
                tracing::debug!(path = %parts.uri.path(), "a bearer token nobody holds");
                return crate::respond::error(&ApiError::unauthorized());
            }
        },
        (None, None) => None,
    };
    let joining = user.is_none() && join_path;
    let Some(user) = user.or_else(|| joining.then(User::anonymous)) else {
        return crate::respond::error(&ApiError::unauthorized());
    };
    // Upgrades (exec, attach) keep the request whole; their body is the stream.
    let body = match http_body_util::Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return crate::respond::error(&ApiError::too_large());
            }
            return crate::respond::error(&ApiError::bad_request(format!(
                "reading the request body: {error}"
            )));
        }
    };
    if joining {
        return api.handle_join(&parts, &body);
    }
    api.handle(&user, parts, body).await
}
