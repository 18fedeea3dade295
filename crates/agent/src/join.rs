//! A machine joining a cluster (`shoal up --join URL --token TOKEN`): it
//! learns the cluster's CA and checks it against the token, then trades the
//! token for its node certificates (see `apiserver::join` for the server's
//! side). What it gets is kept under the data directory, so a restart or a
//! rejoin with the same token needs no network round trip and no other step.

use std::path::Path;

use apiserver::join::{JoinRequest, JoinResponse, JoinToken, NodeFiles, ca_hash, node_files};
use apiserver::pki;

use crate::AgentError;

/// The node's credentials for `server`: kept ones when they were issued by
/// the token's CA, otherwise new ones from the server.
pub async fn join(
    server: &str,
    token: &JoinToken,
    node_name: &str,
    serving_names: &[String],
    data_dir: &Path,
) -> Result<NodeFiles, AgentError> {
    let files = node_files(data_dir);
    if let Ok(ca) = std::fs::read_to_string(&files.ca)
        && ca_hash(&ca).as_deref() == Some(token.ca_hash.as_str())
        && files.client_cert.exists()
        && files.client_key.exists()
        && files.serving_cert.exists()
        && kept_name(&files).as_deref() == Some(node_name)
    {
        write_kubeconfig(&files, server)?;
        return Ok(files);
    }
    let ca_pem = fetch_ca(server, token).await?;
    let (client_key, client_csr) = pki_result(apiserver::join::key_and_request(node_name))?;
    let (serving_key, serving_csr) = pki_result(apiserver::join::key_and_request(node_name))?;
    let request = JoinRequest {
        node_name: node_name.to_string(),
        client_csr,
        serving_csr,
        serving_names: serving_names.to_vec(),
    };
    let response = post_join(server, token, &ca_pem, &request).await?;
    std::fs::create_dir_all(&files.dir).map_err(|source| AgentError::Io {
        what: format!("cannot create {}", files.dir.display()),
        source,
    })?;
    for (path, text, secret) in [
        (&files.ca, &response.ca_certificate, false),
        (&files.client_key, &client_key, true),
        (&files.client_cert, &response.client_certificate, false),
        (&files.serving_key, &serving_key, true),
        (&files.serving_cert, &response.serving_certificate, false),
    ] {
        pki_result(pki::write_file(path, text, secret))?;
    }
    std::fs::write(files.dir.join("node-name"), node_name).map_err(|source| AgentError::Io {
        what: "cannot record the node name".into(),
        source,
    })?;
    write_kubeconfig(&files, server)?;
    Ok(files)
}

fn kept_name(files: &NodeFiles) -> Option<String> {
    std::fs::read_to_string(files.dir.join("node-name")).ok()
}

fn pki_result<T>(result: Result<T, pki::PkiError>) -> Result<T, AgentError> {
    result.map_err(|error| AgentError::Join(error.to_string()))
}

/// Writes the node's kubeconfig for `server` from its kept files.
pub fn write_kubeconfig(files: &NodeFiles, server: &str) -> Result<(), AgentError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| AgentError::Io {
            what: format!("cannot read {}", path.display()),
            source,
        })
    };
    let text = pki::kubeconfig(
        server,
        &read(&files.ca)?,
        &read(&files.client_cert)?,
        &read(&files.client_key)?,
    );
    pki_result(pki::write_file(&files.kubeconfig, &text, true))
}

fn unreachable(server: &str, error: &kube::Error) -> AgentError {
    AgentError::Join(format!("cannot reach the server at {server}: {error}"))
}

fn config_for(server: &str) -> Result<kube::Config, AgentError> {
    let url: http::Uri = server
        .parse()
        .map_err(|error| AgentError::Join(format!("invalid --join URL {server:?}: {error}")))?;
    if url.scheme_str() != Some("https") {
        return Err(AgentError::Join(format!(
            "invalid --join URL {server:?}: it must be https://HOST:PORT"
        )));
    }
    let mut config = kube::Config::new(url);
    config.connect_timeout = Some(std::time::Duration::from_secs(5));
    config.read_timeout = Some(std::time::Duration::from_secs(15));
    Ok(config)
}

/// The CA certificate the server offers, if its hash is the token's.
async fn fetch_ca(server: &str, token: &JoinToken) -> Result<String, AgentError> {
    let mut config = config_for(server)?;
    // Not yet trusted: what comes back is checked against the token below.
    config.accept_invalid_certs = true;
    let client = kube::Client::try_from(config).map_err(|error| unreachable(server, &error))?;
    let request = http::Request::get("/cacerts")
        .body(Vec::new())
        .map_err(|error| AgentError::Join(error.to_string()))?;
    let pem = client
        .request_text(request)
        .await
        .map_err(|error| unreachable(server, &error))?;
    match ca_hash(&pem) {
        Some(hash) if hash == token.ca_hash => Ok(pem),
        Some(_) => Err(AgentError::Join(format!(
            "the server at {server} is not the cluster the token is for: its CA's hash differs from the token's"
        ))),
        None => Err(AgentError::Join(format!(
            "the server at {server} sent no CA certificate (is it a shoal server?)"
        ))),
    }
}

async fn post_join(
    server: &str,
    token: &JoinToken,
    ca_pem: &str,
    request: &JoinRequest,
) -> Result<JoinResponse, AgentError> {
    let mut config = config_for(server)?;
    config.root_cert =
        Some(pem_certificates(ca_pem).ok_or_else(|| {
            AgentError::Join("the cluster's CA certificate is unreadable".into())
        })?);
    config.auth_info.token = Some(token.secret.clone().into());
    let client = kube::Client::try_from(config).map_err(|error| unreachable(server, &error))?;
    let body = serde_json::to_vec(request).map_err(|error| AgentError::Join(error.to_string()))?;
    let http_request = http::Request::post("/shoal/v1/join")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|error| AgentError::Join(error.to_string()))?;
    match client.request::<JoinResponse>(http_request).await {
        Ok(response) => Ok(response),
        Err(kube::Error::Api(status)) if status.code == 401 => Err(AgentError::Join(format!(
            "the server at {server} refused the join token (401 Unauthorized): check --token"
        ))),
        Err(kube::Error::Api(status)) => Err(AgentError::Join(format!(
            "the server at {server} refused the join: {}",
            status.message
        ))),
        Err(error) => Err(unreachable(server, &error)),
    }
}

/// The DER certificates in `pem`.
fn pem_certificates(pem: &str) -> Option<Vec<Vec<u8>>> {
    use rustls_pki_types::{CertificateDer, pem::PemObject as _};
    let certificates: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|certificate| certificate.map(|der| der.as_ref().to_vec()))
        .collect::<Result<_, _>>()
        .ok()?;
    (!certificates.is_empty()).then_some(certificates)
}
